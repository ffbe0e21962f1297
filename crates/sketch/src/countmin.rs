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

/// Count-Min sketch over keys `K` with a top-k candidate set, counting `L`
/// weights per key ("lanes", e.g. packets and bytes).
///
/// Why: frequency (packets or bytes) of any key in fixed memory with a
/// one-sided, provable error: `true ≤ estimate ≤ true + ε·N` with probability
/// ≥ 1 − e^−d. Mergeable across workers (element-wise counter addition).
///
/// Why lanes: a cell keeps its `L` counters side by side, so counting packets
/// and bytes touches `depth` cache lines, not `2 × depth` as two sketches
/// would. Each lane behaves exactly as a one-lane sketch fed that lane's
/// weights: the same counters, estimates, candidates and error bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountMin<K, const L: usize = 1> {
    params: CountMinParams,
    mask: usize,
    salts: Vec<u64>,
    counters: Vec<[u64; L]>,
    total: [u64; L],
    top: [TopK<K>; L],
}

impl<K: Copy + Eq + Default, const L: usize> CountMin<K, L> {
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
            counters: crate::memory::filled_vec(width * params.depth, [0; L]),
            total: [0; L],
            top: std::array::from_fn(|_| TopK::new(params.top_k)),
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

    /// Adds `weights[lane]` to each lane for `key` (whose precomputed hash is
    /// `hash`).
    ///
    /// Why `hash` is passed in: the engine hashes each packet key once and
    /// feeds several sketches with it.
    #[inline]
    pub fn insert_lanes(&mut self, key: K, hash: u64, weights: [u64; L]) {
        for (t, w) in self.total.iter_mut().zip(weights) {
            *t = t.wrapping_add(w);
        }
        let d = self.params.depth;
        let mut idx = [0usize; MAX_DEPTH];
        for (r, slot) in idx.iter_mut().enumerate().take(d) {
            *slot = self.index(hash, r);
        }
        let mut est = [u64::MAX; L];
        if self.params.conservative {
            let mut vals = [[0u64; L]; MAX_DEPTH];
            for (v, &i) in vals.iter_mut().zip(&idx[..d]) {
                *v = self.counters[i];
                for (m, &c) in est.iter_mut().zip(v.iter()) {
                    *m = (*m).min(c);
                }
            }
            for (m, w) in est.iter_mut().zip(weights) {
                *m = m.saturating_add(w);
            }
            for (v, &i) in vals.iter().zip(&idx[..d]) {
                // branchless: raise only counters below min + weight
                let cell = &mut self.counters[i];
                for ((c, &old), &target) in cell.iter_mut().zip(v).zip(&est) {
                    *c = old.max(target);
                }
            }
        } else {
            for &i in &idx[..d] {
                let cell = &mut self.counters[i];
                for ((c, w), m) in cell.iter_mut().zip(weights).zip(est.iter_mut()) {
                    *c = c.saturating_add(w);
                    *m = (*m).min(*c);
                }
            }
        }
        for (top, e) in self.top.iter_mut().zip(est) {
            top.offer(key, hash, e);
        }
    }

    /// Estimated total weight in `lane` of the key with hash `hash`; never
    /// below the true value.
    #[inline]
    pub fn lane_estimate(&self, hash: u64, lane: usize) -> u64 {
        let mut min = u64::MAX;
        for r in 0..self.params.depth {
            min = min.min(self.counters[self.index(hash, r)][lane]);
        }
        min
    }

    /// Heavy-hitter candidates of `lane` with their *current* estimates,
    /// sorted descending (ties by key hash). At most `top_k` entries.
    ///
    /// Why re-estimate: stored counts date from the key's last insert;
    /// colliding keys may have raised the estimate since.
    pub fn lane_top(&self, lane: usize) -> Vec<(K, u64)> {
        let mut v: Vec<(K, u64, u64)> = self.top[lane]
            .entries()
            .iter()
            .map(|e| (e.key, self.lane_estimate(e.hash, lane), e.hash))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        v.into_iter().map(|(k, c, _)| (k, c)).collect()
    }

    /// Additive error bound ⌈ε·N⌉ of `lane`, with ε = e/width and N =
    /// [`Self::lane_total`]: `estimate ≤ true + error bound` with
    /// probability ≥ [`Self::confidence`].
    pub fn lane_error_bound(&self, lane: usize) -> u64 {
        let eps = std::f64::consts::E / self.params.width as f64;
        (eps * self.total[lane] as f64).ceil() as u64
    }

    /// Total weight inserted in `lane` (N).
    pub fn lane_total(&self, lane: usize) -> u64 {
        self.total[lane]
    }

    /// Probability 1 − e^−depth that a single estimate is within the error
    /// bound.
    pub fn confidence(&self) -> f64 {
        1.0 - (-(self.params.depth as f64)).exp()
    }

    /// Clears all counters and candidates; equal to a freshly built sketch.
    pub fn reset(&mut self) {
        self.counters.fill([0; L]);
        self.total = [0; L];
        self.top.iter_mut().for_each(TopK::clear);
    }

    /// True if nothing has been inserted since construction/reset.
    pub fn is_pristine(&self) -> bool {
        self.total.iter().all(|&t| t == 0)
            && self.top.iter().all(TopK::is_empty)
            && self.counters.iter().all(|c| c.iter().all(|&x| x == 0))
    }

    /// Bytes actually allocated on the heap (counters, salts, top-k storage).
    pub fn memory_bytes(&self) -> usize {
        self.counters.capacity() * size_of::<[u64; L]>()
            + self.salts.capacity() * 8
            + self.top.iter().map(TopK::memory_bytes).sum::<usize>()
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
            for (x, y) in a.iter_mut().zip(b) {
                *x = x.saturating_add(*y);
            }
        }
        for (t, o) in self.total.iter_mut().zip(other.total) {
            *t = t.wrapping_add(o);
        }
        for lane in 0..L {
            let mut cands: Vec<Entry<K>> = Vec::with_capacity(2 * self.params.top_k);
            for e in self.top[lane]
                .entries()
                .iter()
                .chain(other.top[lane].entries())
            {
                if !cands.iter().any(|c| c.hash == e.hash && c.key == e.key) {
                    cands.push(Entry {
                        key: e.key,
                        hash: e.hash,
                        count: self.lane_estimate(e.hash, lane),
                    });
                }
            }
            self.top[lane].rebuild(cands);
        }
    }
}

/// The one-lane sketch: one weight per key.
impl<K: Copy + Eq + Default> CountMin<K> {
    /// Adds `weight` for `key` (whose precomputed hash is `hash`).
    #[inline]
    pub fn insert(&mut self, key: K, hash: u64, weight: u64) {
        self.insert_lanes(key, hash, [weight]);
    }

    /// Estimated total weight of the key with hash `hash`; never below the
    /// true value.
    #[inline]
    pub fn estimate(&self, hash: u64) -> u64 {
        self.lane_estimate(hash, 0)
    }

    /// Heavy-hitter candidates with their current estimates, sorted
    /// descending (see [`Self::lane_top`]).
    pub fn top(&self) -> Vec<(K, u64)> {
        self.lane_top(0)
    }

    /// Additive error bound ⌈ε·N⌉ (see [`Self::lane_error_bound`]).
    pub fn error_bound(&self) -> u64 {
        self.lane_error_bound(0)
    }

    /// Total weight inserted (N).
    pub fn total(&self) -> u64 {
        self.lane_total(0)
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

    /// Each lane of a two-lane sketch is the one-lane sketch of its
    /// weights, before and after a merge.
    #[test]
    fn lanes_equal_separate_sketches() {
        for cons in [false, true] {
            let mut halves = Vec::new();
            for part in 0..2u64 {
                let mut pair = CountMin::<u64, 2>::new(params(cons));
                let mut packets = CountMin::<u64>::new(params(cons));
                let mut bytes = CountMin::<u64>::new(params(cons));
                let mut rng = crate::rng::SplitMix64::new(part);
                for _ in 0..20_000 {
                    let k = rng.next_u64() % 3000 % (1 + rng.next_u64() % 3000);
                    let len = 40 + rng.next_u64() % 1460;
                    pair.insert_lanes(k, mix(k, 5), [1, len]);
                    packets.insert(k, mix(k, 5), 1);
                    bytes.insert(k, mix(k, 5), len);
                }
                halves.push((pair, packets, bytes));
            }
            let (b, bp, bb) = halves.pop().unwrap();
            let (mut a, mut ap, mut ab) = halves.pop().unwrap();
            a.merge(&b);
            ap.merge(&bp);
            ab.merge(&bb);
            for (lane, one) in [(0, &ap), (1, &ab)] {
                assert_eq!(a.lane_top(lane), one.top(), "lane {lane} cons {cons}");
                assert_eq!(a.lane_total(lane), one.total());
                assert_eq!(a.lane_error_bound(lane), one.error_bound());
                for k in 0..3000u64 {
                    assert_eq!(a.lane_estimate(mix(k, 5), lane), one.estimate(mix(k, 5)));
                }
            }
        }
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
