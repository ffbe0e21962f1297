//! The collector: joins the workers' parts of each window, hands the merged
//! window (and, at a period's end, the merged sketches) to the sink, and
//! keeps run totals.

use crate::exact::FlowCounters;
use crate::plan::{TaskKind, TaskSpec};
use crate::sketch::{merge_period, SketchAccumulator, SketchPart, SketchPeriod};
use crate::table::FlowTable;
use crate::worker::{TaskPart, WindowPart};
use crate::{EngineOutput, TaskTotals};
use crossbeam_channel::Receiver;
use netspectra_model::FlowKey;
use std::collections::BTreeMap;

/// A sink could not store a window.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Where merged results go (a store, a bus, a test). Called on the collector
/// thread, in time order.
pub trait WindowSink: Send {
    /// Stores one merged window of exact rows.
    fn window(&mut self, tasks: &[TaskSpec], window: &WindowResult) -> Result<(), SinkError>;

    /// Stores one merged window together with a consumer's progress: an
    /// opaque string (JSON) the caller builds, saying which input it has
    /// applied up to and including this window, kept per `consumer` and
    /// replaced by each call. A sink that can should write both atomically
    /// (the SQLite store does: one transaction) or at least never the
    /// progress before the rows it covers; the default ignores the progress.
    fn window_with_progress(
        &mut self,
        tasks: &[TaskSpec],
        window: &WindowResult,
        _consumer: &str,
        _progress: &str,
    ) -> Result<(), SinkError> {
        self.window(tasks, window)
    }

    /// Stores one sketch task's merged result for a period.
    fn sketch_period(&mut self, _task: &TaskSpec, _period: &SketchPeriod) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A sink that keeps nothing (`--no-store`).
pub struct NullSink;

impl WindowSink for NullSink {
    fn window(&mut self, _: &[TaskSpec], _: &WindowResult) -> Result<(), SinkError> {
        Ok(())
    }
}

/// One window's exact rows, merged over all workers: per-window deltas.
pub struct WindowResult {
    /// Window start (ns, inclusive).
    pub start_ns: u64,
    /// Window end (ns, exclusive).
    pub end_ns: u64,
    tables: Vec<FlowTable>,
}

impl WindowResult {
    /// The rows of task `i` (configuration order; none for sketch tasks).
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
    period: Option<(u64, u64)>,
    tables: Vec<FlowTable>,
    sketches: Vec<Vec<SketchPart>>,
}

pub(crate) struct Collected {
    pub output: EngineOutput,
    pub sink_error: Option<SinkError>,
}

pub(crate) fn run(
    tasks: Vec<TaskSpec>,
    workers: usize,
    rx: Receiver<WindowPart>,
    mut sink: Box<dyn WindowSink>,
) -> Collected {
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut totals: Vec<FlowTable> = tasks.iter().map(|_| FlowTable::new()).collect();
    let mut sketch_totals: Vec<Option<SketchAccumulator>> = tasks
        .iter()
        .map(|t| matches!(t.kind, TaskKind::Sketch(_)).then(|| SketchAccumulator::new(t)))
        .collect();
    let mut sketch_volume = vec![(0u64, 0u64); tasks.len()];
    let mut windows = 0;
    let mut sink_error = None;
    let record = |r: Result<(), SinkError>, sink_error: &mut Option<SinkError>| {
        if let Err(e) = r {
            sink_error.get_or_insert(e);
        }
    };
    for part in rx {
        let entry = pending.entry(part.start_ns).or_insert_with(|| Pending {
            parts: 0,
            end_ns: part.end_ns,
            period: part.period,
            tables: tasks.iter().map(|_| FlowTable::new()).collect(),
            sketches: tasks.iter().map(|_| Vec::new()).collect(),
        });
        entry.parts += 1;
        for (i, task_part) in part.tasks.into_iter().enumerate() {
            match task_part {
                TaskPart::Exact(t) => entry.tables[i].absorb(t),
                TaskPart::Sketch(Some(s)) => entry.sketches[i].push(s),
                TaskPart::Sketch(None) => {}
            }
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
            record(sink.window(&tasks, &window), &mut sink_error);
        }
        for (into, from) in totals.iter_mut().zip(window.tables) {
            into.absorb(from);
        }
        if let Some((start, end)) = done.period {
            for (i, parts) in done.sketches.into_iter().enumerate() {
                let Some(acc) = &mut sketch_totals[i] else {
                    continue;
                };
                let period = merge_period(&tasks[i], start, end, parts);
                sketch_volume[i].0 += period.packets;
                sketch_volume[i].1 += period.bytes;
                if sink_error.is_none() {
                    record(sink.sketch_period(&tasks[i], &period), &mut sink_error);
                }
                acc.add(period);
            }
        }
    }
    let tasks = tasks
        .into_iter()
        .zip(totals)
        .zip(sketch_totals)
        .zip(sketch_volume)
        .map(|(((spec, table), sketch), volume)| {
            let rows: Vec<(FlowKey, FlowCounters)> = table.iter().map(|(k, c)| (*k, *c)).collect();
            drop(table);
            let (packets, bytes) = match &sketch {
                Some(_) => volume,
                None => (
                    rows.iter().map(|r| r.1.packets).sum(),
                    rows.iter().map(|r| r.1.bytes).sum(),
                ),
            };
            TaskTotals {
                packets,
                bytes,
                sketch: sketch.map(SketchAccumulator::finish),
                name: spec.name,
                kind: spec.kind,
                key: spec.key,
                element: spec.element,
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
