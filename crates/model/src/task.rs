//! What a configured task is: its kind, keys and resolved sketch
//! parameters — shared by the engine that runs tasks and the stores that
//! record their results.
//!
//! ```
//! use netspectra_model::config::{SketchAlgorithm, SketchTaskConfig};
//! use netspectra_model::task::{SketchParams, TaskKind};
//!
//! use netspectra_model::config::Config;
//! use netspectra_model::task::configured_tasks;
//!
//! let p = SketchParams::resolve(SketchAlgorithm::CountMin, &SketchTaskConfig::default());
//! assert_eq!((p.width, p.depth, p.report), (1 << 16, 4, 20));
//! let tasks = configured_tasks(&Config::default());
//! assert_eq!(tasks[0].name, "per_src_ip");
//! assert_eq!(tasks[0].kind, TaskKind::Exact);
//! assert_eq!(tasks[3].kind, TaskKind::Sketch(SketchAlgorithm::CountMin));
//! ```

use crate::config::{Config, SketchAlgorithm, SketchTaskConfig, TaskGroup};
use crate::Dimension;

/// Distinct elements a key needs before SuperSpread reports it, unless
/// `threshold` (or `count_threshold`) says otherwise.
pub const DEFAULT_SPREAD_THRESHOLD: u64 = 1024;

/// The kind of computation a task performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// Per-key packets, bytes, first and last seen; 100 % accurate.
    Exact,
    /// A fixed-memory estimator.
    Sketch(SketchAlgorithm),
}

impl TaskKind {
    /// Name used in output and the store (`exact` or `sketch`).
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Exact => "exact",
            TaskKind::Sketch(_) => "sketch",
        }
    }
}

/// Resolved parameters of a sketch task (configuration plus defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct SketchParams {
    /// Counters or buckets per row.
    pub width: usize,
    /// Rows.
    pub depth: usize,
    /// Count-Min conservative update.
    pub conservative: bool,
    /// Count-Min candidates tracked per worker.
    pub top_k: usize,
    /// SuperSpread registers per bucket.
    pub m: usize,
    /// SuperSpread register bits.
    pub size: u32,
    /// SuperSpread decay base.
    pub b: f64,
    /// Heavy hitters: minimum packets; SuperSpread: minimum distinct elements.
    pub count_threshold: u64,
    /// Heavy hitters: minimum bytes.
    pub size_threshold: u64,
    /// Entries listed per measure.
    pub report: usize,
    /// Hash seed.
    pub seed: u64,
}

impl SketchParams {
    /// The parameters of sketch task `t` running `algorithm`: what the
    /// configuration sets, the algorithm's defaults for the rest.
    pub fn resolve(algorithm: SketchAlgorithm, t: &SketchTaskConfig) -> SketchParams {
        let (width, depth) = match algorithm {
            SketchAlgorithm::CountMin => (1 << 16, 4),
            SketchAlgorithm::Hh | SketchAlgorithm::SuperSpread => (1 << 15, 2),
        };
        let count_threshold = match algorithm {
            SketchAlgorithm::SuperSpread => t
                .threshold
                .or(t.count_threshold)
                .unwrap_or(DEFAULT_SPREAD_THRESHOLD),
            _ => t.count_threshold.unwrap_or(0),
        };
        SketchParams {
            width: t.width.unwrap_or(width),
            depth: t.depth.unwrap_or(depth),
            conservative: t.conservative.unwrap_or(true),
            top_k: t.top_k.unwrap_or(64),
            m: t.m.unwrap_or(512),
            size: t.size.unwrap_or(5),
            b: t.b.unwrap_or(1.08),
            count_threshold,
            size_threshold: t.size_threshold.unwrap_or(0),
            report: t.report.unwrap_or(20),
            seed: t.seed.unwrap_or(0x6e73_5eed),
        }
    }
}

/// One configured task.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    /// Unique name.
    pub name: String,
    /// What it computes.
    pub kind: TaskKind,
    /// Key dimensions.
    pub key: Vec<Dimension>,
    /// Element dimensions (SuperSpread: the distinct things counted per key).
    pub element: Vec<Dimension>,
    /// Sketch parameters (`None` for exact tasks).
    pub sketch: Option<SketchParams>,
}

/// The tasks `cfg` configures, in configuration order: the exact tasks, then
/// the sketch tasks, each group only if `aggregator.types` enables it. How
/// many there may be is the engine's business (it refuses none and too many).
pub fn configured_tasks(cfg: &Config) -> Vec<TaskSpec> {
    let mut tasks = Vec::new();
    if cfg.group_enabled(TaskGroup::Exact) {
        for t in &cfg.aggregator.exact.tasks {
            tasks.push(TaskSpec {
                name: t.name.clone(),
                kind: TaskKind::Exact,
                key: t.key.clone(),
                element: Vec::new(),
                sketch: None,
            });
        }
    }
    if cfg.group_enabled(TaskGroup::Sketch) {
        for t in &cfg.aggregator.sketch.tasks {
            let algorithm = t.resolved_algorithm();
            tasks.push(TaskSpec {
                name: t.name.clone(),
                kind: TaskKind::Sketch(algorithm),
                key: t.key.clone(),
                element: t.element_key.clone(),
                sketch: Some(SketchParams::resolve(algorithm, t)),
            });
        }
    }
    tasks
}
