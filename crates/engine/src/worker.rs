//! A worker: owns one state per task outright, so the hot path takes no lock.

use crate::exact::ExactTable;
use crate::plan::EnginePlan;
use crate::sketch::{SketchPart, SketchTask};
use crate::table::FlowTable;
use crossbeam_channel::{Receiver, Sender};
use netspectra_model::task::TaskKind;
use netspectra_model::PacketRecord;

/// A record and the tasks (bit i = task i) this worker applies to it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub rec: PacketRecord,
    pub mask: u64,
}

/// Producer → worker messages. Order on the channel is the order of packets,
/// so a `Flush` cuts exactly between two windows.
pub(crate) enum ToWorker {
    Batch(Vec<Slot>),
    /// End of a window; `period` also ends the sketches' period, and
    /// `last` says no packet follows.
    Flush {
        start_ns: u64,
        end_ns: u64,
        period: Option<(u64, u64)>,
        last: bool,
    },
}

/// A task's state on one worker.
enum TaskState {
    Exact(ExactTable),
    Sketch(Box<SketchTask>),
    /// The task runs on another worker, or its rows are rolled up from
    /// another task's by the collector ([`EnginePlan::rollup_sources`]).
    Elsewhere,
}

/// What one task hands over at a flush.
pub(crate) enum TaskPart {
    /// The window's exact rows.
    Exact(FlowTable),
    /// The period's sketch (only when a period ends).
    Sketch(Option<SketchPart>),
}

/// One worker's share of one window.
pub(crate) struct WindowPart {
    /// The worker it comes from: a key is always counted on the same
    /// worker, so run totals are kept per worker and never merged across.
    pub worker: usize,
    pub start_ns: u64,
    pub end_ns: u64,
    pub period: Option<(u64, u64)>,
    pub tasks: Vec<TaskPart>,
}

/// The tasks of one worker: one state per task, owned outright.
pub(crate) struct Worker {
    id: usize,
    tasks: Vec<TaskState>,
}

impl Worker {
    pub(crate) fn new(plan: &EnginePlan, id: usize) -> Worker {
        let rolled_up = plan.rollup_sources();
        let tasks = plan
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| match (t.kind, plan.pinned_worker(i)) {
                (_, Some(w)) if w != id => TaskState::Elsewhere,
                _ if rolled_up[i].is_some() => TaskState::Elsewhere,
                (TaskKind::Exact, _) => TaskState::Exact(ExactTable::new(t.key.clone())),
                (TaskKind::Sketch(a), _) => {
                    TaskState::Sketch(Box::new(SketchTask::new(t, a, plan.verify)))
                }
            })
            .collect();
        Worker { id, tasks }
    }

    /// Applies each record of `batch` to the tasks its mask selects.
    pub(crate) fn count(&mut self, batch: &[Slot]) {
        for (i, task) in self.tasks.iter_mut().enumerate() {
            match task {
                TaskState::Exact(t) => t.update_all(
                    batch
                        .iter()
                        .filter(|s| s.mask >> i & 1 == 1)
                        .map(|s| &s.rec),
                ),
                TaskState::Sketch(t) => t.update_batch(batch, i),
                TaskState::Elsewhere => {}
            }
        }
    }

    /// Ends a window (and the sketches' period when `period` is set):
    /// hands over what was counted and, unless it is the `last`, starts
    /// afresh.
    pub(crate) fn cut(
        &mut self,
        start_ns: u64,
        end_ns: u64,
        period: Option<(u64, u64)>,
        last: bool,
    ) -> WindowPart {
        WindowPart {
            worker: self.id,
            start_ns,
            end_ns,
            period,
            tasks: self
                .tasks
                .iter_mut()
                .map(|t| match t {
                    TaskState::Exact(t) => TaskPart::Exact(t.take()),
                    TaskState::Sketch(t) => TaskPart::Sketch(period.map(|_| t.take(!last))),
                    TaskState::Elsewhere => TaskPart::Sketch(None),
                })
                .collect(),
        }
    }
}

/// A worker thread: counts batches until its channel closes.
pub(crate) fn run(
    mut worker: Worker,
    rx: Receiver<ToWorker>,
    recycle: Sender<Vec<Slot>>,
    out: Sender<WindowPart>,
) {
    for msg in rx {
        match msg {
            ToWorker::Batch(mut batch) => {
                worker.count(&batch);
                batch.clear();
                // The producer may already hold enough spare batches.
                let _ = recycle.try_send(batch);
            }
            ToWorker::Flush {
                start_ns,
                end_ns,
                period,
                last,
            } => {
                if out
                    .send(worker.cut(start_ns, end_ns, period, last))
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}
