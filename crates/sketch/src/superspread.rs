//! SuperSpread (Wang et al., PVLDB 17(11), 2024): super-spreader detection,
//! i.e. keys with many *distinct* elements (e.g. a source IP contacting many
//! destinations), reference §4.6 with its bugs fixed.

use crate::hash::{mix, row_salts};
use crate::rng::SplitMix64;

/// Construction parameters for [`SuperSpread`].
///
/// Why a struct: built from configuration (`width`, `depth`, `m`, `size`,
/// `base`, `b` of the reference's sketch task).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SuperSpreadParams {
    /// Buckets per row; rounded up to a power of two.
    pub width: usize,
    /// Rows (each key is recorded in one bucket per row).
    pub depth: usize,
    /// Registers per bucket sampler, `16..=65536`. Relative standard error of
    /// one estimate ≈ √(ln 2 / m) (7.4 % at m = 128, 3.7 % at 512, see
    /// [`SuperSpread::relative_standard_error`]).
    pub m: usize,
    /// Register width in bits, `1..=6` (max register value 2^size − 1).
    pub size: u32,
    /// Per-level probability factor of the register values, must be 0.5
    /// (registers come from leading zeros of a hash, so P(v > r) = 2^−r);
    /// kept as a parameter for configuration compatibility.
    pub base: f64,
    /// Exponential-decay base (HeavyKeeper): a foreign increment decrements
    /// a bucket holding `value` with probability `b^−value`. Must be ≥ 1.
    pub b: f64,
    /// Default reporting threshold used by [`SuperSpread::heavy_hitters`].
    pub threshold: u64,
    /// Seed for row salts and the rounding/decay PRNG.
    pub seed: u64,
}

impl Default for SuperSpreadParams {
    /// Reference shipped geometry (2 × 32 768, 5-bit registers, base 0.5,
    /// b 1.08) but **m = 512** instead of 128, threshold 1 024 distinct
    /// elements. Why m = 512: measured relative standard error is
    /// 7.6 % at m = 128 (only ~83 % of estimates within ±10 %) vs 3.7 % at
    /// m = 512 (±10 % ≈ 2.7σ). Memory ≈ 25 MB for a 40-byte key
    /// (≈ 9.4 MB with m = 128); insert cost does not depend on m.
    fn default() -> Self {
        Self {
            width: 1 << 15,
            depth: 2,
            m: 512,
            size: 5,
            base: 0.5,
            b: 1.08,
            threshold: 1024,
            seed: 0x5_9E_AD,
        }
    }
}

// Aligned to a cache line: a 64-byte head (a flow key's) then sits in one
// line, so `prefetch` brings all of it, not half.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[repr(align(64))]
struct Head<K> {
    key: K,
    key_hash: u64,
    value: u64,
    /// HIP: probability that a new distinct element changes this sampler.
    p: f64,
}

/// SuperSpread sketch: `depth × width` buckets, each = a non-duplicate
/// sampler (m packed `size`-bit registers + HIP probability p) plus one
/// recorded key and its spread counter with HeavyKeeper decay.
///
/// Insert `(key, element)`: a new distinct pair changes the bucket's
/// sampler with probability `p`; when it does, `1/p` (HIP, Ting 2014 /
/// Cohen 2015: an unbiased increment for the number of distinct pairs) is
/// rounded stochastically to an integer and credited to the key through the
/// decay counter. Duplicate pairs never change a register, so never count.
///
/// Fixes vs. the reference: `reset` restores p = 1 (and the PRNG); registers
/// are packed (`size` bits each, no per-register seeds); u64 counters;
/// p is floored so it never reaches 0/NaN; large increments are applied in
/// O(1) when the key already holds the bucket.
///
/// Design note: the register/value hash of a pair is the same in every row,
/// so rows differ only in which other keys share the bucket. Rows exist to
/// survive collisions (a key evicted in one row survives in another); with
/// [`Self::query`] taking the max over rows, independent per-row samplers
/// would bias the max upward.
///
/// **Not mergeable** across workers: samplers are per bucket and the
/// decayed counters cannot be combined; the engine routes all packets of a
/// key to one worker.
#[derive(Clone, Debug, PartialEq)]
pub struct SuperSpread<K> {
    params: SuperSpreadParams,
    mask: usize,
    salts: Vec<u64>,
    heads: Vec<Head<K>>,
    regs: Vec<u64>,
    words_per_bucket: usize,
    max_reg: u64,
    /// `base^v / m` for v in 0..=max_reg.
    pow_m: Vec<f64>,
    /// Decay thresholds: P(decay | value v) = decay[v] / 2^64; beyond the
    /// table the probability is < 2^−64, i.e. never.
    decay: Vec<u64>,
    p_floor: f64,
    /// Seed-derived salt of the (key, element) pair hash.
    pair_salt: u64,
    rng: SplitMix64,
}

impl<K: Copy + Eq + Default> SuperSpread<K> {
    /// Creates an empty sketch.
    ///
    /// # Panics
    /// On out-of-range parameters (see [`SuperSpreadParams`]).
    pub fn new(params: SuperSpreadParams) -> Self {
        assert!(
            params.depth >= 1 && params.width >= 1,
            "SuperSpread: width/depth ≥ 1"
        );
        assert!(
            (16..=65536).contains(&params.m),
            "SuperSpread: m in 16..=65536"
        );
        assert!((1..=6).contains(&params.size), "SuperSpread: size in 1..=6");
        assert!(params.base == 0.5, "SuperSpread: base must be 0.5");
        assert!(
            params.b >= 1.0 && params.b.is_finite(),
            "SuperSpread: b ≥ 1"
        );
        let width = params.width.next_power_of_two();
        let params = SuperSpreadParams { width, ..params };
        let n = width * params.depth;
        let words_per_bucket = (params.m * params.size as usize).div_ceil(64);
        let max_reg = (1u64 << params.size) - 1;
        let m = params.m as f64;
        let pow_m: Vec<f64> = (0..=max_reg)
            .map(|v| params.base.powi(v as i32) / m)
            .collect();
        let mut decay = vec![u64::MAX]; // value 0 never decays (empty bucket is claimed)
        for v in 1.. {
            let q = params.b.powf(-(v as f64));
            let t = q * 18_446_744_073_709_551_616.0;
            if t < 1.0 || v > 1 << 20 {
                break;
            }
            decay.push(if t >= 18_446_744_073_709_551_615.0 {
                u64::MAX
            } else {
                t as u64
            });
        }
        Self {
            params,
            mask: width - 1,
            salts: row_salts(params.seed, params.depth),
            heads: crate::memory::filled_vec(
                n,
                Head {
                    p: 1.0,
                    ..Head::default()
                },
            ),
            regs: crate::memory::filled_vec(n * words_per_bucket, 0),
            words_per_bucket,
            max_reg,
            // Any reachable state with a register below max has p ≥ pow_m[max-1].
            p_floor: pow_m[max_reg as usize] * 0.5,
            pow_m,
            decay,
            pair_salt: mix(params.seed, 0x9A1E),
            rng: SplitMix64::new(params.seed ^ 0xD1CE),
        }
    }

    /// Parameters in effect (`width` rounded to a power of two).
    pub fn params(&self) -> &SuperSpreadParams {
        &self.params
    }

    #[inline]
    fn bucket(&self, key_hash: u64, row: usize) -> usize {
        row * self.params.width + (mix(key_hash, self.salts[row]) as usize & self.mask)
    }

    #[inline]
    fn get_reg(&self, bucket: usize, idx: usize) -> u64 {
        let size = self.params.size as usize;
        let bit = idx * size;
        let base = bucket * self.words_per_bucket + (bit >> 6);
        let s = bit & 63;
        let mut v = self.regs[base] >> s;
        if s + size > 64 {
            v |= self.regs[base + 1] << (64 - s);
        }
        v & self.max_reg
    }

    #[inline]
    fn set_reg(&mut self, bucket: usize, idx: usize, val: u64) {
        let size = self.params.size as usize;
        let bit = idx * size;
        let base = bucket * self.words_per_bucket + (bit >> 6);
        let s = bit & 63;
        let w = &mut self.regs[base];
        *w = (*w & !(self.max_reg << s)) | (val << s);
        if s + size > 64 {
            let hi = 64 - s;
            let w = &mut self.regs[base + 1];
            *w = (*w & !(self.max_reg >> hi)) | (val >> hi);
        }
    }

    /// Records element `elem_hash` for `key` (precomputed `key_hash`).
    ///
    /// Both hashes come from the caller (e.g. [`crate::hash::hash_bytes`] of
    /// the flow and element fields).
    #[inline]
    pub fn insert(&mut self, key: K, key_hash: u64, elem_hash: u64) {
        let (idx, v) = self.register_of(key_hash, elem_hash);
        let mut u = f64::NAN; // rounding uniform, shared by all rows, drawn lazily
        for row in 0..self.params.depth {
            let bk = self.bucket(key_hash, row);
            let old = self.get_reg(bk, idx);
            if v <= old {
                continue;
            }
            self.set_reg(bk, idx, v);
            let h = &mut self.heads[bk];
            let p_before = h.p;
            let mut p = p_before - self.pow_m[old as usize];
            if v < self.max_reg {
                p += self.pow_m[v as usize];
            }
            h.p = p.max(self.p_floor);
            let inc = 1.0 / p_before;
            if u.is_nan() {
                u = self.rng.next_f64();
            }
            let c = inc.floor() as u64 + u64::from(u < inc.fract());
            self.credit(bk, key, key_hash, c);
        }
    }

    /// Starts loading the register word and bucket head that
    /// `insert(_, key_hash, elem_hash)` will read, so a caller can overlap
    /// the cache misses of several packets.
    #[inline]
    pub fn prefetch(&self, key_hash: u64, elem_hash: u64) {
        let (idx, _) = self.register_of(key_hash, elem_hash);
        let word = (idx * self.params.size as usize) >> 6;
        for row in 0..self.params.depth {
            let bk = self.bucket(key_hash, row);
            crate::prefetch::read(
                self.regs
                    .as_ptr()
                    .wrapping_add(bk * self.words_per_bucket + word),
            );
            crate::prefetch::read(self.heads.as_ptr().wrapping_add(bk));
        }
    }

    /// The register a (key, element) pair samples into and the value it offers.
    #[inline]
    fn register_of(&self, key_hash: u64, elem_hash: u64) -> (usize, u64) {
        let merged = mix(
            key_hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ elem_hash,
            self.pair_salt,
        );
        let idx = (((merged >> 32) * self.params.m as u64) >> 32) as usize;
        let v = (u64::from((merged as u32).leading_zeros()) + 1).min(self.max_reg);
        (idx, v)
    }

    /// Applies `c` unit increments of `key` to bucket `bk` (HeavyKeeper).
    #[inline]
    fn credit(&mut self, bk: usize, key: K, key_hash: u64, mut c: u64) {
        let h = &mut self.heads[bk];
        if c == 0 {
            return;
        }
        if h.value == 0 {
            h.key = key;
            h.key_hash = key_hash;
            h.value = c;
            return;
        }
        if h.key_hash == key_hash && h.key == key {
            h.value = h.value.saturating_add(c);
            return;
        }
        // Foreign key: each unit decays with probability b^-value; stop at
        // the first failure (the reference "stops trying").
        while c > 0 {
            let thr = self.decay.get(h.value as usize).copied().unwrap_or(0);
            if thr != u64::MAX && self.rng.next_u64() >= thr {
                return;
            }
            c -= 1;
            h.value -= 1;
            if h.value == 0 {
                h.key = key;
                h.key_hash = key_hash;
                h.value = c;
                return;
            }
        }
    }

    /// Estimated number of distinct elements of `key`: max over rows of the
    /// counter of buckets recording `key`; 0 if no row records it.
    #[inline]
    pub fn query(&self, key: K, key_hash: u64) -> u64 {
        let mut best = 0;
        for row in 0..self.params.depth {
            let h = &self.heads[self.bucket(key_hash, row)];
            if h.value > best && h.key_hash == key_hash && h.key == key {
                best = h.value;
            }
        }
        best
    }

    /// Keys whose estimate is ≥ `threshold` (each once, re-queried across
    /// rows), sorted descending (ties by key hash). Full scan.
    pub fn super_spreaders(&self, threshold: u64) -> Vec<(K, u64)> {
        let thr = threshold.max(1);
        let w = self.params.width;
        let mut out = Vec::new();
        for (i, h) in self.heads.iter().enumerate() {
            if h.value < thr {
                continue;
            }
            let row = i / w;
            let dup = (0..row).any(|r| {
                let o = &self.heads[self.bucket(h.key_hash, r)];
                o.value >= thr && o.key_hash == h.key_hash && o.key == h.key
            });
            if !dup {
                out.push((h.key, self.query(h.key, h.key_hash), h.key_hash));
            }
        }
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        out.into_iter().map(|(k, v, _)| (k, v)).collect()
    }

    /// [`Self::super_spreaders`] with the configured `threshold`.
    pub fn heavy_hitters(&self) -> Vec<(K, u64)> {
        self.super_spreaders(self.params.threshold)
    }

    /// Relative standard error of one row's HIP estimate, √(ln 2 / m)
    /// (≈ 0.833/√m): the asymptotic HIP/martingale variance for base-2
    /// HyperLogLog registers (Cohen 2015, Ting 2014), below the classic
    /// HLL estimator's 1.04/√m. Exact for a key alone in its bucket; keys
    /// sharing a bucket add variance, decay only lowers counts.
    pub fn relative_standard_error(&self) -> f64 {
        (std::f64::consts::LN_2 / self.params.m as f64).sqrt()
    }

    /// Absolute ±2σ (≈ 95 %) error figure for an `estimate`:
    /// ⌈2 · RSE · estimate⌉, with RSE from [`Self::relative_standard_error`].
    pub fn error_bound(&self, estimate: u64) -> u64 {
        (2.0 * self.relative_standard_error() * estimate as f64).ceil() as u64
    }

    /// Restores registers, keys, counters, p = 1 and the PRNG: equal to a
    /// freshly built sketch.
    pub fn reset(&mut self) {
        self.regs.fill(0);
        self.heads.fill(Head {
            p: 1.0,
            ..Head::default()
        });
        self.rng = SplitMix64::new(self.params.seed ^ 0xD1CE);
    }

    /// True if the sketch equals its freshly built state (ignoring the PRNG).
    pub fn is_pristine(&self) -> bool {
        self.regs.iter().all(|&w| w == 0)
            && self
                .heads
                .iter()
                .all(|h| h.value == 0 && h.key_hash == 0 && h.p == 1.0 && h.key == K::default())
    }

    /// Bytes actually allocated on the heap (bucket heads, packed registers,
    /// lookup tables).
    pub fn memory_bytes(&self) -> usize {
        self.heads.capacity() * std::mem::size_of::<Head<K>>()
            + self.regs.capacity() * 8
            + self.salts.capacity() * 8
            + self.pow_m.capacity() * 8
            + self.decay.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SuperSpreadParams {
        SuperSpreadParams {
            width: 64,
            depth: 2,
            m: 128,
            size: 5,
            ..SuperSpreadParams::default()
        }
    }

    #[test]
    fn packed_registers_roundtrip() {
        for size in 1..=6u32 {
            let mut s = SuperSpread::<u64>::new(SuperSpreadParams {
                size,
                m: 100,
                ..small()
            });
            let maxv = (1u64 << size) - 1;
            for i in 0..100 {
                s.set_reg(3, i, (i as u64 * 7) & maxv);
            }
            for i in 0..100 {
                assert_eq!(
                    s.get_reg(3, i),
                    (i as u64 * 7) & maxv,
                    "size {size} idx {i}"
                );
            }
            // neighbours untouched
            assert!((0..100).all(|i| s.get_reg(2, i) == 0 && s.get_reg(4, i) == 0));
        }
    }

    #[test]
    fn p_tracks_register_sum() {
        let mut s = SuperSpread::<u64>::new(small());
        for e in 0..5000u64 {
            s.insert(1, 77, mix(e, 5));
        }
        for row in 0..2 {
            let bk = s.bucket(77, row);
            let exact: f64 = (0..128)
                .map(|i| {
                    let r = s.get_reg(bk, i);
                    if r == s.max_reg {
                        0.0
                    } else {
                        0.5f64.powi(r as i32) / 128.0
                    }
                })
                .sum();
            assert!((s.heads[bk].p - exact).abs() < 1e-9);
        }
    }
}
