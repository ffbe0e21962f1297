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
use netspectra_model::{FlowKey, Projection};
use std::collections::BTreeMap;

/// Exact tables indexed `[task][worker]`. A key is counted on one worker
/// only (see `input.rs`), so the workers' tables of a task hold disjoint
/// keys and together are the task's rows: joining them needs no merge. A
/// rolled-up task's rows are all in its first table.
type PerWorker = Vec<Vec<FlowTable>>;

/// Per task: the task its rows are rolled up from, and its key
/// ([`crate::EnginePlan::rollup_sources`]); `None` for a task that counts.
pub(crate) type Rollups = Vec<Option<(usize, Projection)>>;

/// Fills each rolled-up task's first table with the window's rows of its
/// source task, narrowed to its key. Tasks are rolled up in parallel, one
/// thread each: after a run's last packet the workers are idle and this is
/// all that is left to do before the last window is stored.
fn roll_up(tables: &mut PerWorker, rollups: &Rollups) {
    let rolled: Vec<(usize, FlowTable)> = std::thread::scope(|scope| {
        let tables = &*tables;
        let threads: Vec<_> = rollups
            .iter()
            .enumerate()
            .filter_map(|(task, rollup)| {
                let (from, key) = rollup.as_ref()?;
                let roll = move || narrowed(&tables[*from], key);
                let thread = std::thread::Builder::new()
                    .name("ns-rollup".into())
                    .spawn_scoped(scope, roll);
                // Without a thread (the system refused one), roll up here.
                Some((task, thread.map_err(|_| roll())))
            })
            .collect();
        threads
            .into_iter()
            .map(|(task, thread)| {
                let rows = match thread {
                    Ok(t) => t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
                    Err(rows) => rows,
                };
                (task, rows)
            })
            .collect()
    });
    for (task, rows) in rolled {
        tables[task][0] = rows;
    }
}

/// The rows of `source` (a task's per-worker tables) summed by `key`.
fn narrowed(source: &[FlowTable], key: &Projection) -> FlowTable {
    let mut rows = FlowTable::new();
    rows.add_all(
        source
            .iter()
            .flat_map(FlowTable::iter)
            .map(|(k, c)| (key.narrow(&k), c)),
    );
    rows
}

fn empty_tables(tasks: usize, workers: usize) -> PerWorker {
    (0..tasks)
        .map(|_| (0..workers).map(|_| FlowTable::new()).collect())
        .collect()
}

/// A window's tables, lent to the sink as the window's rows (sketch tasks
/// have none).
struct WindowTables(PerWorker);

impl TaskRows for WindowTables {
    fn parts(&self, task: usize) -> usize {
        self.0[task].len()
    }

    fn part(
        &self,
        task: usize,
        part: usize,
    ) -> Box<dyn Iterator<Item = (FlowKey, FlowCounters)> + '_> {
        Box::new(self.0[task][part].iter())
    }

    fn part_len(&self, task: usize, part: usize) -> usize {
        self.0[task][part].len()
    }
}

struct Pending {
    parts: usize,
    end_ns: u64,
    period: Option<(u64, u64)>,
    tables: PerWorker,
    sketches: Vec<Vec<SketchPart>>,
}

pub(crate) struct Collected {
    pub output: EngineOutput,
    pub sink_error: Option<SinkError>,
}

pub(crate) fn run(
    tasks: Vec<TaskSpec>,
    rollups: Rollups,
    workers: usize,
    top_rows: usize,
    rx: Receiver<WindowPart>,
    mut sink: Box<dyn WindowSink>,
) -> Collected {
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut totals = empty_tables(tasks.len(), workers);
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
            tables: empty_tables(tasks.len(), workers),
            sketches: tasks.iter().map(|_| Vec::new()).collect(),
        });
        entry.parts += 1;
        for (i, task_part) in part.tasks.into_iter().enumerate() {
            match task_part {
                TaskPart::Exact(t) => entry.tables[i][part.worker] = t,
                TaskPart::Sketch(Some(s)) => entry.sketches[i].push(s),
                TaskPart::Sketch(None) => {}
            }
        }
        if entry.parts < workers {
            continue;
        }
        let mut done = pending.remove(&part.start_ns).expect("entry exists");
        roll_up(&mut done.tables, &rollups);
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
            for (into, from) in into.iter_mut().zip(from) {
                into.absorb(from);
            }
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
        .map(|(((spec, tables), sketch), volume)| {
            let keys = tables.iter().map(FlowTable::len).sum();
            let (rows, exact_volume) = kept_rows(&tables, keys, top_rows);
            let (packets, bytes) = match &sketch {
                Some(_) => volume,
                None => exact_volume,
            };
            drop(tables);
            TaskTotals {
                packets,
                bytes,
                sketch: sketch.map(SketchAccumulator::finish),
                name: spec.name,
                kind: spec.kind,
                key: spec.key,
                element: spec.element,
                rows,
                keys,
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

/// The rows the run totals keep: all `keys` of them, or the `top` largest
/// (in [`crate::rank`] order, unsorted), picked with a heap of `top`
/// entries; and the packets and bytes of all rows, summed in the same pass.
fn kept_rows(
    tables: &[FlowTable],
    keys: usize,
    top: usize,
) -> (Vec<(FlowKey, FlowCounters)>, (u64, u64)) {
    let mut volume = (0, 0);
    let rows = tables.iter().flat_map(FlowTable::iter).inspect(|(_, c)| {
        volume.0 += c.packets;
        volume.1 += c.bytes;
    });
    if top == 0 || top >= keys {
        let mut all = Vec::with_capacity(keys);
        all.extend(rows);
        return (all, volume);
    }
    /// A row ordered as [`crate::rank`] orders it: the heap's greatest is
    /// the smallest row, the first to drop out.
    struct Ranked((FlowKey, FlowCounters));
    impl Ord for Ranked {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            crate::rank(&self.0, &other.0)
        }
    }
    impl PartialOrd for Ranked {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl PartialEq for Ranked {
        fn eq(&self, other: &Self) -> bool {
            self.cmp(other).is_eq()
        }
    }
    impl Eq for Ranked {}
    let mut heap = std::collections::BinaryHeap::with_capacity(top + 1);
    for row in rows {
        let row = Ranked(row);
        if heap.len() < top {
            heap.push(row);
        } else if heap.peek().is_some_and(|worst| row < *worst) {
            heap.pop();
            heap.push(row);
        }
    }
    (heap.into_iter().map(|r| r.0).collect(), volume)
}
