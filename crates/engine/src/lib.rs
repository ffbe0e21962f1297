//! The engine: configured tasks, run by a pool of sharded workers over
//! packet-time windows.
//!
//! ```text
//!  EngineInput::push ──► shard by task-key hash ──► worker 0..N (own tables, no locks)
//!        │ window boundary in packet time: Flush marker to every worker
//!        ▼
//!  collector thread: joins the N parts of a window ──► WindowSink (store) + run totals
//! ```
//!
//! Windows follow packet timestamps, so replaying a capture gives the windows
//! of the live run that recorded it. Each window's rows are deltas: summing
//! rows over windows gives run totals, and nothing is counted twice. A key
//! is always counted by the same worker, so the workers' parts of a window
//! hold disjoint keys and are joined, not merged. An exact task whose key
//! is a function of another's (`per_src_ip` of `per_flow`) is not counted:
//! the collector sums its rows from the other task's when the window ends
//! ([`EnginePlan::rollup_sources`]). The exact rows, and every
//! sketch but Count-Min (whose per-worker sketches are summed), are the same
//! for any worker count.
//!
//! Worker 0 is a thread of its own, or, with [`EnginePlan::inline_worker`]
//! (offline analysis), the pushing thread itself: then `workers` threads do
//! everything, the reader's share of the work weighed in when keys are split.
//!
//! ```
//! use netspectra_engine::{Engine, EnginePlan, NullSink};
//! use netspectra_model::{config::Config, ip, L3, PacketRecord};
//!
//! let plan = EnginePlan::from_config(&Config::default(), 2).unwrap();
//! let mut input = Engine::start(plan, Box::new(NullSink)).unwrap();
//! let rec = PacketRecord { l3: L3::Ipv4, src_ip: ip::from_v4([10, 0, 0, 1]),
//!     dst_ip: ip::from_v4([10, 0, 0, 2]), wire_len: 60, ts_ns: 1, ..Default::default() };
//! input.push(&rec);
//! let out = input.finish().unwrap();
//! assert_eq!(out.tasks[0].packets, 1);
//! ```

mod collector;
mod exact;
mod input;
mod parallel;
mod plan;
mod sketch;
mod table;
mod worker;

pub use exact::ExactTable;
pub use input::{Engine, EngineInput};
pub use plan::EnginePlan;
pub use sketch::{SetAccuracy, SketchReport, VerifyReport};

// The types the engine shares with the stores live in `netspectra_model`
// (so a store does not depend on the engine); they are re-exported here
// under their usual names.
pub use netspectra_model::task::{SketchParams, TaskKind, TaskSpec};
pub use netspectra_model::window::{
    Estimate, FlowCounters, NullSink, SinkError, SketchPeriod, TaskRows, WindowResult, WindowSink,
};

use netspectra_model::FlowKey;

/// What went wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration cannot be turned into a runnable plan.
    #[error("invalid engine plan: {0}")]
    Plan(String),
    /// A worker thread panicked (a bug: reported rather than hidden).
    #[error("engine worker {0} stopped unexpectedly")]
    WorkerDied(usize),
    /// Writing results failed; the run's totals are still complete.
    #[error("writing window results failed: {0}")]
    Sink(#[from] SinkError),
    /// A thread could not be started.
    #[error("cannot start engine thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Run totals of one task after the input ends.
#[derive(Clone, Debug)]
pub struct TaskTotals {
    /// Task name.
    pub name: String,
    /// What the task computes.
    pub kind: TaskKind,
    /// Key dimensions.
    pub key: Vec<netspectra_model::Dimension>,
    /// Element dimensions (SuperSpread).
    pub element: Vec<netspectra_model::Dimension>,
    /// Packets counted by the task.
    pub packets: u64,
    /// Bytes (wire length) counted by the task.
    pub bytes: u64,
    /// Every key with its counters (exact tasks), in no particular order;
    /// see [`TaskTotals::top`]. With [`EnginePlan::top_rows`] set, only
    /// that many of the largest.
    pub rows: Vec<(FlowKey, FlowCounters)>,
    /// Keys counted (exact tasks), whether or not `rows` holds them all.
    pub keys: usize,
    /// Estimates (sketch tasks).
    pub sketch: Option<SketchReport>,
}

impl TaskTotals {
    /// The `n` largest rows (all when `n` is 0), ranked by bytes, then
    /// packets (both descending), then key — a deterministic order for any
    /// worker count. Selects before sorting, so a top 10 of a million keys
    /// does not sort a million rows.
    pub fn top(&mut self, n: usize) -> &[(FlowKey, FlowCounters)] {
        let n = if n == 0 {
            self.rows.len()
        } else {
            n.min(self.rows.len())
        };
        if n < self.rows.len() {
            self.rows.select_nth_unstable_by(n, rank);
        }
        self.rows[..n].sort_unstable_by(rank);
        &self.rows[..n]
    }
}

/// The order of [`TaskTotals::top`]: larger first.
fn rank(a: &(FlowKey, FlowCounters), b: &(FlowKey, FlowCounters)) -> std::cmp::Ordering {
    (b.1.bytes, b.1.packets)
        .cmp(&(a.1.bytes, a.1.packets))
        .then_with(|| a.0.cmp(&b.0))
}

/// What a finished run produced.
#[derive(Clone, Debug, Default)]
pub struct EngineOutput {
    /// One entry per task, in configuration order.
    pub tasks: Vec<TaskTotals>,
    /// Windows flushed.
    pub windows: u64,
    /// IP packets given to the engine.
    pub packets: u64,
    /// Packets whose timestamp fell before the open window (out of order);
    /// they are counted in the open window rather than dropped.
    pub late_packets: u64,
}
