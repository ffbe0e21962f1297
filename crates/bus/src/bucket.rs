//! A NATS KV bucket that outlives a restart of nats-server.
//!
//! Leases and the core-NATS sequence board live in memory-storage buckets
//! (they need no disk), so a restarted server has forgotten them: every
//! call would then fail with "stream not found" for as long as the process
//! runs, and an elastic engine would never hold a shard again. A
//! [`KvBucket`] creates its bucket again when the server says it is gone,
//! and repeats the call once. A bucket created again counts revisions from
//! 1: lease fencing tokens ([`crate::lease::Fence`]) compare only within
//! one life of the server.

use crate::BusError;
use async_nats::jetstream::{self, kv};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A KV bucket (history 1, memory storage), created again when lost.
#[derive(Clone)]
pub(crate) struct KvBucket {
    js: jetstream::Context,
    name: String,
    max_age: Duration,
    store: Arc<Mutex<kv::Store>>,
}

impl KvBucket {
    /// Opens the bucket `name`, creating it if missing; its entries expire
    /// `max_age` after their last write (`ZERO`: never).
    pub(crate) async fn open(
        js: &jetstream::Context,
        name: &str,
        max_age: Duration,
    ) -> Result<KvBucket, BusError> {
        let store = open_kv(js, name, max_age).await?;
        Ok(KvBucket {
            js: js.clone(),
            name: name.to_owned(),
            max_age,
            store: Arc::new(Mutex::new(store)),
        })
    }

    /// Runs `op` on the bucket. When the server answers that the bucket
    /// does not exist (it restarted), creates the bucket again and runs
    /// `op` once more.
    pub(crate) async fn run<T, E, F, Fut>(&self, op: F) -> Result<T, E>
    where
        F: Fn(kv::Store) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match op(store).await {
            Err(error) if is_gone(&error.to_string()) => {
                match open_kv(&self.js, &self.name, self.max_age).await {
                    Ok(store) => {
                        tracing::warn!(message = "NATS had lost a KV bucket (restarted?): created it again", bucket = %self.name, %error);
                        *self.store.lock().unwrap_or_else(|e| e.into_inner()) = store.clone();
                        op(store).await
                    }
                    Err(_) => Err(error),
                }
            }
            other => other,
        }
    }
}

/// Whether an error says the bucket's stream does not exist on the server.
fn is_gone(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    ["stream not found", "no stream found", "no responders"]
        .iter()
        .any(|s| e.contains(s))
}

/// Opens the KV bucket `name` (history 1, memory storage; entries expire
/// `max_age` after their last write, `ZERO`: never), creating it if missing.
async fn open_kv(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
) -> Result<kv::Store, BusError> {
    if let Ok(kv) = js.get_key_value(name).await {
        return Ok(kv);
    }
    let config = kv::Config {
        bucket: name.to_string(),
        history: 1,
        max_age,
        storage: jetstream::stream::StorageType::Memory,
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(kv) => Ok(kv),
        // A peer starting at the same moment created it first.
        Err(create) => js
            .get_key_value(name)
            .await
            .map_err(|_| BusError::JetStream {
                what: format!("creating KV bucket {name}"),
                source: create.into(),
            }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lost_bucket_is_recognised_by_what_the_server_says() {
        for gone in [
            "JetStream error: stream not found (code 404, error code 10059)",
            "failed getting entry: no stream found for given subject",
            "failed to publish: no responders",
        ] {
            assert!(super::is_gone(gone), "{gone}");
        }
        assert!(!super::is_gone("wrong last sequence: 7"));
        assert!(!super::is_gone("timed out"));
    }
}
