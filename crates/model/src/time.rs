//! Timestamps (ns since the Unix epoch, UTC) and durations as people write them.

use std::fmt::Write;

/// Nanoseconds per second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// A duration string that is not of the `1h30m`, `60s`, `500ms` form.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid duration `{0}`: use a number with a unit (ns, us, ms, s, m, h, d), e.g. `60s`, `1h30m`")]
pub struct BadDuration(pub String);

/// Parses Go-style durations (`720h`, `1m30s`, `250ms`, `1.5s`) plus `d` for days,
/// into nanoseconds. A bare `0` is allowed; other bare numbers are not, because
/// a unit-less number is ambiguous.
pub fn parse_duration_ns(text: &str) -> Result<u64, BadDuration> {
    let err = || BadDuration(text.to_string());
    let s = text.trim();
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            _ => return Err(err()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(err());
    }
    Ok(total.round() as u64)
}

/// RFC 3339 in UTC with nanoseconds: `2026-01-01T00:00:00.000000000Z`.
pub fn format_rfc3339_ns(ts_ns: u64) -> String {
    let secs = ts_ns / NS_PER_SEC;
    let nanos = ts_ns % NS_PER_SEC;
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let mut out = String::with_capacity(30);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    out
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The start of the window of length `len_ns` that contains `ts_ns`.
#[inline]
pub fn window_start(ts_ns: u64, len_ns: u64) -> u64 {
    ts_ns - ts_ns % len_ns.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration_ns("60s"), Ok(60 * NS_PER_SEC));
        assert_eq!(parse_duration_ns("720h"), Ok(720 * 3600 * NS_PER_SEC));
        assert_eq!(parse_duration_ns("1m30s"), Ok(90 * NS_PER_SEC));
        assert_eq!(parse_duration_ns("250ms"), Ok(250_000_000));
        assert_eq!(parse_duration_ns("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration_ns("0"), Ok(0));
        for bad in ["", "60", "s", "5x", "1h-3m"] {
            assert!(parse_duration_ns(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_rfc3339_with_nanoseconds() {
        assert_eq!(format_rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        // 2024-02-29T12:34:56.000000789Z (leap day)
        assert_eq!(
            format_rfc3339_ns(1_709_210_096 * NS_PER_SEC + 789),
            "2024-02-29T12:34:56.000000789Z"
        );
    }
}
