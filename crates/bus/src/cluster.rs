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
use futures::StreamExt;
use std::time::Duration;

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
    let js = async_nats::jetstream::new(client.clone());
    LeaseBucket::open(&js, &bucket_name(bus), ttl).await
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

/// This engine's place in the cluster.
pub struct Membership {
    bucket: LeaseBucket,
    id: String,
    lease: Lease,
}

impl Membership {
    /// Joins: takes the lease `member.<id>`. Fails if a live engine uses
    /// the same id (ids must be unique; rows and progress carry them).
    pub async fn join(bucket: LeaseBucket, id: &str) -> Result<Membership, BusError> {
        let key = member_key(id);
        match bucket.try_acquire(&key, id).await? {
            Some(lease) => Ok(Membership {
                bucket,
                id: id.to_owned(),
                lease,
            }),
            None => Err(BusError::IdInUse(id.to_owned())),
        }
    }

    /// This member's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bucket (for shard leases).
    pub fn bucket(&self) -> &LeaseBucket {
        &self.bucket
    }

    /// Renews membership (rejoining if the lease was lost, e.g. after a
    /// long pause) and returns the live members' ids, sorted.
    pub async fn heartbeat(&mut self) -> Result<Vec<String>, BusError> {
        if !self.bucket.renew(&mut self.lease, &self.id).await? {
            tracing::warn!(message = "cluster membership had expired; rejoining", id = %self.id);
            let key = member_key(&self.id);
            self.lease = self
                .bucket
                .try_acquire(&key, &self.id)
                .await?
                .ok_or_else(|| BusError::IdInUse(self.id.clone()))?;
        }
        self.members().await
    }

    /// The live members' ids, sorted.
    pub async fn members(&self) -> Result<Vec<String>, BusError> {
        let mut members = self.bucket.values_under("member.").await?;
        members.sort();
        members.dedup();
        Ok(members)
    }

    /// Leaves at once (shards are released separately).
    pub async fn leave(self) -> Result<(), BusError> {
        self.bucket.release(self.lease).await
    }
}

impl LeaseBucket {
    /// Holders of the live leases whose key starts with `prefix`.
    pub async fn values_under(&self, prefix: &str) -> Result<Vec<String>, BusError> {
        let err = |e: async_nats::Error| BusError::JetStream {
            what: "listing cluster members".into(),
            source: e,
        };
        let mut keys = self.store().keys().await.map_err(|e| err(e.into()))?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(|e| err(e.into()))?;
            if k.starts_with(prefix) {
                if let Some(v) = self.holder(&k).await? {
                    out.push(v);
                }
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
