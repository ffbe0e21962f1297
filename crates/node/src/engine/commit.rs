//! Acks follow the store: [`CommitSink`] wraps the store's sink, writes each
//! window with the JetStream progress covering it, and counts the windows
//! written so the ack queue can release the batches they hold.
//!
//! A write that fails is retried with backoff, logged each time, and shown
//! on `/readyz`; meanwhile the engine waits (back-pressure: in JetStream
//! mode nothing more is acked), so no window is ever skipped. Only a stop
//! request ends the retries, failing the run.

use crate::telemetry::Telemetry;
use crate::Shutdown;
use netspectra_bus::{progress, Dedupe};
use netspectra_engine::{SinkError, SketchPeriod, TaskSpec, WindowResult, WindowSink};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Packet times at which a shard changed owner mid-stream (taken from or
/// given to another engine): a sketch period holding one is partial.
pub(crate) type Splits = Arc<Mutex<Vec<u64>>>;

/// Why the store cannot be written now (`None`: it can), shared with the
/// consuming loop so that readiness stays false while it lasts.
pub(crate) type StoreFailure = Arc<Mutex<Option<String>>>;

/// How failed writes are retried.
pub(crate) struct Retry {
    pub(crate) shutdown: Shutdown,
    pub(crate) telemetry: Telemetry,
    pub(crate) failure: StoreFailure,
    pub(crate) first_backoff: Duration,
}

impl Retry {
    /// Runs `write` until it succeeds, or fails for good once a stop was
    /// requested.
    fn run(
        &self,
        what: &str,
        mut write: impl FnMut() -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        let mut backoff = self.first_backoff;
        let mut attempt = 1u32;
        loop {
            match write() {
                Ok(()) => {
                    if self.set_failure(None).is_some() {
                        tracing::info!(
                            message = "store writes work again",
                            what,
                            attempts = attempt
                        );
                    }
                    return Ok(());
                }
                Err(error) => {
                    tracing::error!(message = "cannot store; retrying (nothing is acked meanwhile)",
                        what, attempt, error = %error.0);
                    metrics::counter!("netspectra_engine_store_failures_total").increment(1);
                    self.telemetry
                        .set_ready(false, &format!("the store refuses writes: {}", error.0));
                    self.set_failure(Some(error.0.clone()));
                    if self.shutdown.is_triggered() {
                        return Err(error);
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
            }
        }
    }

    fn set_failure(&self, why: Option<String>) -> Option<String> {
        std::mem::replace(
            &mut *self.failure.lock().unwrap_or_else(|e| e.into_inner()),
            why,
        )
    }
}

/// A batch applied by the consuming loop: `(window index, probe_id, shard,
/// seq)`, the window being the one its last packet went into.
pub(crate) type Applied = (u64, Arc<str>, u32, u64);

/// Batches applied but not yet covered by a stored window, in apply order
/// (window indices never decrease). The consuming loop appends a batch
/// right after pushing its packets, before pushing any later packet, so
/// every batch of window `w` is here before `w` can be flushed.
pub(crate) type AppliedLog = Arc<Mutex<VecDeque<Applied>>>;

/// What the sink stores with each window (JetStream mode with a store).
pub(crate) struct Progress {
    pub(crate) consumer: String,
    pub(crate) log: AppliedLog,
    /// Batches of the windows written so far (and the progress loaded at start).
    pub(crate) stored: Dedupe,
    /// The run writing it (named in the progress, for orphan cleanup).
    pub(crate) run_id: i64,
    /// Probes unseen for this long are dropped from it (the stream's
    /// `max_age`: nothing older can be redelivered).
    pub(crate) forget_after_ns: u64,
}

impl Progress {
    /// The progress covering every batch in windows `..= window`, the
    /// last of which ends at `end_ns`.
    pub(crate) fn through(&mut self, window: u64, end_ns: u64) -> String {
        let now = crate::telemetry::wall_ns();
        self.stored.set_clock(now);
        self.stored
            .forget_unseen_since(now.saturating_sub(self.forget_after_ns));
        {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            while log.front().is_some_and(|a| a.0 <= window) {
                let (_, probe, shard, seq) = log.pop_front().expect("front exists");
                self.stored.accept(&probe, shard, seq);
            }
        }
        progress::encode(
            &self.stored,
            Some(progress::Written {
                run_id: self.run_id,
                through_ns: end_ns,
            }),
        )
    }
}

/// Wraps the store's sink and counts the windows it has written, so acks
/// can follow. A window that ends a period counts once its sketch periods
/// are written too. In JetStream mode each window is written with the
/// progress covering the batches of it and of the windows before.
pub(crate) struct CommitSink {
    pub(crate) inner: Box<dyn WindowSink>,
    pub(crate) written: watch::Sender<u64>,
    pub(crate) sketch_tasks: usize,
    pub(crate) period_ns: u64,
    pub(crate) awaiting_sketches: usize,
    /// Index of the next window to be written (the windows' flush order,
    /// `EngineInput::window_index`).
    pub(crate) next_window: u64,
    pub(crate) progress: Option<Progress>,
    pub(crate) retry: Retry,
    pub(crate) splits: Splits,
}

impl WindowSink for CommitSink {
    fn window(&mut self, tasks: &[TaskSpec], window: &WindowResult) -> Result<(), SinkError> {
        let inner = &mut self.inner;
        match &mut self.progress {
            Some(p) => {
                let state = p.through(self.next_window, window.end_ns);
                let consumer = &p.consumer;
                self.retry.run("window", || {
                    inner.window_with_progress(tasks, window, consumer, &state)
                })?;
            }
            None => self.retry.run("window", || inner.window(tasks, window))?,
        }
        self.next_window += 1;
        metrics::counter!("netspectra_engine_windows_total").increment(1);
        tracing::debug!(
            message = "window written",
            start_ns = window.start_ns,
            end_ns = window.end_ns
        );
        if self.sketch_tasks > 0 && window.end_ns.is_multiple_of(self.period_ns.max(1)) {
            self.awaiting_sketches = self.sketch_tasks;
            Ok(())
        } else {
            self.count_when_durable()
        }
    }

    fn sketch_period(&mut self, task: &TaskSpec, period: &SketchPeriod) -> Result<(), SinkError> {
        let split = {
            let mut splits = self.splits.lock().unwrap_or_else(|e| e.into_inner());
            let split = splits
                .iter()
                .any(|&t| t > period.start_ns && t < period.end_ns);
            // Periods end in order: older moves matter no more.
            splits.retain(|&t| t >= period.start_ns);
            split
        };
        let marked;
        let period = if split && !period.partial {
            marked = SketchPeriod {
                partial: true,
                ..period.clone()
            };
            &marked
        } else {
            period
        };
        let inner = &mut self.inner;
        self.retry
            .run("sketch period", || inner.sketch_period(task, period))?;
        if self.awaiting_sketches > 0 {
            self.awaiting_sketches -= 1;
            if self.awaiting_sketches == 0 {
                return self.count_when_durable();
            }
        }
        Ok(())
    }
}

impl CommitSink {
    /// Counts one more window written once the store says it is durable
    /// (ClickHouse: inserted or fsynced into the spool), so acks follow
    /// durability, not the queue.
    fn count_when_durable(&mut self) -> Result<(), SinkError> {
        let written = self.written.clone();
        self.inner.when_durable(Box::new(move || {
            written.send_modify(|n| *n = n.saturating_add(1))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails its first `fail` writes, then stores (counts) windows.
    struct Flaky {
        fail: u32,
        stored: Arc<Mutex<Vec<u64>>>,
    }

    impl WindowSink for Flaky {
        fn window(&mut self, _: &[TaskSpec], w: &WindowResult) -> Result<(), SinkError> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(SinkError("disk I/O error".into()));
            }
            self.stored.lock().unwrap().push(w.start_ns);
            Ok(())
        }
    }

    fn sink(
        fail: u32,
        shutdown: &Shutdown,
    ) -> (
        CommitSink,
        watch::Receiver<u64>,
        Arc<Mutex<Vec<u64>>>,
        StoreFailure,
    ) {
        let stored = Arc::default();
        let failure = StoreFailure::default();
        let (written, rx) = watch::channel(0);
        let sink = CommitSink {
            inner: Box::new(Flaky {
                fail,
                stored: Arc::clone(&stored),
            }),
            written,
            sketch_tasks: 0,
            period_ns: 1,
            awaiting_sketches: 0,
            next_window: 0,
            progress: None,
            splits: Splits::default(),
            retry: Retry {
                shutdown: shutdown.clone(),
                telemetry: Telemetry::default(),
                failure: Arc::clone(&failure),
                first_backoff: Duration::from_millis(1),
            },
        };
        (sink, rx, stored, failure)
    }

    #[test]
    fn a_failing_store_is_retried_and_no_window_is_skipped() {
        let shutdown = Shutdown::new();
        let (mut sink, written, stored, failure) = sink(3, &shutdown);
        let tables: Vec<Vec<_>> = Vec::new();
        for start in [0u64, 10, 20] {
            let w = WindowResult::new(start, start + 10, &tables);
            sink.window(&[], &w).unwrap();
        }
        assert_eq!(
            *stored.lock().unwrap(),
            [0, 10, 20],
            "every window, in order"
        );
        assert_eq!(*written.borrow(), 3);
        assert_eq!(*failure.lock().unwrap(), None, "recovered");
    }

    #[test]
    fn a_stop_request_ends_the_retries_with_the_error() {
        let shutdown = Shutdown::new();
        let (mut sink, written, stored, failure) = sink(u32::MAX, &shutdown);
        shutdown.trigger();
        let tables: Vec<Vec<_>> = Vec::new();
        let w = WindowResult::new(0, 10, &tables);
        let err = sink.window(&[], &w).unwrap_err();
        assert!(err.0.contains("disk I/O"));
        assert!(stored.lock().unwrap().is_empty());
        assert_eq!(
            *written.borrow(),
            0,
            "nothing counts as written, so nothing is acked"
        );
        assert!(failure.lock().unwrap().is_some());
    }

    #[test]
    fn progress_covers_exactly_the_batches_of_the_windows_written() {
        let log: AppliedLog = Arc::new(Mutex::new(VecDeque::new()));
        let mut p = Progress {
            consumer: "c".into(),
            log: Arc::clone(&log),
            stored: Dedupe::default(),
            run_id: 1,
            forget_after_ns: u64::MAX,
        };
        for (w, seq) in [(0u64, 1u64), (0, 2), (1, 3), (3, 4)] {
            log.lock().unwrap().push_back((w, Arc::from("p"), 0, seq));
        }
        let applied = |state: &str| -> Vec<(u64, u64)> {
            progress::decode(state)
                .unwrap()
                .ranges()
                .flat_map(|(_, _, r)| r.to_vec())
                .collect()
        };
        assert_eq!(applied(&p.through(0, 0)), [(1, 2)]);
        assert_eq!(applied(&p.through(1, 0)), [(1, 3)]);
        assert_eq!(
            applied(&p.through(2, 0)),
            [(1, 3)],
            "window 2 holds no batch"
        );
        assert_eq!(applied(&p.through(3, 0)), [(1, 4)]);
        assert!(log.lock().unwrap().is_empty());
    }
}
