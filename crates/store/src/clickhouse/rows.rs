//! Owned rows as they travel to ClickHouse (RowBinary) and to the spool (JSON).
//!
//! Field order is the tables' column order (see [`super::schema`]); the
//! insert names its columns, so the order is a convenience, not a contract.

use netspectra_model::alert::AlertRecord;
use netspectra_model::task::{TaskKind, TaskSpec};
use netspectra_model::window::{Estimate, SketchPeriod, WindowResult};
use netspectra_model::FlowKey;
use serde::{Deserialize, Serialize};

/// One row of `runs` (a `ReplacingMergeTree(version)`: the finish row,
/// version 2, replaces the start row, version 1).
#[derive(Clone, Debug, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub(crate) struct RunRow {
    pub run_id: u64,
    pub version: u64,
    pub engine_id: String,
    pub command: String,
    /// `DateTime('UTC')`: seconds since the epoch.
    pub started_at: u32,
    pub started_at_ns: i64,
    /// 0 while the run is running.
    pub finished_at_ns: i64,
    pub status: String,
    pub inputs: String,
    pub packets: u64,
    pub bytes: u64,
    /// JSON decode counters; empty while running.
    pub decoded: String,
}

/// One row of `tasks`.
#[derive(Clone, Debug, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub(crate) struct TaskRow {
    pub run_id: u64,
    pub name: String,
    pub kind: String,
    pub key: String,
    pub window_ns: i64,
    /// Sketch algorithm (`countmin`, `hh`, `superspread`); empty for exact
    /// tasks (and in spools written before the column existed).
    #[serde(default)]
    pub algorithm: String,
}

/// One row of `exact_rows`: one window's delta for one key of one task.
#[derive(Clone, Debug, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub(crate) struct ExactRow {
    pub run_id: u64,
    pub engine_id: String,
    pub task: String,
    pub window_start: u32,
    pub window_start_ns: i64,
    pub window_end_ns: i64,
    pub src_ip: [u8; 16],
    pub dst_ip: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub vlan: u16,
    pub packets: u64,
    pub bytes: u64,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// One row of `sketch_rows`: one reported estimate of one period.
#[derive(Clone, Debug, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub(crate) struct SketchRow {
    pub run_id: u64,
    pub engine_id: String,
    pub task: String,
    pub algorithm: String,
    pub measure: String,
    pub period_start: u32,
    pub period_start_ns: i64,
    pub period_end_ns: i64,
    pub src_ip: [u8; 16],
    pub dst_ip: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub vlan: u16,
    pub estimate: u64,
    pub error_bound: u64,
    pub partial: u8,
}

/// One row of `bus_progress` (a `ReplacingMergeTree(version)` by
/// `(engine_id, consumer)`: the newest version is the engine's progress).
#[derive(Clone, Debug, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub(crate) struct ProgressRow {
    pub engine_id: String,
    pub consumer: String,
    /// Wall-clock ns, strictly increasing per sink.
    pub version: u64,
    pub state: String,
    pub updated_at_ns: i64,
}

/// One row of `alerts` (see [`crate::schema`]): `ends_at_ns` 0 and an
/// empty `analysis` stand for none.
#[derive(Clone, Debug, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub(crate) struct AlertRow {
    pub rule: String,
    pub task: String,
    pub key: String,
    pub metric: String,
    pub value: f64,
    pub operator: String,
    pub threshold: f64,
    pub severity: String,
    pub state: String,
    /// `DateTime('UTC')`: seconds since the epoch.
    pub window_start: u32,
    pub window_start_ns: i64,
    pub starts_at_ns: i64,
    pub ends_at_ns: i64,
    pub analysis: String,
    pub recorded_at_ns: i64,
}

impl AlertRow {
    pub(crate) fn from_record(a: &AlertRecord, recorded_at_ns: i64) -> AlertRow {
        AlertRow {
            rule: a.rule.clone(),
            task: a.task.clone(),
            key: a.key.clone(),
            metric: a.metric.clone(),
            value: a.value,
            operator: a.operator.clone(),
            threshold: a.threshold,
            severity: a.severity.clone(),
            state: a.state.clone(),
            window_start: (a.window_start_ns / 1_000_000_000).min(u64::from(u32::MAX)) as u32,
            window_start_ns: a.window_start_ns as i64,
            starts_at_ns: a.starts_at_ns as i64,
            ends_at_ns: a.ends_at_ns.unwrap_or(0) as i64,
            analysis: a.analysis.clone().unwrap_or_default(),
            recorded_at_ns,
        }
    }

    pub(crate) fn into_record(self) -> AlertRecord {
        AlertRecord {
            rule: self.rule,
            task: self.task,
            key: self.key,
            metric: self.metric,
            value: self.value,
            operator: self.operator,
            threshold: self.threshold,
            severity: self.severity,
            state: self.state,
            window_start_ns: self.window_start_ns.max(0) as u64,
            starts_at_ns: self.starts_at_ns.max(0) as u64,
            ends_at_ns: (self.ends_at_ns > 0).then_some(self.ends_at_ns as u64),
            analysis: (!self.analysis.is_empty()).then_some(self.analysis),
        }
    }
}

/// One row of `alert_state` (a `ReplacingMergeTree(version)` by `alerter`).
#[derive(Clone, Debug, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub(crate) struct AlertStateRow {
    pub alerter: String,
    pub version: u64,
    pub state: String,
    pub updated_at_ns: i64,
}

/// Rows for one table: the unit the writer inserts, retries and spools.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Batch {
    Runs(Vec<RunRow>),
    Tasks(Vec<TaskRow>),
    ExactRows(Vec<ExactRow>),
    SketchRows(Vec<SketchRow>),
    Progress(Vec<ProgressRow>),
    Alerts(Vec<AlertRow>),
    AlertState(Vec<AlertStateRow>),
}

impl Batch {
    /// Rows in the batch.
    pub fn len(&self) -> usize {
        match self {
            Batch::Runs(r) => r.len(),
            Batch::Tasks(r) => r.len(),
            Batch::ExactRows(r) => r.len(),
            Batch::SketchRows(r) => r.len(),
            Batch::Progress(r) => r.len(),
            Batch::Alerts(r) => r.len(),
            Batch::AlertState(r) => r.len(),
        }
    }

    /// The table the rows go to.
    pub fn table(&self) -> &'static str {
        match self {
            Batch::Runs(_) => "runs",
            Batch::Tasks(_) => "tasks",
            Batch::ExactRows(_) => "exact_rows",
            Batch::SketchRows(_) => "sketch_rows",
            Batch::Progress(_) => "bus_progress",
            Batch::Alerts(_) => "alerts",
            Batch::AlertState(_) => "alert_state",
        }
    }

    /// Appends `other` when it is for the same table and the result stays
    /// within `max` rows; otherwise hands `other` back.
    pub fn try_append(&mut self, other: Batch, max: usize) -> Result<(), Batch> {
        if self.len() + other.len() > max {
            return Err(other);
        }
        match (self, other) {
            (Batch::Runs(a), Batch::Runs(b)) => a.extend(b),
            (Batch::Tasks(a), Batch::Tasks(b)) => a.extend(b),
            (Batch::ExactRows(a), Batch::ExactRows(b)) => a.extend(b),
            (Batch::SketchRows(a), Batch::SketchRows(b)) => a.extend(b),
            (Batch::Progress(a), Batch::Progress(b)) => a.extend(b),
            (Batch::Alerts(a), Batch::Alerts(b)) => a.extend(b),
            (Batch::AlertState(a), Batch::AlertState(b)) => a.extend(b),
            (_, other) => return Err(other),
        }
        Ok(())
    }
}

/// Seconds of a nanosecond timestamp, as a `DateTime` (saturating: the
/// column covers 1970–2106).
pub(crate) fn datetime(ns: u64) -> u32 {
    u32::try_from(ns / 1_000_000_000).unwrap_or(u32::MAX)
}

fn ns(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The rows of one window, all exact tasks, in chunks of at most `max` rows.
pub(crate) fn exact_batches(
    run_id: u64,
    engine_id: &str,
    tasks: &[TaskSpec],
    w: &WindowResult,
    max: usize,
) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut rows = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        if task.kind != TaskKind::Exact {
            continue;
        }
        for (key, c) in w.rows(i) {
            rows.push(ExactRow {
                run_id,
                engine_id: engine_id.to_string(),
                task: task.name.clone(),
                window_start: datetime(w.start_ns),
                window_start_ns: ns(w.start_ns),
                window_end_ns: ns(w.end_ns),
                src_ip: key.src_ip,
                dst_ip: key.dst_ip,
                src_port: key.src_port,
                dst_port: key.dst_port,
                protocol: key.protocol,
                vlan: key.vlan,
                packets: c.packets,
                bytes: c.bytes,
                first_seen: ns(c.first_seen),
                last_seen: ns(c.last_seen),
            });
            if rows.len() == max {
                out.push(Batch::ExactRows(std::mem::take(&mut rows)));
            }
        }
    }
    if !rows.is_empty() {
        out.push(Batch::ExactRows(rows));
    }
    out
}

/// The reported estimates of one sketch task's period.
pub(crate) fn sketch_batch(
    run_id: u64,
    engine_id: &str,
    task: &TaskSpec,
    p: &SketchPeriod,
) -> Option<Batch> {
    let TaskKind::Sketch(algorithm) = task.kind else {
        return None;
    };
    let lists: [(&str, &[Estimate]); 3] = [
        ("packets", &p.heavy_packets),
        ("bytes", &p.heavy_bytes),
        ("distinct", &p.spreaders),
    ];
    let mut rows = Vec::new();
    for (measure, list) in lists {
        for e in list {
            let k: &FlowKey = &e.key;
            rows.push(SketchRow {
                run_id,
                engine_id: engine_id.to_string(),
                task: task.name.clone(),
                algorithm: algorithm.name().to_string(),
                measure: measure.to_string(),
                period_start: datetime(p.start_ns),
                period_start_ns: ns(p.start_ns),
                period_end_ns: ns(p.end_ns),
                src_ip: k.src_ip,
                dst_ip: k.dst_ip,
                src_port: k.src_port,
                dst_port: k.dst_port,
                protocol: k.protocol,
                vlan: k.vlan,
                estimate: e.estimate,
                error_bound: e.error_bound,
                partial: u8::from(p.partial),
            });
        }
    }
    (!rows.is_empty()).then_some(Batch::SketchRows(rows))
}
