//! The packet bus: probes publish batches of packet records on NATS, engines
//! consume the shards they own.
//!
//! ```text
//!  probe: decode ─► Batcher (per shard: 1024 packets | 512 KiB | 100 ms | aligned slot)
//!                     └─► Publisher ─► <prefix>.packets.<shard>   (core NATS, or a JetStream
//!                                                                   stream with Nats-Msg-Id)
//!  engine: Consumer of the shards it holds leases on ─► Delivery ─► Dedupe ─► engine
//!                     └─► AckQueue: JetStream acks once the window holding the batch is stored
//! ```
//!
//! **Sharding.** A packet's shard is a hash of its *source address*
//! ([`shard_of`]), not of the 5-tuple: every task keyed by source (per-source
//! totals, heavy hitters by source, SuperSpread's distinct destinations per
//! source) then sees all of a source's packets on one engine, so no distinct
//! count is ever split across engines. Exact additive tasks (per flow, per
//! destination) are exact under any split, since the store sums rows over
//! engines. The cost is balance: one very heavy source lands on one shard.
//!
//! **Ownership.** By default engines find each other ([`cluster`]): each
//! holds a membership lease in a NATS KV bucket, shards are assigned among
//! the live members by rendezvous hashing, and an engine consumes a shard
//! only while it holds that shard's lease, so engines started alike split
//! the work, and a dead engine's shards move once its leases expire. The
//! static override: engine `I` of `E` owns the shards `s % E == I`
//! ([`owned_shards`]). [`lease`] is the same mechanism as a library (leader
//! election with fencing tokens).
//!
//! **Delivery.** Core NATS is at-most-once and fast: a slow engine loses
//! messages, which are counted ([`BusCounters`]). JetStream is
//! at-least-once: a durable pull consumer per shard, explicit acks sent only
//! after the batch's window has been written to the store ([`AckQueue`]),
//! and batch ids `(probe_id, shard, seq)` so a redelivered batch is skipped
//! ([`Dedupe`]).

mod batch;
mod bucket;
pub mod cluster;
mod consume;
pub mod lease;
pub mod progress;
mod publish;

pub use batch::{BatchLimits, Batcher, SealedBatch, DEFAULT_ALIGN_NS, MAX_PACKET_WIRE};
pub use consume::{AckQueue, AckStats, Consumer, ConsumerConfig, Dedupe, Delivery, Source};
pub use publish::{PublishHealth, PublishStats, Publisher, RetryPolicy, ShardStats};

/// Acknowledges one JetStream message (what [`Delivery::acker`] holds).
pub use async_nats::jetstream::message::Acker;
/// How a JetStream message is answered (ack, nak, …).
pub use async_nats::jetstream::AckKind;
/// A NATS connection ([`Consumer::client`]).
pub use async_nats::Client as NatsClient;

use netspectra_model::PacketRecord;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Default subject prefix.
pub const DEFAULT_PREFIX: &str = "netspectra";
/// Default number of shards.
pub const DEFAULT_SHARDS: u32 = 16;
/// Default NATS URL when neither a flag nor `probe.nats_url` gives one.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// Go2NetSpectra's subject (one `PacketInfo` per message).
pub const GO2NETSPECTRA_SUBJECT: &str = "gons.packets.raw";

/// Where the bus lives and how it is laid out; probes and engines must agree
/// on `prefix`, `shards` and `jetstream`.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// NATS server URL(s), comma separated.
    pub url: String,
    /// Subject prefix: batches go to `<prefix>.packets.<shard>`.
    pub prefix: String,
    /// Number of shards (≥ 1).
    pub shards: u32,
    /// At-least-once delivery through a JetStream stream instead of core NATS.
    pub jetstream: bool,
    /// Connection name shown by the server (probe or engine id).
    pub name: String,
    /// JetStream: the stream forgets messages older than this...
    pub max_age: Duration,
    /// ... and drops its oldest beyond this many bytes.
    pub max_bytes: u64,
}

impl BusConfig {
    /// A configuration with the defaults and the given URL.
    pub fn new(url: impl Into<String>) -> BusConfig {
        BusConfig {
            url: url.into(),
            prefix: DEFAULT_PREFIX.into(),
            shards: DEFAULT_SHARDS,
            jetstream: false,
            name: "netspectra".into(),
            max_age: Duration::from_secs(24 * 3600),
            max_bytes: 10 << 30,
        }
    }

    /// The layout and limits of a config's `bus` section, on `url`.
    pub fn from_section(
        url: impl Into<String>,
        bus: &netspectra_model::config::BusSection,
    ) -> BusConfig {
        BusConfig {
            prefix: bus.prefix.clone(),
            shards: bus.shards,
            jetstream: bus.jetstream,
            max_age: Duration::from_nanos(bus.stream_max_age.0),
            max_bytes: bus.stream_max_bytes.0,
            ..BusConfig::new(url)
        }
    }

    /// The subject of a shard: `<prefix>.packets.<shard>`.
    pub fn subject(&self, shard: u32) -> String {
        format!("{}.packets.{shard}", self.prefix)
    }

    /// The JetStream stream holding every shard (`<PREFIX>_PACKETS`, with
    /// characters streams do not allow replaced by `_`).
    pub fn stream_name(&self) -> String {
        let p: String = self
            .prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{p}_PACKETS")
    }

    /// The durable consumer of a shard: `<prefix>-shard-<s>`.
    pub fn consumer_name(&self, shard: u32) -> String {
        format!(
            "{}-shard-{shard}",
            netspectra_model::safe_name(&self.prefix)
        )
    }
}

/// The shard of a record: `xxh3_64` of its 16-byte source address modulo
/// `shards` (**contract**: probes and engines of any version must agree;
/// xxh3 is specified and seedless here, so it is stable across builds).
#[inline]
pub fn shard_of(rec: &PacketRecord, shards: u32) -> u32 {
    shard_of_src(&rec.src_ip, shards)
}

/// [`shard_of`] for an address.
#[inline]
pub fn shard_of_src(src_ip: &[u8; 16], shards: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(src_ip) % u64::from(shards.max(1))) as u32
}

/// The shards engine `index` of `engines` owns: `s % engines == index`.
pub fn owned_shards(index: u32, engines: u32, shards: u32) -> Vec<u32> {
    (0..shards)
        .filter(|s| engines > 0 && s % engines == index)
        .collect()
}

/// Connection-level events, counted (and logged as they happen).
#[derive(Debug, Default)]
pub struct BusCounters {
    /// Times the client lost its server.
    pub disconnects: AtomicU64,
    /// Times it (re)connected, the first connection included.
    pub connects: AtomicU64,
    /// Slow-consumer events: a subscription's queue was full and the client
    /// dropped a message (core NATS only; each event is at least one lost batch).
    pub slow_consumer: AtomicU64,
}

impl BusCounters {
    /// A snapshot: (connects, disconnects, slow-consumer events).
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.connects.load(Ordering::Relaxed),
            self.disconnects.load(Ordering::Relaxed),
            self.slow_consumer.load(Ordering::Relaxed),
        )
    }

    /// Whether the client holds a connection now (it connected more often
    /// than it lost one).
    pub fn connected(&self) -> bool {
        let (connects, disconnects, _) = self.snapshot();
        connects > disconnects
    }
}

/// What went wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The server could not be reached.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The URL tried.
        url: String,
        /// The cause.
        source: async_nats::ConnectError,
    },
    /// A JetStream stream or consumer could not be created or read.
    #[error("JetStream {what}: {source}")]
    JetStream {
        /// What was being done.
        what: String,
        /// The cause.
        source: async_nats::Error,
    },
    /// Publishing failed.
    #[error("publishing to {subject}: {source}")]
    Publish {
        /// The subject.
        subject: String,
        /// The cause.
        source: async_nats::Error,
    },
    /// Another live engine already uses this id.
    #[error("engine id '{0}' is in use by a live engine: give each engine its own --engine-id (or leave it unset)")]
    IdInUse(String),
    /// Subscribing failed.
    #[error("subscribing to {subject}: {source}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// The cause.
        source: async_nats::Error,
    },
}

/// Connects with unlimited reconnects, logging connection events and
/// counting them in `counters`.
pub async fn connect(
    cfg: &BusConfig,
    subscription_capacity: usize,
    counters: Arc<BusCounters>,
) -> Result<async_nats::Client, BusError> {
    connect_with(cfg, subscription_capacity, counters, false).await
}

/// [`connect`]; with `in_background`, returns at once and keeps trying to
/// reach the server (a probe may start before NATS).
pub(crate) async fn connect_with(
    cfg: &BusConfig,
    subscription_capacity: usize,
    counters: Arc<BusCounters>,
    in_background: bool,
) -> Result<async_nats::Client, BusError> {
    let name = cfg.name.clone();
    let mut opts = async_nats::ConnectOptions::new();
    if in_background {
        opts = opts.retry_on_initial_connect();
    }
    let opts = opts
        .name(&cfg.name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .subscription_capacity(subscription_capacity)
        .event_callback(move |event| {
            let counters = counters.clone();
            let name = name.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        let n = counters.connects.fetch_add(1, Ordering::Relaxed);
                        if n > 0 {
                            tracing::info!(message = "reconnected to NATS", conn = %name);
                        }
                    }
                    async_nats::Event::Disconnected => {
                        counters.disconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(message = "disconnected from NATS; reconnecting", conn = %name);
                    }
                    async_nats::Event::SlowConsumer(sid) => {
                        counters.slow_consumer.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(message = "slow consumer: NATS messages dropped", conn = %name, sid);
                    }
                    other => tracing::info!(message = "NATS event", conn = %name, event = %other),
                }
            }
        });
    let client = opts
        .connect(cfg.url.as_str())
        .await
        .map_err(|source| BusError::Connect {
            url: netspectra_model::redact::redact_urls(&cfg.url),
            source,
        })?;
    tracing::debug!(message = "connected to NATS", url = %netspectra_model::redact::Redacted(&cfg.url));
    Ok(client)
}

/// Creates the JetStream stream holding every shard if it is missing:
/// subjects `<prefix>.packets.>`, file storage, 2-minute duplicate window
/// (server-side dedupe by `Nats-Msg-Id`), bounded by `max_age` and
/// `max_bytes` (oldest messages go first). An existing stream whose limits
/// differ is updated to this process's limits.
pub async fn ensure_stream(
    js: &async_nats::jetstream::Context,
    cfg: &BusConfig,
) -> Result<async_nats::jetstream::stream::Stream, BusError> {
    use async_nats::jetstream::stream;
    let config = stream::Config {
        name: cfg.stream_name(),
        subjects: vec![format!("{}.packets.>", cfg.prefix)],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120).min(cfg.max_age),
        max_age: cfg.max_age,
        max_bytes: i64::try_from(cfg.max_bytes).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    };
    let err = |what: &str, e: async_nats::Error| BusError::JetStream {
        what: format!("{what} stream {}", cfg.stream_name()),
        source: e,
    };
    let mut existing = js
        .get_or_create_stream(config.clone())
        .await
        .map_err(|e| err("creating", e.into()))?;
    let info = existing
        .info()
        .await
        .map_err(|e| err("reading", e.into()))?;
    if info.config.max_age != config.max_age || info.config.max_bytes != config.max_bytes {
        tracing::info!(message = "updating the stream's limits", stream = %cfg.stream_name(),
            max_age_s = config.max_age.as_secs(), max_bytes = config.max_bytes);
        js.update_stream(stream::Config {
            max_age: config.max_age,
            max_bytes: config.max_bytes,
            ..info.config.clone()
        })
        .await
        .map_err(|e| err("updating", e.into()))?;
    }
    Ok(existing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netspectra_model::ip;

    #[test]
    fn every_shard_has_exactly_one_owner() {
        for engines in 1..6 {
            let mut seen = vec![0; 16];
            for i in 0..engines {
                for s in owned_shards(i, engines, 16) {
                    seen[s as usize] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{engines} engines: {seen:?}");
        }
    }

    #[test]
    fn shard_depends_on_the_source_only_and_spreads() {
        let mut counts = [0u32; 16];
        for i in 0..16_000u32 {
            let a = PacketRecord {
                src_ip: ip::from_v4(i.to_be_bytes()),
                dst_ip: ip::from_v4([1, 1, 1, 1]),
                ..Default::default()
            };
            let b = PacketRecord {
                dst_ip: ip::from_v4([2, 2, 2, 2]),
                src_port: 99,
                ..a
            };
            assert_eq!(shard_of(&a, 16), shard_of(&b, 16));
            counts[shard_of(&a, 16) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        // Stable across builds (contract): a fixed address, a fixed shard.
        assert_eq!(
            shard_of_src(&ip::from_v4([10, 0, 0, 1]), 16),
            shard_of_src(&ip::from_v4([10, 0, 0, 1]), 16)
        );
    }

    #[test]
    fn names() {
        let c = BusConfig::new("nats://x");
        assert_eq!(c.subject(3), "netspectra.packets.3");
        assert_eq!(c.stream_name(), "NETSPECTRA_PACKETS");
        assert_eq!(c.consumer_name(3), "netspectra-shard-3");
    }
}
