//! The probe's publisher: sealed batches to their shard's subject, on core
//! NATS or into the JetStream stream with server-side dedupe ids.

use crate::{connect, ensure_stream, BusConfig, BusCounters, BusError, SealedBatch};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use std::collections::VecDeque;
use std::sync::Arc;

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
}

/// Publishes sealed batches. One task owns it.
pub struct Publisher {
    cfg: BusConfig,
    client: async_nats::Client,
    js: Option<async_nats::jetstream::Context>,
    probe_id: String,
    subjects: Vec<async_nats::Subject>,
    inflight: VecDeque<(u32, PublishAckFuture)>,
    stats: PublishStats,
    counters: Arc<BusCounters>,
}

impl Publisher {
    /// Connects (and in JetStream mode creates the stream if missing).
    /// `probe_id` names the batches in `Nats-Msg-Id`.
    pub async fn connect(cfg: &BusConfig, probe_id: &str) -> Result<Publisher, BusError> {
        let counters = Arc::new(BusCounters::default());
        let client = connect(cfg, 1024, counters.clone()).await?;
        let js = if cfg.jetstream {
            let js = async_nats::jetstream::new(client.clone());
            ensure_stream(&js, cfg).await?;
            Some(js)
        } else {
            None
        };
        Ok(Publisher {
            subjects: (0..cfg.shards)
                .map(|s| async_nats::Subject::from(cfg.subject(s)))
                .collect(),
            cfg: cfg.clone(),
            client,
            js,
            probe_id: probe_id.to_owned(),
            inflight: VecDeque::new(),
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

    /// Publishes one batch. Core mode: returns once the client queued it.
    /// JetStream mode: returns once it is sent, waiting only when
    /// [`MAX_INFLIGHT`] acks are outstanding.
    pub async fn publish(&mut self, batch: SealedBatch) -> Result<(), BusError> {
        let shard = batch.shard.min(self.cfg.shards.saturating_sub(1));
        let subject = self.subjects[shard as usize].clone();
        let len = batch.payload.len() as u64;
        match &self.js {
            None => {
                self.client
                    .publish(subject, batch.payload)
                    .await
                    .map_err(|e| BusError::Publish {
                        subject: self.cfg.subject(shard),
                        source: e.into(),
                    })?;
                self.count(shard, 1, batch.packets, len);
            }
            Some(js) => {
                let id = format!("{}.{}.{}", self.probe_id, batch.shard, batch.seq);
                let ack = js
                    .send_publish(
                        subject,
                        PublishMessage::build()
                            .payload(batch.payload)
                            .message_id(id),
                    )
                    .await
                    .map_err(|e| BusError::Publish {
                        subject: self.cfg.subject(shard),
                        source: e.into(),
                    })?;
                // Packets and bytes count when sent, the batch when the
                // stream acknowledges it.
                self.count(shard, 0, batch.packets, len);
                self.inflight.push_back((shard, ack));
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

    async fn settle_one(&mut self) -> Result<(), BusError> {
        let Some((shard, ack)) = self.inflight.pop_front() else {
            return Ok(());
        };
        let ack = ack.await.map_err(|e| BusError::Publish {
            subject: self.cfg.subject(shard),
            source: e.into(),
        })?;
        if ack.duplicate {
            self.stats.duplicates += 1;
        }
        self.count(shard, 1, 0, 0);
        Ok(())
    }

    /// Waits until everything published reached the server (core: flushed;
    /// JetStream: every ack received) and returns the totals.
    pub async fn finish(mut self) -> Result<PublishStats, BusError> {
        while !self.inflight.is_empty() {
            self.settle_one().await?;
        }
        self.client.flush().await.map_err(|e| BusError::Publish {
            subject: format!("{}.packets.*", self.cfg.prefix),
            source: e.into(),
        })?;
        Ok(self.stats)
    }
}
