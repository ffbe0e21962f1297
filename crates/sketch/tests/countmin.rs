//! Count-Min accuracy, merge, determinism and property tests.
mod common;

use common::{kh, Zipf};
use netspectra_sketch::{CountMin, CountMinParams};
use proptest::prelude::*;
use std::collections::HashMap;

fn zipf_stream(seed: u64) -> (Vec<u64>, HashMap<u64, u64>) {
    let mut z = Zipf::new(20_000, 1.0, seed);
    let stream: Vec<u64> = (0..200_000).map(|_| z.sample()).collect();
    let mut exact = HashMap::new();
    for &k in &stream {
        *exact.entry(k).or_insert(0u64) += 1;
    }
    (stream, exact)
}

fn check_zipf(conservative: bool, seed: u64) {
    let (stream, exact) = zipf_stream(seed);
    let p = CountMinParams {
        width: 4096,
        depth: 4,
        conservative,
        top_k: 64,
        seed,
    };
    let mut cm = CountMin::<u64>::new(p);
    for &k in &stream {
        cm.insert(k, kh(k), 1);
    }
    assert_eq!(cm.total(), 200_000);
    let bound = cm.error_bound();
    let mut viol = 0usize;
    let mut max_err = 0u64;
    for (&k, &c) in &exact {
        let e = cm.estimate(kh(k));
        assert!(e >= c, "underestimate");
        max_err = max_err.max(e - c);
        if e > c + bound {
            viol += 1;
        }
    }
    let allowed = ((1.0 - cm.confidence()) * exact.len() as f64).ceil() as usize;
    let mut ex: Vec<(u64, u64)> = exact.iter().map(|(&k, &c)| (k, c)).collect();
    ex.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top: Vec<u64> = cm.top().into_iter().take(20).map(|(k, _)| k).collect();
    let hits = ex[..20].iter().filter(|(k, _)| top.contains(k)).count();
    let recall = hits as f64 / 20.0;
    println!(
        "countmin conservative={conservative} seed={seed}: keys={} bound={bound} max_err={max_err} violations={viol} (allowed {allowed}) top20 recall={recall}",
        exact.len()
    );
    assert!(viol <= allowed);
    assert!(recall >= 0.95);
}

#[test]
fn zipf_within_bound_and_top20_recall() {
    for seed in [1, 2] {
        check_zipf(false, seed);
        check_zipf(true, seed);
    }
}

#[test]
fn merge_equals_single_stream_counters() {
    let (stream, exact) = zipf_stream(9);
    let p = CountMinParams {
        width: 4096,
        depth: 4,
        conservative: false,
        top_k: 32,
        seed: 3,
    };
    let mut whole = CountMin::<u64>::new(p);
    let mut a = CountMin::<u64>::new(p);
    let mut b = CountMin::<u64>::new(p);
    for (i, &k) in stream.iter().enumerate() {
        whole.insert(k, kh(k), 1);
        if i % 2 == 0 {
            a.insert(k, kh(k), 1)
        } else {
            b.insert(k, kh(k), 1)
        }
    }
    a.merge(&b);
    for &k in exact.keys() {
        assert_eq!(a.estimate(kh(k)), whole.estimate(kh(k)));
    }
    let ta: Vec<u64> = a.top().into_iter().take(10).map(|x| x.0).collect();
    let tw: Vec<u64> = whole.top().into_iter().take(10).map(|x| x.0).collect();
    assert_eq!(ta, tw);
}

#[test]
fn deterministic() {
    let (stream, _) = zipf_stream(4);
    let run = || {
        let mut cm = CountMin::<u64>::new(CountMinParams {
            width: 2048,
            ..Default::default()
        });
        for &k in &stream[..20_000] {
            cm.insert(k, kh(k), k % 1500);
        }
        cm
    };
    assert_eq!(run(), run());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn never_underestimates(
        items in prop::collection::vec((0u64..200, 1u64..1000), 0..400),
        conservative in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let p = CountMinParams { width: 32, depth: 3, conservative, top_k: 8, seed };
        let mut cm = CountMin::<u64>::new(p);
        let mut exact = HashMap::new();
        for &(k, w) in &items {
            cm.insert(k, kh(k), w);
            *exact.entry(k).or_insert(0u64) += w;
        }
        for (&k, &c) in &exact {
            prop_assert!(cm.estimate(kh(k)) >= c);
        }
        for (k, e) in cm.top() {
            prop_assert!(e >= exact[&k]);
        }
        cm.reset();
        prop_assert!(cm.is_pristine());
        prop_assert_eq!(cm, CountMin::<u64>::new(p));
    }
}
