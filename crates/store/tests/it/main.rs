//! SQLite store: schema versioning, runs that never overwrite each other,
//! window rows that sum to the run's totals.

mod drive;
mod grouped;

use drive::{Drive, Plan};
use netspectra_model::task::TaskSpec;
use netspectra_model::window::{FlowCounters, SinkError, TaskRows, WindowResult, WindowSink};
use netspectra_model::{ip, Dimension, FlowKey, PacketRecord, L3};
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

/// An exact task named `name` counting per `key`.
fn exact_task(name: &str, key: Vec<Dimension>) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        kind: netspectra_model::task::TaskKind::Exact,
        key,
        element: vec![],
        sketch: None,
    }
}

/// A window's rows per task, in parts as engine workers hold them.
struct Parts(Vec<Vec<Vec<(FlowKey, FlowCounters)>>>);

impl TaskRows for Parts {
    fn parts(&self, task: usize) -> usize {
        self.0[task].len()
    }
    fn part(
        &self,
        task: usize,
        part: usize,
    ) -> Box<dyn Iterator<Item = (FlowKey, FlowCounters)> + '_> {
        Box::new(self.0[task][part].iter().copied())
    }
    fn part_len(&self, task: usize, part: usize) -> usize {
        self.0[task][part].len()
    }
}

/// Begins a run of `plan`'s tasks over the input `mem`.
fn begin(store: &mut SqliteStore, plan: &Plan) -> i64 {
    store
        .begin_run(
            "local",
            "test",
            &json!(["mem"]),
            &plan.tasks,
            plan.window_ns,
        )
        .unwrap()
}

fn analyze_into(store: &mut SqliteStore, records: &[PacketRecord]) -> i64 {
    let plan = Plan::default_tasks();
    let run = begin(store, &plan);
    let mut input = Drive::start(&plan, Box::new(store.sink(run, "local").unwrap()));
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
            out.bytes,
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
    let run1 = analyze_into(&mut store, &records);
    drop(store);
    let mut store = SqliteStore::open(&path).unwrap();
    let run2 = analyze_into(&mut store, &records);
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
        // Per-key rows, laid out one SQL row per key on a connection of
        // its own.
        let conn = rusqlite::Connection::open(&path).unwrap();
        netspectra_store::expand_exact_rows(&conn).unwrap();
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
    // Sketch estimates are stored per period.
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
    let n: i64 = store
        .connection()
        .query_row("SELECT COUNT(*) FROM bus_progress", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0, "version 3 added bus_progress");
}

/// Every key row of a store, as `expand_exact_rows` lays them out, sorted.
fn key_rows(path: &std::path::Path) -> Vec<Vec<rusqlite::types::Value>> {
    let c = rusqlite::Connection::open(path).unwrap();
    netspectra_store::expand_exact_rows(&c).unwrap();
    let mut stmt = c
        .prepare("SELECT * FROM temp.exact_rows ORDER BY task, window_start, src_ip, dst_ip, src_port, dst_port, protocol")
        .unwrap();
    stmt.query_map([], |r| (0..15).map(|i| r.get(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn a_version_6_store_is_converted_to_blocks_with_the_same_answers() {
    use netspectra_store::read::{Filter, Measure, Reader, RunSelect, Scope, TimeRange};
    let dir = tempfile::tempdir().unwrap();
    let (new, old) = (dir.path().join("new.db"), dir.path().join("old.db"));
    let mut store = SqliteStore::open(&new).unwrap();
    analyze_into(&mut store, &recs(200));
    drop(store);
    // The same run in a version-6 file: one SQL row per key.
    let conn = rusqlite::Connection::open(&old).unwrap();
    for m in &netspectra_store::schema::MIGRATIONS[..6] {
        conn.execute_batch(m).unwrap();
    }
    conn.pragma_update(None, "user_version", 6).unwrap();
    drop(conn);
    let conn = rusqlite::Connection::open(&new).unwrap();
    netspectra_store::expand_exact_rows(&conn).unwrap();
    conn.execute("ATTACH ?1 AS old", [old.to_str().unwrap()])
        .unwrap();
    conn.execute_batch(
        "INSERT INTO old.runs SELECT * FROM main.runs; INSERT INTO old.tasks SELECT * FROM main.tasks; \
         INSERT INTO old.sketch_rows SELECT * FROM main.sketch_rows; INSERT INTO old.exact_rows SELECT * FROM temp.exact_rows;",
    )
    .unwrap();
    let v6_rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM old.exact_rows", [], |r| r.get(0))
        .unwrap();
    assert!(v6_rows > 10);
    drop(conn);
    // A reader opened on the version-6 file answers from its rows, and
    // keeps answering once a writer has converted them.
    let url = netspectra_store::StoreUrl::Sqlite(old.clone());
    let early = Reader::open(&url).unwrap().with_cache(0);
    let flow = Plan::default_tasks()
        .tasks
        .into_iter()
        .find(|t| t.name == "per_flow")
        .unwrap();
    let everything = Filter::default();
    let flows = Scope {
        task: &flow.name,
        key: &flow.key,
        range: TimeRange::ALL,
        filter: &everything,
        run: RunSelect::All,
    };
    let before = format!(
        "{:?}",
        early.exact_top(&flows, Measure::Bytes, 7).await.unwrap()
    );
    let store = SqliteStore::open(&old).unwrap();
    let after = format!(
        "{:?}",
        early.exact_top(&flows, Measure::Bytes, 7).await.unwrap()
    );
    assert_eq!(before, after);
    assert!(before.contains("packets"), "{before}");
    let version: i64 = store
        .connection()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, netspectra_store::schema::SCHEMA_VERSION);
    drop(store);
    assert_eq!(key_rows(&old), key_rows(&new), "every key row kept exactly");
    assert_eq!(key_rows(&old).len() as i64, v6_rows);
    // And the API's questions answer the same.
    let plan = Plan::default_tasks();
    let open = |p: &std::path::Path| {
        Reader::open(&netspectra_store::StoreUrl::Sqlite(p.to_path_buf()))
            .unwrap()
            .with_cache(0)
    };
    let (a, b) = (open(&new), open(&old));
    for t in plan.tasks.iter().filter(|t| t.kind.name() == "exact") {
        for filter in [
            Filter::default(),
            Filter {
                src_ip: Some("10.0.0.1".parse().unwrap()),
                ..Filter::default()
            },
        ] {
            if filter.src_ip.is_some() && !t.key.contains(&netspectra_model::Dimension::SrcIp) {
                continue;
            }
            let scope = Scope {
                task: &t.name,
                key: &t.key,
                range: TimeRange::ALL,
                filter: &filter,
                run: RunSelect::All,
            };
            for by in [Measure::Bytes, Measure::Packets] {
                assert_eq!(
                    format!("{:?}", a.exact_top(&scope, by, 100).await.unwrap()),
                    format!("{:?}", b.exact_top(&scope, by, 100).await.unwrap())
                );
            }
            assert_eq!(
                format!("{:?}", a.exact_totals(&scope).await.unwrap()),
                format!("{:?}", b.exact_totals(&scope).await.unwrap())
            );
            assert_eq!(
                format!("{:?}", a.exact_series(&scope, 100).await.unwrap()),
                format!("{:?}", b.exact_series(&scope, 100).await.unwrap())
            );
            assert_eq!(
                format!("{:?}", a.exact_trace(&scope).await.unwrap()),
                format!("{:?}", b.exact_trace(&scope).await.unwrap())
            );
        }
    }
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
fn a_crafted_negative_schema_version_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for version in [-1i64, i64::from(i32::MIN)] {
        let path = dir.path().join(format!("neg{}.db", version.unsigned_abs()));
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", version).unwrap();
        drop(conn);
        match SqliteStore::open(&path) {
            Err(e @ StoreError::NotAStore { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&version.to_string()), "{msg}");
                assert!(msg.contains("not a NetSpectra store"), "{msg}");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a negative schema version must be refused"),
        }
        // The reader (the API's path) refuses it the same way.
        let url = netspectra_store::StoreUrl::Sqlite(path.clone());
        let e = netspectra_store::read::Reader::open(&url)
            .err()
            .expect("refused");
        assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
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

/// Stores each window with a progress string naming the window's ordinal.
struct WithProgress {
    inner: netspectra_store::SqliteSink,
    windows: u64,
}

impl WindowSink for WithProgress {
    fn window(&mut self, tasks: &[TaskSpec], w: &WindowResult) -> Result<(), SinkError> {
        self.windows += 1;
        let progress = format!("{{\"through\":{}}}", self.windows);
        self.inner.window_with_progress(tasks, w, "js", &progress)
    }
}

/// Runs `records` through the default tasks with [`WithProgress`]; returns
/// the run id and whether the run finished without a sink error.
fn analyze_with_progress(
    store: &mut SqliteStore,
    engine_id: &str,
    records: &[PacketRecord],
) -> (i64, bool) {
    let plan = Plan::default_tasks();
    let run = store
        .begin_run(
            engine_id,
            "test",
            &json!(["mem"]),
            &plan.tasks,
            plan.window_ns,
        )
        .unwrap();
    let sink = WithProgress {
        inner: store.sink(run, engine_id).unwrap(),
        windows: 0,
    };
    let mut input = Drive::start(&plan, Box::new(sink));
    for r in records {
        input.push(r);
    }
    (run, input.finish().is_ok())
}

fn window_starts(store: &SqliteStore, run: i64) -> Vec<i64> {
    store
        .connection()
        .prepare(
            "SELECT DISTINCT window_start FROM exact_rows WHERE run_id = ?1 ORDER BY window_start",
        )
        .unwrap()
        .query_map([run], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn bus_progress_round_trips_and_is_replaced_per_engine_and_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.load_progress("e1", "js").unwrap(), None);
    // 200 s of packets: windows of 60 s → 4 windows.
    let (run, ok) = analyze_with_progress(&mut store, "e1", &recs(200));
    assert!(ok);
    assert_eq!(window_starts(&store, run).len(), 4);
    assert_eq!(
        store.load_progress("e1", "js").unwrap().as_deref(),
        Some("{\"through\":4}")
    );
    assert_eq!(store.load_progress("e1", "other").unwrap(), None);
    assert_eq!(store.load_progress("e2", "js").unwrap(), None);
    // Another run of the same engine replaces the row (one per engine and
    // consumer); another engine gets its own. Also through the trait and a
    // reopened file.
    let (_, ok) = analyze_with_progress(&mut store, "e1", &recs(70));
    assert!(ok);
    let (_, ok) = analyze_with_progress(&mut store, "e2", &recs(10));
    assert!(ok);
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    let by_trait: &dyn netspectra_store::Store = &store;
    assert_eq!(
        by_trait.load_progress("e1", "js").unwrap().as_deref(),
        Some("{\"through\":2}")
    );
    assert_eq!(
        by_trait.load_progress("e2", "js").unwrap().as_deref(),
        Some("{\"through\":1}")
    );
    let n: i64 = store
        .connection()
        .query_row("SELECT COUNT(*) FROM bus_progress", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn bus_progress_is_written_in_the_window_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let mut store = SqliteStore::open(&path).unwrap();
    // The progress of the third window fails after that window's rows were
    // inserted: the rows must go with it.
    store
        .connection()
        .execute_batch(
            "CREATE TRIGGER fail_progress BEFORE UPDATE ON bus_progress \
             WHEN NEW.state = '{\"through\":3}' BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        )
        .unwrap();
    let (run, ok) = analyze_with_progress(&mut store, "e1", &recs(200));
    assert!(!ok, "the sink error reaches the caller");
    assert_eq!(
        window_starts(&store, run),
        [0, 60_000_000_000],
        "the failed window left no row"
    );
    assert_eq!(
        store.load_progress("e1", "js").unwrap().as_deref(),
        Some("{\"through\":2}")
    );
    // And the other way: rows that fail leave the progress as it was.
    store
        .connection()
        .execute_batch(
            "DROP TRIGGER fail_progress; \
             CREATE TRIGGER fail_rows BEFORE INSERT ON exact_rows \
             WHEN NEW.window_start >= 60000000000 BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        )
        .unwrap();
    let (run, ok) = analyze_with_progress(&mut store, "e1", &recs(200));
    assert!(!ok);
    assert_eq!(window_starts(&store, run), [0]);
    assert_eq!(
        store.load_progress("e1", "js").unwrap().as_deref(),
        Some("{\"through\":1}")
    );
}

#[test]
fn retention_deletes_expired_windows_and_keeps_recent_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("r.db")).unwrap();
    // 1970 windows (long expired) and windows of the last few minutes.
    analyze_into(&mut store, &recs(200));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let recent: Vec<PacketRecord> = recs(200)
        .into_iter()
        .map(|r| PacketRecord {
            ts_ns: now - 600_000_000_000 + r.ts_ns,
            ..r
        })
        .collect();
    analyze_into(&mut store, &recent);
    let count = |s: &SqliteStore| -> (i64, i64) {
        let c = rusqlite::Connection::open(dir.path().join("r.db")).unwrap();
        let q = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        let _ = s;
        (
            q("SELECT (SELECT COUNT(*) FROM exact_rows) + (SELECT COUNT(*) FROM sketch_rows)"),
            q("SELECT COALESCE(SUM(packets), 0) FROM exact_rows WHERE task = 'per_src_ip'"),
        )
    };
    let (rows_before, packets_before) = count(&store);
    assert_eq!(packets_before, 400);
    let deleted = store
        .apply_retention(std::time::Duration::from_secs(3600))
        .unwrap();
    let (rows_after, packets_after) = count(&store);
    assert_eq!(packets_after, 200, "the recent run's packets stay");
    assert_eq!(deleted as i64, rows_before - rows_after);
    assert!(deleted > 0);
}

#[test]
fn a_bad_store_url_is_quoted_without_its_password() {
    for bad in [
        "clickhouse://u:hunter2@127.0.0.1/no_port",
        "clickhouse://u:hunter2@127.0.0.1:0/db",
        "clickhouse://u:hunter2@127.0.0.1:8123/bad-name",
        "mysql://u:hunter2@127.0.0.1:3306/db",
        "nats://u:hunter2@127.0.0.1:4222",
    ] {
        let e = netspectra_store::StoreUrl::parse(bad)
            .err()
            .unwrap_or_else(|| panic!("{bad} should be refused"));
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("u:***@127.0.0.1"), "{shown}");
    }
}

/// The `sqlite_open` fuzz seeds (crafted store files, and any minimized
/// crash kept beside them) open to a store or a clear error, never a panic.
#[test]
fn fuzz_seed_store_files_open_or_are_refused() {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/sqlite_open");
    let dir = tempfile::tempdir().unwrap();
    let mut refused = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let entry = entry.unwrap();
        let path = dir.path().join(entry.file_name());
        std::fs::copy(entry.path(), &path).unwrap();
        let url = netspectra_store::StoreUrl::Sqlite(path.clone());
        let read = netspectra_store::read::Reader::open(&url)
            .err()
            .map(|e| e.to_string());
        let write = SqliteStore::open(&path).err().map(|e| e.to_string());
        if let Some(e) = write.or(read) {
            refused.push((entry.file_name(), e));
        }
    }
    let names: Vec<String> = refused
        .iter()
        .map(|(n, _)| n.to_string_lossy().into_owned())
        .collect();
    for crafted in [
        "negative-user-version.db",
        "newer-user-version.db",
        "not-sqlite",
    ] {
        assert!(
            names.iter().any(|n| n == crafted),
            "{crafted} must be refused: {refused:?}"
        );
    }
    assert!(!names.iter().any(|n| n == "store-v3.db"), "{refused:?}");
}

#[tokio::test]
async fn a_partial_sketch_period_is_stored_and_read_back_as_partial() {
    use netspectra_model::task::TaskKind;
    use netspectra_model::window::{Estimate, SketchPeriod};
    use netspectra_store::read::{Filter, Reader, Scope, TimeRange};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let mut store = SqliteStore::open(&path).unwrap();
    let plan = Plan::default_tasks();
    let run = store
        .begin_run("e", "test", &json!([]), &plan.tasks, plan.window_ns)
        .unwrap();
    let task = plan
        .tasks
        .iter()
        .find(|t| matches!(t.kind, TaskKind::Sketch(_)))
        .expect("a sketch task")
        .clone();
    let mut sink = store.sink(run, "e").unwrap();
    let estimate = |src: u8| Estimate {
        key: netspectra_model::FlowKey::project(
            &PacketRecord {
                src_ip: ip::from_v4([10, 0, 0, src]),
                ..Default::default()
            },
            &task.key,
        ),
        estimate: 100,
        error_bound: 1,
    };
    for (start, partial) in [(0u64, false), (60_000_000_000, true)] {
        let period = SketchPeriod {
            start_ns: start,
            end_ns: start + 60_000_000_000,
            heavy_packets: vec![estimate(1)],
            spreaders: vec![estimate(1)],
            partial,
            ..Default::default()
        };
        sink.sketch_period(&task, &period).unwrap();
    }
    drop(sink);
    let reader = Reader::open(&netspectra_store::StoreUrl::Sqlite(path)).unwrap();
    let filter = Filter::default();
    let scope = |from_ns, to_ns| Scope {
        task: &task.name,
        key: &task.key,
        range: TimeRange { from_ns, to_ns },
        filter: &filter,
        run: netspectra_store::read::RunSelect::All,
    };
    assert!(!reader
        .sketch_partial(&scope(0, 60_000_000_000))
        .await
        .unwrap());
    assert!(reader
        .sketch_partial(&scope(0, u64::MAX >> 1))
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_scan_answers_like_a_brute_force_sum() {
    // Enough rows over several windows that the grouping runs on two
    // threads (read/blocks.rs, PARALLEL_ROWS), with keys repeating across
    // windows and IPv6 among them.
    use netspectra_store::read::{Filter, Measure, Reader, RunSelect, Scope, TimeRange};
    use std::collections::HashMap;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.db");
    let mut store = SqliteStore::open(&path).unwrap();
    let task = exact_task(
        "flows",
        vec![Dimension::SrcIp, Dimension::DstIp, Dimension::DstPort],
    );
    let run = store
        .begin_run("e", "test", &json!([]), std::slice::from_ref(&task), 1_000)
        .unwrap();
    let mut sink = store.sink(run, "e").unwrap();
    let mut truth: HashMap<FlowKey, (u64, u64, u64, u64, u64)> = HashMap::new();
    let mut x: u64 = 7;
    for w in 0..4u64 {
        let mut rows: HashMap<FlowKey, FlowCounters> = HashMap::new();
        for _ in 0..90_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = (x >> 33) % 150_000;
            let key = FlowKey {
                src_ip: if n.is_multiple_of(7) {
                    [
                        0x20,
                        1,
                        0xd,
                        0xb8,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        (n >> 8) as u8,
                        n as u8,
                    ]
                } else {
                    ip::from_v4([10, (n >> 16) as u8, (n >> 8) as u8, n as u8])
                },
                dst_ip: ip::from_v4([192, 168, 0, (n % 200) as u8]),
                dst_port: (n % 1000) as u16,
                ..FlowKey::default()
            };
            let ts = w * 1_000 + (x >> 60);
            rows.entry(key)
                .and_modify(|c| c.add(ts, 100 + (n % 1400) as u32))
                .or_insert(FlowCounters::one(ts, 100 + (n % 1400) as u32));
        }
        for (k, c) in &rows {
            let t = truth.entry(*k).or_insert((0, 0, u64::MAX, 0, 0));
            t.0 += c.packets;
            t.1 += c.bytes;
            t.2 = t.2.min(c.first_seen);
            t.3 = t.3.max(c.last_seen);
            t.4 += 1;
        }
        let rows = vec![rows.into_iter().collect::<Vec<_>>()];
        sink.window(
            std::slice::from_ref(&task),
            &WindowResult::new(w * 1_000, (w + 1) * 1_000, &rows),
        )
        .unwrap();
    }
    drop(sink);
    let stored: i64 = store
        .connection()
        .query_row("SELECT sum(row_count) FROM exact_rows", [], |r| r.get(0))
        .unwrap();
    assert!(stored > 200_000, "{stored} rows: the parallel path");
    let reader = Reader::open(&netspectra_store::StoreUrl::Sqlite(path))
        .unwrap()
        .with_cache(0);
    let filter = Filter::default();
    let scope = Scope {
        task: "flows",
        key: &task.key,
        range: TimeRange::ALL,
        filter: &filter,
        run: RunSelect::All,
    };
    let mut expect: Vec<_> = truth.iter().collect();
    expect.sort_by(|a, b| {
        (b.1 .1, b.1 .0).cmp(&(a.1 .1, a.1 .0)).then_with(|| {
            (a.0.src_ip, a.0.dst_ip, a.0.dst_port).cmp(&(b.0.src_ip, b.0.dst_ip, b.0.dst_port))
        })
    });
    let top = reader.exact_top(&scope, Measure::Bytes, 50).await.unwrap();
    assert_eq!(top.len(), 50);
    for (got, (k, t)) in top.iter().zip(&expect) {
        assert_eq!(got.key, **k);
        assert_eq!(sums(got), **t);
    }
    let totals = reader.exact_totals(&scope).await.unwrap();
    assert_eq!(totals.keys, truth.len() as u64);
    assert_eq!(totals.packets, truth.values().map(|t| t.0).sum::<u64>());
}

/// A key's answer as packets, bytes, first seen, last seen, windows.
fn sums(t: &netspectra_store::read::KeyTotals) -> (u64, u64, u64, u64, u64) {
    (t.packets, t.bytes, t.first_seen, t.last_seen, t.windows)
}

/// Per key: packets, bytes, first seen, last seen, windows (starts), rows.
type Truth = std::collections::HashMap<
    netspectra_model::FlowKey,
    (u64, u64, u64, u64, std::collections::BTreeSet<u64>, u64),
>;

/// A store of one run where two engines wrote overlapping windows of a
/// task keyed without a destination address (so every key has a zero
/// address beside IPv4 and IPv6 ones), with many keys tied on packets
/// and bytes; returns it with every stored row.
fn two_engine_store(
    path: &std::path::Path,
    keys: u64,
) -> (
    TaskSpec,
    Vec<(
        u64,
        netspectra_model::FlowKey,
        netspectra_model::window::FlowCounters,
    )>,
) {
    let mut store = SqliteStore::open(path).unwrap();
    let task = exact_task(
        "flows",
        vec![
            Dimension::SrcIp,
            Dimension::DstPort,
            Dimension::Protocol,
            Dimension::Vlan,
        ],
    );
    let run = store
        .begin_run("e1", "test", &json!([]), std::slice::from_ref(&task), 1_000)
        .unwrap();
    let mut stored = Vec::new();
    let mut x: u64 = 11;
    // e1 writes windows 0..4, e2 windows 1 and 3 (4 and 5 start later and
    // hold keys no other window has).
    for (engine, windows) in [("e1", vec![0u64, 1, 2, 3]), ("e2", vec![1, 3, 5])] {
        let mut sink = store.sink(run, engine).unwrap();
        for w in windows {
            let mut rows: std::collections::HashMap<FlowKey, FlowCounters> = Default::default();
            for _ in 0..keys {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = (x >> 33) % (keys * 3 / 2) + if w == 5 { keys * 2 } else { 0 };
                let key = FlowKey {
                    src_ip: if n.is_multiple_of(5) {
                        let mut a = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                        a[12..].copy_from_slice(&(n as u32).to_be_bytes());
                        a
                    } else {
                        ip::from_v4([
                            10 + (n % 2) as u8 * 100,
                            (n >> 16) as u8,
                            (n >> 8) as u8,
                            n as u8,
                        ])
                    },
                    dst_port: (n % 7) as u16 * 40,
                    protocol: [6, 17][(n % 2) as usize],
                    vlan: (n % 3) as u16,
                    ..FlowKey::default()
                };
                // Few distinct sizes: many ties on packets and bytes.
                let ts = w * 1_000 + (x >> 61);
                let c = FlowCounters::one(ts, 100 * (1 + (n % 4) as u32));
                rows.entry(key).and_modify(|o| o.merge(&c)).or_insert(c);
            }
            for (k, c) in &rows {
                stored.push((w * 1_000, *k, *c));
            }
            let rows = vec![rows.into_iter().collect::<Vec<_>>()];
            sink.window(
                std::slice::from_ref(&task),
                &WindowResult::new(w * 1_000, (w + 1) * 1_000, &rows),
            )
            .unwrap();
        }
    }
    (task, stored)
}

#[tokio::test(flavor = "multi_thread")]
async fn grouped_answers_equal_a_per_key_computation_in_every_scope() {
    // Small enough for one table, and large enough (above PARALLEL_ROWS in
    // read/blocks.rs) for the two grouping threads; scopes of one window
    // (one source: no table), several, part of the history, none; with and
    // without key filters; ties broken in key order.
    use netspectra_store::read::{Filter, Measure, Reader, RunSelect, Scope, TimeRange};
    for keys in [3_000u64, 45_000] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let (task, stored) = two_engine_store(&path, keys);
        let reader = Reader::open(&netspectra_store::StoreUrl::Sqlite(path))
            .unwrap()
            .with_cache(0);
        let filters = [
            Filter::default(),
            Filter {
                src_ip: Some("10.0.0.0/8".parse().unwrap()),
                ..Filter::default()
            },
            Filter {
                dst_port: Some(80),
                protocol: Some(6),
                ..Filter::default()
            },
        ];
        let ranges = [
            TimeRange::ALL,
            TimeRange {
                from_ns: 1_000,
                to_ns: 4_000,
            },
            TimeRange {
                from_ns: 0,
                to_ns: 1_000,
            },
            TimeRange {
                from_ns: 9_000,
                to_ns: 10_000,
            },
        ];
        for filter in &filters {
            let f = filter.for_key(&task.key);
            let keep = |k: &FlowKey| {
                f.src_ip
                    .is_none_or(|c| k.src_ip >= c.first && k.src_ip <= c.last)
                    && f.dst_port.is_none_or(|p| k.dst_port == p)
                    && f.protocol.is_none_or(|p| k.protocol == p)
            };
            for range in ranges {
                let mut truth = Truth::new();
                for (w, k, c) in &stored {
                    if *w < range.from_ns || *w >= range.to_ns || !keep(k) {
                        continue;
                    }
                    let t = truth
                        .entry(*k)
                        .or_insert((0, 0, u64::MAX, 0, Default::default(), 0));
                    t.0 += c.packets;
                    t.1 += c.bytes;
                    t.2 = t.2.min(c.first_seen);
                    t.3 = t.3.max(c.last_seen);
                    t.4.insert(*w);
                    t.5 += 1;
                }
                let scope = Scope {
                    task: "flows",
                    key: &task.key,
                    range,
                    filter,
                    run: RunSelect::All,
                };
                let what = format!("{keys} keys, {filter:?}, {range:?}");
                let key_order = |a: &FlowKey, b: &FlowKey| {
                    (
                        a.src_ip, a.dst_ip, a.src_port, a.dst_port, a.protocol, a.vlan,
                    )
                        .cmp(&(
                            b.src_ip, b.dst_ip, b.src_port, b.dst_port, b.protocol, b.vlan,
                        ))
                };
                for by in [Measure::Bytes, Measure::Packets] {
                    let mut expect: Vec<_> = truth.iter().collect();
                    expect.sort_by(|(ka, a), (kb, b)| {
                        let (a, b) = match by {
                            Measure::Bytes => ((a.1, a.0), (b.1, b.0)),
                            Measure::Packets => ((a.0, a.1), (b.0, b.1)),
                        };
                        b.cmp(&a).then_with(|| key_order(ka, kb))
                    });
                    for limit in [1, 25, 5_000] {
                        let top = reader.exact_top(&scope, by, limit).await.unwrap();
                        assert_eq!(top.len(), expect.len().min(limit), "{what}");
                        for (got, (k, t)) in top.iter().zip(&expect) {
                            assert_eq!(got.key, **k, "{what} {by:?} {limit}");
                            assert_eq!(sums(got), (t.0, t.1, t.2, t.3, t.4.len() as u64), "{what}");
                        }
                    }
                    // Keys in a band of the measure, largest first; n counts rows.
                    let (lo, hi) = (200, 300);
                    let measure = |t: &(u64, u64, u64, u64, _, u64)| match by {
                        Measure::Bytes => t.1,
                        Measure::Packets => t.0,
                    };
                    let mut band: Vec<_> = truth
                        .iter()
                        .filter(|(_, t)| (lo..=hi).contains(&measure(t)))
                        .collect();
                    band.sort_by(|(ka, a), (kb, b)| {
                        measure(b).cmp(&measure(a)).then_with(|| key_order(ka, kb))
                    });
                    let got = reader
                        .exact_in_range(&scope, by, Some(lo), Some(hi), 30)
                        .await
                        .unwrap();
                    assert_eq!(got.len(), band.len().min(30), "{what}");
                    for (got, (k, t)) in got.iter().zip(&band) {
                        assert_eq!(got.key, **k, "{what}");
                        assert_eq!(
                            (got.packets, got.bytes, got.windows),
                            (t.0, t.1, t.5),
                            "{what}"
                        );
                    }
                }
                let totals = reader.exact_totals(&scope).await.unwrap();
                assert_eq!(totals.keys, truth.len() as u64, "{what}");
                assert_eq!(totals.packets, truth.values().map(|t| t.0).sum::<u64>());
                assert_eq!(totals.bytes, truth.values().map(|t| t.1).sum::<u64>());
                assert_eq!(
                    totals.first_seen,
                    truth.values().map(|t| t.2).min().unwrap_or(0),
                    "{what}"
                );
                assert_eq!(
                    totals.last_seen,
                    truth.values().map(|t| t.3).max().unwrap_or(0)
                );
                if range.from_ns == 9_000 {
                    assert!(truth.is_empty());
                }
            }
        }
    }
}

#[test]
fn a_window_of_more_rows_than_two_blocks_is_stored_whole() {
    // 200 000 keys of one task in three parts (as three engine workers
    // would hold them), beside a one-row task: the parts are shared out to
    // two encoding threads (sqlite.rs, encode_window), each part in blocks
    // of at most 65 536 rows.
    use std::collections::HashMap;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.db");
    let mut store = SqliteStore::open(&path).unwrap();
    let tasks = [
        exact_task("one", vec![Dimension::Protocol]),
        exact_task("flows", vec![Dimension::SrcIp, Dimension::DstPort]),
    ];
    let run = store
        .begin_run("e1", "test", &json!([]), &tasks, 1_000)
        .unwrap();
    let flows: Vec<(FlowKey, FlowCounters)> = (0..200_000u32)
        .map(|n| {
            let key = FlowKey {
                src_ip: ip::from_v4((n / 7).to_be_bytes()),
                dst_port: (n % 7) as u16,
                ..FlowKey::default()
            };
            let mut c = FlowCounters::one(u64::from(n), n % 1500);
            c.merge(&FlowCounters::one(u64::from(n) + 999, 60));
            (key, c)
        })
        .collect();
    let one = vec![(
        FlowKey {
            protocol: 6,
            ..FlowKey::default()
        },
        FlowCounters::one(5, 100),
    )];
    let rows = Parts(vec![
        vec![one],
        vec![
            flows[..120_000].to_vec(),
            flows[120_000..170_000].to_vec(),
            flows[170_000..].to_vec(),
        ],
    ]);
    let mut sink = store.sink(run, "e1").unwrap();
    sink.window(&tasks, &WindowResult::new(0, 1_000, &rows))
        .unwrap();
    drop(sink);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let blocks: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM main.exact_rows WHERE task = 'flows'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        blocks, 4,
        "parts of 120 000, 50 000, 30 000 rows in blocks of 65 536"
    );
    netspectra_store::expand_exact_rows(&conn).unwrap();
    let mut stmt = conn
        .prepare("SELECT src_ip, dst_port, packets, bytes, first_seen, last_seen FROM temp.exact_rows WHERE task = 'flows'")
        .unwrap();
    type Sums = (i64, i64, i64, i64);
    let got: HashMap<(Vec<u8>, i64), Sums> = stmt
        .query_map([], |r| {
            Ok((
                (r.get(0)?, r.get(1)?),
                (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got.len(), flows.len());
    for (k, c) in &flows {
        let want = (
            c.packets as i64,
            c.bytes as i64,
            c.first_seen as i64,
            c.last_seen as i64,
        );
        assert_eq!(got[&(k.src_ip.to_vec(), i64::from(k.dst_port))], want);
    }
}

#[test]
fn a_new_store_takes_64_kib_pages_and_an_existing_file_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let page_size = |path: &std::path::Path| -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap()
    };
    let new = dir.path().join("new.db");
    let mut store = SqliteStore::open(&new).unwrap();
    analyze_into(&mut store, &recs(1_000));
    drop(store);
    assert_eq!(page_size(&new), 65_536);
    // A file made elsewhere with 4 KiB pages (older NetSpectra, the
    // sqlite3 shell) is opened as it is, and written and read as before.
    let old = dir.path().join("old.db");
    rusqlite::Connection::open(&old)
        .unwrap()
        .execute_batch("PRAGMA page_size = 4096; CREATE TABLE t (x); DROP TABLE t;")
        .unwrap();
    let mut store = SqliteStore::open(&old).unwrap();
    let run = analyze_into(&mut store, &recs(1_000));
    assert_eq!(store.runs().unwrap().last().unwrap().run_id, run);
    drop(store);
    assert_eq!(page_size(&old), 4_096);
}
