//! HeavyBucket planted heavy hitters and property tests.
mod common;

use common::{kh, Zipf};
use netspectra_sketch::rng::SplitMix64;
use netspectra_sketch::{HeavyBucket, HeavyBucketParams};
use proptest::prelude::*;
use std::collections::HashMap;

#[test]
fn finds_planted_heavy_hitters() {
    for seed in [1u64, 2, 3] {
        let mut hb = HeavyBucket::<u64>::new(HeavyBucketParams {
            width: 4096,
            depth: 2,
            seed,
        });
        let mut z = Zipf::new(20_000, 0.8, seed);
        let mut rng = SplitMix64::new(seed);
        // planted: keys 1_000_000.. with ~13.3k packets each (by packets), and
        // 2_000_000.. with ~2.2k jumbo packets each (by bytes), in a Zipf(0.8)
        // background whose largest key has ~4.5k packets
        let mut pk = HashMap::new();
        let mut by = HashMap::new();
        for i in 0..200_000u64 {
            let k = if i % 5 == 0 {
                1_000_000 + (rng.next_u64() % 3) // ~13.3k packets each
            } else if i % 31 == 1 {
                2_000_000 + (rng.next_u64() % 3)
            } else {
                z.sample()
            };
            let bytes = if k >= 2_000_000 {
                9000
            } else {
                40 + rng.next_u64() % 1400
            };
            hb.insert(k, kh(k), bytes);
            *pk.entry(k).or_insert(0u64) += 1;
            *by.entry(k).or_insert(0u64) += bytes;
        }
        let (hp, hs) = hb.heavy_hitters(500, 1_000_000);
        let top_p: Vec<u64> = hp.iter().take(3).map(|x| x.0).collect();
        let top_s: Vec<u64> = hs.iter().take(3).map(|x| x.0).collect();
        println!(
            "heavy seed={seed}: packets {:?} bytes {:?}",
            &hp[..3.min(hp.len())],
            &hs[..3.min(hs.len())]
        );
        for k in 1_000_000..1_000_003 {
            assert!(top_p.contains(&k), "seed {seed}: {k} missing from {hp:?}");
            let (c, _) = hb.query(kh(k), k);
            assert!(
                c <= pk[&k] && c as f64 >= 0.8 * pk[&k] as f64,
                "{c} vs {}",
                pk[&k]
            );
        }
        for k in 2_000_000..2_000_003 {
            assert!(top_s.contains(&k), "seed {seed}: {k} missing from {hs:?}");
            let (_, s) = hb.query(kh(k), k);
            assert!(s <= by[&k]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn reset_is_pristine_and_values_are_lower_bounds(
        items in prop::collection::vec((0u64..50, 1u64..1500), 0..300),
        seed in any::<u64>(),
    ) {
        let p = HeavyBucketParams { width: 16, depth: 2, seed };
        let mut hb = HeavyBucket::<u64>::new(p);
        let mut pk = HashMap::new();
        let mut by = HashMap::new();
        for &(k, b) in &items {
            hb.insert(k, kh(k), b);
            *pk.entry(k).or_insert(0u64) += 1;
            *by.entry(k).or_insert(0u64) += b;
        }
        for (&k, &c) in &pk {
            let (qc, qs) = hb.query(kh(k), k);
            prop_assert!(qc <= c && qs <= by[&k]);
        }
        let (a, b) = hb.heavy_hitters(0, 0);
        let mut ka: Vec<u64> = a.iter().map(|x| x.0).collect();
        ka.sort_unstable();
        ka.dedup();
        prop_assert_eq!(ka.len(), a.len());
        prop_assert!(b.windows(2).all(|w| w[0].1 >= w[1].1));
        hb.reset();
        prop_assert!(hb.is_pristine());
        prop_assert_eq!(hb, HeavyBucket::<u64>::new(p));
    }
}
