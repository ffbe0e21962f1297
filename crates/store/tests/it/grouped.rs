//! Grouped commits (`Commits::Grouped`, what `analyze` writes with): a
//! rollback journal, windows committed about a second at a time and at the
//! end of the run, and files shared with WAL-mode writers and readers.

use crate::drive::{Drive, Plan};
use crate::{begin, exact_task, recs, Parts};
use netspectra_model::window::{FlowCounters, WindowResult, WindowSink};
use netspectra_model::{ip, Dimension, FlowKey};
use netspectra_store::{Commits, SqliteStore};
use rusqlite::{Connection, OpenFlags};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

fn journal_mode(path: &Path) -> String {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap()
}

/// Windows and packets of `run`'s `per_src_ip` rows, read by a connection
/// of its own, as another process would.
fn stored(path: &Path, run: i64) -> (i64, i64) {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.query_row(
        "SELECT COUNT(DISTINCT window_start), COALESCE(SUM(packets), 0) FROM exact_rows WHERE run_id = ?1 AND task = 'per_src_ip'",
        [run],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[test]
fn grouped_windows_are_committed_a_second_at_a_time_and_all_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let plan = Plan::default_tasks();
    let records = recs(200); // one packet a second: windows at 0, 60, 120 and 180 s
    let mut store = SqliteStore::open_for(&path, Commits::Grouped).unwrap();
    assert_eq!(
        journal_mode(&path),
        "delete",
        "a batch writes through a rollback journal"
    );
    let run = begin(&mut store, &plan);
    let mut input = Drive::start(&plan, Box::new(store.sink(run, "local").unwrap()));

    // Record 60 flushes the first window, which opens a group.
    let first = Instant::now();
    for r in &records[..61] {
        input.push(r);
    }
    let seen = stored(&path, run);
    if first.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            seen,
            (0, 0),
            "a group younger than a second is not committed"
        );
    }
    std::thread::sleep(Duration::from_millis(1100));
    // The second window joins the group, now older than a second: both commit.
    for r in &records[61..121] {
        input.push(r);
    }
    assert_eq!(stored(&path, run), (2, 120));

    for r in &records[121..] {
        input.push(r);
    }
    let totals = input.finish().unwrap();
    assert_eq!(totals.windows, 4);
    assert_eq!(
        stored(&path, run),
        (4, 200),
        "the end of the run commits the rest"
    );
}

#[test]
fn a_grouped_sink_dropped_without_the_final_call_keeps_its_windows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let plan = Plan::default_tasks();
    let mut store = SqliteStore::open_for(&path, Commits::Grouped).unwrap();
    let run = begin(&mut store, &plan);
    let mut input = Drive::start(&plan, Box::new(store.sink(run, "local").unwrap()));
    for r in &recs(200) {
        input.push(r);
    }
    // Three windows were handed over; the fourth is still open.
    drop(input);
    assert_eq!(stored(&path, run), (3, 180));
}

#[test]
fn a_per_window_writer_waits_out_a_group_then_takes_the_file_to_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let plan = Plan::default_tasks();
    let records = recs(200);
    let mut store = SqliteStore::open_for(&path, Commits::Grouped).unwrap();
    let run = begin(&mut store, &plan);
    let mut input = Drive::start(&plan, Box::new(store.sink(run, "local").unwrap()));
    for r in &records[..61] {
        input.push(r);
    }
    // A live engine (or an API server's writer) opens the file while the
    // group holds it: switching to WAL has to wait for the commit.
    let opener = {
        let path = path.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let live = SqliteStore::open(&path).expect("opens once the group is committed");
            (started.elapsed(), live)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    for r in &records[61..] {
        input.push(r);
    }
    input.finish().unwrap();
    let (waited, live) = opener.join().unwrap();
    assert!(
        waited >= Duration::from_millis(100),
        "opened after {waited:?}, inside the group"
    );
    assert_eq!(journal_mode(&path), "wal");
    assert_eq!(stored(&path, run), (4, 200));

    // The batch's store goes on in WAL mode.
    drop(live);
    store
        .finish_run(run, "complete", &json!(["mem"]), 200, 0, &json!({}))
        .unwrap();
    let status: String = store
        .connection()
        .query_row("SELECT status FROM runs WHERE run_id = ?1", [run], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(status, "complete");
}

#[test]
fn a_batch_beside_a_wal_reader_stays_in_wal_and_stores_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let plan = Plan::default_tasks();
    // An API server has the file open in WAL mode: SQLite cannot leave it.
    let server = SqliteStore::open(&path).unwrap();
    let mut store = SqliteStore::open_for(&path, Commits::Grouped).unwrap();
    assert_eq!(journal_mode(&path), "wal");
    let run = begin(&mut store, &plan);
    let mut input = Drive::start(&plan, Box::new(store.sink(run, "local").unwrap()));
    for r in &recs(200) {
        input.push(r);
    }
    input.finish().unwrap();
    assert_eq!(stored(&path, run), (4, 200));
    assert_eq!(journal_mode(&path), "wal", "still held in WAL mode");
    drop(server);
}

#[test]
fn readers_are_not_locked_out_while_a_group_of_megabytes_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let mut store = SqliteStore::open_for(&path, Commits::Grouped).unwrap();
    let tasks = [exact_task(
        "pairs",
        vec![Dimension::SrcIp, Dimension::DstIp],
    )];
    let run = store
        .begin_run("e1", "test", &json!([]), &tasks, 1_000)
        .unwrap();
    // 200 000 scattered keys: megabytes of blocks, more than SQLite's
    // default page cache (2 MB), which it would spill into the file under
    // an exclusive lock held until the group commits.
    let rows: Vec<(FlowKey, FlowCounters)> = (0..200_000u32)
        .map(|n| {
            let key = FlowKey {
                src_ip: ip::from_v4(n.wrapping_mul(0x9E37_79B1).to_be_bytes()),
                dst_ip: ip::from_v4((n ^ 0x5BD1_E995).rotate_left(7).to_be_bytes()),
                ..FlowKey::default()
            };
            (key, FlowCounters::one(u64::from(n) << 20, n % 1500))
        })
        .collect();
    let window = Parts(vec![vec![rows]]);
    let mut sink = store.sink(run, "e1").unwrap();
    let began = Instant::now();
    sink.window(&tasks, &WindowResult::new(0, 1_000, &window))
        .unwrap();
    let journal = dir.path().join("ns.db-journal");
    // Another process, reading without waiting at all (busy timeout 0).
    let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let stored_rows = || {
        reader.query_row(
            "SELECT COALESCE(SUM(row_count), 0) FROM exact_rows WHERE run_id = ?1",
            [run],
            |r| r.get::<_, i64>(0),
        )
    };
    if began.elapsed() < Duration::from_millis(900) {
        assert!(journal.exists(), "the group is still open");
        let seen = stored_rows().expect("a reader is not locked out by the open group");
        assert_eq!(
            seen, 0,
            "the group's rows are not visible before its commit"
        );
    }
    drop(sink);
    assert!(!journal.exists(), "dropping the sink commits the group");
    assert_eq!(stored_rows().unwrap(), 200_000);
}
