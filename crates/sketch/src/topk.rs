//! Fixed-capacity heavy-hitter candidate set used by [`crate::CountMin`].
//!
//! Layout: a flat array of `k` entries (key, key hash, count) plus a small
//! open-addressing (linear probing, backward-shift deletion) table mapping a
//! key hash to its entry slot, and a *lower bound* on the minimum count.
//!
//! Cost per offered key:
//! * estimate below the bound (the common case for tail keys once the set is
//!   full): one comparison — a key in the set always has an estimate ≥ its
//!   stored count ≥ the minimum ≥ the bound, so it cannot be in the set;
//! * otherwise one hash-table probe (load ≤ 1/4);
//! * a linear scan of the `k` entries only when a *new* key beats the bound.
//!   The scan either replaces the minimum or refreshes the bound to the exact
//!   minimum, so scans are amortised over replacements / increments of the
//!   minimum entry.

const EMPTY: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry<K> {
    pub key: K,
    pub hash: u64,
    pub count: u64,
}

/// Candidate set, see module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopK<K> {
    cap: usize,
    entries: Vec<Entry<K>>,
    table: Vec<u32>,
    mask: usize,
    /// Lower bound on the minimum stored count (valid only when full).
    bound: u64,
}

#[inline]
fn home(hash: u64, mask: usize) -> usize {
    ((hash ^ (hash >> 29)) as usize) & mask
}

impl<K: Copy + Eq> TopK<K> {
    pub fn new(cap: usize) -> Self {
        assert!(cap < EMPTY as usize, "top_k too large");
        let tsize = (cap * 4).next_power_of_two().max(8);
        Self {
            cap,
            entries: Vec::with_capacity(cap),
            table: vec![EMPTY; if cap == 0 { 0 } else { tsize }],
            mask: tsize - 1,
            bound: 0,
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.table.fill(EMPTY);
        self.bound = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[Entry<K>] {
        &self.entries
    }

    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry<K>>()
            + self.table.capacity() * std::mem::size_of::<u32>()
    }

    /// Offers `key` whose current (monotone non-decreasing) estimate is `est`.
    #[inline]
    pub fn offer(&mut self, key: K, hash: u64, est: u64) {
        let full = self.entries.len() == self.cap;
        if full && est < self.bound {
            return;
        }
        if self.cap == 0 {
            return;
        }
        let mut pos = home(hash, self.mask);
        loop {
            let s = self.table[pos];
            if s == EMPTY {
                break;
            }
            let e = &mut self.entries[s as usize];
            if e.hash == hash && e.key == key {
                if est > e.count {
                    e.count = est;
                }
                return;
            }
            pos = (pos + 1) & self.mask;
        }
        if !full {
            self.table[pos] = self.entries.len() as u32;
            self.entries.push(Entry {
                key,
                hash,
                count: est,
            });
            if self.entries.len() == self.cap {
                self.bound = self.scan_min().1;
            }
            return;
        }
        if est <= self.bound {
            return;
        }
        self.replace_min_if_below(key, hash, est);
    }

    /// Returns (index of min, min, second min).
    fn scan_min(&self) -> (usize, u64, u64) {
        let mut mi = 0;
        let mut m1 = u64::MAX;
        let mut m2 = u64::MAX;
        for (i, e) in self.entries.iter().enumerate() {
            if e.count < m1 {
                m2 = m1;
                m1 = e.count;
                mi = i;
            } else if e.count < m2 {
                m2 = e.count;
            }
        }
        (mi, m1, m2)
    }

    #[cold]
    fn replace_min_if_below(&mut self, key: K, hash: u64, est: u64) {
        let (mi, m1, m2) = self.scan_min();
        if est <= m1 {
            self.bound = m1;
            return;
        }
        let old_hash = self.entries[mi].hash;
        self.table_remove(old_hash, mi as u32);
        self.entries[mi] = Entry {
            key,
            hash,
            count: est,
        };
        self.table_insert(hash, mi as u32);
        self.bound = m2.min(est);
    }

    fn table_insert(&mut self, hash: u64, slot: u32) {
        let mut pos = home(hash, self.mask);
        while self.table[pos] != EMPTY {
            pos = (pos + 1) & self.mask;
        }
        self.table[pos] = slot;
    }

    fn table_remove(&mut self, hash: u64, slot: u32) {
        let mask = self.mask;
        let mut i = home(hash, mask);
        while self.table[i] != slot {
            i = (i + 1) & mask;
        }
        // Backward-shift deletion keeps probe chains intact without tombstones.
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.table[j];
            if s == EMPTY {
                break;
            }
            let k = home(self.entries[s as usize].hash, mask);
            // Move s into the hole at i if its home is not cyclically in (i, j].
            let in_range = if i <= j {
                i < k && k <= j
            } else {
                i < k || k <= j
            };
            if !in_range {
                self.table[i] = s;
                i = j;
            }
        }
        self.table[i] = EMPTY;
    }

    /// Rebuilds the set from `cands` (already deduplicated, counts current),
    /// keeping the `cap` largest. Deterministic: ties broken by hash.
    pub fn rebuild(&mut self, mut cands: Vec<Entry<K>>) {
        cands.sort_by(|a, b| b.count.cmp(&a.count).then(a.hash.cmp(&b.hash)));
        cands.truncate(self.cap);
        self.clear();
        for e in cands {
            self.table_insert(e.hash, self.entries.len() as u32);
            self.entries.push(e);
        }
        if self.cap > 0 && self.entries.len() == self.cap {
            self.bound = self.scan_min().1;
        }
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        let used = self.table.iter().filter(|&&s| s != EMPTY).count();
        assert_eq!(used, self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            let mut pos = home(e.hash, self.mask);
            while self.table[pos] != i as u32 {
                assert_ne!(self.table[pos], EMPTY, "entry {i} unreachable");
                pos = (pos + 1) & self.mask;
            }
        }
        if self.entries.len() == self.cap && self.cap > 0 {
            assert!(self.bound <= self.scan_min().1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn matches_exact_top_on_random_stream() {
        let mut t = TopK::<u64>::new(8);
        let mut exact = std::collections::HashMap::new();
        let mut rng = SplitMix64::new(3);
        for _ in 0..20_000 {
            // skewed keys: small keys frequent
            let k = (rng.next_u64() % 64).min(rng.next_u64() % 64);
            let c = exact.entry(k).or_insert(0u64);
            *c += 1;
            t.offer(k, crate::hash::mix(k, 0), *c);
            t.check_invariants();
        }
        let mut ex: Vec<_> = exact.into_iter().collect();
        ex.sort_by_key(|b| std::cmp::Reverse(b.1));
        let mut got: Vec<_> = t.entries().iter().map(|e| (e.key, e.count)).collect();
        got.sort_by_key(|b| std::cmp::Reverse(b.1));
        assert_eq!(got, ex[..8].to_vec());
    }

    #[test]
    fn zero_capacity_is_inert() {
        let mut t = TopK::<u64>::new(0);
        t.offer(1, 1, 1);
        assert!(t.is_empty());
    }
}
