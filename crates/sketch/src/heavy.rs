//! Go2NetSpectra's so-called "CountMin": a majority-vote heavy-hitter bucket
//! array (reference §4.6), rebuilt without its data races and 4 GiB overflow.

use crate::hash::{mix, row_salts};

/// Construction parameters for [`HeavyBucket`].
///
/// Why a struct: built from configuration (`width`, `depth` of the
/// reference's sketch task).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeavyBucketParams {
    /// Buckets per row; rounded up to a power of two.
    pub width: usize,
    /// Rows (every insert touches every row).
    pub depth: usize,
    /// Seed for the per-row salts.
    pub seed: u64,
}

impl Default for HeavyBucketParams {
    /// The reference's shipped task: 2 × 32 768.
    fn default() -> Self {
        Self {
            width: 1 << 15,
            depth: 2,
            seed: 0x4EA_7B0C,
        }
    }
}

/// `(key, value)` pairs sorted by value, descending.
///
/// Why an alias: the heavy-hitter report is a pair of these lists.
pub type HeavyList<K> = Vec<(K, u64)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Slot<K> {
    key: K,
    hash: u64,
    value: u64,
}

/// `depth × width` buckets, each recording one key and a vote counter, kept
/// separately for packet counts and byte sizes.
///
/// Semantics per row bucket (a bucket with value 0 is empty):
/// * **packets** (majority vote, HeavyKeeper-style replacement): empty →
///   claim with 1; same key → +1; other key → −1 and, if that reaches 0, the
///   new key claims the bucket **with count 1**. (The reference only copies
///   the fingerprint and leaves 0, so its winner loses the packet that won the
///   bucket; we count it.) Invariant: a recorded counter never exceeds the
///   recorded key's true packets in that bucket (it is set to 1 on a claim by
///   one of its packets and only grows by its own packets).
/// * **bytes** (reference semantics): empty → claim with `bytes`; same key →
///   +bytes; other key with `bytes > S` → replace key, `S = bytes`; otherwise
///   `S −= bytes` (saturating; at 0 the bucket is empty). Same invariant:
///   `S` ≤ the recorded key's true bytes in that bucket.
///
/// So reported values are **lower bounds** of the key's traffic; a key that
/// dominates its bucket in at least one row is reported. Counters are `u64`.
///
/// Why keep it next to [`crate::CountMin`]: it is what the reference ships,
/// it lists heavy hitters without a separate candidate structure, and the
/// engine offers it for compatibility. Not mergeable (bucket contents of two
/// workers cannot be combined exactly); route a key to one worker or
/// snapshot per worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeavyBucket<K> {
    params: HeavyBucketParams,
    mask: usize,
    salts: Vec<u64>,
    counts: Vec<Slot<K>>,
    sizes: Vec<Slot<K>>,
}

impl<K: Copy + Eq + Default> HeavyBucket<K> {
    /// Creates an empty sketch.
    ///
    /// # Panics
    /// If `depth` or `width` is 0.
    pub fn new(params: HeavyBucketParams) -> Self {
        assert!(params.depth >= 1, "HeavyBucket depth must be ≥ 1");
        assert!(params.width >= 1, "HeavyBucket width must be ≥ 1");
        let width = params.width.next_power_of_two();
        let params = HeavyBucketParams { width, ..params };
        let n = width * params.depth;
        Self {
            params,
            mask: width - 1,
            salts: row_salts(params.seed, params.depth),
            counts: vec![Slot::default(); n],
            sizes: vec![Slot::default(); n],
        }
    }

    /// Parameters in effect (`width` rounded to a power of two).
    pub fn params(&self) -> &HeavyBucketParams {
        &self.params
    }

    #[inline]
    fn index(&self, hash: u64, row: usize) -> usize {
        row * self.params.width + (mix(hash, self.salts[row]) as usize & self.mask)
    }

    /// Records one packet of `bytes` bytes for `key` (precomputed `hash`).
    #[inline]
    pub fn insert(&mut self, key: K, hash: u64, bytes: u64) {
        for r in 0..self.params.depth {
            let i = self.index(hash, r);
            let c = &mut self.counts[i];
            if c.value == 0 {
                *c = Slot {
                    key,
                    hash,
                    value: 1,
                };
            } else if c.hash == hash && c.key == key {
                c.value += 1;
            } else {
                c.value -= 1;
                if c.value == 0 {
                    *c = Slot {
                        key,
                        hash,
                        value: 1,
                    };
                }
            }
            let s = &mut self.sizes[i];
            if s.value == 0 {
                *s = Slot {
                    key,
                    hash,
                    value: bytes,
                };
            } else if s.hash == hash && s.key == key {
                s.value = s.value.saturating_add(bytes);
            } else if bytes > s.value {
                *s = Slot {
                    key,
                    hash,
                    value: bytes,
                };
            } else {
                s.value -= bytes;
            }
        }
    }

    /// `(packets, bytes)` recorded for `key`: max over rows of buckets that
    /// currently record it (0 if none). Lower bounds, see type docs.
    #[inline]
    pub fn query(&self, hash: u64, key: K) -> (u64, u64) {
        let (mut c, mut s) = (0, 0);
        for r in 0..self.params.depth {
            let i = self.index(hash, r);
            let a = &self.counts[i];
            if a.value > c && a.hash == hash && a.key == key {
                c = a.value;
            }
            let b = &self.sizes[i];
            if b.value > s && b.hash == hash && b.key == key {
                s = b.value;
            }
        }
        (c, s)
    }

    fn max_over_rows(
        slots: &[Slot<K>],
        idx: impl Fn(usize) -> usize,
        d: usize,
        k: &Slot<K>,
    ) -> u64 {
        (0..d)
            .map(|r| &slots[idx(r)])
            .filter(|s| s.hash == k.hash && s.key == k.key)
            .map(|s| s.value)
            .max()
            .unwrap_or(0)
    }

    fn collect(&self, slots: &[Slot<K>], threshold: u64) -> Vec<(K, u64)> {
        let thr = threshold.max(1);
        let w = self.params.width;
        let d = self.params.depth;
        let mut out = Vec::new();
        for (i, s) in slots.iter().enumerate() {
            if s.value < thr {
                continue;
            }
            let row = i / w;
            // Report each key once: from the first row where it is at/above
            // the threshold.
            let dup = (0..row).any(|r| {
                let o = &slots[self.index(s.hash, r)];
                o.value >= thr && o.hash == s.hash && o.key == s.key
            });
            if !dup {
                let v = Self::max_over_rows(slots, |r| self.index(s.hash, r), d, s);
                out.push((s.key, v, s.hash));
            }
        }
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        out.into_iter().map(|(k, v, _)| (k, v)).collect()
    }

    /// Heavy hitters: `(by packets ≥ count_threshold, by bytes ≥
    /// size_threshold)`, each a list of `(key, max over rows)` sorted
    /// descending (ties by key hash). Full scan of all buckets (snapshot
    /// time only).
    pub fn heavy_hitters(
        &self,
        count_threshold: u64,
        size_threshold: u64,
    ) -> (HeavyList<K>, HeavyList<K>) {
        (
            self.collect(&self.counts, count_threshold),
            self.collect(&self.sizes, size_threshold),
        )
    }

    /// Empties every bucket; equal to a freshly built sketch.
    pub fn reset(&mut self) {
        self.counts.fill(Slot::default());
        self.sizes.fill(Slot::default());
    }

    /// True if every bucket is in its initial state.
    pub fn is_pristine(&self) -> bool {
        let z = Slot::default();
        self.counts.iter().chain(&self.sizes).all(|s| *s == z)
    }

    /// Bytes actually allocated on the heap.
    pub fn memory_bytes(&self) -> usize {
        (self.counts.capacity() + self.sizes.capacity()) * std::mem::size_of::<Slot<K>>()
            + self.salts.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_vote_semantics() {
        let p = HeavyBucketParams {
            width: 1,
            depth: 1,
            seed: 1,
        };
        let mut hb = HeavyBucket::<u64>::new(p);
        hb.insert(1, 11, 100);
        hb.insert(1, 11, 100);
        assert_eq!(hb.query(11, 1), (2, 200));
        hb.insert(2, 22, 50); // count 2→1; size 200→150
        assert_eq!(hb.query(11, 1), (1, 150));
        hb.insert(2, 22, 500); // count 1→0 → key 2 claims with 1; size 500 > 150 → replace
        assert_eq!(hb.query(11, 1), (0, 0));
        assert_eq!(hb.query(22, 2), (1, 500));
        hb.reset();
        assert!(hb.is_pristine());
    }
}
