//! The flow table: an open-addressing hash table specialised for the hot path.
//!
//! Why not `hashbrown` here: with a million keys nearly every update is a
//! cache miss, and the way to hide miss latency is to prefetch the slot of a
//! packet a few packets ahead — which needs the slot address before the
//! lookup. This table exposes exactly that ([`FlowTable::prefetch`]). Each
//! slot keeps the key's full hash, so growing and merging never rehash.
//! Linear probing, load factor ≤ 0.7, power-of-two capacity.

use netspectra_model::window::FlowCounters;
use netspectra_model::FlowKey;
use netspectra_sketch::prefetch;

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Full hash of the key; 0 marks an empty slot (real hashes are forced odd).
    hash: u64,
    key: FlowKey,
    counters: FlowCounters,
}

/// Keys and their counters, owned by one thread.
#[derive(Clone)]
pub(crate) struct FlowTable {
    slots: Vec<Slot>,
    len: usize,
}

/// Hashes a key for the table (fixed seed: same layout in every run).
#[inline]
pub(crate) fn hash_key(key: &FlowKey) -> u64 {
    use std::hash::BuildHasher;
    const SEED: u64 = 0x6e65_7473_7065_6374;
    foldhash::fast::FixedState::with_seed(SEED).hash_one(key) | 1
}

const MIN_CAPACITY: usize = 64;

impl Default for FlowTable {
    fn default() -> Self {
        FlowTable::new()
    }
}

impl FlowTable {
    /// An empty table; the first insert allocates.
    pub(crate) fn new() -> FlowTable {
        FlowTable {
            slots: Vec::new(),
            len: 0,
        }
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the table has no key.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Hints the CPU to load the slot `hash` starts probing at. Harmless
    /// when wrong: it only moves a cache line.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        if let Some(slot) = self.slots.get(hash as usize & self.mask()) {
            // A slot may straddle two cache lines.
            let p: *const u8 = std::ptr::from_ref(slot).cast();
            prefetch::read(p);
            prefetch::read(p.wrapping_add(64));
        }
    }

    /// Finds `key` (with its `hash` from [`hash_key`]) and merges `c` into
    /// its counters, inserting it if absent.
    #[inline]
    pub(crate) fn add(&mut self, key: &FlowKey, hash: u64, c: &FlowCounters) {
        if (self.len + 1) * 10 > self.slots.len() * 7 {
            self.grow();
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let slot = &mut self.slots[i];
            if slot.hash == hash && slot.key == *key {
                slot.counters.merge(c);
                return;
            }
            if slot.hash == 0 {
                *slot = Slot {
                    hash,
                    key: *key,
                    counters: *c,
                };
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(MIN_CAPACITY);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); cap]);
        let mask = cap - 1;
        for slot in old.into_iter().filter(|s| s.hash != 0) {
            let mut i = slot.hash as usize & mask;
            while self.slots[i].hash != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }

    /// Every key and its counters, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&FlowKey, &FlowCounters)> {
        self.slots
            .iter()
            .filter(|s| s.hash != 0)
            .map(|s| (&s.key, &s.counters))
    }

    /// Merges every key of `other` into this table (no rehashing).
    pub(crate) fn merge(&mut self, other: &FlowTable) {
        for s in other.slots.iter().filter(|s| s.hash != 0) {
            self.add(&s.key, s.hash, &s.counters);
        }
    }

    /// Merges `other` in, reusing whichever table is larger.
    pub(crate) fn absorb(&mut self, mut other: FlowTable) {
        if other.len > self.len {
            std::mem::swap(self, &mut other);
        }
        self.merge(&other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn key(n: u32) -> FlowKey {
        FlowKey {
            src_ip: netspectra_model::ip::from_v4(n.to_be_bytes()),
            ..Default::default()
        }
    }

    proptest! {
        /// The table behaves as a map from key to merged counters.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((0u32..300, 1u64..1000, 0u64..100), 0..2000)) {
            let mut table = FlowTable::new();
            let mut model: HashMap<FlowKey, FlowCounters> = HashMap::new();
            for (k, ts, bytes) in ops {
                let c = FlowCounters::one(ts, bytes as u32);
                let k = key(k);
                table.add(&k, hash_key(&k), &c);
                model.entry(k).and_modify(|m| m.merge(&c)).or_insert(c);
            }
            prop_assert_eq!(table.len(), model.len());
            let got: HashMap<FlowKey, FlowCounters> = table.iter().map(|(k, c)| (*k, *c)).collect();
            prop_assert_eq!(got, model);
        }
    }

    #[test]
    fn merge_and_absorb_sum_counters() {
        let mut a = FlowTable::new();
        let mut b = FlowTable::new();
        for n in 0..1000 {
            let k = key(n);
            a.add(&k, hash_key(&k), &FlowCounters::one(n.into(), 10));
            if n % 2 == 0 {
                b.add(&k, hash_key(&k), &FlowCounters::one(5_000, 1));
            }
        }
        b.add(&key(5000), hash_key(&key(5000)), &FlowCounters::one(1, 1));
        a.absorb(b);
        assert_eq!(a.len(), 1001);
        let c = a.iter().find(|(k, _)| **k == key(2)).unwrap().1;
        assert_eq!(
            (c.packets, c.bytes, c.first_seen, c.last_seen),
            (2, 11, 2, 5_000)
        );
    }
}
