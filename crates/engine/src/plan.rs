//! What the engine runs: tasks, worker count, window and period lengths.

use crate::EngineError;
use netspectra_model::config::{Config, SketchAlgorithm};
use netspectra_model::task::{configured_tasks, TaskKind, TaskSpec};
use netspectra_model::Projection;

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
    /// How far the packet clock must pass a window's end before
    /// [`crate::EngineInput::tick`] closes it without a later packet.
    pub grace_ns: u64,
    /// Records per batch sent to a worker.
    pub batch_size: usize,
    /// Batches buffered per worker before the producer waits.
    pub queue_batches: usize,
    /// Run an exact shadow beside every sketch task and report its accuracy.
    pub verify: bool,
    /// The thread that pushes records is worker 0 itself, rather than a
    /// reader beside `workers` worker threads: `workers` threads in all, the
    /// reader's work counted in worker 0's share of keys. For input that can
    /// wait (a file); live capture keeps its reader on a thread of its own,
    /// draining the interface while the workers count.
    pub inline_worker: bool,
    /// Rows kept per exact task in the run totals, the largest by bytes
    /// ([`crate::TaskTotals::top`]); 0 keeps every key. A report that shows
    /// ten rows need not copy a million out of the tables after the last
    /// packet.
    pub top_rows: usize,
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

    /// For each task, the exact task whose window rows its rows are summed
    /// from when the window ends, because its key is a function of that
    /// task's key (`per_src_ip` from `per_flow`): each packet then costs one
    /// table update, not one per exact task, and the rows are the same
    /// (counters merge associatively). The source is the task with the
    /// fewest dimensions among those that count packets themselves. `None`:
    /// the task counts packets itself (sketches always do).
    pub fn rollup_sources(&self) -> Vec<Option<usize>> {
        let keys: Vec<Option<Projection>> = self
            .tasks
            .iter()
            .map(|t| (t.kind == TaskKind::Exact).then(|| Projection::new(&t.key)))
            .collect();
        // `fine` can make `coarse`'s rows; of two tasks with the same key
        // fields, the first counts and the second is rolled up.
        let feeds = |fine: usize, coarse: usize| match (&keys[fine], &keys[coarse]) {
            (Some(f), Some(c)) if fine != coarse => {
                c.rolls_up(f) && (fine < coarse || !f.rolls_up(c))
            }
            _ => false,
        };
        let n = keys.len();
        let counts: Vec<bool> = (0..n).map(|t| !(0..n).any(|f| feeds(f, t))).collect();
        // A task that counts has no source: nothing feeds it.
        (0..n)
            .map(|t| {
                (0..n)
                    .filter(|&f| counts[f] && feeds(f, t))
                    .min_by_key(|&f| self.tasks[f].key.len())
            })
            .collect()
    }

    /// Builds the plan from configuration. `workers` = 0 takes
    /// `aggregator.num_workers`, and 0 there means one worker per core.
    pub fn from_config(cfg: &Config, workers: usize) -> Result<EnginePlan, EngineError> {
        let tasks = configured_tasks(cfg);
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
        // By default 256 batches (262 144 packets, ~19 MB) per worker: the
        // cost of a packet follows the traffic (a scan slows the
        // SuperSpread worker for a while), and a queue holding ~0.1 s of
        // packets lets the threads even out instead of waiting on each
        // other; `analyze` measured 4 % faster than with 64.
        let queue_batches = cfg
            .aggregator
            .size_of_packet_channel
            .map_or(256, |n| (n / batch_size).clamp(2, 4096));
        Ok(EnginePlan {
            tasks,
            workers,
            window_ns: cfg.window_ns(),
            period_ns: cfg.aggregator.period.0,
            grace_ns: cfg.aggregator.grace.0,
            batch_size,
            queue_batches,
            verify: false,
            inline_worker: false,
            top_rows: 0,
        })
    }
}
