//! The producer side: cuts packet time into windows and shards records to workers.

use crate::collector;
use crate::plan::EnginePlan;
use crate::worker::{self, Slot, ToWorker, WindowPart, Worker};
use crate::{EngineError, EngineOutput};
use crossbeam_channel::{bounded, Receiver, Sender};
use netspectra_model::task::TaskKind;
use netspectra_model::time::window_start;
use netspectra_model::window::WindowSink;
use netspectra_model::{PacketRecord, Projection};
use std::hash::BuildHasher as _;
use std::thread::JoinHandle;

/// Starts engines.
pub struct Engine;

impl Engine {
    /// Spawns the workers and the collector; feed packets through the
    /// returned [`EngineInput`], then call [`EngineInput::finish`].
    pub fn start(plan: EnginePlan, sink: Box<dyn WindowSink>) -> Result<EngineInput, EngineError> {
        let workers = plan.workers.max(1);
        let (part_tx, part_rx) = bounded(workers * 2);
        let (recycle_tx, recycle_rx) = bounded(workers * (plan.queue_batches + 2));
        let mut shards = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for id in 0..workers {
            if id == 0 && plan.inline_worker {
                let worker = Worker::new(&plan, id);
                shards.push(Shard::Inline(Box::new(worker), part_tx.clone()));
                continue;
            }
            let (tx, rx) = bounded(plan.queue_batches);
            let recycle = recycle_tx.clone();
            let out = part_tx.clone();
            // The worker builds its tasks (tens of megabytes of sketches to
            // zero) on its own thread, while the records it will count are
            // already being read and queued.
            let own_plan = plan.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ns-worker-{id}"))
                .spawn(move || worker::run(Worker::new(&own_plan, id), rx, recycle, out))?;
            shards.push(Shard::Thread(tx));
            handles.push((id, handle));
        }
        drop(part_tx);
        let tasks = plan.tasks.clone();
        let rollups = plan
            .rollup_sources()
            .into_iter()
            .zip(&tasks)
            .map(|(from, t)| from.map(|from| (from, Projection::new(&t.key))))
            .collect();
        let top_rows = plan.top_rows;
        let collector = std::thread::Builder::new()
            .name("ns-collector".into())
            .spawn(move || collector::run(tasks, rollups, workers, top_rows, part_rx, sink))?;
        let all_tasks = if plan.tasks.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << plan.tasks.len()) - 1
        };
        let routes = routes(&plan);
        let bounds = shard_bounds(&plan);
        Ok(EngineInput {
            batches: (0..workers)
                .map(|_| Vec::with_capacity(plan.batch_size))
                .collect(),
            plan,
            shards,
            recycle: recycle_rx,
            hasher: foldhash::fast::FixedState::with_seed(0x7368_6172_6421),
            window: None,
            period: None,
            routes,
            bounds,
            targets: Vec::new(),
            handles,
            collector,
            all_tasks,
            packets: 0,
            late: 0,
            windows_flushed: 0,
            broken: None,
        })
    }
}

/// Where a worker's records go.
enum Shard {
    /// A worker thread of its own.
    Thread(Sender<ToWorker>),
    /// Worker 0 run by the pushing thread itself ([`EnginePlan::inline_worker`]),
    /// with the collector's channel for its window parts.
    Inline(Box<Worker>, Sender<WindowPart>),
}

/// Feeds records to a running engine. Single producer: one thread pushes.
pub struct EngineInput {
    plan: EnginePlan,
    shards: Vec<Shard>,
    batches: Vec<Vec<Slot>>,
    recycle: Receiver<Vec<Slot>>,
    hasher: foldhash::fast::FixedState,
    window: Option<(u64, u64)>,
    period: Option<(u64, u64)>,
    routes: Vec<Route>,
    /// Hashed routes pick the first worker whose bound exceeds the hash
    /// ([`shard_bounds`]); the last bound is `u64::MAX`.
    bounds: Vec<u64>,
    /// Per-record (worker, task mask) pairs; reused, never reallocated.
    targets: Vec<(usize, u64)>,
    /// Worker threads and their ids.
    handles: Vec<(usize, JoinHandle<()>)>,
    collector: JoinHandle<collector::Collected>,
    all_tasks: u64,
    packets: u64,
    late: u64,
    /// Windows flushed so far: the index of the open window.
    windows_flushed: u64,
    broken: Option<usize>,
}

impl EngineInput {
    /// Accounts one record. Records without an IP flow are ignored (the
    /// caller counts them through `DecodeCounters`).
    #[inline]
    pub fn push(&mut self, rec: &PacketRecord) {
        if !rec.l3.is_ip() {
            return;
        }
        match self.window {
            Some((start, end)) if rec.ts_ns >= start && rec.ts_ns < end => {}
            Some((start, _)) if rec.ts_ns < start => self.late += 1,
            _ => self.advance(rec.ts_ns),
        }
        self.packets += 1;
        let workers = self.shards.len();
        if workers == 1 {
            self.enqueue(0, rec, self.all_tasks);
            return;
        }
        self.targets.clear();
        for route in &self.routes {
            let key = match &route.by {
                RouteBy::Key(key) => key.apply(rec),
                RouteBy::Worker(shard) => {
                    let shard = *shard;
                    match self.targets.iter_mut().find(|t| t.0 == shard) {
                        Some(t) => t.1 |= route.mask,
                        None => self.targets.push((shard, route.mask)),
                    }
                    continue;
                }
            };
            let h = self.hasher.hash_one(key);
            let shard = self
                .bounds
                .iter()
                .position(|&b| h < b)
                .unwrap_or(workers - 1);
            match self.targets.iter_mut().find(|t| t.0 == shard) {
                Some(t) => t.1 |= route.mask,
                None => self.targets.push((shard, route.mask)),
            }
        }
        for i in 0..self.targets.len() {
            let (shard, mask) = self.targets[i];
            self.enqueue(shard, rec, mask);
        }
    }

    #[inline]
    fn enqueue(&mut self, shard: usize, rec: &PacketRecord, mask: u64) {
        let batch = &mut self.batches[shard];
        batch.push(Slot { rec: *rec, mask });
        if batch.len() >= self.plan.batch_size {
            self.send_batch(shard);
        }
    }

    /// Opens the window (and, if the period is over, the period) holding `ts`.
    fn advance(&mut self, ts: u64) {
        let period_over = self.period.is_none_or(|(_, end)| ts >= end);
        if self.window.is_some() {
            self.flush_window(period_over, false);
            self.windows_flushed += 1;
        }
        if period_over {
            let start = window_start(ts, self.plan.period_ns);
            self.period = Some((start, start.saturating_add(self.plan.period_ns)));
        }
        let (period_start, period_end) = self.period.expect("period is open");
        let start = window_start(ts, self.plan.window_ns).max(period_start);
        let end = start.saturating_add(self.plan.window_ns).min(period_end);
        self.window = Some((start, end));
    }

    fn send_batch(&mut self, shard: usize) {
        if let Shard::Inline(worker, _) = &mut self.shards[shard] {
            worker.count(&self.batches[shard]);
            self.batches[shard].clear();
            return;
        }
        let fresh = self
            .recycle
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.plan.batch_size));
        let full = std::mem::replace(&mut self.batches[shard], fresh);
        if let Shard::Thread(tx) = &self.shards[shard] {
            if tx.send(ToWorker::Batch(full)).is_err() {
                self.broken.get_or_insert(shard);
            }
        }
    }

    /// Sends every worker its pending records and a window cut (and a
    /// period cut when `period_over`); `last`: no record follows.
    fn flush_window(&mut self, period_over: bool, last: bool) {
        let Some((start_ns, end_ns)) = self.window.take() else {
            return;
        };
        let period = if period_over {
            self.period.take()
        } else {
            None
        };
        for shard in 0..self.shards.len() {
            if !self.batches[shard].is_empty() {
                self.send_batch(shard);
            }
            let sent = match &mut self.shards[shard] {
                Shard::Thread(tx) => tx
                    .send(ToWorker::Flush {
                        start_ns,
                        end_ns,
                        period,
                        last,
                    })
                    .is_ok(),
                Shard::Inline(worker, out) => {
                    out.send(worker.cut(start_ns, end_ns, period, last)).is_ok()
                }
            };
            if !sent {
                self.broken.get_or_insert(shard);
            }
        }
    }

    /// Closes the open window once the packet clock `now_ns` has passed its
    /// end by the plan's grace, so an idle link's last window is stored
    /// without waiting for a later packet. `now_ns` is packet time: for live
    /// traffic the wall clock; for a replay, the newest timestamp applied
    /// plus the wall time since, so a replay's windows follow its packets.
    /// Opens the window holding `now_ns - grace` (empty until a packet
    /// arrives); returns whether a window was closed.
    pub fn tick(&mut self, now_ns: u64) -> bool {
        match self.window {
            Some((_, end)) if now_ns >= end.saturating_add(self.plan.grace_ns) => {
                self.advance(now_ns.saturating_sub(self.plan.grace_ns).max(end));
                true
            }
            _ => false,
        }
    }

    /// The index of the window the last IP record went into, windows being
    /// numbered from 0 in the order they are flushed (and stored). A consumer
    /// that must know which stored window holds a record (the engine role's
    /// JetStream acks) reads it here rather than re-deriving the cuts.
    pub fn window_index(&self) -> u64 {
        self.windows_flushed
    }

    /// Whether a window is open: false only before the first IP record
    /// (then nothing was applied, so nothing waits to be stored).
    pub fn window_open(&self) -> bool {
        self.window.is_some()
    }

    /// End (ns) of the open sketch period, once a packet opened one.
    pub fn period_end(&self) -> Option<u64> {
        self.period.map(|(_, end)| end)
    }

    /// Start (ns) of the open sketch period: where a record pushed now is
    /// counted, late or not.
    pub fn period_start(&self) -> Option<u64> {
        self.period.map(|(start, _)| start)
    }

    /// IP records accepted so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Flushes the open window, stops the workers and returns run totals.
    /// Nothing pushed is lost: the final partial window is flushed too.
    pub fn finish(mut self) -> Result<EngineOutput, EngineError> {
        self.flush_window(true, true);
        self.shards.clear();
        for (id, h) in self.handles.drain(..) {
            if h.join().is_err() {
                self.broken.get_or_insert(id);
            }
        }
        let collected = self
            .collector
            .join()
            .map_err(|_| EngineError::WorkerDied(usize::MAX))?;
        if let Some(id) = self.broken {
            return Err(EngineError::WorkerDied(id));
        }
        if let Some(e) = collected.sink_error {
            return Err(EngineError::Sink(e));
        }
        let mut output = collected.output;
        output.packets = self.packets;
        output.late_packets = self.late;
        Ok(output)
    }
}

/// Packets of the tasks in `mask` go to the worker that `by` picks.
struct Route {
    by: RouteBy,
    mask: u64,
}

#[derive(PartialEq)]
enum RouteBy {
    /// Hash of the task key: exact tasks, so each key lives on exactly one
    /// worker and a window's parts are joined without merging (the
    /// collector would otherwise re-insert every key of all but one part,
    /// serially, after the last packet); and Count-Min, whose per-worker
    /// sketches are summed (linear, so the sum equals one sketch over the
    /// whole stream) and whose candidates must each see all of their key's
    /// packets. Tasks with the same key share one route and one hash.
    Key(Projection),
    /// One worker: sketches that cannot be merged (heavy-hitter buckets,
    /// SuperSpread) see the whole stream in order, so their result is the
    /// same for any worker count and no distinct count is ever split.
    Worker(usize),
}

/// Per-packet cost (ns) of a task on a worker, from `perf` on `analyze`
/// with the default tasks (README, Performance): an exact update with its
/// key projection ~78, Count-Min ~76 (two sketches), SuperSpread ~96 with
/// its element projection; heavy-hitter buckets were measured at 3/4 of
/// an exact update. Measured before Count-Min's lanes and the packed IPv4
/// slots, which made both cheaper; a 2-worker run still shows the two
/// threads with equal `perf` samples, so the split was left as is.
fn task_cost(kind: TaskKind) -> u64 {
    use netspectra_model::config::SketchAlgorithm;
    match kind {
        TaskKind::Exact => 78,
        TaskKind::Sketch(SketchAlgorithm::CountMin) => 76,
        TaskKind::Sketch(SketchAlgorithm::Hh) => 60,
        TaskKind::Sketch(SketchAlgorithm::SuperSpread) => 96,
    }
}

/// Per-packet cost (ns, as [`task_cost`]) of what the pushing thread does
/// before a worker sees a record: read, decode, route. An inline worker 0
/// ([`EnginePlan::inline_worker`]) carries it on top of its tasks. Set so
/// that both threads of a 2-worker `analyze` have the same number of
/// `perf` samples (it measured 132 alone, but the tasks cost more beside
/// it than in isolation); once `per_src_ip` and `per_dst_ip` were rolled
/// up instead of counted, two runs gave 47/47 % and 51/44 %.
const READER_COST: u64 = 156;

/// How the hash space of the hashed routes (exact and Count-Min tasks) is
/// split between workers: in proportion to what each has left after its
/// pinned work (heavy-hitter buckets, SuperSpread, the reading an inline
/// worker 0 does), so the workers finish together. Any split gives the
/// same exact rows (each key is counted whole by one worker) and Count-Min
/// stays an upper bound of the same volume, so this changes speed, not
/// exact results. Returns the upper hash bound of each worker.
fn shard_bounds(plan: &EnginePlan) -> Vec<u64> {
    let workers = plan.workers.max(1);
    let mut pinned = vec![0u64; workers];
    let mut hashed = 0u64;
    if plan.inline_worker {
        pinned[0] += READER_COST;
    }
    let rolled_up = plan.rollup_sources();
    for (i, t) in plan.tasks.iter().enumerate() {
        if rolled_up[i].is_some() {
            continue;
        }
        match plan.pinned_worker(i) {
            Some(w) => pinned[w.min(workers - 1)] += task_cost(t.kind),
            None => hashed += task_cost(t.kind),
        }
    }
    let total = hashed + pinned.iter().sum::<u64>();
    // Each worker's share of the hashed work, at least a twentieth of an
    // even split so no worker is left idle by a rough cost estimate.
    let floor = (hashed / workers as u64 / 20).max(1);
    let share: Vec<u64> = pinned
        .iter()
        .map(|&p| (total / workers as u64).saturating_sub(p).max(floor))
        .collect();
    let sum: u128 = share.iter().map(|&s| u128::from(s)).sum();
    let mut bounds = Vec::with_capacity(workers);
    let mut acc: u128 = 0;
    for (w, s) in share.iter().enumerate() {
        acc += u128::from(*s);
        bounds.push(if w + 1 == workers {
            u64::MAX
        } else {
            ((acc << 64) / sum).min(u128::from(u64::MAX)) as u64
        });
    }
    bounds
}

fn routes(plan: &EnginePlan) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    let rolled_up = plan.rollup_sources();
    for (i, t) in plan.tasks.iter().enumerate() {
        if rolled_up[i].is_some() {
            continue;
        }
        let by = match (plan.pinned_worker(i), t.kind) {
            (Some(w), _) => RouteBy::Worker(w),
            (None, _) => RouteBy::Key(Projection::new(&t.key)),
        };
        match routes.iter_mut().find(|r| r.by == by) {
            Some(r) => r.mask |= 1 << i,
            None => routes.push(Route { by, mask: 1 << i }),
        }
    }
    routes
}
