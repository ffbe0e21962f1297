//! Engines that find each other: membership and shard ownership through
//! leases in one KV bucket per bus (`<PREFIX>_CLUSTER`).
//!
//! * Each engine holds the lease `member.<id>` while it runs (renewed by
//!   its heartbeat); the live members are the `member.*` keys.
//! * Each shard `s` has an owner by rendezvous hashing over the live
//!   members ([`assigned`]): adding or removing one of N engines moves
//!   about 1/N of the shards, and every engine computes the same answer.
//! * An engine consumes a shard only while it holds the lease `shard.<s>`.
//!   A shard that should move is released by its holder (once what it
//!   applied from the shard is stored) and then taken by its new owner; a
//!   dead engine's leases expire after the TTL and are taken the same way.
//!   So no shard ever has two consumers, and none stays without one for
//!   longer than a TTL plus a heartbeat.

use crate::lease::{Lease, LeaseBucket};
use crate::{BusConfig, BusError};
use futures::TryStreamExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Default lease TTL: a dead engine's shards move within TTL + TTL/4.
pub const DEFAULT_TTL: Duration = Duration::from_secs(4);

/// The KV key of a member (characters KV keys do not allow become `_`).
pub fn member_key(id: &str) -> String {
    format!("member.{}", key_safe(id))
}

/// The KV key of a shard's lease.
pub fn shard_key(shard: u32) -> String {
    format!("shard.{shard}")
}

fn key_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The cluster bucket of a bus: `<PREFIX>_CLUSTER`.
pub fn bucket_name(bus: &BusConfig) -> String {
    let stream = bus.stream_name();
    format!(
        "{}_CLUSTER",
        stream.strip_suffix("_PACKETS").unwrap_or(&stream)
    )
}

/// Opens (creating if missing) the cluster bucket of `bus` on `client`.
pub async fn open_bucket(
    client: &async_nats::Client,
    bus: &BusConfig,
    ttl: Duration,
) -> Result<LeaseBucket, BusError> {
    open_named(client, &bucket_name(bus), ttl).await
}

async fn open_named(
    client: &async_nats::Client,
    name: &str,
    ttl: Duration,
) -> Result<LeaseBucket, BusError> {
    LeaseBucket::open(&async_nats::jetstream::new(client.clone()), name, ttl).await
}

/// The bucket holding the alerter's leadership lease: `<PREFIX>_ALERTER`
/// (its own TTL, independent of the engines' membership TTL).
pub fn alerter_bucket_name(bus: &BusConfig) -> String {
    bucket_name(bus).replace("_CLUSTER", "_ALERTER")
}

/// Opens (creating if missing) the alerter's lease bucket.
pub async fn open_alerter_bucket(
    client: &async_nats::Client,
    bus: &BusConfig,
    ttl: Duration,
) -> Result<LeaseBucket, BusError> {
    open_named(client, &alerter_bucket_name(bus), ttl).await
}

/// The shards `me` owns among `members` (rendezvous hashing: each shard
/// goes to the member with the highest `xxh3(member, shard)`).
pub fn assigned(members: &[String], me: &str, shards: u32) -> Vec<u32> {
    (0..shards)
        .filter(|&s| owner(members, s) == Some(me))
        .collect()
}

/// The member that should own `shard`.
pub fn owner(members: &[String], shard: u32) -> Option<&str> {
    members
        .iter()
        .max_by_key(|m| {
            let mut key = m.as_bytes().to_vec();
            key.extend_from_slice(&shard.to_le_bytes());
            (xxhash_rust::xxh3::xxh3_64(&key), m.as_str())
        })
        .map(String::as_str)
}

/// This engine's place in the cluster: its membership lease and the shard
/// leases it holds, all renewed by a background task (so a busy consuming
/// loop does not lose them), which also notes the leases it lost.
pub struct Membership {
    bucket: LeaseBucket,
    id: String,
    held: Arc<Mutex<Held>>,
    renewer: JoinHandle<()>,
}

/// The leases a member holds.
struct Held {
    member: Lease,
    shards: BTreeMap<u32, Lease>,
    /// Shard leases found lost (taken by another, or not renewed in time).
    lost: Vec<u32>,
}

impl Membership {
    /// Joins: takes the lease `member.<id>` and starts renewing it on the
    /// current runtime. Fails if a live engine uses the same id (ids must
    /// be unique; rows, progress and spools carry them).
    ///
    /// A lease left by a dead process with the same id (a restart right
    /// after a crash) expires within a TTL: join waits that long for it.
    pub async fn join(bucket: LeaseBucket, id: &str) -> Result<Membership, BusError> {
        let give_up = tokio::time::Instant::now() + bucket.ttl() * 5 / 4;
        let member = loop {
            if let Some(lease) = bucket.try_acquire(&member_key(id), id).await? {
                break lease;
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(BusError::IdInUse(id.to_owned()));
            }
            tracing::info!(message = "engine id held by a live (or just dead) engine; waiting for its lease", %id);
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let held = Arc::new(Mutex::new(Held {
            member,
            shards: BTreeMap::new(),
            lost: Vec::new(),
        }));
        let renewer = tokio::spawn(renew(bucket.clone(), id.to_owned(), Arc::clone(&held)));
        Ok(Membership {
            bucket,
            id: id.to_owned(),
            held,
            renewer,
        })
    }

    /// This member's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The cluster's lease bucket (for other duties, e.g. retention).
    pub fn bucket(&self) -> &LeaseBucket {
        &self.bucket
    }

    /// The live members' ids, sorted.
    pub async fn members(&self) -> Result<Vec<String>, BusError> {
        let mut members = self.bucket.values_under("member.").await?;
        members.sort();
        members.dedup();
        Ok(members)
    }

    /// Takes `shard`'s lease if it is free.
    pub async fn try_take(&self, shard: u32) -> Result<bool, BusError> {
        match self.bucket.try_acquire(&shard_key(shard), &self.id).await? {
            Some(lease) => {
                self.lock().shards.insert(shard, lease);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Releases `shard`'s lease so its next owner can take it at once.
    pub async fn give_back(&self, shard: u32) -> Result<(), BusError> {
        let lease = self.lock().shards.remove(&shard);
        match lease {
            Some(lease) => self.bucket.release(lease, &self.id).await,
            None => Ok(()),
        }
    }

    /// The shards whose lease is held.
    pub fn held(&self) -> Vec<u32> {
        self.lock().shards.keys().copied().collect()
    }

    /// The shard leases lost since the last call: stop consuming them.
    pub fn lost(&self) -> Vec<u32> {
        std::mem::take(&mut self.lock().lost)
    }

    /// Releases every lease and leaves.
    pub async fn leave(mut self) -> Result<(), BusError> {
        // Wait until the renewer is gone: a renewal still in flight could
        // otherwise rejoin after the release below.
        self.renewer.abort();
        let _ = (&mut self.renewer).await;
        let (member, shards) = {
            let mut h = self.lock();
            (h.member.clone(), std::mem::take(&mut h.shards))
        };
        for (_, lease) in shards {
            self.bucket.release(lease, &self.id).await?;
        }
        self.bucket.release(member, &self.id).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Renews the member's leases four times per TTL.
async fn renew(bucket: LeaseBucket, id: String, held: Arc<Mutex<Held>>) {
    let ttl = bucket.ttl();
    let lock = || held.lock().unwrap_or_else(|e| e.into_inner());
    let mut tick = tokio::time::interval(ttl / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let mut member = lock().member.clone();
        let renewed = match bucket.renew(&mut member, &id).await {
            Ok(true) => Ok(member),
            // Expired during a long pause: join again.
            Ok(false) => match bucket.try_acquire(&member_key(&id), &id).await {
                Ok(Some(lease)) => {
                    tracing::warn!(message = "cluster membership had expired; rejoined", %id);
                    Ok(lease)
                }
                Ok(None) => Err(BusError::IdInUse(id.clone())),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match renewed {
            Ok(lease) => {
                lock().member = lease;
                if std::mem::take(&mut failing) {
                    tracing::info!(message = "cluster leases renew again", %id);
                }
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::error!(message = "cannot renew cluster membership", %id, %error);
                }
            }
        }
        let shards: Vec<(u32, Lease)> =
            lock().shards.iter().map(|(&s, l)| (s, l.clone())).collect();
        for (shard, mut lease) in shards {
            let result = bucket.renew(&mut lease, &id).await;
            let mut h = lock();
            // Given back meanwhile: nothing to update.
            if h.shards.get(&shard).is_none_or(|l| l.token != lease.token) {
                continue;
            }
            match result {
                Ok(true) => {
                    h.shards.insert(shard, lease);
                }
                Err(_) if lease.is_fresh(ttl) => {}
                Ok(false) | Err(_) => {
                    h.shards.remove(&shard);
                    h.lost.push(shard);
                    tracing::error!(message = "shard lease lost: another engine may own it now", shard, %id);
                }
            }
        }
    }
}

/// Where core-NATS engines leave, per shard, the last batch they applied
/// from each probe (a KV bucket `<PREFIX>_SEQ` without expiry), so the
/// next owner of a shard can count the batches lost in between: core NATS
/// is at-most-once, and a handover must not lose data silently.
pub struct SeqBoard {
    kv: crate::bucket::KvBucket,
}

impl SeqBoard {
    /// Opens (creating if missing) the board of `bus`.
    pub async fn open(client: &async_nats::Client, bus: &BusConfig) -> Result<SeqBoard, BusError> {
        let js = async_nats::jetstream::new(client.clone());
        let name = format!("{}_SEQ", bucket_name(bus).trim_end_matches("_CLUSTER"));
        let kv = crate::bucket::KvBucket::open(&js, &name, Duration::ZERO).await?;
        Ok(SeqBoard { kv })
    }

    /// Records the last `seq` applied per probe on `shard`.
    pub async fn put(&self, shard: u32, last: &[(String, u64)]) -> Result<(), BusError> {
        let map: serde_json::Map<String, serde_json::Value> =
            last.iter().map(|(p, s)| (p.clone(), (*s).into())).collect();
        let value = serde_json::Value::Object(map).to_string();
        self.kv
            .run(|kv| {
                let value = value.clone();
                async move { kv.put(shard.to_string(), value.into()).await }
            })
            .await
            .map(|_| ())
            .map_err(|e| BusError::JetStream {
                what: format!("recording shard {shard}'s last batches"),
                source: e.into(),
            })
    }

    /// The last `seq` applied per probe on `shard`, as its owner left it.
    pub async fn get(&self, shard: u32) -> Result<Vec<(String, u64)>, BusError> {
        let value = self
            .kv
            .run(|kv| async move { kv.get(shard.to_string()).await })
            .await
            .map_err(|e| BusError::JetStream {
                what: format!("reading shard {shard}'s last batches"),
                source: e.into(),
            })?;
        let parsed: serde_json::Value = value
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        Ok(parsed
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(p, s)| Some((p.clone(), s.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl LeaseBucket {
    /// Holders of the live leases whose key starts with `prefix`.
    ///
    /// The keys come from one stream-info request listing the bucket's
    /// subjects, not from `kv.keys()`: that consumer counts the entries to
    /// deliver when it starts, and an entry rewritten meanwhile (every
    /// lease is renewed four times per TTL) is never delivered, so the
    /// listing misses it, or waits 5 s for the client's idle heartbeat.
    pub async fn values_under(&self, prefix: &str) -> Result<Vec<String>, BusError> {
        let err = |e: async_nats::Error| BusError::JetStream {
            what: "listing cluster members".into(),
            source: e,
        };
        let keys = self
            .bucket()
            .run(|kv| async move {
                let all = format!("{}>", kv.prefix);
                let mut listed = kv.stream.info_with_subjects(&all).await?;
                let mut keys = Vec::new();
                while let Some((subject, _count)) = listed.try_next().await? {
                    match subject.strip_prefix(kv.prefix.as_str()) {
                        Some(key) if key.starts_with(prefix) => keys.push(key.to_owned()),
                        _ => {}
                    }
                }
                Ok::<_, async_nats::jetstream::stream::InfoError>(keys)
            })
            .await
            .map_err(|e| err(e.into()))?;
        let mut out = Vec::new();
        for k in keys {
            if let Some(v) = self.holder(&k).await? {
                out.push(v);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("host-{i}")).collect()
    }

    #[test]
    fn every_shard_has_one_owner_and_a_new_member_moves_about_its_share() {
        let shards = 256;
        for n in 1..6 {
            let members = ids(n);
            let mut seen = vec![0; shards as usize];
            for m in &members {
                for s in assigned(&members, m, shards) {
                    seen[s as usize] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{n} members");
            let mut more = members.clone();
            more.push("newcomer".into());
            let moved = (0..shards)
                .filter(|&s| owner(&members, s) != owner(&more, s))
                .count();
            // Only the newcomer's share moves, ~ shards / (n + 1).
            assert!(
                (0..shards).all(|s| owner(&members, s) == owner(&more, s)
                    || owner(&more, s) == Some("newcomer")),
                "only shards going to the newcomer move"
            );
            let share = shards as usize / (n + 1);
            assert!(
                moved > share / 2 && moved < share * 2,
                "{n}: {moved} moved, share {share}"
            );
        }
    }

    #[test]
    fn keys_and_bucket_names() {
        assert_eq!(member_key("host a.1:2"), "member.host_a_1_2");
        assert_eq!(shard_key(7), "shard.7");
        assert_eq!(
            bucket_name(&BusConfig::new("nats://x")),
            "NETSPECTRA_CLUSTER"
        );
    }
}
