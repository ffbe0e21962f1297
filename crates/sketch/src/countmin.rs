//! Classic Count-Min sketch (Cormode & Muthukrishnan 2005) with optional
//! conservative update and a top-k candidate set.

use crate::hash::{mix, row_salts};
use crate::topk::{Entry, TopK};

/// Maximum supported depth (rows); indices are kept on the stack.
pub const MAX_DEPTH: usize = 16;

/// Construction parameters for [`CountMin`].
///
/// Why a struct: the engine builds sketches from configuration and needs the
/// exact same parameters on every worker for [`CountMin::merge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountMinParams {
    /// Counters per row; rounded **up** to a power of two (index = mask).
    /// ε = e / width.
    pub width: usize,
    /// Number of rows, `1..=MAX_DEPTH`; failure probability δ = e^−depth.
    pub depth: usize,
    /// Conservative update (Estan & Varghese): only raise counters that are
    /// below `min + weight`. Same guarantees, much smaller overestimates;
    /// merging stays sound (merged counters are still upper bounds).
    pub conservative: bool,
    /// Capacity of the heavy-hitter candidate set (0 disables [`CountMin::top`]).
    pub top_k: usize,
    /// Seed for the per-row salts.
    pub seed: u64,
}

impl Default for CountMinParams {
    /// 4 × 65 536 counters (2 MiB), conservative, top 64:
    /// ε ≈ 4.1·10⁻⁵ of the total weight with probability ≥ 98.2 %.
    fn default() -> Self {
        Self {
            width: 1 << 16,
            depth: 4,
            conservative: true,
            top_k: 64,
            seed: 0x5EED_C0DE,
        }
    }
}

/// Count-Min sketch over keys `K` with a top-k candidate set.
///
/// Why: frequency (packets or bytes) of any key in fixed memory with a
/// one-sided, provable error: `true ≤ estimate ≤ true + ε·N` with probability
/// ≥ 1 − e^−d. Mergeable across workers (element-wise counter addition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountMin<K> {
    params: CountMinParams,
    mask: usize,
    salts: Vec<u64>,
    counters: Vec<u64>,
    total: u64,
    top: TopK<K>,
}

impl<K: Copy + Eq + Default> CountMin<K> {
    /// Creates an empty sketch.
    ///
    /// # Panics
    /// If `depth` is 0 or > [`MAX_DEPTH`], or `width` is 0 or > 2^32.
    pub fn new(params: CountMinParams) -> Self {
        assert!(
            (1..=MAX_DEPTH).contains(&params.depth),
            "CountMin depth must be in 1..={MAX_DEPTH}"
        );
        assert!(
            params.width >= 1 && params.width <= 1 << 32,
            "CountMin width must be in 1..=2^32"
        );
        let width = params.width.next_power_of_two();
        let params = CountMinParams { width, ..params };
        Self {
            params,
            mask: width - 1,
            salts: row_salts(params.seed, params.depth),
            counters: vec![0; width * params.depth],
            total: 0,
            top: TopK::new(params.top_k),
        }
    }

    /// Parameters in effect (with `width` already rounded to a power of two).
    pub fn params(&self) -> &CountMinParams {
        &self.params
    }

    #[inline]
    fn index(&self, hash: u64, row: usize) -> usize {
        row * self.params.width + (mix(hash, self.salts[row]) as usize & self.mask)
    }

    /// Starts loading the counters `insert(_, hash, _)` will touch, so a
    /// caller can overlap the cache misses of several keys.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        for r in 0..self.params.depth {
            crate::prefetch::read(self.counters.as_ptr().wrapping_add(self.index(hash, r)));
        }
    }

    /// Adds `weight` for `key` (whose precomputed hash is `hash`).
    ///
    /// Why `hash` is passed in: the engine hashes each packet key once and
    /// feeds several sketches with it.
    #[inline]
    pub fn insert(&mut self, key: K, hash: u64, weight: u64) {
        self.total = self.total.wrapping_add(weight);
        let d = self.params.depth;
        let mut idx = [0usize; MAX_DEPTH];
        for (r, slot) in idx.iter_mut().enumerate().take(d) {
            *slot = self.index(hash, r);
        }
        let est = if self.params.conservative {
            let mut vals = [0u64; MAX_DEPTH];
            let mut min = u64::MAX;
            for (v, &i) in vals.iter_mut().zip(&idx[..d]) {
                *v = self.counters[i];
                min = min.min(*v);
            }
            let target = min.saturating_add(weight);
            for (&v, &i) in vals.iter().zip(&idx[..d]) {
                // branchless: raise only counters below min + weight
                self.counters[i] = v.max(target);
            }
            target
        } else {
            let mut min = u64::MAX;
            for &i in &idx[..d] {
                let c = &mut self.counters[i];
                *c = c.saturating_add(weight);
                min = min.min(*c);
            }
            min
        };
        self.top.offer(key, hash, est);
    }

    /// Estimated total weight of the key with hash `hash`; never below the
    /// true value.
    #[inline]
    pub fn estimate(&self, hash: u64) -> u64 {
        let mut min = u64::MAX;
        for r in 0..self.params.depth {
            min = min.min(self.counters[self.index(hash, r)]);
        }
        min
    }

    /// Heavy-hitter candidates with their *current* estimates, sorted
    /// descending (ties by key hash). At most `top_k` entries.
    ///
    /// Why re-estimate: stored counts date from the key's last insert;
    /// colliding keys may have raised the estimate since.
    pub fn top(&self) -> Vec<(K, u64)> {
        let mut v: Vec<(K, u64, u64)> = self
            .top
            .entries()
            .iter()
            .map(|e| (e.key, self.estimate(e.hash), e.hash))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        v.into_iter().map(|(k, c, _)| (k, c)).collect()
    }

    /// Additive error bound ⌈ε·N⌉ with ε = e/width and N = [`Self::total`]:
    /// `estimate ≤ true + error_bound()` with probability ≥ [`Self::confidence`].
    pub fn error_bound(&self) -> u64 {
        let eps = std::f64::consts::E / self.params.width as f64;
        (eps * self.total as f64).ceil() as u64
    }

    /// Probability 1 − e^−depth that a single estimate is within
    /// [`Self::error_bound`].
    pub fn confidence(&self) -> f64 {
        1.0 - (-(self.params.depth as f64)).exp()
    }

    /// Total weight inserted (N).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Clears all counters and candidates; equal to a freshly built sketch.
    pub fn reset(&mut self) {
        self.counters.fill(0);
        self.total = 0;
        self.top.clear();
    }

    /// True if nothing has been inserted since construction/reset.
    pub fn is_pristine(&self) -> bool {
        self.total == 0 && self.top.is_empty() && self.counters.iter().all(|&c| c == 0)
    }

    /// Bytes actually allocated on the heap (counters, salts, top-k storage).
    pub fn memory_bytes(&self) -> usize {
        self.counters.capacity() * 8 + self.salts.capacity() * 8 + self.top.memory_bytes()
    }

    /// Adds `other` into `self` (per-worker sketches → one snapshot).
    ///
    /// Counters add element-wise (sound for plain and conservative update:
    /// each merged counter is still ≥ the true count of every key mapping to
    /// it). Candidates of both sides are re-ranked by merged estimates.
    ///
    /// # Panics
    /// If the parameters differ.
    pub fn merge(&mut self, other: &Self) {
        assert_eq!(
            self.params, other.params,
            "CountMin::merge: parameters differ"
        );
        for (a, b) in self.counters.iter_mut().zip(&other.counters) {
            *a = a.saturating_add(*b);
        }
        self.total = self.total.wrapping_add(other.total);
        let mut cands: Vec<Entry<K>> = Vec::with_capacity(2 * self.params.top_k);
        for e in self.top.entries().iter().chain(other.top.entries()) {
            if !cands.iter().any(|c| c.hash == e.hash && c.key == e.key) {
                cands.push(Entry {
                    key: e.key,
                    hash: e.hash,
                    count: self.estimate(e.hash),
                });
            }
        }
        self.top.rebuild(cands);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(conservative: bool) -> CountMinParams {
        CountMinParams {
            width: 1000,
            depth: 3,
            conservative,
            top_k: 4,
            seed: 7,
        }
    }

    #[test]
    fn width_rounds_up() {
        let cm = CountMin::<u64>::new(params(false));
        assert_eq!(cm.params().width, 1024);
        assert!(cm.memory_bytes() >= 3 * 1024 * 8);
    }

    #[test]
    fn exact_when_sparse_and_merge_adds() {
        for cons in [false, true] {
            let mut a = CountMin::<u64>::new(params(cons));
            let mut b = CountMin::<u64>::new(params(cons));
            for k in 0..10u64 {
                a.insert(k, mix(k, 99), k + 1);
                b.insert(k, mix(k, 99), 2 * (k + 1));
            }
            a.merge(&b);
            for k in 0..10u64 {
                assert!(a.estimate(mix(k, 99)) >= 3 * (k + 1));
            }
            assert_eq!(a.total(), 3 * 55);
            let top: Vec<u64> = a.top().into_iter().map(|(k, _)| k).collect();
            assert_eq!(top, vec![9, 8, 7, 6]);
        }
    }
}
