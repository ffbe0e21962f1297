//! Alert records to and from `netspectra.v1.Alert` (ListAlerts' message,
//! reused by `AnalyzeAlert`), so a remote analyst sees the same structured
//! alert the alerter holds.

use crate::pb;
use netspectra_model::alert::AlertRecord;
use prost_types::Timestamp;
use serde_json::{Map, Value};

fn stamp(ns: u64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    })
}

/// Nanoseconds of a timestamp; before 1970 or malformed counts as 0 (an
/// alert's times only give the analysis context).
fn ns(t: &Timestamp) -> u64 {
    u64::try_from(t.seconds)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|s| s.checked_add(u64::try_from(t.nanos).ok()?))
        .unwrap_or(0)
}

/// The key object's values as text (`SrcIP` → `10.0.0.1`, `DstPort` →
/// `443`, an untagged `VLAN` → `null`), as ListAlerts sends them.
pub fn key_map(key_json: &str) -> std::collections::HashMap<String, String> {
    let key: Map<String, Value> = serde_json::from_str(key_json).unwrap_or_default();
    key.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

/// The key object back from its text values: numbers and `null` were
/// numbers and `null`; everything else (addresses, networks) text.
/// Dimensions in sorted order, so the text is the same however the map
/// was ordered on the wire.
fn key_json(key: std::collections::HashMap<String, String>) -> String {
    let mut pairs: Vec<_> = key.into_iter().collect();
    pairs.sort();
    let object: Map<String, Value> = pairs
        .into_iter()
        .map(|(k, v)| {
            let value = match serde_json::from_str::<Value>(&v) {
                Ok(n @ (Value::Number(_) | Value::Null)) => n,
                _ => Value::String(v),
            };
            (k, value)
        })
        .collect();
    Value::Object(object).to_string()
}

/// A stored or notified alert as the wire message.
pub fn to_pb(a: &AlertRecord) -> pb::Alert {
    pb::Alert {
        rule: a.rule.clone(),
        task: a.task.clone(),
        key: key_map(&a.key),
        metric: a.metric.clone(),
        value: a.value,
        operator: a.operator.clone(),
        threshold: a.threshold,
        severity: a.severity.clone(),
        state: a.state.clone(),
        window_start: stamp(a.window_start_ns),
        starts_at: stamp(a.starts_at_ns),
        ends_at: a.ends_at_ns.and_then(stamp),
        analysis: a.analysis.clone().unwrap_or_default(),
    }
}

/// The wire message as the record an analyst reads.
pub fn from_pb(a: pb::Alert) -> AlertRecord {
    AlertRecord {
        rule: a.rule,
        task: a.task,
        key: key_json(a.key),
        metric: a.metric,
        value: a.value,
        operator: a.operator,
        threshold: a.threshold,
        severity: a.severity,
        state: a.state,
        window_start_ns: a.window_start.as_ref().map_or(0, ns),
        starts_at_ns: a.starts_at.as_ref().map_or(0, ns),
        ends_at_ns: a.ends_at.as_ref().map(ns),
        analysis: Some(a.analysis).filter(|s| !s.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_survives_the_wire() {
        let record = AlertRecord {
            rule: "scanner".into(),
            task: "per_src_ip_spread".into(),
            key: r#"{"DstPort":443,"SrcIP":"192.0.2.66","SrcNet/24":"192.0.2.0/24","VLAN":null}"#
                .into(),
            metric: "distinct".into(),
            value: 50213.0,
            operator: ">".into(),
            threshold: 5000.0,
            severity: "critical".into(),
            state: "firing".into(),
            window_start_ns: 1_700_000_000_000_000_000,
            starts_at_ns: 1_700_000_060_000_000_000,
            ends_at_ns: Some(1_700_000_120_500_000_000),
            analysis: None,
        };
        assert_eq!(from_pb(to_pb(&record)), record);
        let task_wide = AlertRecord {
            key: "{}".into(),
            ends_at_ns: None,
            analysis: Some("**busy**".into()),
            ..record
        };
        assert_eq!(from_pb(to_pb(&task_wide)), task_wide);
    }
}
