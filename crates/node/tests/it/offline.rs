//! The offline analysis role: totals equal the generator's truth, and the
//! run is stored.

use netspectra_model::config::Config;
use netspectra_node::offline::{Analysis, AnalysisConfig};

#[test]
fn analysis_counts_every_packet_and_stores_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (path, truth) = crate::capture(dir.path(), 20_000, 7);
    let db = dir.path().join("ns.db");
    let mut ticks = 0;
    let report = Analysis::run(
        AnalysisConfig {
            files: vec![path],
            config: Config::default(),
            workers: 2,
            store: Some(format!("sqlite:{}", db.display())),
            verify: false,
            top: 0,
            append: false,
        },
        &mut |_| ticks += 1,
    )
    .unwrap();
    assert!(!report.damaged());
    assert_eq!(report.packets, truth.packets);
    assert_eq!(report.bytes, truth.bytes);
    let per_src = &report.engine.tasks[0];
    assert_eq!(per_src.name, "per_src_ip");
    assert_eq!(per_src.packets, truth.ip_packets);
    assert_eq!(per_src.rows.len(), truth.per_src.len());
    let (url, run_id) = report.store.expect("stored");
    assert!(url.ends_with("ns.db") && run_id >= 1, "{url} {run_id}");
    assert!(db.exists());
}

#[test]
fn a_missing_file_is_refused_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ns.db");
    let err = Analysis::run(
        AnalysisConfig {
            files: vec![dir.path().join("nope.pcap")],
            config: Config::default(),
            workers: 1,
            store: Some(format!("sqlite:{}", db.display())),
            verify: false,
            top: 10,
            append: false,
        },
        &mut |_| {},
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!db.exists());
}
