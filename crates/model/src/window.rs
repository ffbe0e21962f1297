//! What a run produces and where it goes: a window's exact rows
//! ([`WindowResult`], per-key [`FlowCounters`]), a sketch task's period
//! ([`SketchPeriod`] of [`Estimate`]s), and the [`WindowSink`] that stores
//! them — shared by the engine that produces results and the stores that
//! keep them, so neither depends on the other.
//!
//! A window does not copy its rows: whoever produced them keeps them and
//! lends them through [`TaskRows`] for the duration of the sink call.
//!
//! ```
//! use netspectra_model::window::{FlowCounters, WindowResult};
//! use netspectra_model::FlowKey;
//!
//! let rows = vec![vec![(FlowKey::default(), FlowCounters::one(5, 60))], vec![]];
//! let window = WindowResult::new(0, 10, &rows);
//! assert_eq!((window.row_count(0), window.row_count(1)), (1, 0));
//! assert_eq!(window.rows(0).map(|(_, c)| c.bytes).sum::<u64>(), 60);
//! ```

use crate::task::TaskSpec;
use crate::FlowKey;

/// Counters of one key. Merging is associative and commutative, which is what
/// makes results independent of how packets were spread over workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Packets.
    pub packets: u64,
    /// Bytes on the wire.
    pub bytes: u64,
    /// Earliest packet timestamp (ns).
    pub first_seen: u64,
    /// Latest packet timestamp (ns) — the maximum, not the last processed.
    pub last_seen: u64,
}

impl FlowCounters {
    /// Counters of a single packet.
    #[inline]
    pub fn one(ts_ns: u64, bytes: u32) -> FlowCounters {
        FlowCounters {
            packets: 1,
            bytes: u64::from(bytes),
            first_seen: ts_ns,
            last_seen: ts_ns,
        }
    }

    /// Adds one packet.
    #[inline]
    pub fn add(&mut self, ts_ns: u64, bytes: u32) {
        self.packets += 1;
        self.bytes += u64::from(bytes);
        self.first_seen = self.first_seen.min(ts_ns);
        self.last_seen = self.last_seen.max(ts_ns);
    }

    /// Adds another key's counters (same key, other worker or window).
    #[inline]
    pub fn merge(&mut self, o: &FlowCounters) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.first_seen = self.first_seen.min(o.first_seen);
        self.last_seen = self.last_seen.max(o.last_seen);
    }
}

/// One estimate as reported: the key, the estimate and how far off it may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// The key.
    pub key: FlowKey,
    /// Estimated packets, bytes or distinct elements.
    pub estimate: u64,
    /// Bound on the estimate's error: Count-Min one-sided `ε·N`
    /// (probability `1 − e^−d`); heavy-hitter buckets the expected `N/w`
    /// undercount; SuperSpread two standard errors.
    pub error_bound: u64,
}

/// One sketch task's merged result for one period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SketchPeriod {
    /// Period start (ns).
    pub start_ns: u64,
    /// Period end (ns, exclusive).
    pub end_ns: u64,
    /// Heavy hitters by packets (Count-Min, hh).
    pub heavy_packets: Vec<Estimate>,
    /// Heavy hitters by bytes (Count-Min, hh).
    pub heavy_bytes: Vec<Estimate>,
    /// Super-spreaders (SuperSpread).
    pub spreaders: Vec<Estimate>,
    /// Bytes allocated by the task's sketches, summed over workers.
    pub memory_bytes: usize,
    /// Packets the task saw.
    pub packets: u64,
    /// Bytes the task saw.
    pub bytes: u64,
    /// Some of the period's traffic of this engine's keys went to another
    /// engine (a shard changed owner mid-period: a failover, or any move on
    /// core NATS): estimates may be low and distinct counts split. Stored
    /// with the rows and shown in API answers.
    pub partial: bool,
}

/// The exact rows of one window, per task, as their owner keeps them: in
/// parts holding disjoint keys, which separate threads may read at once.
///
/// The engine implements it over its flow tables (a part per worker) and
/// lends them to the sink ([`WindowResult::new`]), so handing a window over
/// copies no row, and a store can encode a big window's parts in parallel.
/// `Vec<Vec<(FlowKey, FlowCounters)>>` implements it too (one list, one
/// part, per task), for tests and for windows rebuilt from elsewhere.
pub trait TaskRows {
    /// Number of parts of task `task` (configuration order; sketch tasks
    /// have rows in none).
    fn parts(&self, task: usize) -> usize;

    /// The rows of part `part` of task `task`, in no particular order.
    ///
    /// Rows come by value: an owner may keep keys in a form of its own (the
    /// engine packs IPv4 keys smaller) and rebuild each [`FlowKey`] as it
    /// goes.
    fn part(
        &self,
        task: usize,
        part: usize,
    ) -> Box<dyn Iterator<Item = (FlowKey, FlowCounters)> + '_>;

    /// Number of rows of part `part` of task `task`.
    fn part_len(&self, task: usize, part: usize) -> usize;
}

impl TaskRows for Vec<Vec<(FlowKey, FlowCounters)>> {
    fn parts(&self, _task: usize) -> usize {
        1
    }

    fn part(
        &self,
        task: usize,
        _part: usize,
    ) -> Box<dyn Iterator<Item = (FlowKey, FlowCounters)> + '_> {
        Box::new(self[task].iter().copied())
    }

    fn part_len(&self, task: usize, _part: usize) -> usize {
        self[task].len()
    }
}

/// One window's exact rows, merged over all workers: per-window deltas.
/// Borrows the rows from their owner for as long as a sink looks at them.
#[derive(Clone, Copy)]
pub struct WindowResult<'a> {
    /// Window start (ns, inclusive).
    pub start_ns: u64,
    /// Window end (ns, exclusive).
    pub end_ns: u64,
    rows: &'a (dyn TaskRows + Sync),
}

impl<'a> WindowResult<'a> {
    /// The window `[start_ns, end_ns)` whose rows `rows` holds.
    pub fn new(start_ns: u64, end_ns: u64, rows: &'a (dyn TaskRows + Sync)) -> WindowResult<'a> {
        WindowResult {
            start_ns,
            end_ns,
            rows,
        }
    }

    /// The rows of task `task` (configuration order; none for sketch tasks).
    pub fn rows(&self, task: usize) -> impl Iterator<Item = (FlowKey, FlowCounters)> + 'a {
        let rows = self.rows;
        (0..rows.parts(task)).flat_map(move |p| rows.part(task, p))
    }

    /// Number of rows of task `task`.
    pub fn row_count(&self, task: usize) -> usize {
        (0..self.parts(task)).map(|p| self.part_len(task, p)).sum()
    }

    /// Number of parts of task `task`'s rows ([`TaskRows`]).
    pub fn parts(&self, task: usize) -> usize {
        self.rows.parts(task)
    }

    /// The rows of part `part` of task `task`.
    pub fn part(
        &self,
        task: usize,
        part: usize,
    ) -> impl Iterator<Item = (FlowKey, FlowCounters)> + 'a {
        self.rows.part(task, part)
    }

    /// Number of rows of part `part` of task `task`.
    pub fn part_len(&self, task: usize, part: usize) -> usize {
        self.rows.part_len(task, part)
    }
}

impl std::fmt::Debug for WindowResult<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowResult")
            .field("start_ns", &self.start_ns)
            .field("end_ns", &self.end_ns)
            .finish_non_exhaustive()
    }
}

/// A sink could not store a window.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Where merged results go (a store, a bus, a test). Called on the engine's
/// collector thread, in time order.
pub trait WindowSink: Send {
    /// Stores one merged window of exact rows.
    fn window(&mut self, tasks: &[TaskSpec], window: &WindowResult<'_>) -> Result<(), SinkError>;

    /// Stores one merged window together with a consumer's progress: an
    /// opaque string (JSON) the caller builds, saying which input it has
    /// applied up to and including this window, kept per `consumer` and
    /// replaced by each call. A sink that can should write both atomically
    /// (the SQLite store does: one transaction) or at least never the
    /// progress before the rows it covers; the default ignores the progress.
    fn window_with_progress(
        &mut self,
        tasks: &[TaskSpec],
        window: &WindowResult<'_>,
        _consumer: &str,
        _progress: &str,
    ) -> Result<(), SinkError> {
        self.window(tasks, window)
    }

    /// Stores one sketch task's merged result for a period.
    fn sketch_period(&mut self, _task: &TaskSpec, _period: &SketchPeriod) -> Result<(), SinkError> {
        Ok(())
    }

    /// Calls `done` once everything handed to this sink so far is durable:
    /// in the store, or fsynced into a spool that will replay it. Acks of
    /// the input wait for it. A sink that writes synchronously (the default)
    /// calls it at once; one that writes from a queue calls it later, in
    /// the order of the calls. The engine also calls it after the last
    /// window of a run, so a sink that groups windows into commits stores
    /// its last group before the run ends.
    fn when_durable(&mut self, done: Box<dyn FnOnce() + Send>) -> Result<(), SinkError> {
        done();
        Ok(())
    }

    /// Stores alert transitions found by an in-process alerter (table
    /// `alerts`), after the windows that caused them. A sink that keeps
    /// nothing ignores them (the default).
    fn alerts(&mut self, _alerts: &[crate::alert::AlertRecord]) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A sink that keeps nothing (`--no-store`).
pub struct NullSink;

impl WindowSink for NullSink {
    fn window(&mut self, _: &[TaskSpec], _: &WindowResult<'_>) -> Result<(), SinkError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_merge_like_adding_packets() {
        let mut a = FlowCounters::one(10, 100);
        a.add(5, 40);
        let mut b = FlowCounters::one(20, 1);
        b.merge(&a);
        assert_eq!(
            b,
            FlowCounters {
                packets: 3,
                bytes: 141,
                first_seen: 5,
                last_seen: 20
            }
        );
    }

    #[test]
    fn a_window_lends_its_owners_rows() {
        let key = FlowKey::default();
        let rows = vec![vec![], vec![(key, FlowCounters::one(1, 2))]];
        let w = WindowResult::new(0, 100, &rows);
        let copy = w;
        assert_eq!(copy.row_count(0), 0);
        assert_eq!(copy.rows(0).count(), 0);
        assert_eq!(copy.row_count(1), 1);
        assert_eq!(copy.rows(1).next(), Some((key, FlowCounters::one(1, 2))));
        let mut sink = NullSink;
        sink.window(&[], &w).unwrap();
        assert!(format!("{w:?}").contains("end_ns: 100"));
    }
}
