//! Hashing primitives shared by every sketch.
//!
//! Callers hash a key **once** per packet with [`hash_bytes`] and hand the
//! 64-bit value to the sketches, which derive one independent index per row
//! with [`mix`] instead of re-hashing the (up to 40-byte) key `d` times.

/// Seeded 64-bit XXH3 of `bytes`.
///
/// Why: one fast, well-distributed, seedable hash for all keys so that runs
/// with the same seed are bit-for-bit reproducible.
#[inline]
pub fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, seed)
}

/// Derives an independent-looking 64-bit hash from `h` and a salt/row `i`.
///
/// Why: sketches need `d` independent row indices per key; re-hashing the
/// key bytes `d` times is wasteful, so the single key hash is remixed with a
/// per-row salt through the SplitMix64/Stafford "mix13" finalizer (a
/// bijection of `h` for a fixed `i`, full avalanche).
#[inline]
pub fn mix(h: u64, i: u64) -> u64 {
    let mut z = h ^ i
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives `n` row salts from a sketch seed (deterministic).
pub(crate) fn row_salts(seed: u64, n: usize) -> Vec<u64> {
    let mut rng = crate::rng::SplitMix64::new(seed);
    (0..n).map(|_| rng.next_u64()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_seed_sensitive() {
        assert_eq!(hash_bytes(b"abc", 1), hash_bytes(b"abc", 1));
        assert_ne!(hash_bytes(b"abc", 1), hash_bytes(b"abc", 2));
        assert_ne!(mix(42, 0), mix(42, 1));
        assert_eq!(mix(42, 7), mix(42, 7));
    }
}
