//! The flow table: an open-addressing hash table specialised for the hot path.
//!
//! Why not `hashbrown` here: with a million keys nearly every update is a
//! cache miss, and the way to hide miss latency is to prefetch the slot of a
//! packet a few packets ahead — which needs the slot address before the
//! lookup. This table exposes exactly that ([`FlowTable::prefetch`]). Each
//! slot keeps the key's full hash, so growing and merging never rehash.
//! Linear probing, load factor ≤ 0.7, power-of-two capacity.
//!
//! Why two arrays: a key whose addresses are IPv4 (or not in the key) fits a
//! 64-byte slot aligned to a cache line, so its update touches one line; a
//! key with an IPv6 address needs the full 80-byte slot, which always spans
//! two. Most traffic is IPv4, so most updates cost half the memory traffic.

use netspectra_model::ip::{self, IpBytes};
use netspectra_model::window::FlowCounters;
use netspectra_model::FlowKey;
use netspectra_sketch::memory::GrowingArray;
use netspectra_sketch::prefetch;

/// Hashes a key for the table (fixed seed: same layout in every run).
#[inline]
pub(crate) fn hash_key(key: &FlowKey) -> u64 {
    use std::hash::BuildHasher;
    const SEED: u64 = 0x6e65_7473_7065_6374;
    foldhash::fast::FixedState::with_seed(SEED).hash_one(key) | 1 << 63
}

/// Keys and their counters, owned by one thread.
#[derive(Clone, Default)]
pub(crate) struct FlowTable {
    v4: Slots<V4Slot>,
    wide: Slots<WideSlot>,
}

impl FlowTable {
    /// An empty table; the first insert allocates.
    pub(crate) fn new() -> FlowTable {
        FlowTable::default()
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.v4.len + self.wide.len
    }

    /// Whether the table has no key.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hints the CPU to load the slot `key` (whose hash is `hash`) starts
    /// probing at. Harmless when wrong: it only moves a cache line.
    #[inline]
    pub(crate) fn prefetch(&self, key: &FlowKey, hash: u64) {
        if V4Key::of(key).is_some() {
            self.v4.prefetch(hash);
        } else {
            self.wide.prefetch(hash);
        }
    }

    /// Finds `key` (with its `hash` from [`hash_key`]) and merges `c` into
    /// its counters, inserting it if absent.
    #[inline]
    pub(crate) fn add(&mut self, key: &FlowKey, hash: u64, c: &FlowCounters) {
        match V4Key::of(key) {
            Some(k) => self.v4.add(k, hash, c),
            None => self.wide.add(*key, hash, c),
        }
    }

    /// Merges many rows in, prefetching the slot of a row a few rows ahead
    /// (rolling a window up touches a random slot per row, as a packet
    /// does).
    pub(crate) fn add_all(&mut self, rows: impl Iterator<Item = (FlowKey, FlowCounters)>) {
        const AHEAD: usize = 8;
        let mut ring = [(FlowKey::default(), 0, FlowCounters::default()); AHEAD];
        let mut n = 0;
        for (key, c) in rows {
            let hash = hash_key(&key);
            self.prefetch(&key, hash);
            let slot = &mut ring[n % AHEAD];
            if n >= AHEAD {
                let (k, h, c) = *slot;
                self.add(&k, h, &c);
            }
            *slot = (key, hash, c);
            n += 1;
        }
        for (k, h, c) in &ring[..n.min(AHEAD)] {
            // Order does not matter: counters merge commutatively.
            self.add(k, *h, c);
        }
    }

    /// Every key and its counters, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (FlowKey, FlowCounters)> + '_ {
        let v4 = self.v4.iter().map(|s| (s.key.flow_key(), s.counters));
        v4.chain(self.wide.iter().map(|s| (s.key, s.counters)))
    }

    /// Merges `other` in, reusing whichever table is larger.
    pub(crate) fn absorb(&mut self, other: FlowTable) {
        self.v4.absorb(other.v4);
        self.wide.absorb(other.wide);
    }
}

/// A key whose addresses are each IPv4 or absent (all zero in a
/// [`FlowKey`]): the same key in 16 bytes instead of 40.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct V4Key {
    src: [u8; 4],
    dst: [u8; 4],
    src_port: u16,
    dst_port: u16,
    vlan: u16,
    protocol: u8,
    /// Bit 0: `src` is an address (not absent); bit 1: the same for `dst`.
    present: u8,
}

impl V4Key {
    /// The packed form of `key`, if it has one.
    #[inline]
    fn of(key: &FlowKey) -> Option<V4Key> {
        let (src, src_present) = v4_or_absent(&key.src_ip)?;
        let (dst, dst_present) = v4_or_absent(&key.dst_ip)?;
        Some(V4Key {
            src,
            dst,
            src_port: key.src_port,
            dst_port: key.dst_port,
            vlan: key.vlan,
            protocol: key.protocol,
            present: u8::from(src_present) | u8::from(dst_present) << 1,
        })
    }

    /// The key it packs.
    fn flow_key(&self) -> FlowKey {
        let addr = |a: [u8; 4], present: bool| if present { ip::from_v4(a) } else { [0; 16] };
        FlowKey {
            src_ip: addr(self.src, self.present & 1 != 0),
            dst_ip: addr(self.dst, self.present & 2 != 0),
            src_port: self.src_port,
            dst_port: self.dst_port,
            vlan: self.vlan,
            protocol: self.protocol,
        }
    }
}

/// An IPv4 address's four bytes and `true`, or zeros and `false` for an
/// absent one; `None` for an IPv6 address.
#[inline]
fn v4_or_absent(a: &IpBytes) -> Option<([u8; 4], bool)> {
    let four = [a[12], a[13], a[14], a[15]];
    if ip::is_v4(a) {
        Some((four, true))
    } else if *a == [0; 16] {
        Some((four, false))
    } else {
        None
    }
}

/// What the probing code needs from a slot layout.
trait Slot: Copy + Default {
    type Key: Copy + Eq;
    fn new(hash: u64, key: Self::Key, counters: FlowCounters) -> Self;
    /// 0 marks an empty slot.
    fn hash(&self) -> u64;
    fn key(&self) -> &Self::Key;
    fn counters(&self) -> &FlowCounters;
    fn counters_mut(&mut self) -> &mut FlowCounters;
}

/// A packed IPv4 key's slot: 56 bytes padded to one cache line.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct V4Slot {
    /// Full hash of the key; 0 marks an empty slot (real hashes have their
    /// top bit set, which leaves the low bits that pick a slot all random).
    hash: u64,
    key: V4Key,
    counters: FlowCounters,
}

/// Any key's slot: 80 bytes.
#[derive(Clone, Copy, Default)]
struct WideSlot {
    /// As [`V4Slot::hash`].
    hash: u64,
    key: FlowKey,
    counters: FlowCounters,
}

macro_rules! impl_slot {
    ($slot:ty, $key:ty) => {
        impl Slot for $slot {
            type Key = $key;
            #[inline]
            fn new(hash: u64, key: $key, counters: FlowCounters) -> Self {
                Self {
                    hash,
                    key,
                    counters,
                }
            }
            #[inline]
            fn hash(&self) -> u64 {
                self.hash
            }
            #[inline]
            fn key(&self) -> &$key {
                &self.key
            }
            #[inline]
            fn counters(&self) -> &FlowCounters {
                &self.counters
            }
            #[inline]
            fn counters_mut(&mut self) -> &mut FlowCounters {
                &mut self.counters
            }
        }
    };
}
impl_slot!(V4Slot, V4Key);
impl_slot!(WideSlot, FlowKey);

const MIN_CAPACITY: usize = 64;

/// One open-addressing array of slots and the number in use.
#[derive(Clone, Default)]
struct Slots<S: Slot> {
    /// From 32 MiB it grows in place: doubling adds fresh memory for the
    /// new half only.
    slots: GrowingArray<S>,
    len: usize,
}

impl<S: Slot> Slots<S> {
    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    #[inline]
    fn prefetch(&self, hash: u64) {
        if let Some(slot) = self.slots.get(hash as usize & self.mask()) {
            let p: *const u8 = std::ptr::from_ref(slot).cast();
            prefetch::read(p);
            if size_of::<S>() > 64 {
                // The slot spans two cache lines.
                prefetch::read(p.wrapping_add(64));
            }
        }
    }

    #[inline]
    fn add(&mut self, key: S::Key, hash: u64, c: &FlowCounters) {
        if (self.len + 1) * 10 > self.slots.len() * 7 {
            self.grow();
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let slot = &mut self.slots[i];
            if slot.hash() == hash && *slot.key() == key {
                slot.counters_mut().merge(c);
                return;
            }
            if slot.hash() == 0 {
                *slot = S::new(hash, key, *c);
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Doubles the capacity and moves each key to where probing with the
    /// doubled mask finds it, within the same memory.
    fn grow(&mut self) {
        let old_cap = self.slots.len();
        self.slots.grow_to((old_cap * 2).max(MIN_CAPACITY));
        if old_cap > 0 {
            self.rehash_in_place(old_cap);
        }
    }

    /// Re-places the keys of the first `old_cap` slots after the array
    /// doubled, taking each out and putting it back at the first free slot
    /// from its new home. Why every key stays findable: no probe passes a
    /// slot still to be emptied. The keys are visited from just after a
    /// free slot, so no old run of full slots crosses the start and each
    /// key's old home is visited before it. A key whose home did not move
    /// lands at or before its old slot. A key whose home moved up lands in
    /// the new half, where no slot is ever emptied; it cannot wrap round
    /// the end into unvisited slots, since the keys filling the new half
    /// by then came from fewer old slots than they would need to fill its
    /// end. Keys visited last (slot 0 up to the free slot) may wrap round
    /// the end, but only into slots already visited.
    fn rehash_in_place(&mut self, old_cap: usize) {
        let free = self.slots[..old_cap]
            .iter()
            .position(|s| s.hash() == 0)
            .expect("the load factor leaves a free slot");
        for step in 1..old_cap {
            let i = (free + step) & (old_cap - 1);
            let slot = std::mem::take(&mut self.slots[i]);
            if slot.hash() != 0 {
                self.place(slot);
            }
        }
    }

    /// Puts a key known to be absent at the first free slot from its home.
    fn place(&mut self, slot: S) {
        let mask = self.mask();
        let mut i = slot.hash() as usize & mask;
        while self.slots[i].hash() != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
    }

    fn iter(&self) -> impl Iterator<Item = &S> {
        self.slots.iter().filter(|s| s.hash() != 0)
    }

    /// Merges `other` in (no rehashing), reusing whichever array is larger.
    fn absorb(&mut self, mut other: Slots<S>) {
        if other.len > self.len {
            std::mem::swap(self, &mut other);
        }
        for s in other.iter() {
            self.add(*s.key(), s.hash(), s.counters());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Key `n`: IPv4, IPv6, absent and `0.0.0.0` addresses mixed, so both
    /// slot layouts and the packing's edge cases are exercised.
    fn key(n: u32) -> FlowKey {
        let v4 = ip::from_v4(n.to_be_bytes());
        let mut v6 = [0x20; 16];
        v6[12..].copy_from_slice(&n.to_be_bytes());
        let (src_ip, dst_ip) = match n % 5 {
            0 => (v4, [0; 16]),
            1 => (v6, v4),
            2 => ([0; 16], v4),
            3 => (ip::from_v4([0; 4]), [0; 16]),
            _ => (v4, v6),
        };
        FlowKey {
            src_ip,
            dst_ip,
            src_port: n as u16,
            vlan: (n % 3) as u16,
            protocol: (n % 7) as u8,
            ..Default::default()
        }
    }

    #[test]
    fn packed_keys_come_back_unchanged() {
        for n in [0, 3, 8, 300, u32::MAX] {
            let k = key(n);
            let packed = V4Key::of(&k);
            assert_eq!(packed.is_some(), n % 5 != 1 && n % 5 != 4, "{n}");
            if let Some(p) = packed {
                assert_eq!(p.flow_key(), k);
            }
        }
        assert_eq!(size_of::<V4Slot>(), 64);
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
            let got: HashMap<FlowKey, FlowCounters> = table.iter().collect();
            prop_assert_eq!(got, model);
        }
    }

    /// Growing in place (`Slots::rehash_in_place`) must leave every key
    /// findable. A third of the keys here have homes in the last four
    /// slots at every capacity, so a run of full slots wraps round the end
    /// at each doubling; a third have their home at slot 0 until a
    /// doubling moves it to the middle, so the run at the start holds keys
    /// that leave it; a third spread out. Adding a key again must find it
    /// (merge, not insert).
    #[test]
    fn keys_stay_findable_while_the_table_grows_with_runs_that_wrap() {
        let mut slots = Slots::<V4Slot>::default();
        let entry = |k: u64| {
            let low = match k % 3 {
                0 => 0xffff ^ (k & 3),
                1 => 1 << (6 + k % 10),
                _ => k.wrapping_mul(0x9e37_79b9_7f4a_7c15) & 0xffff,
            };
            let hash = 1 << 63 | k << 16 | low;
            let key = V4Key {
                src: (k as u32).to_be_bytes(),
                ..V4Key::default()
            };
            (key, hash)
        };
        let n = 3000;
        for k in 0..n {
            let (key, hash) = entry(k);
            slots.add(key, hash, &FlowCounters::one(k, 1));
            if k.is_power_of_two() || k + 1 == n {
                for j in 0..=k {
                    let (key, hash) = entry(j);
                    slots.add(key, hash, &FlowCounters::one(j, 0));
                    assert_eq!(slots.len as u64, k + 1, "key {j} lost after {k} inserts");
                }
            }
        }
        assert!(slots.slots.len() >= 4096);
        for s in slots.iter() {
            let k = u64::from(u32::from_be_bytes(s.key.src));
            let times = 1 + (k..n).filter(|i| i.is_power_of_two() || i + 1 == n).count();
            assert_eq!(s.counters.packets, times as u64, "key {k}");
        }
    }

    proptest! {
        /// In-place growth keeps every key findable for any hashes, here
        /// with homes crowded into a few hundred slots so runs of full
        /// slots form, wrap and break up across doublings.
        #[test]
        fn growth_in_place_keeps_any_keys_findable(lows in proptest::collection::vec(0u64..300, 1..900)) {
            let mut slots = Slots::<V4Slot>::default();
            let entry = |k: usize, low: u64| {
                let key = V4Key {
                    src: (k as u32).to_be_bytes(),
                    ..V4Key::default()
                };
                (key, 1 << 63 | (k as u64) << 20 | low)
            };
            for (k, &low) in lows.iter().enumerate() {
                let (key, hash) = entry(k, low);
                slots.add(key, hash, &FlowCounters::one(1, 1));
            }
            for (k, &low) in lows.iter().enumerate() {
                let (key, hash) = entry(k, low);
                slots.add(key, hash, &FlowCounters::one(2, 1));
            }
            prop_assert_eq!(slots.len, lows.len());
            prop_assert!(slots.iter().all(|s| s.counters.packets == 2));
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
        let c = a.iter().find(|(k, _)| *k == key(2)).unwrap().1;
        assert_eq!(
            (c.packets, c.bytes, c.first_seen, c.last_seen),
            (2, 11, 2, 5_000)
        );
    }
}
