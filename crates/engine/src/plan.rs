//! What the engine runs: tasks, worker count, window length.

use crate::EngineError;
use netspectra_model::config::{Config, TaskGroup};
use netspectra_model::Dimension;

/// The kind of computation a task performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// Per-key packets, bytes, first and last seen; 100 % accurate.
    Exact,
}

impl TaskKind {
    /// Name used in output and the store.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Exact => "exact",
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
}

/// Everything the engine needs to start.
#[derive(Clone, Debug)]
pub struct EnginePlan {
    /// Tasks in configuration order (at most [`EnginePlan::MAX_TASKS`]).
    pub tasks: Vec<TaskSpec>,
    /// Worker threads (≥ 1).
    pub workers: usize,
    /// Window length in nanoseconds of packet time.
    pub window_ns: u64,
    /// Records per batch sent to a worker.
    pub batch_size: usize,
    /// Batches buffered per worker before the producer waits.
    pub queue_batches: usize,
}

impl EnginePlan {
    /// Tasks are selected per packet with a 64-bit mask.
    pub const MAX_TASKS: usize = 64;

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
                });
            }
        }
        if cfg.group_enabled(TaskGroup::Sketch) && !cfg.aggregator.sketch.tasks.is_empty() {
            return Err(EngineError::Plan(
                "sketch tasks (aggregator.sketch.tasks) are not supported by this version".into(),
            ));
        }
        if tasks.is_empty() {
            return Err(EngineError::Plan(
                "no task to run: aggregator.types and aggregator.exact.tasks leave nothing enabled"
                    .into(),
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
            batch_size,
            queue_batches,
        })
    }
}
