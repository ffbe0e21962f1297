//! The producer side: cuts packet time into windows and shards records to workers.

use crate::collector::{self, WindowSink};
use crate::exact::ExactTable;
use crate::plan::EnginePlan;
use crate::worker::{self, Slot, ToWorker};
use crate::{EngineError, EngineOutput};
use crossbeam_channel::{bounded, Receiver, Sender};
use netspectra_model::time::window_start;
use netspectra_model::{FlowKey, PacketRecord};
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
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for id in 0..workers {
            let (tx, rx) = bounded(plan.queue_batches);
            let tables = plan
                .tasks
                .iter()
                .map(|t| ExactTable::new(t.key.clone()))
                .collect();
            let recycle = recycle_tx.clone();
            let out = part_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ns-worker-{id}"))
                .spawn(move || worker::run(tables, rx, recycle, out))?;
            senders.push(tx);
            handles.push(handle);
        }
        drop(part_tx);
        let tasks = plan.tasks.clone();
        let collector = std::thread::Builder::new()
            .name("ns-collector".into())
            .spawn(move || collector::run(tasks, workers, part_rx, sink))?;
        let all_tasks = if plan.tasks.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << plan.tasks.len()) - 1
        };
        Ok(EngineInput {
            batches: (0..workers)
                .map(|_| Vec::with_capacity(plan.batch_size))
                .collect(),
            plan,
            senders,
            recycle: recycle_rx,
            hasher: foldhash::fast::FixedState::with_seed(0x7368_6172_6421),
            window: None,
            handles,
            collector,
            all_tasks,
            packets: 0,
            late: 0,
            broken: None,
        })
    }
}

/// Feeds records to a running engine. Single producer: one thread pushes.
pub struct EngineInput {
    plan: EnginePlan,
    senders: Vec<Sender<ToWorker>>,
    batches: Vec<Vec<Slot>>,
    recycle: Receiver<Vec<Slot>>,
    hasher: foldhash::fast::FixedState,
    window: Option<(u64, u64)>,
    handles: Vec<JoinHandle<()>>,
    collector: JoinHandle<collector::Collected>,
    all_tasks: u64,
    packets: u64,
    late: u64,
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
            _ => {
                if self.window.is_some() {
                    self.flush_window();
                }
                let start = window_start(rec.ts_ns, self.plan.window_ns);
                self.window = Some((start, start.saturating_add(self.plan.window_ns)));
            }
        }
        self.packets += 1;
        let shard = self.shard(rec);
        let batch = &mut self.batches[shard];
        batch.push(Slot {
            rec: *rec,
            mask: self.all_tasks,
        });
        if batch.len() >= self.plan.batch_size {
            self.send_batch(shard);
        }
    }

    #[inline]
    fn shard(&self, rec: &PacketRecord) -> usize {
        let n = self.senders.len();
        if n == 1 {
            return 0;
        }
        let h = self.hasher.hash_one(FlowKey::five_tuple(rec));
        ((u128::from(h) * n as u128) >> 64) as usize
    }

    fn send_batch(&mut self, shard: usize) {
        let fresh = self
            .recycle
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.plan.batch_size));
        let full = std::mem::replace(&mut self.batches[shard], fresh);
        self.send(shard, ToWorker::Batch(full));
    }

    fn send(&mut self, shard: usize, msg: ToWorker) {
        if self.senders[shard].send(msg).is_err() {
            self.broken.get_or_insert(shard);
        }
    }

    /// Sends every worker its pending records and a window cut.
    fn flush_window(&mut self) {
        let Some((start_ns, end_ns)) = self.window.take() else {
            return;
        };
        for shard in 0..self.senders.len() {
            if !self.batches[shard].is_empty() {
                self.send_batch(shard);
            }
            self.send(shard, ToWorker::Flush { start_ns, end_ns });
        }
    }

    /// IP records accepted so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Flushes the open window, stops the workers and returns run totals.
    /// Nothing pushed is lost: the final partial window is flushed too.
    pub fn finish(mut self) -> Result<EngineOutput, EngineError> {
        self.flush_window();
        self.senders.clear();
        for (id, h) in self.handles.drain(..).enumerate() {
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
