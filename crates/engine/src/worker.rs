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
    /// End of a window; `period_end` also ends the sketches' period.
    Flush {
        start_ns: u64,
        end_ns: u64,
        period: Option<(u64, u64)>,
    },
}

/// A task's state on one worker.
enum TaskState {
    Exact(ExactTable),
    Sketch(Box<SketchTask>),
    /// The task runs on another worker.
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
    pub start_ns: u64,
    pub end_ns: u64,
    pub period: Option<(u64, u64)>,
    pub tasks: Vec<TaskPart>,
}

pub(crate) fn run(
    plan: &EnginePlan,
    id: usize,
    rx: Receiver<ToWorker>,
    recycle: Sender<Vec<Slot>>,
    out: Sender<WindowPart>,
) {
    let mut tasks: Vec<TaskState> = plan
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| match (t.kind, plan.pinned_worker(i)) {
            (_, Some(w)) if w != id => TaskState::Elsewhere,
            (TaskKind::Exact, _) => TaskState::Exact(ExactTable::new(t.key.clone())),
            (TaskKind::Sketch(a), _) => {
                TaskState::Sketch(Box::new(SketchTask::new(t, a, plan.verify)))
            }
        })
        .collect();
    for msg in rx {
        match msg {
            ToWorker::Batch(mut batch) => {
                for (i, task) in tasks.iter_mut().enumerate() {
                    match task {
                        TaskState::Exact(t) => t.update_all(
                            batch
                                .iter()
                                .filter(|s| s.mask >> i & 1 == 1)
                                .map(|s| &s.rec),
                        ),
                        TaskState::Sketch(t) => t.update_batch(&batch, i),
                        TaskState::Elsewhere => {}
                    }
                }
                batch.clear();
                // The producer may already hold enough spare batches.
                let _ = recycle.try_send(batch);
            }
            ToWorker::Flush {
                start_ns,
                end_ns,
                period,
            } => {
                let part = WindowPart {
                    start_ns,
                    end_ns,
                    period,
                    tasks: tasks
                        .iter_mut()
                        .map(|t| match t {
                            TaskState::Exact(t) => TaskPart::Exact(t.take()),
                            TaskState::Sketch(t) => TaskPart::Sketch(period.map(|_| t.take())),
                            TaskState::Elsewhere => TaskPart::Sketch(None),
                        })
                        .collect(),
                };
                if out.send(part).is_err() {
                    return;
                }
            }
        }
    }
}
