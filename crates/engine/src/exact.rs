//! Exact accounting: one flow table per task, owned by one worker.

use crate::table::{hash_key, FlowTable};
use netspectra_model::{Dimension, FlowKey, PacketRecord};
/// Counters of one key. Merging is associative and commutative, which is what
/// makes results independent of how packets were spread over workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// How many packets ahead of the one being counted the table prefetches.
/// Enough to cover a memory access, few enough that lines stay cached.
const PREFETCH_AHEAD: usize = 8;

/// One exact task's table.
pub struct ExactTable {
    dims: Vec<Dimension>,
    table: FlowTable,
    /// Keys and hashes of the batch being counted (reused: no allocation).
    pending: Vec<(FlowKey, u64, FlowCounters)>,
}

impl ExactTable {
    /// An empty table keyed on `dims`.
    pub fn new(dims: Vec<Dimension>) -> ExactTable {
        ExactTable {
            dims,
            table: FlowTable::new(),
            pending: Vec::new(),
        }
    }

    /// Accounts one packet.
    #[inline]
    pub fn update(&mut self, rec: &PacketRecord) {
        let key = FlowKey::project(rec, &self.dims);
        self.table.add(
            &key,
            hash_key(&key),
            &FlowCounters::one(rec.ts_ns, rec.wire_len),
        );
    }

    /// Accounts many records. Keys are hashed first so the table can
    /// prefetch a few packets ahead: with large tables nearly every update is
    /// a cache miss, and this overlaps them. This is the engine's hot path.
    pub fn update_all<'a>(&mut self, recs: impl Iterator<Item = &'a PacketRecord>) {
        self.pending.clear();
        for rec in recs {
            let key = FlowKey::project(rec, &self.dims);
            let c = FlowCounters::one(rec.ts_ns, rec.wire_len);
            self.pending.push((key, hash_key(&key), c));
        }
        for p in self.pending.iter().take(PREFETCH_AHEAD) {
            self.table.prefetch(p.1);
        }
        for i in 0..self.pending.len() {
            if let Some(ahead) = self.pending.get(i + PREFETCH_AHEAD) {
                self.table.prefetch(ahead.1);
            }
            let (key, hash, c) = &self.pending[i];
            self.table.add(key, *hash, c);
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no packet was counted.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Takes the table's contents, leaving it empty.
    pub(crate) fn take(&mut self) -> FlowTable {
        std::mem::take(&mut self.table)
    }
}
