//! One alert transition as the stores keep it (table `alerts`, **contract**)
//! and the alerter's state between evaluations. The alerter (crate
//! `netspectra-alert`) makes them, the stores keep them; neither depends on
//! the other.

/// One transition of an alert instance (a rule, and a key for per-key
/// rules): it started firing, or it resolved. Times are ns since the epoch,
/// in packet time.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRecord {
    /// Rule name.
    pub rule: String,
    /// Task the rule watches.
    pub task: String,
    /// The instance's key as a JSON object (`{}` for task-wide rules).
    pub key: String,
    /// Metric compared.
    pub metric: String,
    /// Its value in the window that caused the transition (for a resolve:
    /// the last value while firing).
    pub value: f64,
    /// Comparison (`>`, `>=`, `<`, `<=`, `==`, `!=`).
    pub operator: String,
    /// Threshold compared with.
    pub threshold: f64,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// Start of the window that caused the transition.
    pub window_start_ns: u64,
    /// When the instance started firing (end of the window that fired it).
    pub starts_at_ns: u64,
    /// When it resolved (end of the window that resolved it); None while
    /// firing. Read back, a firing transition carries its resolve's time
    /// once there is one.
    pub ends_at_ns: Option<u64>,
    /// The AI analyst's explanation, when there is one.
    pub analysis: Option<String>,
}

/// Which stored transitions to read back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertFilter {
    /// Transitions whose window starts at or after this (ns).
    pub from_ns: u64,
    /// … and before this (ns); None: no upper bound.
    pub to_ns: Option<u64>,
    /// Only this rule.
    pub rule: Option<String>,
    /// Only `firing` or `resolved`.
    pub state: Option<String>,
    /// Only instances whose key JSON contains this text (e.g. an address).
    pub key: Option<String>,
    /// Only instances still firing: firing transitions not yet resolved.
    pub active: bool,
    /// At most this many, newest first.
    pub limit: usize,
}

impl AlertRecord {
    /// The alert JSON (**contract**: webhook body, `alert backtest
    /// --format json`, `GET /api/v1/alerts`): times in RFC 3339, `key` an
    /// object, whole numbers without a fraction.
    pub fn to_json(&self) -> serde_json::Value {
        let key: serde_json::Value = serde_json::from_str(&self.key)
            .ok()
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| serde_json::json!({}));
        serde_json::json!({
            "rule": self.rule,
            "task": self.task,
            "key": key,
            "metric": self.metric,
            "value": number(self.value),
            "operator": self.operator,
            "threshold": number(self.threshold),
            "severity": self.severity,
            "state": self.state,
            "window_start": rfc3339(self.window_start_ns),
            "starts_at": rfc3339(self.starts_at_ns),
            "ends_at": self.ends_at_ns.map(rfc3339),
            "analysis": self.analysis,
        })
    }

    /// Reads the alert JSON back (what [`AlertRecord::to_json`] writes);
    /// missing fields are empty.
    pub fn from_json(a: &serde_json::Value) -> AlertRecord {
        let text = |f: &str| a[f].as_str().unwrap_or_default().to_string();
        let time = |f: &str| {
            a[f].as_str()
                .and_then(|t| crate::time::parse_rfc3339_ns(t).ok())
        };
        AlertRecord {
            rule: text("rule"),
            task: text("task"),
            key: a["key"].to_string(),
            metric: text("metric"),
            value: a["value"].as_f64().unwrap_or_default(),
            operator: text("operator"),
            threshold: a["threshold"].as_f64().unwrap_or_default(),
            severity: text("severity"),
            state: text("state"),
            window_start_ns: time("window_start").unwrap_or(0),
            starts_at_ns: time("starts_at").unwrap_or(0),
            ends_at_ns: time("ends_at"),
            analysis: a["analysis"].as_str().map(str::to_string),
        }
    }

    /// When this transition happened: the resolve's time for a resolve,
    /// the start of firing for a firing (which, read back, may also carry
    /// its later resolve's time).
    pub fn at_ns(&self) -> u64 {
        match (self.state.as_str(), self.ends_at_ns) {
            ("resolved", Some(t)) => t,
            _ => self.starts_at_ns,
        }
    }

    /// A one-line summary for people: `FIRING big_talker {SrcIP=10.0.0.1}
    /// bytes=612000000 > 500000000 (warning)`.
    pub fn summary(&self) -> String {
        let key = key_text(&self.key);
        format!(
            "{} {}{} {}={} {} {} ({})",
            self.state.to_uppercase(),
            self.rule,
            if key.is_empty() {
                String::new()
            } else {
                format!(" {{{key}}}")
            },
            self.metric,
            number(self.value),
            self.operator,
            number(self.threshold),
            self.severity
        )
    }
}

/// `{"alerts": [...]}` for a list of transitions.
pub fn alerts_json(alerts: &[AlertRecord]) -> serde_json::Value {
    serde_json::json!({ "alerts": alerts.iter().map(AlertRecord::to_json).collect::<Vec<_>>() })
}

/// `SrcIP=10.0.0.1, DstPort=53` from a key's JSON object text.
pub fn key_text(key_json: &str) -> String {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(key_json) {
        Ok(map) => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(_) => key_json.to_string(),
    }
}

/// A whole number as an integer (`612000000`, not `612000000.0`).
fn number(v: f64) -> serde_json::Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        serde_json::Value::from(v as i64)
    } else {
        serde_json::Value::from(v)
    }
}

/// RFC 3339 in UTC, with a fraction only when there is one.
pub fn rfc3339(ns: u64) -> String {
    let text = crate::time::format_rfc3339_ns(ns);
    match text.strip_suffix(".000000000Z") {
        Some(whole) => format!("{whole}Z"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_is_the_contract_shape() {
        let r = AlertRecord {
            rule: "big_talker".into(),
            task: "per_src_ip".into(),
            key: r#"{"SrcIP":"10.0.0.1"}"#.into(),
            metric: "bytes".into(),
            value: 612_000_000.0,
            operator: ">".into(),
            threshold: 5e8,
            severity: "warning".into(),
            state: "firing".into(),
            window_start_ns: 1_767_225_600_000_000_000,
            starts_at_ns: 1_767_225_660_000_000_000,
            ends_at_ns: None,
            analysis: None,
        };
        assert_eq!(
            alerts_json(std::slice::from_ref(&r)).to_string(),
            r#"{"alerts":[{"rule":"big_talker","task":"per_src_ip","key":{"SrcIP":"10.0.0.1"},"metric":"bytes","value":612000000,"operator":">","threshold":500000000,"severity":"warning","state":"firing","window_start":"2026-01-01T00:00:00Z","starts_at":"2026-01-01T00:01:00Z","ends_at":null,"analysis":null}]}"#
        );
        assert_eq!(AlertRecord::from_json(&r.to_json()), r);
        assert_eq!(
            r.summary(),
            "FIRING big_talker {SrcIP=10.0.0.1} bytes=612000000 > 500000000 (warning)"
        );
    }
}
