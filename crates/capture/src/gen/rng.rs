//! Small deterministic randomness: a seeded xoshiro256** generator, a
//! stateless 64-bit mixer, and a Zipf(-Mandelbrot) sampler over ranks.

/// The splitmix64 finalizer: a bijective, well-mixing map on `u64`.
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A bijection on the low `bits` bits (the result stays below `2^bits`):
/// spreads consecutive indices over the address range.
#[inline]
pub(crate) fn permute(x: u32, bits: u32) -> u32 {
    let mask = if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    let mut v = x & mask;
    v = v.wrapping_mul(0x9E37_79B1) & mask; // odd multiplier: bijective mod 2^bits
    v ^= v >> (bits / 2).max(1);
    v = v.wrapping_mul(0x85EB_CA6B | 1) & mask;
    v ^ (v >> (bits / 3).max(1))
}

/// xoshiro256** seeded through splitmix64, as its authors recommend.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is a function of `seed`.
    pub(crate) fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A value in `0..n` (`n > 0`), by the multiply-shift method (bias
    /// below 2^-32 for the ranges used here, and fully deterministic).
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A value in `lo..=hi`.
    #[inline]
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// A uniform float in `[0, 1)`.
    #[inline]
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Samples ranks `0..n` with probability proportional to `(rank + 1 + q)^-s`
/// (Zipf for `q = 0`, Zipf-Mandelbrot otherwise). The CDF is computed once;
/// each sample is a binary search.
#[derive(Clone, Debug)]
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The sampler over `n >= 1` ranks with exponent `s` and head offset `q`.
    pub(crate) fn new(n: usize, s: f64, q: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 0..n {
            acc += (k as f64 + 1.0 + q).powf(-s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    /// A Zipf sampler over `n` ranks whose head is flattened (smallest
    /// offset `q` found by doubling then bisection) so that the most popular
    /// rank gets at most `max_top` of the samples — unless even a uniform
    /// distribution cannot do that, in which case the result is near uniform.
    pub(crate) fn with_max_top(n: usize, s: f64, max_top: f64) -> Zipf {
        let top = |q: f64| {
            let sum: f64 = (0..n).map(|k| (k as f64 + 1.0 + q).powf(-s)).sum();
            (1.0 + q).powf(-s) / sum
        };
        if top(0.0) <= max_top || n <= 1 {
            return Zipf::new(n.max(1), s, 0.0);
        }
        let mut hi = 1.0;
        while top(hi) > max_top && hi < 1e12 {
            hi *= 2.0;
        }
        let mut lo = hi / 2.0;
        for _ in 0..12 {
            let mid = (lo + hi) / 2.0;
            if top(mid) > max_top {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Zipf::new(n, s, hi)
    }

    /// Probability of the most popular rank.
    #[cfg(test)]
    pub(crate) fn top_share(&self) -> f64 {
        self.cdf[0]
    }

    /// One rank in `0..n`.
    #[inline]
    pub(crate) fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_is_a_bijection() {
        for bits in [8u32, 12, 13] {
            let mut seen = vec![false; 1 << bits];
            for x in 0..(1u32 << bits) {
                let p = permute(x, bits) as usize;
                assert!(!seen[p], "bits {bits}: collision at {x}");
                seen[p] = true;
            }
        }
    }

    #[test]
    fn rng_is_deterministic_and_uniformish() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let mut c = Rng::new(8);
        let va: Vec<u64> = (0..10).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..10).map(|_| b.next_u64()).collect();
        let vc: Vec<u64> = (0..10).map(|_| c.next_u64()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[a.below(10) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&n| (9_000..11_000).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn zipf_head_is_flattened_on_request() {
        let plain = Zipf::new(10_000, 1.1, 0.0);
        assert!(plain.top_share() > 0.05);
        let flat = Zipf::with_max_top(10_000, 1.1, 0.01);
        assert!(flat.top_share() <= 0.01 && flat.top_share() > 0.005);
        let mut rng = Rng::new(1);
        let mut counts = vec![0u32; 10_000];
        for _ in 0..100_000 {
            counts[flat.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[100] && counts[100] > counts[5_000]);
        let tiny = Zipf::with_max_top(100, 1.1, 0.013);
        assert!(tiny.top_share() <= 0.013);
    }
}
