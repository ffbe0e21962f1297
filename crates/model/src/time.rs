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

/// Text that is not an RFC 3339 timestamp.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid timestamp `{0}`: use RFC 3339, e.g. `2026-01-01T00:00:00Z` or `2026-01-01T08:00:00.5+08:00`")]
pub struct BadTimestamp(pub String);

/// Parses RFC 3339 (`2026-01-01T00:00:00Z`, optional fraction up to ns,
/// `Z` or `±hh:mm`; `t`/space for `T`) into ns since the epoch. Times before
/// 1970 or after 2554 (the end of 64-bit ns) are rejected.
pub fn parse_rfc3339_ns(text: &str) -> Result<u64, BadTimestamp> {
    let err = || BadTimestamp(text.to_string());
    let b = text.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64, BadTimestamp> {
        let s = b.get(r).ok_or_else(err)?;
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return Err(err());
        }
        Ok(s.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(err());
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > i64::from(days_in_month(year, month as u32))
        || hour > 23
        || min > 59
        || sec > 60
    {
        return Err(err());
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 9 {
            return Err(err());
        }
        nanos = num(start..i)? * 10i64.pow(9 - digits as u32);
    }
    let offset_s = match b.get(i..).ok_or_else(err)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return Err(err());
            }
            let s = h * 3600 + m * 60;
            if *sign == b'+' {
                s
            } else {
                -s
            }
        }
        _ => return Err(err()),
    };
    let secs =
        days_from_civil(year, month as u32, day as u32) * 86_400 + hour * 3600 + min * 60 + sec
            - offset_s;
    u64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(NS_PER_SEC))
        .and_then(|ns| ns.checked_add(nanos as u64))
        .ok_or_else(err)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Proleptic Gregorian (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    fn rfc3339_round_trips_and_honours_offsets() {
        for ns in [0u64, 1_767_225_600_123_456_789, 951_782_400 * NS_PER_SEC] {
            assert_eq!(parse_rfc3339_ns(&format_rfc3339_ns(ns)), Ok(ns));
        }
        assert_eq!(
            parse_rfc3339_ns("2026-01-01T08:00:00+08:00"),
            parse_rfc3339_ns("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            parse_rfc3339_ns("2026-01-01 00:00:00.5z"),
            Ok(1_767_225_600 * NS_PER_SEC + 500_000_000)
        );
        for bad in [
            "",
            "2026-01-01",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0800",
            "1969-12-31T23:59:59Z",
            "2600-01-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
        ] {
            assert!(parse_rfc3339_ns(bad).is_err(), "{bad}");
        }
    }

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
