//! Turning a closed window into an [`Observation`] of one rule: which
//! instances hold and with what value. The same arithmetic serves windows
//! in memory (in-process alerting, here) and windows read back from a store
//! (`crate::stored`), so a replay and a backtest agree.

use crate::rule::{Metric, Rule, Source};
use crate::state::Observation;
use netspectra_model::time::NS_PER_SEC;
use netspectra_model::window::{Estimate, SketchPeriod, WindowResult};
use netspectra_model::{Dimension, FlowKey};

/// A per-key metric's value for a key with `packets` and `bytes` in a window
/// of `window_ns`; also the task-wide totals (`keys` = distinct keys).
pub fn exact_value(metric: Metric, packets: u64, bytes: u64, keys: u64, window_ns: u64) -> f64 {
    let secs = window_ns.max(1) as f64 / NS_PER_SEC as f64;
    match metric {
        Metric::Packets | Metric::TotalPackets => packets as f64,
        Metric::Bytes | Metric::TotalBytes => bytes as f64,
        Metric::PacketsPerSecond => packets as f64 / secs,
        Metric::BitsPerSecond => bytes as f64 * 8.0 / secs,
        Metric::TotalFlows => keys as f64,
        Metric::Distinct => 0.0,
    }
}

/// The instance name of `key` under a rule keyed by `dims`: a JSON object.
pub fn key_json(key: &FlowKey, dims: &[Dimension]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = key.render(dims).into_iter().collect();
    serde_json::Value::Object(map).to_string()
}

/// The instances of an exact `rule` that hold in `window`, whose rows for
/// the rule's task are those of task number `task`.
pub fn exact_window(rule: &Rule, task: usize, window: &WindowResult<'_>) -> Observation {
    let len = window.end_ns - window.start_ns;
    let mut holding = Vec::new();
    if rule.metric.per_key() {
        for (key, c) in window.rows(task) {
            let v = exact_value(rule.metric, c.packets, c.bytes, 1, len);
            if rule.operator.holds(v, rule.threshold) {
                holding.push((key_json(&key, &rule.key), v));
            }
        }
        holding.sort_by(|a, b| a.0.cmp(&b.0));
    } else {
        let (mut packets, mut bytes) = (0u64, 0u64);
        for (_, c) in window.rows(task) {
            packets += c.packets;
            bytes += c.bytes;
        }
        let keys = window.row_count(task) as u64;
        let v = exact_value(rule.metric, packets, bytes, keys, len);
        if rule.operator.holds(v, rule.threshold) {
            holding.push(("{}".to_string(), v));
        }
    }
    Observation {
        window_start: window.start_ns,
        window_end: window.end_ns,
        holding,
        partial: false,
    }
}

/// The estimates a sketch rule reads from a period.
pub fn estimates<'a>(rule: &Rule, period: &'a SketchPeriod) -> &'a [Estimate] {
    match (rule.source, rule.metric) {
        (Source::SuperSpreaders, _) => &period.spreaders,
        (_, Metric::Bytes) => &period.heavy_bytes,
        _ => &period.heavy_packets,
    }
}

/// The instances of a sketch `rule` that hold in `period`: the reported
/// estimates (keys below the task's report threshold are not known).
pub fn sketch_period(rule: &Rule, key: &[Dimension], period: &SketchPeriod) -> Observation {
    let mut holding: Vec<(String, f64)> = estimates(rule, period)
        .iter()
        .map(|e| (key_json(&e.key, key), e.estimate as f64))
        .filter(|(_, v)| rule.operator.holds(*v, rule.threshold))
        .collect();
    holding.sort_by(|a, b| a.0.cmp(&b.0));
    Observation {
        window_start: period.start_ns,
        window_end: period.end_ns,
        holding,
        partial: period.partial,
    }
}
