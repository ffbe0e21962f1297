//! The collector: joins the workers' parts of each window, hands the merged
//! window (and, at a period's end, the merged sketches) to the sink, and
//! keeps run totals.

use crate::sketch::{merge_period, SketchAccumulator, SketchPart};
use crate::table::FlowTable;
use crate::worker::{TaskPart, WindowPart};
use crate::{EngineOutput, TaskTotals};
use crossbeam_channel::Receiver;
use netspectra_model::task::{TaskKind, TaskSpec};
use netspectra_model::window::{FlowCounters, SinkError, TaskRows, WindowResult, WindowSink};
use netspectra_model::FlowKey;
use std::collections::BTreeMap;

/// A window's merged tables, one per task (empty for sketch tasks), lent to
/// the sink as the window's rows.
struct WindowTables(Vec<FlowTable>);

impl TaskRows for WindowTables {
    fn rows(&self, task: usize) -> Box<dyn Iterator<Item = (&FlowKey, &FlowCounters)> + '_> {
        Box::new(self.0[task].iter())
    }

    fn row_count(&self, task: usize) -> usize {
        self.0[task].len()
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
        let tables = WindowTables(done.tables);
        windows += 1;
        if sink_error.is_none() {
            let window = WindowResult::new(part.start_ns, done.end_ns, &tables);
            record(sink.window(&tasks, &window), &mut sink_error);
        } else {
            // Never silently: the run fails with the first error at the end.
            tracing::error!(
                message = "window not stored: the store failed earlier in this run",
                start_ns = part.start_ns,
                end_ns = done.end_ns
            );
        }
        for (into, from) in totals.iter_mut().zip(tables.0) {
            into.absorb(from);
        }
        if let Some((start, end)) = done.period {
            for (i, parts) in done.sketches.into_iter().enumerate() {
                let Some(acc) = &mut sketch_totals[i] else {
                    continue;
                };
                let (period, truth) = merge_period(&tasks[i], start, end, parts);
                sketch_volume[i].0 += period.packets;
                sketch_volume[i].1 += period.bytes;
                if sink_error.is_none() {
                    record(sink.sketch_period(&tasks[i], &period), &mut sink_error);
                }
                acc.add(&period, truth);
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
