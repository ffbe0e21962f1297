//! SuperSpread accuracy (single spreader, F1), duplicates, determinism, reset.
mod common;

use common::{eh, kh};
use netspectra_sketch::rng::SplitMix64;
use netspectra_sketch::{SuperSpread, SuperSpreadParams};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

fn params(seed: u64) -> SuperSpreadParams {
    SuperSpreadParams {
        seed,
        ..SuperSpreadParams::default()
    }
}

/// Background: `n_bg` keys with 1..=8 distinct elements each (plus
/// duplicates), interleaved with the planted spreaders' elements.
fn stream(seed: u64, planted: &[(u64, u64)], n_bg: u64) -> Vec<(u64, u64)> {
    let mut rng = SplitMix64::new(seed ^ 0xFEED);
    let mut out = Vec::new();
    for k in 0..n_bg {
        let n = 1 + rng.next_u64() % 8;
        for _ in 0..2 * n {
            out.push((k, rng.next_u64() % n));
        }
    }
    for &(k, n) in planted {
        for e in 0..n {
            out.push((k, e));
            if e % 3 == 0 {
                out.push((k, e / 2)); // duplicate of an already-seen element
            }
        }
    }
    // deterministic shuffle (Fisher–Yates)
    for i in (1..out.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        out.swap(i, j);
    }
    out
}

fn run(p: SuperSpreadParams, s: &[(u64, u64)]) -> SuperSpread<u64> {
    let mut ss = SuperSpread::<u64>::new(p);
    for &(k, e) in s {
        ss.insert(k, kh(k), eh(e ^ (k << 32)));
    }
    ss
}

#[test]
fn single_spreader_within_10_percent() {
    for seed in [1u64, 2, 3] {
        let big = 1u64 << 40;
        let s = stream(seed, &[(big, 5_000)], 20_000);
        let ss = run(params(seed), &s);
        let est = ss.query(big, kh(big));
        let err = (est as f64 - 5000.0) / 5000.0;
        println!(
            "superspread seed={seed}: estimate {est} ({:+.1} %), ±2σ bound {}",
            err * 100.0,
            ss.error_bound(est)
        );
        assert!(err.abs() <= 0.10, "seed {seed}: {est}");
    }
}

#[test]
fn several_spreaders_f1() {
    let planted: Vec<(u64, u64)> = [500u64, 1_000, 2_000, 5_000, 700, 3_000]
        .iter()
        .enumerate()
        .map(|(i, &n)| ((1u64 << 40) + i as u64, n))
        .collect();
    for seed in [4u64, 5] {
        let s = stream(seed, &planted, 20_000);
        let mut exact: HashMap<u64, HashSet<u64>> = HashMap::new();
        for &(k, e) in &s {
            exact.entry(k).or_default().insert(e);
        }
        let thr = 300;
        let truth: HashSet<u64> = exact
            .iter()
            .filter(|(_, v)| v.len() as u64 >= thr)
            .map(|(&k, _)| k)
            .collect();
        let ss = run(params(seed), &s);
        let found = ss.super_spreaders(thr);
        let got: HashSet<u64> = found.iter().map(|x| x.0).collect();
        let tp = got.intersection(&truth).count() as f64;
        let prec = tp / got.len().max(1) as f64;
        let rec = tp / truth.len() as f64;
        let f1 = 2.0 * prec * rec / (prec + rec);
        let rel: Vec<String> = planted
            .iter()
            .map(|&(k, n)| format!("{n}→{}", ss.query(k, kh(k))))
            .collect();
        println!(
            "superspread F1 seed={seed}: precision {prec:.3} recall {rec:.3} F1 {f1:.3}; {}",
            rel.join(" ")
        );
        assert!(f1 >= 0.9);
        assert!(found.windows(2).all(|w| w[0].1 >= w[1].1));
    }
}

#[test]
fn duplicates_do_not_count_and_deterministic() {
    let p = SuperSpreadParams {
        width: 256,
        ..params(7)
    };
    let mut a = SuperSpread::<u64>::new(p);
    for e in 0..2000u64 {
        a.insert(9, kh(9), eh(e));
    }
    let before = a.query(9, kh(9));
    let snapshot = a.clone();
    for _ in 0..3 {
        for e in 0..2000u64 {
            a.insert(9, kh(9), eh(e));
        }
    }
    assert_eq!(a.query(9, kh(9)), before);
    assert_eq!(a, snapshot, "duplicates must not change any state");
    let mut b = SuperSpread::<u64>::new(p);
    for e in 0..2000u64 {
        b.insert(9, kh(9), eh(e));
    }
    assert_eq!(b, snapshot);
}

#[test]
#[ignore = "accuracy study; run with --ignored --nocapture in release"]
fn background_study() {
    let big = 1u64 << 40;
    let mut errs = Vec::new();
    for seed in 0..60u64 {
        let s = stream(seed, &[(big, 5_000)], 20_000);
        let ss = run(params(seed), &s);
        errs.push(ss.query(big, kh(big)) as f64 / 5000.0 - 1.0);
    }
    let n = errs.len() as f64;
    let mean = errs.iter().sum::<f64>() / n;
    let sd = (errs.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n).sqrt();
    let worst = errs.iter().fold(0.0f64, |a, e| a.max(e.abs()));
    println!(
        "background: mean {:+.2} % sd {:.2} % worst {:.2} %",
        mean * 100.0,
        sd * 100.0,
        worst * 100.0
    );
}

#[test]
#[ignore = "accuracy study; run with --ignored --nocapture in release"]
fn error_distribution_study() {
    for m in [128usize, 256, 512] {
        let mut errs = Vec::new();
        for seed in 0..200u64 {
            let mut ss = SuperSpread::<u64>::new(SuperSpreadParams {
                m,
                width: 1024,
                ..params(seed)
            });
            for e in 0..5_000u64 {
                ss.insert(1, kh(1), eh(e ^ (seed << 20)));
            }
            errs.push(ss.query(1, kh(1)) as f64 / 5000.0 - 1.0);
        }
        let n = errs.len() as f64;
        let mean = errs.iter().sum::<f64>() / n;
        let sd = (errs.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n).sqrt();
        let within10 = errs.iter().filter(|e| e.abs() <= 0.1).count();
        println!(
            "m={m}: mean rel err {:+.2} %, sd {:.2} % (√(ln2/m) = {:.2} %), within ±10 %: {within10}/200",
            mean * 100.0,
            sd * 100.0,
            (std::f64::consts::LN_2 / m as f64).sqrt() * 100.0
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn reset_equals_new(items in prop::collection::vec((0u64..40, any::<u64>()), 0..300), seed in any::<u64>()) {
        let p = SuperSpreadParams { width: 16, m: 32, ..params(seed) };
        let mut ss = SuperSpread::<u64>::new(p);
        for &(k, e) in &items {
            ss.insert(k, kh(k), e);
        }
        ss.reset();
        prop_assert!(ss.is_pristine());
        prop_assert_eq!(ss, SuperSpread::<u64>::new(p));
    }
}
