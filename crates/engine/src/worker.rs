//! A worker: owns one table per task outright, so the hot path takes no lock.

use crate::exact::ExactTable;
use crate::table::FlowTable;
use crossbeam_channel::{Receiver, Sender};
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
    Flush { start_ns: u64, end_ns: u64 },
}

/// One worker's share of one window.
pub(crate) struct WindowPart {
    pub start_ns: u64,
    pub end_ns: u64,
    pub tables: Vec<FlowTable>,
}

pub(crate) fn run(
    mut tables: Vec<ExactTable>,
    rx: Receiver<ToWorker>,
    recycle: Sender<Vec<Slot>>,
    out: Sender<WindowPart>,
) {
    for msg in rx {
        match msg {
            ToWorker::Batch(mut batch) => {
                for (i, table) in tables.iter_mut().enumerate() {
                    table.update_batch(&batch, i);
                }
                batch.clear();
                // The producer may already hold enough spare batches.
                let _ = recycle.try_send(batch);
            }
            ToWorker::Flush { start_ns, end_ns } => {
                let part = WindowPart {
                    start_ns,
                    end_ns,
                    tables: tables.iter_mut().map(ExactTable::take).collect(),
                };
                if out.send(part).is_err() {
                    return;
                }
            }
        }
    }
}
