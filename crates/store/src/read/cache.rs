//! Answers kept until the store changes: dashboards ask the same questions
//! every few seconds, and a top-keys answer over a million rows costs
//! SQLite seconds. Each entry belongs to a *generation* of the store (a
//! number that grows with every insert, read cheaply before each question),
//! so new rows start a new generation and empty the cache. On SQLite the
//! generation is read for every question (a cached answer is never stale);
//! ClickHouse's is trusted for a second, so an answer may lag an insert by
//! that much (its writers batch inserts for longer).

use super::sql::Query;
use super::{KeyedRow, NumberRow};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Answers kept by default.
pub const DEFAULT_ENTRIES: usize = 256;

#[derive(Clone)]
pub(crate) enum Cached {
    Keyed(Arc<Vec<KeyedRow>>),
    Numbers(Arc<Vec<NumberRow>>),
    Text(Option<String>),
}

#[derive(Default)]
struct Inner {
    generation: u64,
    entries: HashMap<String, Cached>,
}

/// At most `capacity` answers of the current generation (0 = no caching).
pub(crate) struct ResultCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl ResultCache {
    pub fn new(capacity: usize) -> ResultCache {
        ResultCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The cache key of a query: its text and every bound value.
    pub fn key(q: &Query) -> String {
        format!("{}\u{0}{:?}", q.text, q.params)
    }

    pub fn get(&self, generation: u64, key: &str) -> Option<Cached> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.generation == generation)
            .then(|| inner.entries.get(key).cloned())
            .flatten()
    }

    pub fn put(&self, generation: u64, key: String, value: Cached) {
        if !self.enabled() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.generation != generation {
            if generation < inner.generation {
                return; // answered from an older state than the cache holds
            }
            inner.generation = generation;
            inner.entries.clear();
        }
        if inner.entries.len() >= self.capacity {
            // Crude but bounded: a full cache starts over.
            inner.entries.clear();
        }
        inner.entries.insert(key, value);
    }
}
