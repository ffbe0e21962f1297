//! The probe's publisher: sealed batches to their shard's subject, on core
//! NATS or into the JetStream stream with server-side dedupe ids.
//!
//! [`Publisher::run`] never gives up silently: when NATS is unreachable or
//! JetStream does not acknowledge, it keeps the batches in a bounded buffer
//! and retries with backoff (a JetStream batch is republished with the same
//! `Nats-Msg-Id`, so one the stream did store is not stored twice); past
//! the buffer it drops the newest batches and counts them. Every change
//! between working and failing is logged once and published as
//! [`PublishHealth`] for readiness and metrics.

use crate::{connect_with, ensure_stream, BusConfig, BusCounters, BusError, SealedBatch};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// JetStream acks awaited at most this many batches behind the newest
/// publish (pipelining: publishes do not wait for each ack).
const MAX_INFLIGHT: usize = 256;

/// Totals of one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Batches published.
    pub batches: u64,
    /// Packets in them.
    pub packets: u64,
    /// Payload bytes.
    pub bytes: u64,
}

/// What a publisher sent.
#[derive(Clone, Debug, Default)]
pub struct PublishStats {
    /// Batches published (acknowledged by the stream in JetStream mode).
    pub batches: u64,
    /// Packets in them.
    pub packets: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Per shard, indexed by shard.
    pub per_shard: Vec<ShardStats>,
    /// JetStream acks that flagged the batch as a duplicate (already stored).
    pub duplicates: u64,
    /// Batches dropped because NATS could not take them and the buffer
    /// was full (or the retries ran out at the end).
    pub dropped_batches: u64,
    /// Packets in them.
    pub dropped_packets: u64,
    /// Publishes retried after a failure.
    pub retries: u64,
}

/// How the publishing loop is doing, for readiness and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishHealth {
    /// Why publishing fails now (`None`: it works).
    pub failing: Option<String>,
    /// Batches dropped so far.
    pub dropped_batches: u64,
    /// Packets in them.
    pub dropped_packets: u64,
    /// Batches waiting to be (re)published.
    pub buffered: usize,
}

/// Limits of [`Publisher::run`].
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Batches kept while NATS cannot take them; newer ones are dropped.
    pub buffer_batches: usize,
    /// Once the input has ended, how long to keep retrying before dropping
    /// what is left.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            buffer_batches: 4096,
            give_up_after: Duration::from_secs(30),
        }
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Publishes sealed batches. One task owns it.
pub struct Publisher {
    cfg: BusConfig,
    client: async_nats::Client,
    js: Option<async_nats::jetstream::Context>,
    /// Whether the JetStream stream is known to exist.
    stream_ready: bool,
    /// Connections made so far that a flush has confirmed.
    confirmed_connects: u64,
    probe_id: String,
    subjects: Vec<async_nats::Subject>,
    inflight: VecDeque<(SealedBatch, PublishAckFuture)>,
    /// Batches whose publish or ack failed, to send again first.
    retry: VecDeque<SealedBatch>,
    stats: PublishStats,
    counters: Arc<BusCounters>,
}

impl Publisher {
    /// Connects (and in JetStream mode creates the stream if missing).
    /// `probe_id` names the batches in `Nats-Msg-Id`.
    pub async fn connect(cfg: &BusConfig, probe_id: &str) -> Result<Publisher, BusError> {
        let mut p = Publisher::connect_in_background(cfg, probe_id).await?;
        p.client.flush().await.map_err(|e| BusError::Publish {
            subject: format!("{}.packets.*", cfg.prefix),
            source: e.into(),
        })?;
        p.ensure_stream().await?;
        Ok(p)
    }

    /// Returns at once; the connection (and the stream) are made when NATS
    /// answers, and [`Publisher::run`] buffers until then.
    pub async fn connect_in_background(
        cfg: &BusConfig,
        probe_id: &str,
    ) -> Result<Publisher, BusError> {
        let counters = Arc::new(BusCounters::default());
        let client = connect_with(cfg, 1024, counters.clone(), true).await?;
        let js = cfg
            .jetstream
            .then(|| async_nats::jetstream::new(client.clone()));
        Ok(Publisher {
            subjects: (0..cfg.shards)
                .map(|s| async_nats::Subject::from(cfg.subject(s)))
                .collect(),
            cfg: cfg.clone(),
            client,
            js,
            stream_ready: false,
            confirmed_connects: u64::MAX,
            probe_id: probe_id.to_owned(),
            inflight: VecDeque::new(),
            retry: VecDeque::new(),
            stats: PublishStats {
                per_shard: vec![ShardStats::default(); cfg.shards as usize],
                ..Default::default()
            },
            counters,
        })
    }

    /// Connection events seen so far.
    pub fn counters(&self) -> Arc<BusCounters> {
        self.counters.clone()
    }

    async fn ensure_stream(&mut self) -> Result<(), BusError> {
        if let (Some(js), false) = (&self.js, self.stream_ready) {
            ensure_stream(js, &self.cfg).await?;
            self.stream_ready = true;
        }
        Ok(())
    }

    /// Publishes one batch. Core mode: returns once the client queued it.
    /// JetStream mode: returns once it is sent, waiting only when
    /// [`MAX_INFLIGHT`] acks are outstanding. On failure the batch (and, in
    /// JetStream mode, every batch whose ack is outstanding) is kept for
    /// [`Publisher::run`] to send again.
    pub async fn publish(&mut self, batch: SealedBatch) -> Result<(), BusError> {
        let shard = batch.shard.min(self.cfg.shards.saturating_sub(1));
        let subject = self.subjects[shard as usize].clone();
        let len = batch.payload.len() as u64;
        let prefix = self.cfg.prefix.clone();
        let fail = |source: async_nats::Error| BusError::Publish {
            subject: format!("{prefix}.packets.{shard}"),
            source,
        };
        if self.client.connection_state() != async_nats::connection::State::Connected {
            self.retry.push_front(batch);
            return Err(fail("not connected".into()));
        }
        // One round trip before the first publish on each (re)connection:
        // a connection that is not really up shows as an error (and a
        // retry) here rather than as a publish into a dead socket.
        let connects = self
            .counters
            .connects
            .load(std::sync::atomic::Ordering::Relaxed);
        if connects != self.confirmed_connects {
            if let Err(e) = self.client.flush().await {
                self.retry.push_front(batch);
                return Err(fail(e.into()));
            }
            self.confirmed_connects = connects;
        }
        if let Err(e) = self.ensure_stream().await {
            self.retry.push_front(batch);
            return Err(e);
        }
        match &self.js {
            None => {
                let sent = self.client.publish(subject, batch.payload.clone()).await;
                if let Err(e) = sent {
                    self.retry.push_front(batch);
                    return Err(fail(e.into()));
                }
                self.count(shard, 1, batch.packets, len);
            }
            Some(js) => {
                let id = format!("{}.{}.{}", self.probe_id, batch.shard, batch.seq);
                let sent = js
                    .send_publish(
                        subject,
                        PublishMessage::build()
                            .payload(batch.payload.clone())
                            .message_id(id),
                    )
                    .await;
                match sent {
                    Ok(ack) => self.inflight.push_back((batch, ack)),
                    Err(e) => {
                        self.retry.push_front(batch);
                        return Err(fail(e.into()));
                    }
                }
                while self.inflight.len() >= MAX_INFLIGHT {
                    self.settle_one().await?;
                }
            }
        }
        Ok(())
    }

    fn count(&mut self, shard: u32, batches: u64, packets: u32, bytes: u64) {
        let s = &mut self.stats.per_shard[shard as usize];
        s.batches += batches;
        s.packets += u64::from(packets);
        s.bytes += bytes;
        self.stats.batches += batches;
        self.stats.packets += u64::from(packets);
        self.stats.bytes += bytes;
    }

    /// Waits for the oldest outstanding ack. If it fails, every outstanding
    /// batch goes back to the retry queue (their acks would fail alike).
    async fn settle_one(&mut self) -> Result<(), BusError> {
        let Some((batch, ack)) = self.inflight.pop_front() else {
            return Ok(());
        };
        match ack.await {
            Ok(ack) => {
                if ack.duplicate {
                    self.stats.duplicates += 1;
                }
                let shard = batch.shard.min(self.cfg.shards.saturating_sub(1));
                self.count(shard, 1, batch.packets, batch.payload.len() as u64);
                Ok(())
            }
            Err(e) => {
                let shard = batch.shard;
                self.retry.push_front(batch);
                self.retry.extend(
                    std::mem::take(&mut self.inflight)
                        .into_iter()
                        .map(|(b, _)| b),
                );
                Err(BusError::Publish {
                    subject: format!("{}.packets.{shard}", self.cfg.prefix),
                    source: e.into(),
                })
            }
        }
    }

    /// Waits until everything published reached the server (core: flushed;
    /// JetStream: every ack received) and returns the totals. Fails, keeping
    /// what was not acknowledged for a retry, if it could not.
    async fn settle_all(&mut self) -> Result<(), BusError> {
        while !self.inflight.is_empty() {
            self.settle_one().await?;
        }
        self.client.flush().await.map_err(|e| BusError::Publish {
            subject: format!("{}.packets.*", self.cfg.prefix),
            source: e.into(),
        })
    }

    /// Waits until everything published reached the server and returns the
    /// totals (no retries: for callers that publish a known set).
    pub async fn finish(mut self) -> Result<PublishStats, BusError> {
        self.settle_all().await?;
        Ok(self.stats)
    }

    /// Publishes every batch `rx` yields until it closes, then settles.
    /// Failures are retried with backoff from a buffer of
    /// `policy.buffer_batches`; beyond it the newest batches are dropped
    /// and counted. Health changes are sent on `health`.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<SealedBatch>,
        health: watch::Sender<PublishHealth>,
        policy: RetryPolicy,
    ) -> PublishStats {
        let mut queue: VecDeque<SealedBatch> = VecDeque::new();
        let mut open = true;
        let mut backoff = MIN_BACKOFF;
        let mut failing_since: Option<Instant> = None;
        loop {
            if open && queue.is_empty() && self.retry.is_empty() {
                match rx.recv().await {
                    Some(b) => queue.push_back(b),
                    None => open = false,
                }
            }
            while open {
                match rx.try_recv() {
                    Ok(b) => self.admit(&mut queue, b, policy, &health),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => open = false,
                }
            }
            let next = self.retry.pop_front().or_else(|| queue.pop_front());
            // The input has ended and everything is sent: settle (flush,
            // await acks), and stop once that worked.
            let settling = next.is_none() && !open;
            let result = match next {
                Some(b) => self.publish(b).await,
                None if settling => self.settle_all().await,
                None => continue,
            };
            match result {
                Ok(()) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            message = "publishing to NATS works again",
                            failed_for_s = since.elapsed().as_secs_f64(),
                            dropped_batches = self.stats.dropped_batches
                        );
                        backoff = MIN_BACKOFF;
                        self.report(&health, None, &queue);
                    }
                    if settling && self.retry.is_empty() {
                        break;
                    }
                }
                Err(error) => {
                    self.stats.retries += 1;
                    let since = *failing_since.get_or_insert_with(|| {
                        tracing::error!(message = "publishing to NATS fails; buffering and retrying",
                            url = %self.cfg.url, %error);
                        Instant::now()
                    });
                    self.report(&health, Some(error.to_string()), &queue);
                    if !open && since.elapsed() >= policy.give_up_after {
                        let left: Vec<SealedBatch> = self
                            .retry
                            .drain(..)
                            .chain(queue.drain(..))
                            .chain(
                                std::mem::take(&mut self.inflight)
                                    .into_iter()
                                    .map(|(b, _)| b),
                            )
                            .collect();
                        for b in &left {
                            self.drop_batch(b);
                        }
                        tracing::error!(message = "gave up publishing; batches dropped",
                            batches = left.len(), %error);
                        self.report(&health, Some(error.to_string()), &queue);
                        break;
                    }
                    // Wait, still taking what the capture sends.
                    let until = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(until) => break,
                            b = rx.recv(), if open => match b {
                                Some(b) => self.admit(&mut queue, b, policy, &health),
                                None => open = false,
                            },
                        }
                    }
                }
            }
        }
        self.stats
    }

    fn admit(
        &mut self,
        queue: &mut VecDeque<SealedBatch>,
        b: SealedBatch,
        policy: RetryPolicy,
        health: &watch::Sender<PublishHealth>,
    ) {
        if queue.len() + self.retry.len() >= policy.buffer_batches.max(1) {
            self.drop_batch(&b);
            let failing = health.borrow().failing.clone();
            self.report(health, failing, queue);
        } else {
            queue.push_back(b);
        }
    }

    fn drop_batch(&mut self, b: &SealedBatch) {
        self.stats.dropped_batches += 1;
        self.stats.dropped_packets += u64::from(b.packets);
    }

    fn report(
        &self,
        health: &watch::Sender<PublishHealth>,
        failing: Option<String>,
        queue: &VecDeque<SealedBatch>,
    ) {
        health.send_replace(PublishHealth {
            failing,
            dropped_batches: self.stats.dropped_batches,
            dropped_packets: self.stats.dropped_packets,
            buffered: queue.len() + self.retry.len(),
        });
    }
}
