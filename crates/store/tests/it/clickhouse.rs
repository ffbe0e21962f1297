//! ClickHouse store against a real server (Debian's clickhouse-server,
//! started by the test harness): window rows sum to the truth, runs never
//! overwrite each other, reopening is a no-op migration, and an outage in
//! the middle of a run loses nothing and duplicates nothing.

use crate::drive::{Drive, Plan};
use netspectra_model::task::TaskSpec;
use netspectra_model::window::{SinkError, SketchPeriod, WindowResult, WindowSink};
use netspectra_model::{ip, PacketRecord};
use netspectra_store::{ClickHouseStore, ClickHouseUrl, Store, StoreError, StoreUrl};
use netspectra_testkit::clickhouse::ClickHouseServer;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn url(s: &str) -> ClickHouseUrl {
    match StoreUrl::parse(s).unwrap() {
        StoreUrl::ClickHouse(u) => u,
        other => panic!("not a ClickHouse URL: {other:?}"),
    }
}

fn open(server: &ClickHouseServer, spool: &Path) -> ClickHouseStore {
    ClickHouseStore::open(&url(&server.url()))
        .unwrap()
        .with_spool_dir(spool)
}

fn hex(ip: &[u8; 16]) -> String {
    ip.iter().map(|b| format!("{b:02X}")).collect()
}

/// Runs the default tasks over `records` into `store` through the `Store` trait.
fn analyze_into(store: &mut dyn Store, records: &[PacketRecord]) -> i64 {
    let plan = Plan::default_tasks();
    let run = store
        .begin_run("e1", "test", &json!(["mem"]), &plan.tasks, plan.window_ns)
        .unwrap();
    let mut input = Drive::start(&plan, store.sink(run, "e1").unwrap());
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

/// Truth per (window start ns, source): packets, bytes.
fn truth_by_window_and_source(records: &[PacketRecord]) -> BTreeMap<(i64, String), (u64, u64)> {
    let mut t = BTreeMap::new();
    for r in records {
        let w = (r.ts_ns / 60_000_000_000 * 60_000_000_000) as i64;
        let e = t.entry((w, hex(&r.src_ip))).or_insert((0, 0));
        e.0 += 1;
        e.1 += u64::from(r.wire_len);
    }
    t
}

/// Stored (window start ns, source) → (packets, bytes, rows) of a run's `per_src_ip`.
fn stored_by_window_and_source(
    store: &ClickHouseStore,
    run: i64,
) -> BTreeMap<(i64, String), (u64, u64, u64)> {
    let rows: Vec<(i64, String, u64, u64, u64)> = store
        .fetch_all(
            store
                .client()
                .query(
                    "SELECT window_start_ns, hex(src_ip), sum(packets), sum(bytes), count() \
                     FROM exact_rows WHERE run_id = ? AND task = 'per_src_ip' \
                     GROUP BY window_start_ns, src_ip",
                )
                .bind(run as u64),
        )
        .unwrap();
    rows.into_iter()
        .map(|(w, s, p, b, n)| ((w, s), (p, b, n)))
        .collect()
}

#[test]
fn windows_sum_to_the_truth_runs_never_overwrite_and_reopening_migrates_nothing() {
    let server = ClickHouseServer::start();
    let spool = tempfile::tempdir().unwrap();
    let records = super::recs(200);
    let total_bytes: u64 = records.iter().map(|r| u64::from(r.wire_len)).sum();

    let mut store = open(&server, spool.path());
    assert!(store.server_version().split('.').count() >= 3);
    let run1 = analyze_into(&mut store, &records);
    drop(store);
    // Through the generic entry point, as the CLI opens it.
    let mut store =
        netspectra_store::open(&StoreUrl::parse(&server.url()).unwrap(), "local").unwrap();
    let run2 = analyze_into(&mut *store, &records);
    drop(store);
    assert_ne!(run1, run2);

    let store = open(&server, spool.path());
    let tables: Vec<String> = store
        .fetch_all(
            store
                .client()
                .query("SELECT name FROM system.tables WHERE database = ? ORDER BY name")
                .bind(server.database()),
        )
        .unwrap();
    assert_eq!(
        tables,
        [
            "alert_state",
            "alerts",
            "bus_progress",
            "exact_rows",
            "runs",
            "schema_version",
            "sketch_rows",
            "tasks"
        ]
    );
    let versions: Vec<u32> = store
        .fetch_all(
            store
                .client()
                .query("SELECT version FROM schema_version ORDER BY version"),
        )
        .unwrap();
    assert_eq!(
        versions,
        (1..=netspectra_store::clickhouse::schema::SCHEMA_VERSION).collect::<Vec<_>>(),
        "three opens, each migration once"
    );

    let truth = truth_by_window_and_source(&records);
    for run in [run1, run2] {
        let (windows, packets, bytes): (u64, u64, u64) = store
            .fetch_all(
                store
                    .client()
                    .query(
                        "SELECT uniqExact(window_start), sum(packets), sum(bytes) FROM exact_rows \
                         WHERE run_id = ? AND task = 'per_src_ip'",
                    )
                    .bind(run as u64),
            )
            .unwrap()[0];
        assert_eq!(windows, 4, "200 s of packets in 60 s windows");
        assert_eq!((packets, bytes), (200, total_bytes));
        // Per source and window: one row each, equal to the truth.
        let stored = stored_by_window_and_source(&store, run);
        let stored: BTreeMap<_, _> = stored
            .into_iter()
            .map(|(k, (p, b, n))| {
                assert_eq!(n, 1, "one row per key and window: {k:?}");
                (k, (p, b))
            })
            .collect();
        assert_eq!(stored, truth);
        // Per source over the run, with the address bound from the client.
        let src0: Vec<u64> = store
            .fetch_all(
                store
                    .client()
                    .query(
                        "SELECT sum(packets) FROM exact_rows WHERE run_id = ? \
                         AND task = 'per_src_ip' AND src_ip = unhex(?)",
                    )
                    .bind(run as u64)
                    .bind(hex(&ip::from_v4([10, 0, 0, 0]))),
            )
            .unwrap();
        assert_eq!(src0, [67]);
        // Columns outside the task's key are zero.
        let outside: Vec<u64> = store
            .fetch_all(
                store
                    .client()
                    .query(
                        "SELECT count() FROM exact_rows WHERE run_id = ? AND task = 'per_src_ip' \
                         AND (hex(dst_ip) != ? OR src_port != 0 OR dst_port != 0 OR protocol != 0 OR vlan != 0)",
                    )
                    .bind(run as u64)
                    .bind("0".repeat(32)),
            )
            .unwrap();
        assert_eq!(outside, [0]);
        // The 5-tuple task sums to the same totals; engine id on every row.
        let flows: Vec<(u64, u64, u64)> = store
            .fetch_all(
                store
                    .client()
                    .query(
                        "SELECT sum(packets), sum(bytes), countIf(engine_id != 'e1') FROM exact_rows \
                         WHERE run_id = ? AND task = 'per_flow'",
                    )
                    .bind(run as u64),
            )
            .unwrap();
        assert_eq!(flows, [(200, total_bytes, 0)]);
    }

    let runs = store.runs().unwrap();
    assert_eq!(
        runs.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        [run1, run2]
    );
    assert!(runs.iter().all(|r| r.status == "complete"
        && r.packets == 200
        && r.bytes as u64 == total_bytes
        && r.engine_id == "e1"
        && r.finished_at_ns.is_some_and(|f| f >= r.started_at_ns)));
    let tasks: Vec<(String, String, String)> = store
        .fetch_all(
            store
                .client()
                .query("SELECT name, kind, key FROM tasks WHERE run_id = ? ORDER BY name")
                .bind(run2 as u64),
        )
        .unwrap();
    assert_eq!(
        tasks.len(),
        5,
        "3 exact + 2 sketch default tasks: {tasks:?}"
    );
    assert!(tasks.contains(&("per_src_ip".into(), "exact".into(), "[\"SrcIP\"]".into())));
    // Sketch estimates per period.
    let (estimate, bound): (u64, u64) = store
        .fetch_all(
            store
                .client()
                .query(
                    "SELECT sum(estimate), max(error_bound) FROM sketch_rows WHERE run_id = ? \
                     AND task = 'per_src_ip_hh' AND measure = 'packets' AND src_ip = unhex(?)",
                )
                .bind(run2 as u64)
                .bind(hex(&ip::from_v4([10, 0, 0, 0]))),
        )
        .unwrap()[0];
    assert!(
        (67..=67 + bound).contains(&estimate),
        "estimate {estimate} ± {bound}"
    );
    assert_eq!(store.pending_spooled_batches(), 0);
}

/// Counts the windows handed over, then passes them on.
struct Counting {
    inner: Box<dyn WindowSink>,
    windows: Arc<AtomicUsize>,
}

impl WindowSink for Counting {
    fn window(&mut self, tasks: &[TaskSpec], w: &WindowResult) -> Result<(), SinkError> {
        self.inner.window(tasks, w)?;
        self.windows.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn sketch_period(&mut self, task: &TaskSpec, p: &SketchPeriod) -> Result<(), SinkError> {
        self.inner.sketch_period(task, p)
    }
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_server_outage_mid_run_spools_rows_and_replays_them_exactly_once() {
    let mut server = ClickHouseServer::start();
    let spool = tempfile::tempdir().unwrap();
    let records = super::recs(600); // ten 60 s windows
    let mut store = open(&server, spool.path());

    let plan = Plan::default_tasks();
    let run = store
        .begin_run("e1", "test", &json!(["mem"]), &plan.tasks, plan.window_ns)
        .unwrap();
    let windows = Arc::new(AtomicUsize::new(0));
    let sink = Counting {
        inner: Box::new(store.sink(run, "e1").unwrap()),
        windows: windows.clone(),
    };
    let mut input = Drive::start(&plan, Box::new(sink));

    // Windows 0 and 1 reach the server.
    for r in &records[..130] {
        input.push(r);
    }
    wait_until("windows 0-1", Duration::from_secs(10), || {
        windows.load(Ordering::SeqCst) >= 2
    });
    assert_eq!(store.flush().unwrap().spooled_batches, 0);
    assert_eq!(stored_by_window_and_source(&store, run).len(), 2 * 3);

    // The server goes away; windows 2-5 go to the spool, the run goes on.
    server.stop();
    for r in &records[130..400] {
        input.push(r);
    }
    wait_until("windows 2-5", Duration::from_secs(10), || {
        windows.load(Ordering::SeqCst) >= 6
    });
    wait_until("spooled batches", Duration::from_secs(15), || {
        store.pending_spooled_batches() > 0
    });
    let files = std::fs::read_dir(spool.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".json")
        })
        .count();
    assert!(files > 0, "spool files on disk");

    // The run ends while the server is still down: everything waits on disk.
    for r in &records[400..] {
        input.push(r);
    }
    let out = input.finish().unwrap();
    assert_eq!(out.windows, 10);
    let report = store
        .finish_run(run, "complete", &json!(["mem"]), out.packets, 0, &json!({}))
        .unwrap();
    assert!(
        report.spooled_batches > 0 && report.spooled_rows > 0,
        "{report:?}"
    );

    // The server returns: a flush replays the spool, oldest first.
    server.start_again();
    let report = store.flush().unwrap();
    assert_eq!(report.spooled_batches, 0, "{report:?}");
    assert_eq!(store.pending_spooled_batches(), 0);

    // Every (window, source) exactly once, equal to the truth.
    let stored: BTreeMap<_, _> = stored_by_window_and_source(&store, run)
        .into_iter()
        .map(|(k, (p, b, n))| {
            assert_eq!(n, 1, "one row per key and window: {k:?}");
            (k, (p, b))
        })
        .collect();
    assert_eq!(stored, truth_by_window_and_source(&records));
    let runs = store.runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].status.as_str(), runs[0].packets),
        ("complete", 600),
        "the finish row was spooled and replayed too"
    );
    // (The live writer's `.lock` stays while the store is open.)
    let left = std::fs::read_dir(spool.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(left, 0, "replayed files are removed");
}

#[test]
fn spooled_rows_left_by_a_stopped_writer_are_replayed_by_the_next_one() {
    let mut server = ClickHouseServer::start();
    let spool = tempfile::tempdir().unwrap();
    let records = super::recs(200);
    let mut store = open(&server, spool.path()).with_retry_deadline(Duration::from_millis(300));
    server.stop();
    let run = analyze_into(&mut store, &records);
    let spooled = store.pending_spooled_batches();
    assert!(spooled > 0);
    drop(store); // leaves the spool on disk
    server.start_again();
    let store = open(&server, spool.path());
    assert_eq!(
        store.pending_spooled_batches(),
        spooled,
        "seen before the writer starts"
    );
    assert_eq!(store.flush().unwrap().spooled_batches, 0);
    let stored: BTreeMap<_, _> = stored_by_window_and_source(&store, run)
        .into_iter()
        .map(|(k, (p, b, _))| (k, (p, b)))
        .collect();
    assert_eq!(stored, truth_by_window_and_source(&records));
    assert_eq!(store.runs().unwrap()[0].status, "complete");
}

#[test]
fn old_days_are_dropped_by_partition() {
    let server = ClickHouseServer::start();
    let spool = tempfile::tempdir().unwrap();
    let mut store = open(&server, spool.path());
    let run = analyze_into(&mut store, &super::recs(200));
    let count = |store: &ClickHouseStore| -> u64 {
        store
            .fetch_all::<u64>(
                store
                    .client()
                    .query("SELECT count() FROM exact_rows WHERE run_id = ?")
                    .bind(run as u64),
            )
            .unwrap()[0]
    };
    assert!(count(&store) > 0);
    // The records are from 1970-01-01: a partition far older than 30 days.
    assert_eq!(
        store.drop_older_than(30).unwrap(),
        2,
        "exact_rows and sketch_rows"
    );
    assert_eq!(count(&store), 0);
    assert_eq!(store.drop_older_than(30).unwrap(), 0);
    assert_eq!(store.set_retention_ttl(30).unwrap(), store.supports_ttl());
}

#[test]
fn bad_urls_and_unreachable_servers_are_clear_errors_naming_the_url() {
    for (bad, says) in [
        ("clickhouse://127.0.0.1/db", "host:port"),
        ("clickhouse://127.0.0.1:0/db", "port"),
        ("clickhouse://127.0.0.1:8123/", "database"),
        ("clickhouse://127.0.0.1:8123/bad-name", "database name"),
        ("clickhouse:/127.0.0.1:8123/db", "clickhouse://"),
    ] {
        match StoreUrl::parse(bad) {
            Err(e @ StoreError::BadUrl { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(bad) && msg.contains(says), "{bad}: {msg}");
            }
            other => panic!("{bad}: expected BadUrl, got {other:?}"),
        }
    }
    let u = url("clickhouse://ns:secret@[::1]:9/ns_db");
    assert_eq!(
        (
            u.user.as_deref(),
            u.password.as_deref(),
            u.host.as_str(),
            u.port
        ),
        (Some("ns"), Some("secret"), "[::1]", 9)
    );
    assert_eq!(u.to_string(), "clickhouse://ns:***@[::1]:9/ns_db");

    // Nothing listens on this port.
    let port = netspectra_testkit::free_port();
    let u = url(&format!("clickhouse://ns:secret@127.0.0.1:{port}/ns_db"));
    let started = Instant::now();
    let e = ClickHouseStore::open(&u).err().expect("no server");
    assert!(started.elapsed() < Duration::from_secs(11));
    let msg = e.to_string();
    assert!(matches!(e, StoreError::ClickHouse { .. }), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{port}/ns_db")) && !msg.contains("secret"),
        "{msg}"
    );
}

#[test]
fn opening_in_a_runtime_works_a_newer_schema_is_refused_and_databases_are_independent() {
    let server = ClickHouseServer::start();
    // Async roles open the store from inside a runtime: no nested-runtime panic.
    let store = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { ClickHouseStore::open(&url(&server.url())) })
        .unwrap();
    store
        .execute(
            store
                .client()
                .query("INSERT INTO schema_version (version, applied_at) VALUES (?, now())")
                .bind(99u32),
        )
        .unwrap();
    drop(store);
    match ClickHouseStore::open(&url(&server.url())) {
        Err(e @ StoreError::NewerSchema { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("99") && msg.contains(server.database()),
                "{msg}"
            );
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a newer schema must be refused"),
    }
    // A second database on the same server is created and migrated on its own.
    let other = ClickHouseStore::open(&url(&server.url_for("netspectra_other"))).unwrap();
    assert_eq!(other.runs().unwrap(), []);
}

/// Stores each window with a progress string naming the window's ordinal.
struct WithProgress {
    inner: Box<dyn WindowSink>,
    windows: u64,
}

impl WindowSink for WithProgress {
    fn window(&mut self, tasks: &[TaskSpec], w: &WindowResult) -> Result<(), SinkError> {
        self.windows += 1;
        let progress = format!("{{\"through\":{}}}", self.windows);
        self.inner.window_with_progress(tasks, w, "js", &progress)
    }
}

#[test]
fn bus_progress_is_stored_after_the_rows_and_the_newest_is_loaded() {
    let server = ClickHouseServer::start();
    let spool = tempfile::tempdir().unwrap();
    let mut store = open(&server, spool.path());
    assert_eq!(store.load_progress("e1", "js").unwrap(), None);
    let plan = Plan::default_tasks();
    let run = |store: &mut ClickHouseStore, n: u64| {
        let run = store
            .begin_run("e1", "test", &json!(["mem"]), &plan.tasks, plan.window_ns)
            .unwrap();
        let sink = WithProgress {
            inner: Store::sink(&*store, run, "e1").unwrap(),
            windows: 0,
        };
        let mut input = Drive::start(&plan, Box::new(sink));
        for r in super::recs(n) {
            input.push(&r);
        }
        input.finish().unwrap();
        store
            .finish_run(run, "complete", &json!(["mem"]), n, 0, &json!({}))
            .unwrap();
    };
    // 200 s at one packet a second: 4 windows of 60 s.
    run(&mut store, 200);
    assert_eq!(
        store.load_progress("e1", "js").unwrap().as_deref(),
        Some("{\"through\":4}")
    );
    // A later run replaces it (newest version wins, merged or not).
    run(&mut store, 70);
    drop(store);
    let store = netspectra_store::open(&StoreUrl::parse(&server.url()).unwrap(), "local").unwrap();
    assert_eq!(
        store.load_progress("e1", "js").unwrap().as_deref(),
        Some("{\"through\":2}")
    );
    assert_eq!(store.load_progress("e1", "other").unwrap(), None);
    assert_eq!(store.load_progress("e2", "js").unwrap(), None);
}

/// A wrong password is said to be one (not "cannot reach the server"), by
/// the writer's open and by the query reader alike, without the password.
#[test]
fn a_wrong_password_is_an_authentication_failure_naming_the_user() {
    let server = ClickHouseServer::start();
    let u = url(&format!(
        "clickhouse://default:n0tThis@127.0.0.1:{}/ns_auth",
        server.http_port()
    ));
    let e = ClickHouseStore::open(&u).err().expect("refused");
    let msg = e.to_string();
    assert!(
        msg.contains("authentication failed for user default"),
        "{msg}"
    );
    assert!(
        !msg.contains("cannot reach") && !msg.contains("n0tThis"),
        "{msg}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reader = netspectra_store::read::Reader::open(&StoreUrl::ClickHouse(u)).unwrap();
    let msg = rt.block_on(reader.ping()).unwrap_err().to_string();
    assert!(
        msg.contains("authentication failed for user default"),
        "{msg}"
    );
    assert!(!msg.contains("n0tThis"), "{msg}");
}
