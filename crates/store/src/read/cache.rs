//! Answers kept until the store changes: dashboards ask the same questions
//! every few seconds, and a top-keys answer over a million rows costs
//! SQLite seconds. Each entry belongs to a *generation* of the store (a
//! number that changes with every insert or deletion, read cheaply before
//! each question), so any change empties the cache. On SQLite the
//! generation is read for every question (a cached answer is never stale);
//! ClickHouse's is trusted for a second, so an answer may lag an insert by
//! that much (its writers batch inserts for longer).

use super::sql::Query;
use super::{KeyedRow, NumberRow};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Answers kept by default.
pub const DEFAULT_ENTRIES: usize = 256;

/// Rows kept in all answers together, whatever the entry count: bounds the
/// cache's memory (a row is under 100 bytes).
const MAX_ROWS: usize = 1_000_000;

/// One cached answer, of whichever kind the query returned.
#[derive(Clone)]
pub(crate) enum Cached {
    Keyed(Arc<Vec<KeyedRow>>),
    Numbers(Arc<Vec<NumberRow>>),
    Text(Option<String>),
}

impl Cached {
    fn rows(&self) -> usize {
        match self {
            Cached::Keyed(v) => v.len(),
            Cached::Numbers(v) => v.len(),
            Cached::Text(_) => 1,
        }
    }
}

#[derive(Default)]
struct Inner {
    generation: u64,
    entries: HashMap<String, Cached>,
    rows: usize,
}

/// At most `capacity` answers of the current generation (0 = no caching).
pub(crate) struct ResultCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl ResultCache {
    /// A cache of at most `capacity` answers (0: caching off).
    pub fn new(capacity: usize) -> ResultCache {
        ResultCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether answers are kept at all.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The cache key of a query: its text and every bound value.
    pub fn key(q: &Query) -> String {
        format!("{}\u{0}{:?}", q.text, q.params)
    }

    /// The answer to `key` if it was cached in this generation.
    pub fn get(&self, generation: u64, key: &str) -> Option<Cached> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.generation == generation)
            .then(|| inner.entries.get(key).cloned())
            .flatten()
    }

    /// Keeps an answer read in `generation`; a different generation than
    /// the cache holds (newer, or after a deletion) empties it first.
    pub fn put(&self, generation: u64, key: String, value: Cached) {
        if !self.enabled() || value.rows() > MAX_ROWS {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let full = inner.entries.len() >= self.capacity || inner.rows + value.rows() > MAX_ROWS;
        if inner.generation != generation || full {
            // Crude but bounded: a full cache starts over.
            inner.generation = generation;
            inner.entries.clear();
            inner.rows = 0;
        }
        inner.rows += value.rows();
        inner.entries.insert(key, value);
    }
}
