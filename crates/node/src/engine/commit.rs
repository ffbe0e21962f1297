//! Acks follow the store: [`CommitSink`] wraps the store's sink, writes each
//! window with the JetStream progress covering it, and counts the windows
//! written so the ack queue can release the batches they hold.

use netspectra_bus::{progress, Dedupe};
use netspectra_engine::{SinkError, SketchPeriod, TaskSpec, WindowResult, WindowSink};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

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
}

impl Progress {
    /// The progress covering every batch in windows `..= window`.
    pub(crate) fn through(&mut self, window: u64) -> String {
        {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            while log.front().is_some_and(|a| a.0 <= window) {
                let (_, probe, shard, seq) = log.pop_front().expect("front exists");
                self.stored.accept(&probe, shard, seq);
            }
        }
        progress::encode(&self.stored)
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
}

impl WindowSink for CommitSink {
    fn window(&mut self, tasks: &[TaskSpec], window: &WindowResult) -> Result<(), SinkError> {
        match &mut self.progress {
            Some(p) => {
                let state = p.through(self.next_window);
                self.inner
                    .window_with_progress(tasks, window, &p.consumer, &state)?;
            }
            None => self.inner.window(tasks, window)?,
        }
        self.next_window += 1;
        metrics::counter!("netspectra_engine_windows_total").increment(1);
        tracing::debug!(
            message = "window written",
            start_ns = window.start_ns,
            end_ns = window.end_ns
        );
        if self.sketch_tasks > 0 && window.end_ns % self.period_ns.max(1) == 0 {
            self.awaiting_sketches = self.sketch_tasks;
        } else {
            self.written.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    fn sketch_period(&mut self, task: &TaskSpec, period: &SketchPeriod) -> Result<(), SinkError> {
        self.inner.sketch_period(task, period)?;
        if self.awaiting_sketches > 0 {
            self.awaiting_sketches -= 1;
            if self.awaiting_sketches == 0 {
                self.written.send_modify(|n| *n += 1);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_covers_exactly_the_batches_of_the_windows_written() {
        let log: AppliedLog = Arc::new(Mutex::new(VecDeque::new()));
        let mut p = Progress {
            consumer: "c".into(),
            log: Arc::clone(&log),
            stored: Dedupe::default(),
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
        assert_eq!(applied(&p.through(0)), [(1, 2)]);
        assert_eq!(applied(&p.through(1)), [(1, 3)]);
        assert_eq!(applied(&p.through(2)), [(1, 3)], "window 2 holds no batch");
        assert_eq!(applied(&p.through(3)), [(1, 4)]);
        assert!(log.lock().unwrap().is_empty());
    }
}
