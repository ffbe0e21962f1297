//! Sketch tasks end to end, against the generator's independent truth:
//! planted heavy hitters and super-spreaders, error bounds, recall, F1.

use crate::{analyze_json, gen, task};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

const CONFIG: &str = "\
aggregator:
  types: [sketch]
  sketch:
    tasks:
      - {name: hh, algorithm: countmin, key: [SrcIP], report: 20}
      - {name: bucket, algorithm: hh, key: [SrcIP], report: 10}
      - {name: spread, algorithm: superspread, key: [SrcIP], element_key: [DstIP], threshold: 200}
";

fn src(entry: &Value) -> &str {
    entry["key"]["SrcIP"].as_str().unwrap()
}

fn run(seed: u64, workers: &str) -> (Value, Value) {
    let dir = tempfile::tempdir().unwrap();
    let (file, truth) = gen(
        dir.path(),
        "s.pcap",
        120_000,
        seed,
        "pcap",
        &["--spreaders", "300,600,1200"],
    );
    let cfg = dir.path().join("sketch.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let (code, report) = analyze_json(&[
        file.to_str().unwrap(),
        "--no-store",
        "--top",
        "0",
        "--verify",
        "--workers",
        workers,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    (report, truth)
}

#[test]
fn heavy_hitters_are_found_within_their_bounds_with_high_recall() {
    for seed in [1, 2, 3] {
        let (report, truth) = run(seed, "2");
        let per_src = truth["per_src"].as_object().unwrap();
        let planted: Vec<&str> = truth["heavy_hitters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for (name, measure) in [
            ("hh", "packets"),
            ("hh", "bytes"),
            ("bucket", "packets"),
            ("bucket", "bytes"),
        ] {
            let list = task(&report, name)["heavy_hitters"][measure]
                .as_array()
                .unwrap();
            let top3: Vec<&str> = list.iter().take(3).map(src).collect();
            assert_eq!(top3, planted, "seed {seed}: {name} top 3 by {measure}");
        }
        let hh = task(&report, "hh");
        for measure in ["packets", "bytes"] {
            let list = hh["heavy_hitters"][measure].as_array().unwrap();
            // Every Count-Min estimate lies within its one-sided bound.
            for e in list {
                let exact = per_src[src(e)][measure].as_u64().unwrap();
                let (est, bound) = (
                    e["estimate"].as_u64().unwrap(),
                    e["error_bound"].as_u64().unwrap(),
                );
                assert!(
                    exact <= est && est <= exact + bound,
                    "seed {seed} {}: {exact} vs {est} ± {bound}",
                    src(e)
                );
            }
            // Top-20 recall against exact per-source counts.
            let mut exact: Vec<(&String, u64)> = per_src
                .iter()
                .map(|(k, v)| (k, v[measure].as_u64().unwrap()))
                .collect();
            exact.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let truth20: HashSet<&str> = exact.iter().take(20).map(|e| e.0.as_str()).collect();
            let found = list.iter().filter(|e| truth20.contains(src(e))).count();
            assert!(
                found as f64 / 20.0 >= 0.95,
                "seed {seed} {measure}: top-20 recall {found}/20"
            );
            let verify = &hh["verify"][measure];
            assert!(verify["recall"].as_f64().unwrap() >= 0.95, "{verify}");
        }
        assert!(hh["memory_bytes"].as_u64().unwrap() > 0);
    }
}

#[test]
fn super_spreaders_are_found_with_accurate_estimates() {
    for seed in [1, 2, 3] {
        let (report, truth) = run(seed, "2");
        let spread = task(&report, "spread");
        let found: BTreeMap<&str, u64> = spread["super_spreaders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (src(e), e["estimate"].as_u64().unwrap()))
            .collect();
        let main = &truth["super_spreaders"][0];
        let exact = main["distinct_dst"].as_f64().unwrap();
        let est = found[main["src"].as_str().unwrap()] as f64;
        assert!(
            (est - exact).abs() <= 0.10 * exact,
            "seed {seed}: planted spreader {est} vs {exact}"
        );
        // F1 of the detected set against exact distinct counts (threshold 200).
        let expected: HashSet<&str> = truth["distinct_dst_per_src_top"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["distinct_dst"].as_u64().unwrap() >= 200)
            .map(|e| e["src"].as_str().unwrap())
            .collect();
        let reported: HashSet<&str> = found.keys().copied().collect();
        let hits = reported.intersection(&expected).count() as f64;
        let (p, r) = (hits / reported.len() as f64, hits / expected.len() as f64);
        let f1 = 2.0 * p * r / (p + r);
        assert!(
            f1 >= 0.9,
            "seed {seed}: F1 {f1} (reported {reported:?}, expected {expected:?})"
        );
        assert!(spread["verify"]["distinct"]["f1"].as_f64().unwrap() >= 0.9);
    }
}

#[test]
fn sketch_results_are_the_same_for_the_same_seed_and_any_worker_count() {
    let strip = |mut v: Value| {
        for t in v["tasks"].as_array_mut().unwrap() {
            t.as_object_mut().unwrap().remove("memory_bytes");
        }
        v["tasks"].take()
    };
    let (one, _) = run(4, "1");
    let (again, _) = run(4, "1");
    let (three, _) = run(4, "3");
    let one = strip(one);
    assert_eq!(one, strip(again), "same seed, same results");
    assert_eq!(one, strip(three), "1 and 3 workers");
}
