//! Elastic shard ownership: the engine's side of [`netspectra_bus::cluster`].
//!
//! Every heartbeat the engine renews its membership and its shard leases,
//! computes which shards it should own among the live members, takes the
//! free ones it should own, and gives back the ones it should not:
//!
//! ```text
//!  should own, free ─► take lease ─► (JetStream) seed dedupe from every engine's
//!                                     stored progress ─► consume
//!  owns, should not ─► stop consuming ─► apply what was queued ─► wait until that
//!                      window is stored (JetStream) ─► release lease ─► new owner takes it
//!  lease lost (expired while paused, NATS gone > ¾ TTL) ─► stop consuming at once
//! ```
//!
//! With JetStream, batches the old owner applied are stored with its
//! progress before it releases, and the batches it had not stored are
//! unacked, so the new owner gets them again and skips exactly those it
//! finds in the stored progress. A dead owner's leases expire after the
//! TTL; what it had stored is in its progress and the rest is redelivered.

use netspectra_bus::cluster::{self, Membership};
use netspectra_bus::lease::{Lease, LeaseBucket};
use netspectra_bus::{BusConfig, BusError};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Shard moves decided by one heartbeat, for the consuming loop to carry out.
#[derive(Debug, Default)]
pub(crate) struct Moves {
    /// Leases just taken: seed, then consume.
    pub(crate) take: Vec<u32>,
    /// Stop consuming, then report [`Elastic::stopped`].
    pub(crate) give_back: Vec<u32>,
    /// Leases lost: stop consuming at once.
    pub(crate) lost: Vec<u32>,
}

/// This engine's membership and the shard leases it holds.
pub(crate) struct Elastic {
    membership: Membership,
    shards: u32,
    jetstream: bool,
    interval: Duration,
    next_beat: Instant,
    held: BTreeMap<u32, Lease>,
    /// Shards no longer consumed, released once windows up to the given
    /// index are stored.
    leaving: BTreeMap<u32, u64>,
    /// Members seen at the last heartbeat.
    members: Vec<String>,
}

impl Elastic {
    /// Joins the cluster of `bus` as `id`.
    pub(crate) async fn join(
        bucket: LeaseBucket,
        bus: &BusConfig,
        id: &str,
    ) -> Result<Elastic, BusError> {
        let ttl = bucket.ttl();
        let membership = Membership::join(bucket, id).await?;
        Ok(Elastic {
            membership,
            shards: bus.shards,
            jetstream: bus.jetstream,
            interval: ttl / 4,
            next_beat: Instant::now(),
            held: BTreeMap::new(),
            leaving: BTreeMap::new(),
            members: Vec::new(),
        })
    }

    /// Whether a heartbeat is due.
    pub(crate) fn due(&self) -> bool {
        Instant::now() >= self.next_beat
    }

    /// Live members at the last heartbeat.
    pub(crate) fn members(&self) -> &[String] {
        &self.members
    }

    /// One heartbeat: renew, release what is stored, decide moves.
    /// `written`: windows stored so far.
    pub(crate) async fn beat(&mut self, written: u64) -> Result<Moves, BusError> {
        self.next_beat = Instant::now() + self.interval;
        let mut moves = Moves::default();
        let bucket = self.membership.bucket().clone();
        let ttl = bucket.ttl();
        let id = self.membership.id().to_owned();
        // Renew first: a lease not renewed in time is no longer ours.
        for (&shard, lease) in self.held.iter_mut() {
            match bucket.renew(lease, &id).await {
                Ok(true) => {}
                Ok(false) => moves.lost.push(shard),
                Err(error) if !lease.is_fresh(ttl) => {
                    tracing::warn!(message = "cannot renew a shard lease; giving the shard up", shard, %error);
                    moves.lost.push(shard);
                }
                Err(_) => {}
            }
        }
        for shard in &moves.lost {
            self.held.remove(shard);
            self.leaving.remove(shard);
            tracing::error!(
                message = "shard lease lost: stopped consuming it (another engine owns it now)",
                shard
            );
        }
        self.members = self.membership.heartbeat().await?;
        // Give back the shards whose applied batches are stored.
        let ready: Vec<u32> = self
            .leaving
            .iter()
            .filter(|&(_, &window)| !self.jetstream || written > window)
            .map(|(&s, _)| s)
            .collect();
        for shard in ready {
            self.leaving.remove(&shard);
            if let Some(lease) = self.held.remove(&shard) {
                bucket.release(lease).await?;
                tracing::info!(message = "shard handed over", shard);
            }
        }
        let wanted = cluster::assigned(&self.members, &id, self.shards);
        for &shard in self.held.keys() {
            if !wanted.contains(&shard) && !self.leaving.contains_key(&shard) {
                moves.give_back.push(shard);
            }
        }
        for shard in wanted {
            if self.held.contains_key(&shard) {
                continue;
            }
            if let Some(lease) = bucket.try_acquire(&cluster::shard_key(shard), &id).await? {
                self.held.insert(shard, lease);
                moves.take.push(shard);
            }
        }
        Ok(moves)
    }

    /// The loop stopped consuming `shard` and applied everything it had
    /// received from it into windows up to `window`; the lease is released
    /// at the first heartbeat after that window is stored.
    pub(crate) fn stopped(&mut self, shard: u32, window: u64) {
        if self.held.contains_key(&shard) {
            self.leaving.insert(shard, window);
            self.next_beat = Instant::now();
        }
    }

    /// Releases every lease and leaves, so others take over at once
    /// (everything applied is stored by now).
    pub(crate) async fn leave(mut self) -> Result<(), BusError> {
        let bucket = self.membership.bucket().clone();
        for (_, lease) in std::mem::take(&mut self.held) {
            bucket.release(lease).await?;
        }
        self.membership.leave().await
    }
}
