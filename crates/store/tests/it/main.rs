//! SQLite store: schema versioning, runs that never overwrite each other,
//! window rows that sum to the engine's totals.

use netspectra_engine::{Engine, EnginePlan};
use netspectra_model::config::Config;
use netspectra_model::{ip, PacketRecord, L3};
use netspectra_store::{SqliteStore, StoreError};
use serde_json::json;

fn recs(n: u64) -> Vec<PacketRecord> {
    (0..n)
        .map(|i| PacketRecord {
            ts_ns: 1_000_000_000 * i, // one packet per second → several 60 s windows
            src_ip: ip::from_v4([10, 0, 0, (i % 3) as u8]),
            dst_ip: ip::from_v4([10, 1, 0, (i % 5) as u8]),
            src_port: 1000 + (i % 2) as u16,
            dst_port: 80,
            protocol: 6,
            wire_len: 100 + i as u32,
            l3: L3::Ipv4,
            ..Default::default()
        })
        .collect()
}

fn analyze_into(store: &mut SqliteStore, records: &[PacketRecord], workers: usize) -> i64 {
    let plan = EnginePlan::from_config(&Config::default(), workers).unwrap();
    let run = store
        .begin_run(
            "local",
            "test",
            &json!(["mem"]),
            &plan.tasks,
            plan.window_ns,
        )
        .unwrap();
    let mut input = Engine::start(plan, Box::new(store.sink(run, "local").unwrap())).unwrap();
    for r in records {
        input.push(r);
    }
    let out = input.finish().unwrap();
    store
        .finish_run(
            run,
            "complete",
            &json!(["mem"]),
            out.packets,
            out.tasks[0].bytes,
            &json!({}),
        )
        .unwrap();
    run
}

#[test]
fn windows_sum_to_totals_and_runs_never_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let records = recs(200);
    let total_bytes: i64 = records.iter().map(|r| i64::from(r.wire_len)).sum();
    let mut store = SqliteStore::open(&path).unwrap();
    let run1 = analyze_into(&mut store, &records, 2);
    drop(store);
    let mut store = SqliteStore::open(&path).unwrap();
    let run2 = analyze_into(&mut store, &records, 1);
    assert_ne!(run1, run2);
    let conn = store.connection();
    for run in [run1, run2] {
        let (windows, packets, bytes): (i64, i64, i64) = conn
            .query_row(
                "SELECT COUNT(DISTINCT window_start), SUM(packets), SUM(bytes) FROM exact_rows WHERE run_id = ?1 AND task = 'per_src_ip'",
                [run],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(windows, 4, "200 s of packets in 60 s windows");
        assert_eq!(packets, 200);
        assert_eq!(bytes, total_bytes);
        // Per-source sums over windows equal the truth.
        let src0: i64 = conn
            .query_row(
                "SELECT SUM(packets) FROM exact_rows WHERE run_id = ?1 AND task = 'per_src_ip' AND src_ip = ?2",
                rusqlite::params![run, &ip::from_v4([10, 0, 0, 0])[..]],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(src0, 67);
        // Columns outside the task's key are NULL.
        let nulls: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM exact_rows WHERE run_id = ?1 AND task = 'per_src_ip' AND (dst_ip IS NOT NULL OR src_port IS NOT NULL)",
                [run],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(nulls, 0);
    }
    let runs = store.runs().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs
        .iter()
        .all(|r| r.status == "complete" && r.packets == 200 && r.finished_at_ns.is_some()));
    let tasks: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM tasks WHERE run_id = ?1",
            [run2],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tasks, 5, "3 exact + 2 sketch default tasks");
    // Sketch estimates are stored per period: 3 sources → Count-Min is exact.
    let (estimate, bound): (i64, i64) = conn
        .query_row(
            "SELECT SUM(estimate), MAX(error_bound) FROM sketch_rows WHERE run_id = ?1 AND task = 'per_src_ip_hh' AND measure = 'packets' AND src_ip = ?2",
            rusqlite::params![run2, &ip::from_v4([10, 0, 0, 0])[..]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        estimate >= 67 && estimate <= 67 + bound,
        "estimate {estimate} ± {bound}"
    );
}

#[test]
fn a_version_1_store_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(netspectra_store::schema::MIGRATIONS[0])
        .unwrap();
    conn.execute(
        "INSERT INTO runs (engine_id, command, started_at_ns, status, inputs) VALUES ('local', 'old', 1, 'complete', '[]')",
        [],
    )
    .unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.runs().unwrap().len(), 1, "existing runs are kept");
    let version: i64 = store
        .connection()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, netspectra_store::schema::SCHEMA_VERSION);
    let n: i64 = store
        .connection()
        .query_row("SELECT COUNT(*) FROM sketch_rows", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    match SqliteStore::open(&path) {
        Err(e @ StoreError::NewerSchema { .. }) => assert!(e.to_string().contains("99")),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a newer schema must be refused"),
    }
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let e = SqliteStore::open(&path)
        .err()
        .expect("not a database")
        .to_string();
    assert!(e.contains("not.db"), "{e}");
}
mod clickhouse;
