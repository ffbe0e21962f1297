//! The collector: joins the workers' parts of each window, hands the merged
//! window (and, at a period's end, the merged sketches) to the sink, and
//! keeps run totals.

use crate::parallel::run_jobs;
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
/// source task, narrowed to its key. Tasks are rolled up in parallel:
/// after a run's last packet the workers are idle and this is all that is
/// left to do before the last window is stored.
fn roll_up(tables: &mut PerWorker, rollups: &Rollups) {
    let jobs: Vec<_> = rollups
        .iter()
        .enumerate()
        .filter_map(|(task, rollup)| {
            let (from, key) = rollup.as_ref()?;
            let source = &tables[*from];
            let rows = source.iter().map(FlowTable::len).sum::<usize>();
            Some((rows as u64, move || (task, narrowed(source, key))))
        })
        .collect();
    for (task, rows) in run_jobs("ns-rollup", jobs) {
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
    // A sink that groups windows into commits stores its last group now,
    // so the run ends with everything it stored durable.
    if sink_error.is_none() {
        record(sink.when_durable(Box::new(|| {})), &mut sink_error);
    }
    let tasks = tasks
        .into_iter()
        .zip(kept_rows(totals, top_rows))
        .zip(sketch_totals)
        .zip(sketch_volume)
        .map(|(((spec, kept), sketch), volume)| {
            let (packets, bytes) = if sketch.is_some() {
                volume
            } else {
                kept.volume
            };
            TaskTotals {
                packets,
                bytes,
                sketch: sketch.map(SketchAccumulator::finish),
                name: spec.name,
                kind: spec.kind,
                key: spec.key,
                element: spec.element,
                rows: kept.rows,
                keys: kept.keys,
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

/// What the run totals keep of one task's rows.
struct Kept {
    /// All rows, or the `top` largest in [`crate::rank`] order, unsorted.
    rows: Vec<Row>,
    /// Packets and bytes of all rows.
    volume: (u64, u64),
    /// How many rows there were.
    keys: usize,
}

type Row = (FlowKey, FlowCounters);

/// The rows the run totals keep of each task: all of them, or the `top`
/// largest when a task has more. Each table is scanned (and freed) by a
/// job of its own, in parallel: after the last packet this is the run's
/// serial tail, a scan of every key of every task.
fn kept_rows(totals: PerWorker, top: usize) -> Vec<Kept> {
    let mut kept: Vec<Kept> = totals
        .iter()
        .map(|tables| Kept {
            rows: Vec::new(),
            volume: (0, 0),
            keys: tables.iter().map(FlowTable::len).sum(),
        })
        .collect();
    // How many rows a task with `keys` rows keeps; `None`: all of them.
    let limit = |keys: usize| (top != 0 && top < keys).then_some(top);
    let jobs: Vec<_> = totals
        .into_iter()
        .enumerate()
        .flat_map(|(task, tables)| {
            let limit = limit(kept[task].keys);
            tables
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(move |table| {
                    let cost = table.len() as u64;
                    let job = move || {
                        let mut volume = (0, 0);
                        let rows = table.iter().inspect(|(_, c)| {
                            volume.0 += c.packets;
                            volume.1 += c.bytes;
                        });
                        let rows = match limit {
                            Some(top) => largest(rows, top),
                            None => {
                                let mut all = Vec::with_capacity(table.len());
                                all.extend(rows);
                                all
                            }
                        };
                        (task, rows, volume)
                    };
                    (cost, job)
                })
        })
        .collect();
    for (task, rows, volume) in run_jobs("ns-totals", jobs) {
        let k = &mut kept[task];
        if k.rows.is_empty() {
            k.rows = rows;
        } else {
            k.rows.extend(rows);
        }
        k.volume.0 += volume.0;
        k.volume.1 += volume.1;
    }
    for k in &mut kept {
        if let Some(top) = limit(k.keys).filter(|&top| k.rows.len() > top) {
            k.rows = largest(std::mem::take(&mut k.rows).into_iter(), top);
        }
    }
    kept
}

/// The `top` largest of `rows` (in [`crate::rank`] order, unsorted),
/// picked with a heap of `top` entries.
fn largest(rows: impl Iterator<Item = Row>, top: usize) -> Vec<Row> {
    /// A row ordered as [`crate::rank`] orders it: the heap's greatest is
    /// the smallest row, the first to drop out.
    struct Ranked(Row);
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
    heap.into_iter().map(|r| r.0).collect()
}
