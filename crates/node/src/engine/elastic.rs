//! Elastic shard ownership: the engine's side of [`netspectra_bus::cluster`].
//!
//! Every heartbeat the engine renews its membership and its shard leases,
//! computes which shards it should own among the live members, takes the
//! free ones it should own, and gives back the ones it should not:
//!
//! ```text
//!  should own, free ─► take lease ─► (JetStream) seed dedupe from every engine's
//!                                     stored progress ─► consume
//!  owns, should not ─► (JetStream) keep consuming until the sketch period ends,
//!                      giving its next-period batches back (NAK) ─► stop consuming ─►
//!                      apply what was queued ─► wait until that window is stored ─►
//!                      note the clean handover ─► release lease ─► new owner takes it
//!                      (core NATS: stop at once; the split period is marked partial)
//!  lease lost (expired while paused, NATS gone > ¾ TTL) ─► stop consuming at once
//! ```
//!
//! With JetStream, batches the old owner applied are stored with its
//! progress before it releases, and the batches it had not stored are
//! unacked, so the new owner gets them again and skips exactly those it
//! finds in the stored progress. A dead owner's leases expire after the
//! TTL; what it had stored is in its progress and the rest is redelivered.

use netspectra_bus::cluster::{self, Membership, SeqBoard};
use netspectra_bus::lease::LeaseBucket;
use netspectra_bus::{BusConfig, BusError};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn handover_key(shard: u32) -> String {
    format!("handover.{shard}")
}

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

/// This engine's membership and the shard moves under way.
pub(crate) struct Elastic {
    membership: Membership,
    shards: u32,
    jetstream: bool,
    interval: Duration,
    next_beat: Instant,
    /// Shards no longer consumed, released once windows up to the given
    /// index are stored; with the period boundary they stopped at, when
    /// they left cleanly there.
    leaving: BTreeMap<u32, (Option<u64>, Option<u64>)>,
    /// Members seen at the last heartbeat.
    members: Vec<String>,
    /// Core NATS: the last batch applied per shard and probe, shared.
    board: Option<SeqBoard>,
    /// What was last put on the board, per shard.
    posted: BTreeMap<u32, Vec<(String, u64)>>,
}

impl Elastic {
    /// Joins the cluster of `bus` as `id` (its leases are renewed in the
    /// background from now on).
    pub(crate) async fn join(
        client: &netspectra_bus::NatsClient,
        bucket: LeaseBucket,
        bus: &BusConfig,
        id: &str,
    ) -> Result<Elastic, BusError> {
        let interval = bucket.ttl() / 4;
        let board = match bus.jetstream {
            false => Some(SeqBoard::open(client, bus).await?),
            true => None,
        };
        let membership = Membership::join(bucket, id).await?;
        Ok(Elastic {
            membership,
            shards: bus.shards,
            jetstream: bus.jetstream,
            interval,
            next_beat: Instant::now(),
            leaving: BTreeMap::new(),
            members: Vec::new(),
            board,
            posted: BTreeMap::new(),
        })
    }

    /// Whether a heartbeat is due.
    pub(crate) fn due(&self) -> bool {
        Instant::now() >= self.next_beat
    }

    /// The cluster's lease bucket.
    pub(crate) fn bucket(&self) -> &LeaseBucket {
        self.membership.bucket()
    }

    /// Live members at the last heartbeat.
    pub(crate) fn members(&self) -> &[String] {
        &self.members
    }

    /// One heartbeat: note lost leases, release what is stored, decide
    /// moves. `written`: windows stored so far.
    ///
    /// The moves come back even when the heartbeat fails part way: leases
    /// lost (NATS gone) must still stop consumption, and a lease taken
    /// before the failure must still be consumed.
    pub(crate) async fn beat(&mut self, written: u64) -> (Moves, Result<(), BusError>) {
        self.next_beat = Instant::now() + self.interval;
        let mut moves = Moves {
            lost: self.membership.lost(),
            ..Moves::default()
        };
        for shard in &moves.lost {
            self.leaving.remove(shard);
        }
        let outcome = self.decide(written, &mut moves).await;
        (moves, outcome)
    }

    /// The part of [`Elastic::beat`] that talks to the cluster.
    async fn decide(&mut self, written: u64, moves: &mut Moves) -> Result<(), BusError> {
        self.members = self.membership.members().await?;
        // Give back the shards whose applied batches are stored.
        let ready: Vec<u32> = self
            .leaving
            .iter()
            .filter(|&(_, &(window, _))| !self.jetstream || window.is_none_or(|w| written > w))
            .map(|(&s, _)| s)
            .collect();
        for shard in ready {
            match self.leaving.remove(&shard) {
                // The next owner starts at a period boundary: its sketches,
                // and ours, see whole periods of this shard.
                Some((_, Some(boundary))) => {
                    self.membership
                        .bucket()
                        .note(&handover_key(shard), &boundary.to_string())
                        .await?
                }
                // Not clean: no older note may say otherwise.
                _ => {
                    self.membership
                        .bucket()
                        .take_note(&handover_key(shard))
                        .await?;
                }
            }
            self.membership.give_back(shard).await?;
            tracing::info!(message = "shard handed over", shard);
        }
        let wanted = cluster::assigned(&self.members, self.membership.id(), self.shards);
        let held = self.membership.held();
        for &shard in &held {
            if !wanted.contains(&shard) && !self.leaving.contains_key(&shard) {
                moves.give_back.push(shard);
            }
        }
        for shard in wanted {
            if !held.contains(&shard) && self.membership.try_take(shard).await? {
                moves.take.push(shard);
            }
        }
        Ok(())
    }

    /// Core NATS: posts the last batch applied per probe on each of
    /// `shards` (those that changed since the last post).
    pub(crate) async fn post_last(
        &mut self,
        last: Vec<(u32, Vec<(String, u64)>)>,
    ) -> Result<(), BusError> {
        let Some(board) = &self.board else {
            return Ok(());
        };
        for (shard, mut per_probe) in last {
            per_probe.sort();
            if self.posted.get(&shard) != Some(&per_probe) {
                board.put(shard, &per_probe).await?;
                self.posted.insert(shard, per_probe);
            }
        }
        Ok(())
    }

    /// Core NATS: the last batch per probe the previous owner of `shard`
    /// posted (empty with JetStream, whose stored progress says more).
    pub(crate) async fn last_posted(&self, shard: u32) -> Result<Vec<(String, u64)>, BusError> {
        match &self.board {
            Some(board) => board.get(shard).await,
            None => Ok(Vec::new()),
        }
    }

    /// The loop stopped consuming `shard` and applied everything it had
    /// received from it into windows up to `window` (`boundary`: exactly up
    /// to that period end); the lease is released at the first heartbeat
    /// after that window is stored, or at once when `window` is None (the
    /// engine never applied a record: nothing waits to be stored).
    pub(crate) fn stopped(&mut self, shard: u32, window: Option<u64>, boundary: Option<u64>) {
        self.leaving.insert(shard, (window, boundary));
        self.next_beat = Instant::now();
    }

    /// Whether the previous owner of `shard` (just taken) left it cleanly
    /// at a period boundary (then this engine's sketches are not split).
    pub(crate) async fn took_cleanly(&self, shard: u32) -> Result<bool, BusError> {
        Ok(self
            .membership
            .bucket()
            .take_note(&handover_key(shard))
            .await?
            .is_some())
    }

    /// Releases every lease and leaves, so others take over at once
    /// (everything applied is stored by now).
    pub(crate) async fn leave(self) -> Result<(), BusError> {
        self.membership.leave().await
    }
}
