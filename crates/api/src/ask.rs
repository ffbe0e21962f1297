//! Turning a request's raw parameters into a validated question, the same
//! way for both protocols: HTTP parses text into [`AskInput`], gRPC fills it
//! from typed fields, and [`AskInput::validate`] checks everything once.

use crate::error::{bad, ApiError};
use crate::service::Limits;
use netspectra_model::ip::Cidr;
use netspectra_model::time::{format_rfc3339_ns, parse_duration_ns, parse_rfc3339_ns};
use netspectra_store::read::{Filter, RunSelect, TimeRange};

/// Longest task name accepted (names in configs are short identifiers).
pub const MAX_TASK_NAME: usize = 256;

/// A question's parameters before validation; `None` = not given.
#[derive(Clone, Debug, Default)]
pub struct AskInput {
    /// Task name (empty = not given).
    pub task: String,
    /// Range start, ns.
    pub from_ns: Option<u64>,
    /// Range end (exclusive), ns.
    pub to_ns: Option<u64>,
    /// Source address or CIDR text.
    pub src_ip: Option<String>,
    /// Destination address or CIDR text.
    pub dst_ip: Option<String>,
    /// Source port as given (checked to fit 16 bits).
    pub src_port: Option<u64>,
    /// Destination port as given.
    pub dst_port: Option<u64>,
    /// Protocol number as given (checked to fit 8 bits).
    pub protocol: Option<u64>,
    /// Rows wanted; 0 = all (up to the server's maximum); None = the
    /// server's default.
    pub limit: Option<u64>,
    /// Runs to read: a run id, `latest` or `all` (None or empty: all).
    pub run: Option<String>,
}

/// A validated question.
#[derive(Clone, Debug)]
pub struct Ask {
    /// Task name, possibly empty where the operation allows it.
    pub task: String,
    /// Windows to read.
    pub range: TimeRange,
    /// Keys to read.
    pub filter: Filter,
    /// Rows to return (already capped by the server's maximum).
    pub limit: usize,
    /// Runs to read.
    pub run: RunSelect,
}

impl AskInput {
    /// Checks every parameter against the server's limits.
    pub fn validate(self, limits: Limits) -> Result<Ask, ApiError> {
        if self.task.len() > MAX_TASK_NAME {
            return Err(bad(format!(
                "task name is {} bytes long; at most {MAX_TASK_NAME} allowed",
                self.task.len()
            )));
        }
        let range = TimeRange {
            from_ns: self.from_ns.unwrap_or(TimeRange::ALL.from_ns),
            to_ns: self
                .to_ns
                .unwrap_or(TimeRange::ALL.to_ns)
                .min(TimeRange::ALL.to_ns),
        };
        if range.from_ns >= range.to_ns {
            return Err(bad(format!(
                "empty or inverted time range: from {} is not before to {}",
                format_rfc3339_ns(range.from_ns),
                format_rfc3339_ns(range.to_ns)
            )));
        }
        let cidr = |name: &str, text: Option<String>| -> Result<Option<Cidr>, ApiError> {
            text.filter(|t| !t.is_empty())
                .map(|t| t.parse().map_err(|e| bad(format!("{name}: {e}"))))
                .transpose()
        };
        let number = |name: &str, v: Option<u64>, max: u64| -> Result<Option<u64>, ApiError> {
            match v {
                Some(n) if n > max => Err(bad(format!("{name}: {n} is out of range (0-{max})"))),
                other => Ok(other),
            }
        };
        let filter = Filter {
            src_ip: cidr("src_ip", self.src_ip)?,
            dst_ip: cidr("dst_ip", self.dst_ip)?,
            src_port: number("src_port", self.src_port, 65535)?.map(|v| v as u16),
            dst_port: number("dst_port", self.dst_port, 65535)?.map(|v| v as u16),
            protocol: number("protocol", self.protocol, 255)?.map(|v| v as u8),
        };
        let limit = row_limit(self.limit, limits)?;
        let run = RunSelect::parse(self.run.as_deref().unwrap_or(""))
            .map_err(|e| bad(format!("run: {e}")))?;
        Ok(Ask {
            task: self.task,
            range,
            filter,
            limit,
            run,
        })
    }
}

/// Rows an answer may hold: the default when not given, the server's
/// maximum for 0, refused above the maximum (every row-returning
/// operation, `runs` included, is capped this way).
pub fn row_limit(limit: Option<u64>, limits: Limits) -> Result<usize, ApiError> {
    let max_rows = limits.max_rows;
    match limit {
        None => Ok(limits.default_rows.min(max_rows)),
        Some(0) => Ok(max_rows),
        Some(n) if n > max_rows as u64 => Err(bad(format!(
            "limit {n} exceeds this server's maximum of {max_rows} rows (0 = all, up to the maximum)"
        ))),
        Some(n) => Ok(n as usize),
    }
}

/// Parses a time parameter: RFC 3339, or a bare integer of ns since the epoch.
pub fn parse_time(name: &str, text: &str) -> Result<u64, ApiError> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| bad(format!("{name}: `{text}` is too large")));
    }
    parse_rfc3339_ns(text).map_err(|e| bad(format!("{name}: {e}")))
}

/// `since` (a duration back from `now_ns`) as a range start, rounded down
/// to the second so that a dashboard repeating the question within a
/// second asks the same one (and hits the answer cache).
pub fn parse_since(text: &str, now_ns: u64) -> Result<u64, ApiError> {
    let d = parse_duration_ns(text).map_err(|e| bad(format!("since: {e}")))?;
    let from = now_ns.saturating_sub(d);
    Ok(from - from % 1_000_000_000)
}

/// Parses an unsigned number parameter, naming it when it is not one.
pub fn parse_number(name: &str, text: &str) -> Result<u64, ApiError> {
    text.trim()
        .parse()
        .map_err(|_| bad(format!("{name}: `{text}` is not a non-negative integer")))
}

/// Wall-clock now, ns since the epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The alert history filter of `alerts` (HTTP) and `ListAlerts` (gRPC),
/// validated the same way for both: `state` is `firing` or `resolved`,
/// `active` keeps only instances still firing,
/// `rule` and `key` are bounded, `limit` as for rows.
pub fn alert_filter(
    (from_ns, to_ns): (Option<u64>, Option<u64>),
    rule: Option<String>,
    state: Option<String>,
    key: Option<String>,
    active: bool,
    limit: Option<u64>,
    limits: Limits,
) -> Result<netspectra_model::alert::AlertFilter, ApiError> {
    if let Some(state) = &state {
        if !matches!(state.as_str(), "firing" | "resolved") {
            return Err(bad(format!(
                "state: `{state}` is not a state; use firing or resolved"
            )));
        }
    }
    for (name, v) in [("rule", &rule), ("key", &key)] {
        if v.as_ref().is_some_and(|v| v.len() > MAX_TASK_NAME) {
            return Err(bad(format!("{name}: longer than {MAX_TASK_NAME} bytes")));
        }
    }
    if let (Some(f), Some(t)) = (from_ns, to_ns) {
        if f >= t {
            return Err(bad("`from` must be before `to`"));
        }
    }
    let empty = |v: Option<String>| v.filter(|v| !v.is_empty());
    Ok(netspectra_model::alert::AlertFilter {
        from_ns: from_ns.unwrap_or(0),
        to_ns,
        rule: empty(rule),
        state: empty(state),
        key: empty(key),
        active,
        limit: row_limit(limit, limits)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_parameter_is_named() {
        let cases: Vec<(AskInput, &str)> = vec![
            (
                AskInput {
                    src_ip: Some("10.0.0.300".into()),
                    ..Default::default()
                },
                "src_ip",
            ),
            (
                AskInput {
                    dst_ip: Some("10.0.0.0/40".into()),
                    ..Default::default()
                },
                "dst_ip",
            ),
            (
                AskInput {
                    src_port: Some(70000),
                    ..Default::default()
                },
                "src_port",
            ),
            (
                AskInput {
                    protocol: Some(256),
                    ..Default::default()
                },
                "protocol",
            ),
            (
                AskInput {
                    from_ns: Some(10),
                    to_ns: Some(5),
                    ..Default::default()
                },
                "inverted",
            ),
            (
                AskInput {
                    limit: Some(1_000_000),
                    ..Default::default()
                },
                "limit",
            ),
            (
                AskInput {
                    task: "x".repeat(300),
                    ..Default::default()
                },
                "task name",
            ),
        ];
        for (input, word) in cases {
            let err = input.validate(Limits::default()).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)));
            assert!(
                err.to_string().contains(word),
                "{err} should mention {word}"
            );
        }
        let limits = Limits {
            max_rows: 50,
            ..Limits::default()
        };
        let all = AskInput {
            limit: Some(0),
            ..Default::default()
        };
        assert_eq!(all.validate(limits).unwrap().limit, 50);
        let default = AskInput::default().validate(Limits::default()).unwrap();
        assert_eq!(default.limit, Limits::default().default_rows);
        assert!(parse_time("from", "2026-01-01T00:00:00Z").is_ok());
        assert_eq!(
            parse_time("from", "1700000000000000000").unwrap(),
            1_700_000_000_000_000_000
        );
        assert!(parse_time("from", "yesterday")
            .unwrap_err()
            .to_string()
            .contains("from"));
        assert_eq!(
            parse_since("1h", 7_200_500_000_000).unwrap(),
            3_600_000_000_000
        );
    }
}
