//! `netspectra bench`: the JSON report's shape (no timing assertions).

use serde_json::Value;
use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_netspectra"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run netspectra bench")
}

fn positive(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x.is_finite() && x > 0.0, "{what} = {x}");
    x
}

#[test]
fn json_report_has_every_number() {
    let o = bench(&["--packets", "20000", "--format", "json"]);
    assert!(
        o.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");

    let trace = &v["trace"];
    let packets = positive(&trace["packets"], "trace.packets");
    assert!(packets <= 20_000.0, "{packets} IP packets of 20000 frames");
    let sources = positive(&trace["sources"], "trace.sources");
    let flows = positive(&trace["flows"], "trace.flows");
    assert!(sources <= flows && flows <= packets);
    assert!(trace["source"].as_str().unwrap().contains("generated"));

    for f in [
        "exact_insert_ns",
        "exact_flow_insert_ns",
        "countmin_insert_ns",
        "heavy_insert_ns",
        "superspread_insert_ns",
        "exact_query_ns",
        "countmin_query_ns",
        "superspread_query_ns",
    ] {
        positive(&v["micro"][f], &format!("micro.{f}"));
    }
    for f in [
        "exact_bytes_estimated",
        "countmin_bytes",
        "heavy_bytes",
        "superspread_bytes",
    ] {
        positive(&v["memory"][f], &format!("memory.{f}"));
    }

    let engine = v["engine"].as_array().expect("engine is an array");
    let workers: Vec<u64> = engine
        .iter()
        .map(|e| e["workers"].as_u64().unwrap())
        .collect();
    // 1 worker, then one per core unless the machine has a single core.
    assert_eq!(workers[0], 1, "{workers:?}");
    assert!(
        workers.len() <= 2 && workers[1..].iter().all(|&w| w > 1),
        "{workers:?}"
    );
    for e in engine {
        positive(&e["mpps_median"], "engine.mpps_median");
        let runs = e["runs"].as_array().unwrap();
        assert!(!runs.is_empty());
        for r in runs {
            positive(r, "engine.runs[]");
        }
    }

    positive(&v["machine"]["cores"], "machine.cores");
    assert!(v["machine"]["cpu"].is_string() || v["machine"]["cpu"].is_null());
}

#[test]
fn missing_file_is_a_clear_error() {
    let o = bench(&["--file", "/nonexistent/trace.pcap"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/trace.pcap"), "{err}");
    assert!(o.stdout.is_empty());
}
