//! Exact accounting: one flow table per task, owned by one worker.

use crate::table::{hash_key, FlowTable};
use netspectra_model::window::FlowCounters;
use netspectra_model::{Dimension, FlowKey, PacketRecord, Projection};

/// How many packets ahead of the one being counted the table prefetches.
/// Enough to cover a memory access, few enough that lines stay cached.
const PREFETCH_AHEAD: usize = 8;

/// One exact task's table.
pub struct ExactTable {
    key: Projection,
    table: FlowTable,
    /// Keys and hashes of the batch being counted (reused: no allocation).
    pending: Vec<(FlowKey, u64, FlowCounters)>,
}

impl ExactTable {
    /// An empty table keyed on `dims`.
    pub fn new(dims: Vec<Dimension>) -> ExactTable {
        ExactTable {
            key: Projection::new(&dims),
            table: FlowTable::new(),
            pending: Vec::new(),
        }
    }

    /// Accounts one packet.
    #[inline]
    pub fn update(&mut self, rec: &PacketRecord) {
        let key = self.key.apply(rec);
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
            let key = self.key.apply(rec);
            let c = FlowCounters::one(rec.ts_ns, rec.wire_len);
            self.pending.push((key, hash_key(&key), c));
        }
        for p in self.pending.iter().take(PREFETCH_AHEAD) {
            self.table.prefetch(&p.0, p.1);
        }
        for i in 0..self.pending.len() {
            if let Some(ahead) = self.pending.get(i + PREFETCH_AHEAD) {
                self.table.prefetch(&ahead.0, ahead.1);
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
