//! What the engine runs: tasks, worker count, window and period lengths.

use crate::EngineError;
use netspectra_model::config::{Config, SketchAlgorithm, SketchTaskConfig, TaskGroup};
use netspectra_model::Dimension;

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
    fn resolve(algorithm: SketchAlgorithm, t: &SketchTaskConfig) -> SketchParams {
        let (width, depth) = match algorithm {
            SketchAlgorithm::CountMin => (1 << 16, 4),
            SketchAlgorithm::Hh | SketchAlgorithm::SuperSpread => (1 << 15, 2),
        };
        let count_threshold = match algorithm {
            SketchAlgorithm::SuperSpread => t.threshold.or(t.count_threshold).unwrap_or(1024),
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

/// Everything the engine needs to start.
#[derive(Clone, Debug)]
pub struct EnginePlan {
    /// Tasks in configuration order (at most [`EnginePlan::MAX_TASKS`]).
    pub tasks: Vec<TaskSpec>,
    /// Worker threads (≥ 1).
    pub workers: usize,
    /// Window length in nanoseconds of packet time (exact rows are per window).
    pub window_ns: u64,
    /// Period length in nanoseconds of packet time (sketches reset per period).
    pub period_ns: u64,
    /// Records per batch sent to a worker.
    pub batch_size: usize,
    /// Batches buffered per worker before the producer waits.
    pub queue_batches: usize,
    /// Run an exact shadow beside every sketch task and report its accuracy.
    pub verify: bool,
}

impl EnginePlan {
    /// Tasks are selected per packet with a 64-bit mask.
    pub const MAX_TASKS: usize = 64;

    /// The one worker that runs task `task`, for sketches that cannot be
    /// merged across workers (heavy-hitter buckets, SuperSpread): they are
    /// spread over the workers from the last one, which keeps worker 0 for
    /// the most shared work. `None`: the task runs on every worker.
    pub fn pinned_worker(&self, task: usize) -> Option<usize> {
        let unmergeable =
            |t: &TaskSpec| matches!(t.kind, TaskKind::Sketch(a) if a != SketchAlgorithm::CountMin);
        if !unmergeable(&self.tasks[task]) {
            return None;
        }
        let workers = self.workers.max(1);
        let nth = self.tasks[..task].iter().filter(|t| unmergeable(t)).count();
        Some(workers - 1 - nth % workers)
    }

    /// Builds the plan from configuration. `workers` = 0 takes
    /// `aggregator.num_workers`, and 0 there means one worker per core.
    pub fn from_config(cfg: &Config, workers: usize) -> Result<EnginePlan, EngineError> {
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
        if tasks.is_empty() {
            return Err(EngineError::Plan(
                "no task to run: aggregator.types and the task lists leave nothing enabled".into(),
            ));
        }
        if tasks.len() > Self::MAX_TASKS {
            return Err(EngineError::Plan(format!(
                "{} tasks configured; at most {} are supported",
                tasks.len(),
                Self::MAX_TASKS
            )));
        }
        let workers = match (workers, cfg.aggregator.num_workers) {
            (0, 0) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            (0, n) | (n, _) => n,
        };
        let batch_size = 1024;
        let queue_batches = cfg
            .aggregator
            .size_of_packet_channel
            .map_or(64, |n| (n / batch_size).clamp(2, 4096));
        Ok(EnginePlan {
            tasks,
            workers,
            window_ns: cfg.window_ns(),
            period_ns: cfg.aggregator.period.0,
            batch_size,
            queue_batches,
            verify: false,
        })
    }
}
