//! The collector: joins the workers' parts of each window, hands the merged
//! window to the sink (the store), and keeps run totals.

use crate::exact::FlowCounters;
use crate::plan::TaskSpec;
use crate::table::FlowTable;
use crate::worker::WindowPart;
use crate::{EngineOutput, TaskTotals};
use crossbeam_channel::Receiver;
use netspectra_model::FlowKey;
use std::collections::BTreeMap;

/// A sink could not store a window.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Where merged windows go (a store, a bus, a test). Called on the collector
/// thread, in window order.
pub trait WindowSink: Send {
    /// Stores one merged window.
    fn window(&mut self, tasks: &[TaskSpec], window: &WindowResult) -> Result<(), SinkError>;
}

/// A sink that keeps nothing (`--no-store`).
pub struct NullSink;

impl WindowSink for NullSink {
    fn window(&mut self, _: &[TaskSpec], _: &WindowResult) -> Result<(), SinkError> {
        Ok(())
    }
}

/// One window's rows, merged over all workers: per-window deltas.
pub struct WindowResult {
    /// Window start (ns, inclusive).
    pub start_ns: u64,
    /// Window end (ns, exclusive).
    pub end_ns: u64,
    tables: Vec<FlowTable>,
}

impl WindowResult {
    /// The rows of task `i` (configuration order), in no particular order.
    pub fn rows(&self, task: usize) -> impl Iterator<Item = (&FlowKey, &FlowCounters)> {
        self.tables[task].iter()
    }

    /// Number of rows of task `i`.
    pub fn row_count(&self, task: usize) -> usize {
        self.tables[task].len()
    }
}

struct Pending {
    parts: usize,
    end_ns: u64,
    tables: Vec<FlowTable>,
}

pub(crate) struct Collected {
    pub output: EngineOutput,
    pub sink_error: Option<crate::SinkError>,
}

pub(crate) fn run(
    tasks: Vec<TaskSpec>,
    workers: usize,
    rx: Receiver<WindowPart>,
    mut sink: Box<dyn WindowSink>,
) -> Collected {
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut totals: Vec<FlowTable> = tasks.iter().map(|_| FlowTable::new()).collect();
    let mut windows = 0;
    let mut sink_error = None;
    for part in rx {
        let entry = pending.entry(part.start_ns).or_insert_with(|| Pending {
            parts: 0,
            end_ns: part.end_ns,
            tables: tasks.iter().map(|_| FlowTable::new()).collect(),
        });
        entry.parts += 1;
        for (into, from) in entry.tables.iter_mut().zip(part.tables) {
            into.absorb(from);
        }
        if entry.parts < workers {
            continue;
        }
        let done = pending.remove(&part.start_ns).expect("entry exists");
        let window = WindowResult {
            start_ns: part.start_ns,
            end_ns: done.end_ns,
            tables: done.tables,
        };
        windows += 1;
        if sink_error.is_none() {
            if let Err(e) = sink.window(&tasks, &window) {
                sink_error = Some(e);
            }
        }
        for (into, from) in totals.iter_mut().zip(window.tables) {
            into.absorb(from);
        }
    }
    let tasks = tasks
        .into_iter()
        .zip(totals)
        .map(|(spec, map)| {
            let rows: Vec<(FlowKey, FlowCounters)> = map.iter().map(|(k, c)| (*k, *c)).collect();
            drop(map);
            TaskTotals {
                packets: rows.iter().map(|r| r.1.packets).sum(),
                bytes: rows.iter().map(|r| r.1.bytes).sum(),
                name: spec.name,
                kind: spec.kind,
                key: spec.key,
                rows,
            }
        })
        .collect();
    Collected {
        output: EngineOutput {
            tasks,
            windows,
            ..Default::default()
        },
        sink_error,
    }
}
