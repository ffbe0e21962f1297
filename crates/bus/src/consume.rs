//! The engine's side: consumers of the owned shards, batch dedupe, and acks
//! sent only once a batch's window is stored.
//!
//! Exactly-once accounting in JetStream mode rests on three rules:
//! 1. a batch is acknowledged only after every window that holds its
//!    packets has been written to the store ([`AckQueue`], fed by the
//!    caller with the index of the window the batch's last packet went into
//!    and the count of windows written);
//! 2. a batch whose `(probe_id, shard, seq)` was applied already is
//!    skipped ([`Dedupe`]): JetStream redelivers batches whose ack is late,
//!    and a probe may publish one twice;
//! 3. the probe sets `Nats-Msg-Id`, so the stream itself drops a
//!    republished batch within its 2-minute duplicate window.
//!
//! An engine may die after a window was written and before its acks
//! reached the server; those batches are redelivered to the restarted
//! engine. So the engine stores, with each window, the [`Dedupe`] state of
//! the batches applied up to and including that window
//! ([`Dedupe::ranges`]; in the same transaction on SQLite), and the
//! restarted engine seeds its `Dedupe` from it ([`Dedupe::mark_applied`]):
//! the redelivered batches are skipped (and acked).

use crate::{connect, ensure_stream, BusConfig, BusCounters, BusError};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::AckKind;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Where a delivery came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A NetSpectra `PacketBatch` from one of the owned shards.
    Batch,
    /// A Go2NetSpectra `PacketInfo` (one packet) from the interop subject;
    /// every engine receives all of them and keeps those of its shards.
    Interop,
}

/// One message for the engine.
pub struct Delivery {
    /// The encoded message.
    pub payload: Bytes,
    /// What it holds.
    pub source: Source,
    /// JetStream: acknowledges the message (hand it to [`AckQueue`]).
    pub acker: Option<Acker>,
}

/// What an engine consumes.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Bus layout (URL, prefix, shard count, mode).
    pub bus: BusConfig,
    /// Shards to consume (see [`crate::owned_shards`]).
    pub shards: Vec<u32>,
    /// Also read Go2NetSpectra's one-packet messages from this subject.
    pub interop_subject: Option<String>,
    /// JetStream: how long the server waits for an ack before redelivering.
    /// Unacked batches are kept alive with progress acks, so this mostly
    /// bounds how soon a dead engine's batches go to its successor.
    pub ack_wait: Duration,
    /// Deliveries buffered between NATS and the engine (back-pressure).
    pub queue: usize,
}

/// Running subscriptions; deliveries arrive on the receiver [`Consumer::start`] returns.
pub struct Consumer {
    client: async_nats::Client,
    cfg: ConsumerConfig,
    stream: Option<async_nats::jetstream::stream::Stream>,
    tx: mpsc::Sender<Delivery>,
    shards: BTreeMap<u32, JoinHandle<()>>,
    interop: Option<JoinHandle<()>>,
    counters: Arc<BusCounters>,
}

/// Unacknowledged messages per shard the server hands out at most.
pub const MAX_ACK_PENDING: i64 = 16_384;

/// Messages a core subscription may hold before the client drops (and
/// counts a slow-consumer event).
const SUBSCRIPTION_CAPACITY: usize = 4096;

impl Consumer {
    /// Connects and subscribes to `cfg.shards` (JetStream: creates the
    /// stream and the durable consumers `<prefix>-shard-<s>` if missing).
    /// Returns once every subscription is registered with the server.
    pub async fn start(
        cfg: &ConsumerConfig,
    ) -> Result<(Consumer, mpsc::Receiver<Delivery>), BusError> {
        let counters = Arc::new(BusCounters::default());
        let client = connect(&cfg.bus, SUBSCRIPTION_CAPACITY, counters.clone()).await?;
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let stream = if cfg.bus.jetstream {
            let js = async_nats::jetstream::new(client.clone());
            Some(ensure_stream(&js, &cfg.bus).await?)
        } else {
            None
        };
        let mut consumer = Consumer {
            client,
            cfg: cfg.clone(),
            stream,
            tx,
            shards: BTreeMap::new(),
            interop: None,
            counters,
        };
        for &shard in &cfg.shards {
            consumer.add_shard(shard).await?;
        }
        if let Some(subject) = &cfg.interop_subject {
            let sub = subscribe(&consumer.client, subject).await?;
            let tx = consumer.tx.clone();
            consumer.interop = Some(tokio::spawn(forward_core(sub, Source::Interop, tx)));
        }
        consumer.flush().await?;
        Ok((consumer, rx))
    }

    /// Starts consuming `shard` (no-op if already consuming it).
    /// Subscriptions are registered once [`Consumer::flush`] returns.
    pub async fn add_shard(&mut self, shard: u32) -> Result<(), BusError> {
        if self.shards.contains_key(&shard) {
            return Ok(());
        }
        let bus = &self.cfg.bus;
        let task = match &self.stream {
            Some(stream) => {
                let name = bus.consumer_name(shard);
                let consumer: pull::Stream = stream
                    .get_or_create_consumer(
                        &name,
                        pull::Config {
                            durable_name: Some(name.clone()),
                            filter_subject: bus.subject(shard),
                            ack_policy: AckPolicy::Explicit,
                            ack_wait: self.cfg.ack_wait,
                            deliver_policy: DeliverPolicy::All,
                            // Acks wait for the window (closed at the latest
                            // by the packet clock's tick), so this bound only
                            // slows a huge window down; it keeps what waits
                            // for acks, here and on the server, bounded.
                            max_ack_pending: MAX_ACK_PENDING,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| BusError::JetStream {
                        what: format!("creating consumer {name}"),
                        source: e.into(),
                    })?
                    .stream()
                    .max_messages_per_batch(64)
                    .messages()
                    .await
                    .map_err(|e| BusError::JetStream {
                        what: format!("pulling from consumer {name}"),
                        source: e.into(),
                    })?;
                tokio::spawn(forward_jetstream(name, consumer, self.tx.clone()))
            }
            None => {
                let sub = subscribe(&self.client, &bus.subject(shard)).await?;
                tokio::spawn(forward_core(sub, Source::Batch, self.tx.clone()))
            }
        };
        self.shards.insert(shard, task);
        Ok(())
    }

    /// Stops consuming `shard`. Deliveries already queued stay in the
    /// receiver; JetStream messages pulled but not yet queued are
    /// redelivered (to the shard's next consumer) after `ack_wait`.
    /// Returns once its task is gone, so nothing of `shard` is queued later.
    pub async fn remove_shard(&mut self, shard: u32) {
        if let Some(t) = self.shards.remove(&shard) {
            t.abort();
            let _ = t.await;
        }
    }

    /// The shards being consumed.
    pub fn shards(&self) -> Vec<u32> {
        self.shards.keys().copied().collect()
    }

    /// Waits until the server has processed every subscription change.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(|e| BusError::Subscribe {
            subject: format!("{}.packets.*", self.cfg.bus.prefix),
            source: e.into(),
        })
    }

    /// Connection events and drops seen so far.
    pub fn counters(&self) -> Arc<BusCounters> {
        self.counters.clone()
    }

    /// The connection (for acks, health checks and the cluster bucket).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Stops consuming: subscriptions end; deliveries already queued stay
    /// in the receiver.
    pub fn stop(&mut self) {
        for (_, t) in std::mem::take(&mut self.shards) {
            t.abort();
        }
        if let Some(t) = self.interop.take() {
            t.abort();
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn subscribe(
    client: &async_nats::Client,
    subject: &str,
) -> Result<async_nats::Subscriber, BusError> {
    client
        .subscribe(subject.to_owned())
        .await
        .map_err(|e| BusError::Subscribe {
            subject: subject.to_owned(),
            source: e.into(),
        })
}

async fn forward_core(mut sub: async_nats::Subscriber, source: Source, tx: mpsc::Sender<Delivery>) {
    while let Some(m) = sub.next().await {
        let d = Delivery {
            payload: m.payload,
            source,
            acker: None,
        };
        if tx.send(d).await.is_err() {
            break;
        }
    }
}

async fn forward_jetstream(name: String, mut messages: pull::Stream, tx: mpsc::Sender<Delivery>) {
    while let Some(m) = messages.next().await {
        match m {
            Ok(m) => {
                let (m, acker) = m.split();
                let d = Delivery {
                    payload: m.payload,
                    source: Source::Batch,
                    acker: Some(acker),
                };
                if tx.send(d).await.is_err() {
                    break;
                }
            }
            // Missed heartbeats while reconnecting, etc.: the stream retries.
            Err(e) => {
                tracing::warn!(message = "JetStream pull error", consumer = %name, error = %e)
            }
        }
    }
    tracing::debug!(message = "JetStream pull stream ended", consumer = %name);
}

/// Remembers which batches were applied, per `(probe_id, shard)`, as sorted
/// ranges of `seq`: a batch already in a range is skipped. A set, not a
/// high-water mark, because JetStream delivers a dead engine's unacked
/// batches to its successor only after `ack_wait`, behind newer ones.
/// Contiguous sequences collapse into one range, so memory grows only with
/// gaps (batches lost in core mode, a probe restart); past
/// [`Dedupe::MAX_RANGES`] ranges for one shard the two oldest are merged,
/// which treats the oldest gap as applied.
///
/// Bounded in time too: a probe not seen for longer than the stream keeps
/// messages can send nothing that would be redelivered, so
/// [`Dedupe::forget_unseen_since`] drops it.
#[derive(Clone, Debug, Default)]
pub struct Dedupe {
    applied: HashMap<String, HashMap<u32, Vec<(u64, u64)>>>,
    skipped: u64,
    /// When each probe's batch was last accepted (wall clock ns).
    seen: HashMap<String, u64>,
    /// The wall clock as the caller last set it ([`Dedupe::set_clock`]).
    clock: u64,
}

impl Dedupe {
    /// Gaps remembered per `(probe_id, shard)`.
    pub const MAX_RANGES: usize = 1024;

    /// Sets the wall clock (ns) that accepted batches are stamped with;
    /// callers refresh it now and then, not per batch.
    pub fn set_clock(&mut self, now_ns: u64) {
        self.clock = now_ns;
    }

    /// The highest `seq` applied for `(probe_id, shard)`.
    pub fn last_applied(&self, probe_id: &str, shard: u32) -> Option<u64> {
        self.applied.get(probe_id)?.get(&shard)?.last().map(|r| r.1)
    }

    /// `(probe_id, highest seq applied)` of every probe seen on `shard`.
    pub fn last_per_probe(&self, shard: u32) -> Vec<(String, u64)> {
        self.applied
            .iter()
            .filter_map(|(p, shards)| Some((p.clone(), shards.get(&shard)?.last()?.1)))
            .collect()
    }

    /// Forgets every probe not seen since `cutoff_ns`; returns how many.
    pub fn forget_unseen_since(&mut self, cutoff_ns: u64) -> usize {
        let old: Vec<String> = self
            .seen
            .iter()
            .filter(|&(_, &t)| t < cutoff_ns)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &old {
            self.seen.remove(p);
            self.applied.remove(p);
        }
        old.len()
    }

    /// When `probe_id` was last seen (wall clock ns), if remembered.
    pub fn seen(&self, probe_id: &str) -> Option<u64> {
        self.seen.get(probe_id).copied()
    }

    /// Notes that `probe_id` was seen at `at_ns` (restoring stored progress).
    pub fn note_seen(&mut self, probe_id: &str, at_ns: u64) {
        let t = self.seen.entry(probe_id.to_owned()).or_default();
        *t = (*t).max(at_ns);
    }

    /// Whether the batch is new; records it as applied if so.
    pub fn accept(&mut self, probe_id: &str, shard: u32, seq: u64) -> bool {
        match self.seen.get_mut(probe_id) {
            Some(t) => *t = self.clock,
            None => {
                self.seen.insert(probe_id.to_owned(), self.clock);
            }
        }
        let shards = match self.applied.get_mut(probe_id) {
            Some(s) => s,
            None => self.applied.entry(probe_id.to_owned()).or_default(),
        };
        let ranges = shards.entry(shard).or_default();
        // Fast path: the next batch in order.
        if let Some(last) = ranges.last_mut() {
            if seq == last.1.wrapping_add(1) && seq != 0 {
                last.1 = seq;
                return true;
            }
        }
        // First range whose end is at or above seq.
        let i = ranges.partition_point(|r| r.1 < seq);
        if i < ranges.len() && ranges[i].0 <= seq {
            self.skipped += 1;
            return false;
        }
        let joins_prev = i > 0 && ranges[i - 1].1.wrapping_add(1) == seq;
        let joins_next = i < ranges.len() && seq.wrapping_add(1) == ranges[i].0;
        match (joins_prev, joins_next) {
            (true, true) => {
                ranges[i - 1].1 = ranges[i].1;
                ranges.remove(i);
            }
            (true, false) => ranges[i - 1].1 = seq,
            (false, true) => ranges[i].0 = seq,
            (false, false) => ranges.insert(i, (seq, seq)),
        }
        if ranges.len() > Self::MAX_RANGES {
            ranges[1].0 = ranges[0].0;
            ranges.remove(0);
        }
        true
    }

    /// Batches skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Whether the batch was applied (without recording anything).
    pub fn contains(&self, probe_id: &str, shard: u32, seq: u64) -> bool {
        let Some(ranges) = self.applied.get(probe_id).and_then(|s| s.get(&shard)) else {
            return false;
        };
        let i = ranges.partition_point(|r| r.1 < seq);
        i < ranges.len() && ranges[i].0 <= seq
    }

    /// Every `(probe_id, shard, ranges)`: the applied `seq`s as sorted,
    /// disjoint, inclusive ranges (what an engine stores to resume).
    pub fn ranges(&self) -> impl Iterator<Item = (&str, u32, &[(u64, u64)])> {
        self.applied.iter().flat_map(|(probe, shards)| {
            shards
                .iter()
                .map(move |(&shard, r)| (probe.as_str(), shard, r.as_slice()))
        })
    }

    /// Records the inclusive range `first..=last` as applied (restoring
    /// stored [`Dedupe::ranges`]); ranges it touches or overlaps merge.
    pub fn mark_applied(&mut self, probe_id: &str, shard: u32, first: u64, last: u64) {
        if first > last {
            return;
        }
        let ranges = self
            .applied
            .entry(probe_id.to_owned())
            .or_default()
            .entry(shard)
            .or_default();
        // Ranges that overlap or touch [first, last] are absorbed.
        let lo = ranges.partition_point(|r| r.1.saturating_add(1) < first);
        let hi = ranges.partition_point(|r| r.0 <= last.saturating_add(1));
        let (mut a, mut b) = (first, last);
        if lo < hi {
            a = a.min(ranges[lo].0);
            b = b.max(ranges[hi - 1].1);
        }
        ranges.splice(lo..hi, [(a, b)]);
        while ranges.len() > Self::MAX_RANGES {
            ranges[1].0 = ranges[0].0;
            ranges.remove(0);
        }
    }
}

/// What the ack queue did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckStats {
    /// Messages acknowledged.
    pub acked: u64,
    /// Progress acks sent for messages still waiting for their window.
    pub progress: u64,
    /// Messages left unacknowledged at the end (their windows were not
    /// stored; the server will redeliver them).
    pub unacked: u64,
    /// Acks that could not be sent.
    pub failed: u64,
}

/// Acknowledges JetStream messages once the windows holding them are
/// stored. The caller sends `(window, acker)` in delivery order, where
/// `window` is the 0-based index of the window the message's last packet
/// went into, and publishes on a watch channel how many windows have been
/// written; a message is acked when `written > window`.
pub struct AckQueue {
    tx: mpsc::UnboundedSender<(u64, Acker)>,
    task: JoinHandle<AckStats>,
}

impl AckQueue {
    /// Starts the queue's task on the current runtime. Messages waiting
    /// longer than half of `ack_wait` get a progress ack, so the server
    /// does not redeliver them while their window is still open.
    pub fn spawn(written: watch::Receiver<u64>, ack_wait: Duration) -> AckQueue {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_acks(rx, written, ack_wait));
        AckQueue { tx, task }
    }

    /// Where to send `(window, acker)` pairs (cheap to clone, any thread).
    pub fn sender(&self) -> mpsc::UnboundedSender<(u64, Acker)> {
        self.tx.clone()
    }

    /// Closes the queue: acks what the last `written` count allows (set it
    /// to `u64::MAX` once the engine has flushed everything) and returns
    /// the totals. Other senders must have been dropped.
    pub async fn finish(self) -> AckStats {
        drop(self.tx);
        self.task.await.unwrap_or_default()
    }
}

async fn run_acks(
    mut rx: mpsc::UnboundedReceiver<(u64, Acker)>,
    mut written: watch::Receiver<u64>,
    ack_wait: Duration,
) -> AckStats {
    let mut stats = AckStats::default();
    let mut pending: VecDeque<(u64, Acker, Instant)> = VecDeque::new();
    let half = (ack_wait / 2).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(half);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watching = true;
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some((window, acker)) => pending.push_back((window, acker, Instant::now())),
                None => break,
            },
            r = written.changed(), if watching => {
                if r.is_err() {
                    watching = false;
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for (_, acker, since) in pending.iter_mut() {
                    if now.duration_since(*since) >= half {
                        match acker.ack_with(AckKind::Progress).await {
                            Ok(()) => stats.progress += 1,
                            Err(e) => tracing::debug!(message = "progress ack failed", error = %e),
                        }
                        *since = now;
                    }
                }
            }
        }
        let w = *written.borrow();
        ack_ready(&mut pending, w, &mut stats).await;
    }
    let w = *written.borrow();
    ack_ready(&mut pending, w, &mut stats).await;
    stats.unacked = pending.len() as u64;
    stats
}

async fn ack_ready(
    pending: &mut VecDeque<(u64, Acker, Instant)>,
    written: u64,
    stats: &mut AckStats,
) {
    while pending.front().is_some_and(|p| p.0 < written) {
        let (_, acker, _) = pending.pop_front().expect("front exists");
        match acker.ack().await {
            Ok(()) => stats.acked += 1,
            Err(e) => {
                stats.failed += 1;
                tracing::warn!(message = "ack failed; the batch will be redelivered and skipped", error = %e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_skips_what_was_applied_per_probe_and_shard() {
        let mut d = Dedupe::default();
        assert!(d.accept("a", 0, 10));
        assert!(d.accept("a", 0, 11));
        assert!(!d.accept("a", 0, 11), "same batch again");
        assert!(!d.accept("a", 0, 10), "an older applied batch");
        assert!(
            d.accept("a", 0, 5),
            "an older batch never applied (redelivered late)"
        );
        assert!(!d.accept("a", 0, 5));
        assert!(d.accept("a", 1, 5), "another shard has its own sequence");
        assert!(d.accept("b", 0, 1), "another probe too");
        assert_eq!(d.skipped(), 3);
        // Gaps fill in, in any order, and each batch is accepted once.
        let mut d = Dedupe::default();
        let order = [7u64, 3, 9, 4, 8, 1, 2, 6, 5, 10];
        for &s in &order {
            assert!(d.accept("p", 0, s), "{s}");
        }
        for s in 1..=10 {
            assert!(!d.accept("p", 0, s), "{s}");
        }
        assert_eq!(d.applied["p"][&0], vec![(1, 10)]);
    }

    #[test]
    fn probes_unseen_for_longer_than_the_stream_keeps_are_forgotten() {
        let mut d = Dedupe::default();
        d.set_clock(100);
        assert!(d.accept("old", 0, 1));
        d.set_clock(500);
        assert!(d.accept("new", 0, 1));
        assert_eq!(d.forget_unseen_since(200), 1);
        assert_eq!(d.seen("old"), None);
        assert!(
            d.accept("old", 0, 1),
            "forgotten: a probe id reused much later is new"
        );
        assert!(!d.accept("new", 0, 1), "kept");
        let back = crate::progress::decode(&crate::progress::encode(&d, None)).unwrap();
        assert_eq!(
            back.seen("new"),
            Some(500),
            "the time travels with the progress"
        );
    }

    #[test]
    fn ranges_restore_into_an_equal_dedupe() {
        let mut d = Dedupe::default();
        for s in [1u64, 2, 3, 7, 8, 20] {
            assert!(d.accept("p", 3, s));
        }
        assert!(d.accept("q", 0, 5));
        let mut r = Dedupe::default();
        for (probe, shard, ranges) in d.ranges() {
            for &(a, b) in ranges {
                r.mark_applied(probe, shard, a, b);
            }
        }
        assert_eq!(r.applied, d.applied);
        for s in [1u64, 2, 3, 7, 8, 20] {
            assert!(r.contains("p", 3, s));
            assert!(!r.accept("p", 3, s), "{s}");
        }
        assert!(!r.contains("p", 3, 4));
        assert!(r.accept("p", 3, 4));
        assert!(r.accept("p", 3, 21));
        // Overlapping and touching ranges merge.
        let mut m = Dedupe::default();
        m.mark_applied("p", 0, 10, 12);
        m.mark_applied("p", 0, 20, 22);
        m.mark_applied("p", 0, 13, 19);
        m.mark_applied("p", 0, 1, 3);
        m.mark_applied("p", 0, 2, 11);
        assert_eq!(m.applied["p"][&0], vec![(1, 22)]);
        m.mark_applied("p", 0, 30, 30);
        assert_eq!(m.applied["p"][&0], vec![(1, 22), (30, 30)]);
    }
}
