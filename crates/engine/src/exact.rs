//! Exact accounting: one hash map per task, owned by one worker.

use netspectra_model::{Dimension, FlowKey, PacketRecord};

/// The hasher of every engine map: fast, and fixed-seeded so iteration order
/// (and hence any tie-breaking) is the same in every run.
pub(crate) type BuildHasher = foldhash::fast::FixedState;

/// A map from key to counters with the engine's hasher.
pub(crate) type FlowMap = hashbrown::HashMap<FlowKey, FlowCounters, BuildHasher>;

pub(crate) fn new_map() -> FlowMap {
    FlowMap::with_hasher(BuildHasher::with_seed(0x6e65_7473_7065_6374))
}

/// Counters of one key. Merging is associative and commutative, which is what
/// makes results independent of how packets were spread over workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowCounters {
    /// Packets.
    pub packets: u64,
    /// Bytes on the wire.
    pub bytes: u64,
    /// Earliest packet timestamp (ns).
    pub first_seen: u64,
    /// Latest packet timestamp (ns) — the maximum, not the last processed.
    pub last_seen: u64,
}

impl FlowCounters {
    /// Counters of a single packet.
    #[inline]
    pub fn one(ts_ns: u64, bytes: u32) -> FlowCounters {
        FlowCounters {
            packets: 1,
            bytes: u64::from(bytes),
            first_seen: ts_ns,
            last_seen: ts_ns,
        }
    }

    /// Adds one packet.
    #[inline]
    pub fn add(&mut self, ts_ns: u64, bytes: u32) {
        self.packets += 1;
        self.bytes += u64::from(bytes);
        self.first_seen = self.first_seen.min(ts_ns);
        self.last_seen = self.last_seen.max(ts_ns);
    }

    /// Adds another key's counters (same key, other worker or window).
    #[inline]
    pub fn merge(&mut self, o: &FlowCounters) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.first_seen = self.first_seen.min(o.first_seen);
        self.last_seen = self.last_seen.max(o.last_seen);
    }
}

/// One exact task's table.
#[derive(Debug)]
pub struct ExactTable {
    dims: Vec<Dimension>,
    map: FlowMap,
}

impl ExactTable {
    /// An empty table keyed on `dims`.
    pub fn new(dims: Vec<Dimension>) -> ExactTable {
        ExactTable {
            dims,
            map: new_map(),
        }
    }

    /// Accounts one packet. The hot path: no allocation once the key exists.
    #[inline]
    pub fn update(&mut self, rec: &PacketRecord) {
        let key = FlowKey::project(rec, &self.dims);
        self.map
            .entry(key)
            .and_modify(|c| c.add(rec.ts_ns, rec.wire_len))
            .or_insert_with(|| FlowCounters::one(rec.ts_ns, rec.wire_len));
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no packet was counted.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Takes the table's contents, leaving it empty with room for a similar
    /// number of keys (so the next window does not regrow from scratch).
    pub(crate) fn take(&mut self) -> FlowMap {
        let cap = self.map.len();
        let mut fresh = new_map();
        fresh.reserve(cap);
        std::mem::replace(&mut self.map, fresh)
    }
}

/// Merges `from` into `into`.
pub(crate) fn merge_into(into: &mut FlowMap, from: FlowMap) {
    into.reserve(from.len().saturating_sub(into.capacity() - into.len()));
    for (k, c) in from {
        into.entry(k).and_modify(|e| e.merge(&c)).or_insert(c);
    }
}
