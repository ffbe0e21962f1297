//! Shared deterministic stream generators for the integration tests.
#![allow(dead_code)]

use netspectra_sketch::hash::{hash_bytes, mix};
use netspectra_sketch::rng::SplitMix64;

/// Zipf(s) sampler over `0..n` via an inverse-CDF table.
pub struct Zipf {
    cdf: Vec<f64>,
    rng: SplitMix64,
}

impl Zipf {
    /// Sampler over `0..n` with exponent `s`.
    pub fn new(n: usize, s: f64, seed: u64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|i| {
                acc += 1.0 / (i as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Self {
            cdf,
            rng: SplitMix64::new(seed),
        }
    }

    /// Next key.
    pub fn sample(&mut self) -> u64 {
        let u = self.rng.next_f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64
    }
}

/// Key hash used by the tests (as the engine would: hash the key bytes).
pub fn kh(k: u64) -> u64 {
    hash_bytes(&k.to_le_bytes(), 0xABCD)
}

/// Element hash.
pub fn eh(e: u64) -> u64 {
    mix(e, 0xE1E)
}
