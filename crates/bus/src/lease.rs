//! Leases over a NATS KV bucket: one holder per named duty at a time, with
//! a fencing token, for anything a cluster must do exactly once (the
//! alerter, retention, owning a shard).
//!
//! A lease is a KV entry `<duty>` whose value is the holder's id, in a
//! bucket whose `max_age` is the lease's TTL: the server itself forgets an
//! entry that was not renewed within the TTL, so a holder that dies
//! (SIGKILL, lost host) frees its duties without anyone's help.
//!
//! * **Acquire** is `create` (fails while someone holds it).
//! * **Renew** is `update` with the revision last written: if another
//!   process took the duty meanwhile, the revision moved and the renewal
//!   fails, so a holder learns it lost the lease at its next renewal.
//! * **Fencing token**: the revision of the acquiring `create`. Revisions
//!   of a stream only grow, so a later holder always carries a larger
//!   token; whatever a leader writes should carry it, and a reader keeps
//!   only the largest token seen ([`Fence`]).
//!
//! [`Leadership`] runs the loop for one duty: it keeps trying to acquire,
//! renews four times per TTL, and steps down by itself once it has not
//! renewed for ¾ of the TTL. The server frees the entry only a full TTL
//! after the last renewal, so two holders never act at once as long as
//! clocks on both sides advance at the same rate.
//!
//! ```no_run
//! # async fn demo(js: async_nats::jetstream::Context) -> Result<(), netspectra_bus::BusError> {
//! use netspectra_bus::lease::{LeaseBucket, Leadership};
//! use std::time::Duration;
//! let bucket = LeaseBucket::open(&js, "NETSPECTRA_LEADERS", Duration::from_secs(5)).await?;
//! let leader = Leadership::spawn(bucket, "alerter", "host-a-4242");
//! if let Some(token) = leader.token() {
//!     // act as the alerter; tag writes with `token`
//! }
//! # Ok(()) }
//! ```

use crate::bucket::KvBucket;
use crate::BusError;
use async_nats::jetstream::kv;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A KV bucket holding leases that expire after `ttl`.
#[derive(Clone)]
pub struct LeaseBucket {
    kv: KvBucket,
    ttl: Duration,
}

/// A lease held: the duty, the fencing token, and the revision to renew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The duty (KV key).
    pub duty: String,
    /// Revision of the acquiring write: grows with every new holder.
    pub token: u64,
    /// Revision of the last write (acquire or renewal).
    revision: u64,
    /// When the last write was confirmed (local clock).
    renewed: Instant,
}

impl Lease {
    /// Whether the lease is still safe to act on: renewed within ¾ of
    /// `ttl` (the server frees it only after a whole `ttl`).
    pub fn is_fresh(&self, ttl: Duration) -> bool {
        self.renewed.elapsed() < ttl * 3 / 4
    }
}

impl LeaseBucket {
    /// Opens (creating if missing) the bucket `name` whose entries expire
    /// `ttl` after their last write. Memory storage: leases need no disk.
    pub async fn open(
        js: &async_nats::jetstream::Context,
        name: &str,
        ttl: Duration,
    ) -> Result<LeaseBucket, BusError> {
        let kv = KvBucket::open(js, name, ttl).await?;
        Ok(LeaseBucket { kv, ttl })
    }

    pub(crate) fn bucket(&self) -> &KvBucket {
        &self.kv
    }

    /// The TTL of every lease in the bucket.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes `duty` for `holder` if no one holds it; `None` if someone does.
    pub async fn try_acquire(&self, duty: &str, holder: &str) -> Result<Option<Lease>, BusError> {
        let put =
            |kv: kv::Store| async move { kv.create(duty, Bytes::from(holder.to_owned())).await };
        match self.kv.run(put).await {
            Ok(revision) => Ok(Some(Lease {
                duty: duty.to_owned(),
                token: revision,
                revision,
                renewed: Instant::now(),
            })),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(self.error(format!("acquiring {duty}"), e)),
        }
    }

    /// Extends `lease` by a TTL. `Ok(false)`: the lease was lost (expired
    /// and taken, or deleted); stop acting on it.
    pub async fn renew(&self, lease: &mut Lease, holder: &str) -> Result<bool, BusError> {
        let sent = Instant::now();
        let (duty, revision) = (&lease.duty, lease.revision);
        let put = |kv: kv::Store| async move {
            kv.update(duty, Bytes::from(holder.to_owned()), revision)
                .await
        };
        match self.kv.run(put).await {
            Ok(revision) => {
                lease.revision = revision;
                lease.renewed = sent;
                Ok(true)
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(self.error(format!("renewing {}", lease.duty), e)),
        }
    }

    /// Gives `lease` up at once, even if a renewal raced with the release:
    /// when the revision moved, the entry is deleted if `holder` still
    /// holds it (and left alone if someone else took it meanwhile).
    pub async fn release(&self, lease: Lease, holder: &str) -> Result<(), BusError> {
        let duty = lease.duty.clone();
        let err = |e: kv::UpdateError| self.error(format!("releasing {duty}"), e);
        let delete = |revision| {
            let duty = &duty;
            self.kv.run(move |kv: kv::Store| async move {
                kv.delete_expect_revision(duty, Some(revision)).await
            })
        };
        match delete(lease.revision).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => {
                let entry = self
                    .kv
                    .run(|kv: kv::Store| {
                        let duty = &duty;
                        async move { kv.entry(duty.as_str()).await }
                    })
                    .await
                    .map_err(|e| self.error(format!("reading {duty}"), e))?;
                match entry {
                    Some(e)
                        if e.operation == kv::Operation::Put && e.value == holder.as_bytes() =>
                    {
                        delete(e.revision).await.or_else(|e| match e.kind() {
                            kv::DeleteErrorKind::WrongLastRevision => Ok(()),
                            _ => Err(err(e)),
                        })
                    }
                    _ => Ok(()),
                }
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Leaves a short note under `key` (it expires with the bucket's TTL):
    /// how a holder tells the next one something, e.g. a clean handover.
    pub async fn note(&self, key: &str, value: &str) -> Result<(), BusError> {
        self.kv
            .run(|kv: kv::Store| async move { kv.put(key, Bytes::from(value.to_owned())).await })
            .await
            .map(|_| ())
            .map_err(|e| self.error(format!("writing {key}"), e))
    }

    /// Reads and removes the note under `key`, if any.
    pub async fn take_note(&self, key: &str) -> Result<Option<String>, BusError> {
        let value = self.holder(key).await?;
        if value.is_some() {
            self.kv
                .run(|kv: kv::Store| async move { kv.delete(key).await })
                .await
                .map_err(|e| self.error(format!("removing {key}"), e))?;
        }
        Ok(value)
    }

    /// Who holds `duty` now, if anyone.
    pub async fn holder(&self, duty: &str) -> Result<Option<String>, BusError> {
        let entry = self
            .kv
            .run(|kv: kv::Store| async move { kv.entry(duty).await })
            .await
            .map_err(|e| self.error(format!("reading {duty}"), e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }

    fn error(&self, what: String, e: impl Into<async_nats::Error>) -> BusError {
        BusError::JetStream {
            what,
            source: e.into(),
        }
    }
}

/// Keeps trying to hold one duty, renews it while held, and publishes
/// whether this process is the leader (with its fencing token).
pub struct Leadership {
    state: watch::Receiver<Option<u64>>,
    task: JoinHandle<()>,
}

impl Leadership {
    /// Starts the election loop for `duty` on the current tokio runtime.
    pub fn spawn(bucket: LeaseBucket, duty: &str, holder: &str) -> Leadership {
        let (tx, state) = watch::channel(None);
        let task = tokio::spawn(lead(bucket, duty.to_owned(), holder.to_owned(), tx));
        Leadership { state, task }
    }

    /// The fencing token while this process leads; `None` otherwise.
    pub fn token(&self) -> Option<u64> {
        *self.state.borrow()
    }

    /// Changes of leadership, to await.
    pub fn watch(&self) -> watch::Receiver<Option<u64>> {
        self.state.clone()
    }

    /// Stops the loop without releasing: the lease expires after its TTL
    /// (what a crash does).
    pub fn abandon(self) {
        self.task.abort();
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn lead(bucket: LeaseBucket, duty: String, holder: String, tx: watch::Sender<Option<u64>>) {
    let ttl = bucket.ttl();
    let mut tick = tokio::time::interval(ttl / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held: Option<Lease> = None;
    loop {
        tick.tick().await;
        match held.as_mut() {
            Some(lease) => match bucket.renew(lease, &holder).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(message = "leadership lost", %duty, %holder, token = lease.token);
                    held = None;
                }
                Err(error) if !lease.is_fresh(ttl) => {
                    tracing::warn!(message = "leadership given up: cannot renew", %duty, %holder, %error);
                    held = None;
                }
                Err(error) => {
                    tracing::debug!(message = "lease renewal failed; retrying", %duty, %error)
                }
            },
            None => match bucket.try_acquire(&duty, &holder).await {
                Ok(Some(lease)) => {
                    tracing::info!(message = "leadership taken", %duty, %holder, token = lease.token);
                    held = Some(lease);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(message = "cannot try for leadership", %duty, %error)
                }
            },
        }
        let token = held.as_ref().map(|l| l.token);
        tx.send_if_modified(|t| {
            let changed = *t != token;
            *t = token;
            changed
        });
    }
}

/// Keeps the largest fencing token seen and refuses writes carrying an
/// older one: what a sink shared by successive leaders checks.
#[derive(Debug, Default)]
pub struct Fence(AtomicU64);

impl Fence {
    /// Whether a write with `token` may go ahead (it is the newest seen).
    pub fn admit(&self, token: u64) -> bool {
        self.0.fetch_max(token, Ordering::SeqCst) <= token
    }
}

/// Shared form of [`Fence`].
pub type SharedFence = Arc<Fence>;
