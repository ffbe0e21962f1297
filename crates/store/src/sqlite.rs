//! The embedded store: one SQLite file, versioned schema; WAL mode for
//! writers that commit window by window, a rollback journal for a batch
//! that groups its windows ([`Commits`]).

use crate::schema::{MIGRATIONS, SCHEMA_VERSION};
use crate::{Commits, StoreError};
use netspectra_model::alert::AlertRecord;
use netspectra_model::task::{TaskKind, TaskSpec};
use netspectra_model::window::{
    Estimate, FlowCounters, SinkError, SketchPeriod, WindowResult, WindowSink,
};
use netspectra_model::Dimension;
use rusqlite::{params, Connection};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a grouped sink ([`Commits::Grouped`]) keeps adding windows to
/// one transaction before it commits them.
const GROUP_FOR: Duration = Duration::from_secs(1);

/// Bytes of a grouped transaction's pages kept in memory before SQLite
/// spills them into the file (see `open_conn`).
const SPILL_AFTER: i64 = 256 << 20;

/// A run as recorded in the `runs` table.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// Store-assigned id; rows of the run carry it.
    pub run_id: i64,
    /// Which engine wrote it (`local` for analyze).
    pub engine_id: String,
    /// The command line or role that produced it.
    pub command: String,
    /// Start, ns since epoch (wall clock).
    pub started_at_ns: i64,
    /// End, ns since epoch, once finished.
    pub finished_at_ns: Option<i64>,
    /// `running`, `complete`, `damaged` or `failed`.
    pub status: String,
    /// Inputs and their outcome (JSON array).
    pub inputs: Value,
    /// Packets read.
    pub packets: i64,
    /// Bytes read.
    pub bytes: i64,
    /// Decode counters once finished (JSON object; null while running).
    pub decoded: Value,
}

/// An open SQLite store.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    commits: Commits,
}

fn open_conn(path: &Path, commits: Commits) -> Result<Connection, StoreError> {
    let err = |error| StoreError::Sqlite {
        path: path.display().to_string(),
        error,
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(err)?;
    // 64 KiB pages (taken by a new, empty file only; an existing file
    // keeps its own): a window's blocks are megabytes of blob, which then
    // fill 16 times fewer overflow pages and WAL frames to write and
    // checkpoint (in paired runs of `analyze` on a 5 M-packet capture,
    // 4 KiB against 16 and 64 KiB pages, 64 KiB took about 5 % less wall
    // time). A live engine's small commits write 64 KiB frames instead of
    // 4 KiB ones: a few hundred KiB per window at most. Set before the
    // journal mode, which fixes the size.
    conn.execute_batch("PRAGMA page_size = 65536; PRAGMA foreign_keys = ON;")
        .map_err(err)?;
    // WAL writes every page twice (into the log, then into the file at the
    // checkpoint when the last connection closes) and syncs both: for a
    // batch, most of what storing costs after the last packet. A rollback
    // journal writes new pages once. Another process that has the file
    // open in WAL mode keeps it there (SQLite cannot leave WAL mode then),
    // and the batch goes on in WAL.
    let wanted = match commits {
        Commits::PerWindow => "wal",
        Commits::Grouped => "delete",
    };
    let wal = set_journal_mode(&conn, wanted).map_err(err)? == "wal";
    // In WAL mode NORMAL loses no committed transaction on a crash of the
    // process, only on a power loss before the next checkpoint; with a
    // rollback journal only FULL guarantees a file that survives one.
    let synchronous = if wal { "NORMAL" } else { "FULL" };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(err)?;
    if !wal {
        // A rollback-journal writer that spills pages into the file
        // mid-transaction holds the exclusive lock, which keeps out every
        // reader, from then until its commit: up to a whole group
        // ([`GROUP_FOR`]). Kept in memory, a group's pages lock readers out
        // only while the commit writes them. Up to a bound: a group bigger
        // than SPILL_AFTER (one huge window) spills rather than doubling
        // the memory its encoded blocks already take.
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(err)?;
        conn.pragma_update(None, "cache_spill", SPILL_AFTER / page_size.max(512))
            .map_err(err)?;
    }
    Ok(conn)
}

/// Asks for journal mode `mode` and returns the one in effect.
///
/// Why retried: switching modes needs the file to itself for an instant
/// and fails at once (SQLite does not wait on it) while another connection
/// writes in rollback mode, as a batch does for up to [`GROUP_FOR`] at a
/// time. When the mode cannot be left (another process holds the file in
/// WAL mode), SQLite answers with the mode kept.
fn set_journal_mode(conn: &Connection, mode: &str) -> rusqlite::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", mode, |r| r.get::<_, String>(0)) {
            Ok(kept) => return Ok(kept.to_ascii_lowercase()),
            // Only leaving WAL mode can be refused by a reader; it stays.
            Err(e) if is_busy(&e) && mode != "wal" => return Ok("wal".into()),
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

impl SqliteStore {
    /// Opens (creating if needed) the store file and brings its schema up
    /// to date, for a writer that commits each window as it comes.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_for(path, Commits::PerWindow)
    }

    /// [`Self::open`] for a writer that commits as `commits` says.
    pub fn open_for(path: &Path, commits: Commits) -> Result<SqliteStore, StoreError> {
        let mut conn = open_conn(path, commits)?;
        let store_err = |error| StoreError::Sqlite {
            path: path.display().to_string(),
            error,
        };
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(store_err)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(store_err)?;
        // `user_version` is whatever the file says: a crafted or foreign
        // file can hold any 32-bit value, so it is checked, never used as
        // an index before that.
        let from = crate::schema::checked_version(version).map_err(|e| e.at(path))?;
        for migration in &MIGRATIONS[from..] {
            tx.execute_batch(migration).map_err(store_err)?;
        }
        if from < crate::schema::BLOCKS_VERSION {
            convert_v6_rows(&tx).map_err(store_err)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
            commits,
        })
    }

    fn err(&self, error: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            error,
        }
    }

    /// The underlying connection, for queries.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Records a new run and its tasks; returns the run id its rows will carry.
    pub fn begin_run(
        &mut self,
        engine_id: &str,
        command: &str,
        inputs: &Value,
        tasks: &[TaskSpec],
        window_ns: u64,
    ) -> Result<i64, StoreError> {
        let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite {
            path: self.path.display().to_string(),
            error: e,
        })?;
        let run_id = (|| {
            tx.execute(
                "INSERT INTO runs (engine_id, command, started_at_ns, status, inputs) VALUES (?1, ?2, ?3, 'running', ?4)",
                params![engine_id, command, now_ns(), inputs.to_string()],
            )?;
            let run_id = tx.last_insert_rowid();
            for t in tasks {
                tx.execute(
                    "INSERT INTO tasks (run_id, name, kind, key, window_ns, algorithm) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![run_id, t.name, t.kind.name(), crate::schema::key_text(&t.key), window_ns as i64, crate::schema::algorithm_text(t)],
                )?;
            }
            tx.commit()?;
            Ok(run_id)
        })()
        .map_err(|e| self.err(e))?;
        Ok(run_id)
    }

    /// Marks a run finished with its outcome and totals.
    pub fn finish_run(
        &mut self,
        run_id: i64,
        status: &str,
        inputs: &Value,
        packets: u64,
        bytes: u64,
        decoded: &Value,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at_ns = ?2, status = ?3, inputs = ?4, packets = ?5, bytes = ?6, decoded = ?7 WHERE run_id = ?1",
                params![run_id, now_ns(), status, inputs.to_string(), packets as i64, bytes as i64, decoded.to_string()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A sink writing this run's windows through its own connection, so it
    /// can live on the engine's collector thread.
    pub fn sink(&self, run_id: i64, engine_id: &str) -> Result<SqliteSink, StoreError> {
        Ok(SqliteSink {
            conn: open_conn(&self.path, self.commits)?,
            path: self.path.clone(),
            run_id,
            engine_id: engine_id.to_string(),
            batch: match self.commits {
                Commits::PerWindow => Batch::Off,
                Commits::Grouped => Batch::Idle,
            },
        })
    }

    /// The progress `engine_id`'s sink last stored for `consumer` with a
    /// window (`WindowSink::window_with_progress`), if any.
    pub fn load_progress(
        &self,
        engine_id: &str,
        consumer: &str,
    ) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT state FROM bus_progress WHERE engine_id = ?1 AND consumer = ?2",
                params![engine_id, consumer],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Stores alert transitions (a transition stored before is kept as
    /// is) and, when given, the alerter's state: one transaction.
    pub fn record_alerts(
        &mut self,
        alerts: &[AlertRecord],
        state: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        let out = self.conn.transaction().and_then(|tx| {
            insert_alerts(&tx, alerts)?;
            if let Some((alerter, doc)) = state {
                tx.execute(
                    "INSERT OR REPLACE INTO alert_state (alerter, state, updated_at_ns) VALUES (?1, ?2, ?3)",
                    params![alerter, doc, now_ns()],
                )?;
            }
            tx.commit()
        });
        out.map_err(|e| self.err(e))
    }

    /// The state `alerter` saved last.
    pub fn alert_state(&self, alerter: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT state FROM alert_state WHERE alerter = ?1",
                params![alerter],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The progress every engine last stored for `consumer`.
    pub fn all_progress(&self, consumer: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT engine_id, state FROM bus_progress WHERE consumer = ?1")
            .map_err(|e| self.err(e))?;
        let states = stmt
            .query_map(params![consumer], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        states
    }

    /// Deletes rows whose window or period ended more than `keep` ago, in
    /// batches of 10 000 rows per transaction so that writers and readers
    /// are never held up for long; returns the rows deleted.
    pub fn apply_retention(&self, keep: std::time::Duration) -> Result<u64, StoreError> {
        let cutoff = now_ns().saturating_sub(keep.as_nanos().min(i64::MAX as u128) as i64);
        let mut deleted = 0u64;
        for (table, end) in [("exact_rows", "window_end"), ("sketch_rows", "period_end")] {
            let sql = format!(
                "DELETE FROM {table} WHERE rowid IN \
                 (SELECT rowid FROM {table} WHERE {end} <= ?1 LIMIT 10000)"
            );
            loop {
                let n = self
                    .conn
                    .execute(&sql, params![cutoff])
                    .map_err(|e| self.err(e))?;
                deleted += n as u64;
                if n == 0 {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        read_runs(&self.conn).map_err(|e| self.err(e))
    }

    /// Marks a run replaced and deletes its rows and task definitions, in
    /// one transaction ([`crate::Store::replace_run`]).
    pub fn replace_run(&mut self, run_id: i64) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite {
            path: self.path.display().to_string(),
            error: e,
        })?;
        let done = (|| {
            tx.execute(
                "UPDATE runs SET status = ?2 WHERE run_id = ?1",
                params![run_id, crate::schema::REPLACED],
            )?;
            for table in ["exact_rows", "sketch_rows", "tasks"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE run_id = ?1"),
                    params![run_id],
                )?;
            }
            tx.commit()
        })();
        done.map_err(|e| self.err(e))
    }
}

/// Every run in the `runs` table, oldest first (shared with the reader).
pub(crate) fn read_runs(conn: &Connection) -> rusqlite::Result<Vec<RunRecord>> {
    read_recent_runs(conn, i64::MAX)
}

/// The `limit` most recent runs, oldest first (the API's `runs`: bounded
/// however many runs the store holds).
pub(crate) fn read_recent_runs(conn: &Connection, limit: i64) -> rusqlite::Result<Vec<RunRecord>> {
    let mut stmt = conn.prepare_cached("SELECT run_id, engine_id, command, started_at_ns, finished_at_ns, status, inputs, packets, bytes, decoded FROM (SELECT * FROM runs ORDER BY run_id DESC LIMIT ?1) ORDER BY run_id")?;
    let rows = stmt.query_map([limit], |r| {
        let inputs: String = r.get(6)?;
        let decoded: Option<String> = r.get(9)?;
        Ok(RunRecord {
            run_id: r.get(0)?,
            engine_id: r.get(1)?,
            command: r.get(2)?,
            started_at_ns: r.get(3)?,
            finished_at_ns: r.get(4)?,
            status: r.get(5)?,
            inputs: serde_json::from_str(&inputs).unwrap_or(Value::Null),
            packets: r.get(7)?,
            bytes: r.get(8)?,
            decoded: decoded
                .and_then(|d| serde_json::from_str(&d).ok())
                .unwrap_or(Value::Null),
        })
    })?;
    rows.collect()
}

impl crate::Store for SqliteStore {
    fn begin_run(
        &mut self,
        engine_id: &str,
        command: &str,
        inputs: &Value,
        tasks: &[TaskSpec],
        window_ns: u64,
    ) -> Result<i64, StoreError> {
        SqliteStore::begin_run(self, engine_id, command, inputs, tasks, window_ns)
    }

    fn finish_run(
        &mut self,
        run_id: i64,
        status: &str,
        inputs: &Value,
        packets: u64,
        bytes: u64,
        decoded: &Value,
    ) -> Result<(), StoreError> {
        SqliteStore::finish_run(self, run_id, status, inputs, packets, bytes, decoded)
    }

    fn sink(&self, run_id: i64, engine_id: &str) -> Result<Box<dyn WindowSink>, StoreError> {
        Ok(Box::new(SqliteStore::sink(self, run_id, engine_id)?))
    }

    fn load_progress(&self, engine_id: &str, consumer: &str) -> Result<Option<String>, StoreError> {
        SqliteStore::load_progress(self, engine_id, consumer)
    }

    fn all_progress(&self, consumer: &str) -> Result<Vec<(String, String)>, StoreError> {
        SqliteStore::all_progress(self, consumer)
    }

    fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        SqliteStore::runs(self)
    }

    fn replace_run(&mut self, run_id: i64) -> Result<(), StoreError> {
        SqliteStore::replace_run(self, run_id)
    }

    fn apply_retention(&self, keep: std::time::Duration) -> Result<u64, StoreError> {
        SqliteStore::apply_retention(self, keep)
    }

    fn record_alerts(
        &mut self,
        alerts: &[AlertRecord],
        state: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        SqliteStore::record_alerts(self, alerts, state)
    }

    fn alert_state(&self, alerter: &str) -> Result<Option<String>, StoreError> {
        SqliteStore::alert_state(self, alerter)
    }
}

/// Inserts transitions; one already stored (same rule, key, state and
/// start) is left as it is, so evaluating a window twice adds nothing.
fn insert_alerts(conn: &Connection, alerts: &[AlertRecord]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO alerts (rule, task, key, metric, value, operator, threshold, severity, state, window_start, starts_at, ends_at, analysis, recorded_at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    let now = now_ns();
    for a in alerts {
        stmt.execute(params![
            a.rule,
            a.task,
            a.key,
            a.metric,
            a.value,
            a.operator,
            a.threshold,
            a.severity,
            a.state,
            a.window_start_ns as i64,
            a.starts_at_ns as i64,
            a.ends_at_ns.map(|t| t as i64),
            a.analysis,
            now
        ])?;
    }
    Ok(())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Writes merged windows of one run into `exact_rows`: one transaction per
/// window, or per [`GROUP_FOR`] of windows ([`Commits::Grouped`]).
pub struct SqliteSink {
    conn: Connection,
    path: PathBuf,
    run_id: i64,
    engine_id: String,
    batch: Batch,
}

/// Where a sink stands with grouped commits ([`Commits::Grouped`]).
enum Batch {
    /// Each write commits alone.
    Off,
    /// Grouped, no transaction open.
    Idle,
    /// Grouped, the group's transaction open since then.
    Open(Instant),
}

impl Batch {
    /// Runs `write` in a savepoint of its own: alone it commits at once;
    /// in a group it joins the group's transaction (begun here unless
    /// one is open), which commits once [`GROUP_FOR`] old.
    fn write(
        &mut self,
        conn: &mut Connection,
        write: impl FnOnce(&rusqlite::Savepoint<'_>) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<()> {
        if let Batch::Idle = self {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            *self = Batch::Open(Instant::now());
        }
        let tx = conn.savepoint()?;
        write(&tx)?;
        tx.commit()?;
        self.commit_after(conn, GROUP_FOR)
    }

    /// Commits the open group once it is `age` old.
    fn commit_after(&mut self, conn: &Connection, age: Duration) -> rusqlite::Result<()> {
        if let Batch::Open(since) = self {
            if since.elapsed() >= age {
                *self = Batch::Idle;
                conn.execute_batch("COMMIT")?;
            }
        }
        Ok(())
    }
}

/// Which key columns a task fills.
#[derive(Default)]
struct Columns {
    src_ip: bool,
    dst_ip: bool,
    src_port: bool,
    dst_port: bool,
    protocol: bool,
    vlan: bool,
}

impl Columns {
    fn of(key: &[Dimension]) -> Columns {
        let c = crate::block::Columns(crate::block::columns_of(key));
        Columns {
            src_ip: c.src_ip(),
            dst_ip: c.dst_ip(),
            src_port: c.src_port(),
            dst_port: c.dst_port(),
            protocol: c.protocol(),
            vlan: c.vlan(),
        }
    }
}

const INSERT_BLOCK: &str = "INSERT INTO exact_rows (run_id, engine_id, task, window_start, window_end, row_count, packets, bytes, first_seen, last_seen, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// Inserts one encoded block.
#[allow(clippy::too_many_arguments)]
fn insert_block(
    stmt: &mut rusqlite::CachedStatement<'_>,
    run_id: i64,
    engine_id: &str,
    task: &str,
    window: (u64, u64),
    t: &crate::block::BlockTotals,
    data: &[u8],
) -> rusqlite::Result<()> {
    stmt.execute(params![
        run_id,
        engine_id,
        task,
        window.0 as i64,
        window.1 as i64,
        t.rows as i64,
        t.packets as i64,
        t.bytes as i64,
        t.first_seen as i64,
        t.last_seen as i64,
        data
    ])?;
    Ok(())
}

impl SqliteSink {
    /// Writes the window's rows and, when given, `(consumer, state)` into
    /// `bus_progress`: one transaction, so both are stored or neither.
    fn write(
        &mut self,
        tasks: &[TaskSpec],
        w: &WindowResult,
        progress: Option<(&str, &str)>,
    ) -> rusqlite::Result<()> {
        // Encoding is done before the transaction, so the write lock is
        // held only for the inserts of finished blocks.
        let blocks = encode_window(tasks, w);
        let (run_id, engine_id) = (self.run_id, &self.engine_id);
        self.batch.write(&mut self.conn, |tx| {
            let mut stmt = tx.prepare_cached(INSERT_BLOCK)?;
            for (task, totals, data) in &blocks {
                insert_block(
                    &mut stmt,
                    run_id,
                    engine_id,
                    task,
                    (w.start_ns, w.end_ns),
                    totals,
                    data,
                )?;
            }
            if let Some((consumer, state)) = progress {
                tx.prepare_cached(
                    "INSERT INTO bus_progress (engine_id, consumer, state, updated_at_ns) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (engine_id, consumer) DO UPDATE SET state = excluded.state, updated_at_ns = excluded.updated_at_ns",
                )?
                .execute(params![engine_id, consumer, state, now_ns()])?;
            }
            Ok(())
        })
    }
}

impl Drop for SqliteSink {
    /// A grouped sink commits what it holds: the engine asks for it at the
    /// end of a run ([`WindowSink::when_durable`]), but a run that stops
    /// early keeps the windows stored so far, as per-window commits would.
    fn drop(&mut self) {
        if let Err(error) = self.batch.commit_after(&self.conn, Duration::ZERO) {
            tracing::error!(
                message = "windows not stored: the last commit failed",
                path = %self.path.display(),
                %error
            );
        }
    }
}

/// An encoded block: its task, totals and bytes.
type Block<'t> = (&'t str, crate::block::BlockTotals, Vec<u8>);

/// Encodes a window's exact rows into blocks of at most
/// [`MAX_ROWS`](crate::block::MAX_ROWS) rows each.
///
/// A window of more than two blocks' rows is encoded by two threads, each
/// reading whole parts of the tasks' rows (the engine's workers' tables)
/// straight from their owner, the parts shared out by row count: a big
/// window is usually written after the last packet of a file, while the
/// engine's threads are idle. Without the second thread (the system
/// refused one), one thread encodes all. A smaller window is one thread,
/// its parts joined, so it takes as few blocks as it can.
fn encode_window<'t>(tasks: &'t [TaskSpec], w: &WindowResult<'_>) -> Vec<Block<'t>> {
    use crate::block::MAX_ROWS;
    let rows: usize = (0..tasks.len()).map(|t| w.row_count(t)).sum();
    if rows <= 2 * MAX_ROWS {
        let mut blocks = Vec::new();
        let mut buf = Vec::new();
        for (t, task) in tasks.iter().enumerate() {
            encode_rows(task, w.rows(t), &mut buf, &mut blocks);
        }
        return blocks;
    }
    // (task, part, rows), largest first, each given to the thread with
    // fewer rows so far.
    let mut parts: Vec<(usize, usize, usize)> = (0..tasks.len())
        .flat_map(|t| (0..w.parts(t)).map(move |p| (t, p, w.part_len(t, p))))
        .filter(|&(_, _, n)| n > 0)
        .collect();
    parts.sort_by_key(|&(_, _, n)| std::cmp::Reverse(n));
    let mut shares: [(usize, Vec<(usize, usize)>); 2] = Default::default();
    for (t, p, n) in parts {
        let share = shares.iter_mut().min_by_key(|s| s.0).expect("two shares");
        share.0 += n;
        share.1.push((t, p));
    }
    let encode = |share: &[(usize, usize)]| {
        let mut blocks = Vec::new();
        let mut buf = Vec::with_capacity(MAX_ROWS);
        for &(t, p) in share {
            encode_rows(&tasks[t], w.part(t, p), &mut buf, &mut blocks);
        }
        blocks
    };
    let [(_, first), (_, second)] = &shares;
    std::thread::scope(|s| {
        let helper = std::thread::Builder::new()
            .name("ns-encode".into())
            .spawn_scoped(s, || encode(second));
        let mut blocks = encode(first);
        match helper {
            // A panic in the encoder is a bug: surface it here.
            Ok(h) => blocks.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
            Err(_) => blocks.extend(encode(second)),
        }
        blocks
    })
}

/// Encodes `rows` of `task` into blocks appended to `blocks`, gathering
/// each block's rows in `buf`.
fn encode_rows<'t>(
    task: &'t TaskSpec,
    mut rows: impl Iterator<Item = (netspectra_model::FlowKey, FlowCounters)>,
    buf: &mut Vec<(netspectra_model::FlowKey, FlowCounters)>,
    blocks: &mut Vec<Block<'t>>,
) {
    let columns = crate::block::columns_of(&task.key);
    loop {
        buf.clear();
        buf.extend(rows.by_ref().take(crate::block::MAX_ROWS));
        if buf.is_empty() {
            return;
        }
        let mut data = Vec::new();
        let totals = crate::block::encode(columns, buf, &mut data);
        blocks.push((&task.name, totals, data));
    }
}

/// Converts version-6 `exact_rows` (one SQL row per key, renamed
/// `exact_rows_v6` by the version-7 migration) into blocks, then drops them.
/// A block's key columns are those its rows fill.
fn convert_v6_rows(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    use netspectra_model::FlowKey;
    type Group = (i64, String, String, i64, i64);
    fn flush(
        tx: &rusqlite::Transaction<'_>,
        group: &Group,
        columns: u8,
        rows: &[(FlowKey, FlowCounters)],
    ) -> rusqlite::Result<()> {
        let mut stmt = tx.prepare_cached(INSERT_BLOCK)?;
        let mut data = Vec::new();
        for chunk in rows.chunks(crate::block::MAX_ROWS) {
            let totals = crate::block::encode(columns, chunk, &mut data);
            insert_block(
                &mut stmt,
                group.0,
                &group.1,
                &group.2,
                (group.3 as u64, group.4 as u64),
                &totals,
                &data,
            )?;
        }
        Ok(())
    }
    let mut current: Option<Group> = None;
    let mut columns = 0u8;
    let mut rows = Vec::new();
    {
        let mut stmt = tx.prepare(
            "SELECT run_id, engine_id, task, window_start, window_end, src_ip, dst_ip, src_port, dst_port, protocol, vlan, packets, bytes, first_seen, last_seen \
             FROM exact_rows_v6 ORDER BY run_id, engine_id, task, window_start, window_end",
        )?;
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            let group: Group = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            if current.as_ref() != Some(&group) {
                if let Some(g) = current.take() {
                    flush(tx, &g, columns, &rows)?;
                }
                current = Some(group);
                columns = 0;
                rows.clear();
            }
            let ip = |i: usize| -> rusqlite::Result<Option<[u8; 16]>> {
                Ok(r.get::<_, Option<Vec<u8>>>(i)?
                    .map(|b| <[u8; 16]>::try_from(b.as_slice()).unwrap_or_default()))
            };
            let (src_ip, dst_ip) = (ip(5)?, ip(6)?);
            let src_port: Option<u16> = r.get(7)?;
            let dst_port: Option<u16> = r.get(8)?;
            let protocol: Option<u8> = r.get(9)?;
            let vlan: Option<u16> = r.get(10)?;
            for (present, bit) in [
                (src_ip.is_some(), 1),
                (dst_ip.is_some(), 2),
                (src_port.is_some(), 4),
                (dst_port.is_some(), 8),
                (protocol.is_some(), 16),
                (vlan.is_some(), 32),
            ] {
                if present {
                    columns |= bit;
                }
            }
            let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
            rows.push((
                FlowKey {
                    src_ip: src_ip.unwrap_or_default(),
                    dst_ip: dst_ip.unwrap_or_default(),
                    src_port: src_port.unwrap_or(0),
                    dst_port: dst_port.unwrap_or(0),
                    protocol: protocol.unwrap_or(0),
                    vlan: vlan.unwrap_or(0),
                },
                FlowCounters {
                    packets: n(11)?,
                    bytes: n(12)?,
                    first_seen: n(13)?,
                    last_seen: n(14)?,
                },
            ));
        }
    }
    if let Some(g) = current.take() {
        flush(tx, &g, columns, &rows)?;
    }
    tx.execute_batch("DROP TABLE exact_rows_v6;")
}

/// Lays the exact rows out one SQL row per key, as schema version 6 kept
/// them, in the temporary table `exact_rows` of this connection (which
/// hides the stored blocks from it): for tools and tests that ask per-key
/// questions in SQL. Columns: `run_id, engine_id, task, window_start,
/// window_end, src_ip, dst_ip, src_port, dst_port, protocol, vlan, packets,
/// bytes, first_seen, last_seen` (key columns outside the task's key are
/// NULL). Call it again to see rows stored since.
pub fn expand_exact_rows(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.exact_rows;
         CREATE TEMP TABLE exact_rows (run_id INTEGER, engine_id TEXT, task TEXT, window_start INTEGER, window_end INTEGER,
             src_ip BLOB, dst_ip BLOB, src_port INTEGER, dst_port INTEGER, protocol INTEGER, vlan INTEGER,
             packets INTEGER, bytes INTEGER, first_seen INTEGER, last_seen INTEGER);",
    )?;
    let mut read = conn.prepare(
        "SELECT run_id, engine_id, task, window_start, window_end, data FROM main.exact_rows ORDER BY rowid",
    )?;
    let mut insert = conn.prepare(
        "INSERT INTO temp.exact_rows VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    let mut rows = Vec::new();
    let mut q = read.query([])?;
    while let Some(r) = q.next()? {
        let (run_id, engine_id, task): (i64, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let (start, end): (i64, i64) = (r.get(3)?, r.get(4)?);
        let data = r.get_ref(5)?.as_blob()?;
        let c = crate::block::decode(data, &mut rows).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Blob, Box::new(e))
        })?;
        for (k, v) in &rows {
            insert.execute(params![
                run_id,
                engine_id,
                task,
                start,
                end,
                c.src_ip().then_some(&k.src_ip[..]),
                c.dst_ip().then_some(&k.dst_ip[..]),
                c.src_port().then_some(k.src_port),
                c.dst_port().then_some(k.dst_port),
                c.protocol().then_some(k.protocol),
                c.vlan().then_some(k.vlan),
                v.packets as i64,
                v.bytes as i64,
                v.first_seen as i64,
                v.last_seen as i64,
            ])?;
        }
    }
    Ok(())
}

impl SqliteSink {
    fn write_sketch(&mut self, task: &TaskSpec, p: &SketchPeriod) -> rusqlite::Result<()> {
        let TaskKind::Sketch(algorithm) = task.kind else {
            return Ok(());
        };
        let cols = Columns::of(&task.key);
        let (run_id, engine_id) = (self.run_id, &self.engine_id);
        self.batch.write(&mut self.conn, |tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO sketch_rows (run_id, engine_id, task, algorithm, measure, period_start, period_end, src_ip, dst_ip, src_port, dst_port, protocol, vlan, estimate, error_bound, partial) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?;
            let lists: [(&str, &[Estimate]); 3] = [
                ("packets", &p.heavy_packets),
                ("bytes", &p.heavy_bytes),
                ("distinct", &p.spreaders),
            ];
            for (measure, list) in lists {
                for e in list {
                    let k = &e.key;
                    stmt.execute(params![
                        run_id,
                        engine_id,
                        task.name,
                        algorithm.name(),
                        measure,
                        p.start_ns as i64,
                        p.end_ns as i64,
                        cols.src_ip.then_some(&k.src_ip[..]),
                        cols.dst_ip.then_some(&k.dst_ip[..]),
                        cols.src_port.then_some(k.src_port),
                        cols.dst_port.then_some(k.dst_port),
                        cols.protocol.then_some(k.protocol),
                        cols.vlan.then_some(k.vlan),
                        e.estimate as i64,
                        e.error_bound as i64,
                        i64::from(p.partial),
                    ])?;
                }
            }
            Ok(())
        })
    }

    fn sink_error(&self, e: rusqlite::Error) -> SinkError {
        SinkError(format!("SQLite store {}: {e}", self.path.display()))
    }
}

impl WindowSink for SqliteSink {
    fn window(&mut self, tasks: &[TaskSpec], w: &WindowResult) -> Result<(), SinkError> {
        let started = std::time::Instant::now();
        self.write(tasks, w, None).map_err(|e| self.sink_error(e))?;
        window_written(started);
        Ok(())
    }

    fn window_with_progress(
        &mut self,
        tasks: &[TaskSpec],
        w: &WindowResult,
        consumer: &str,
        progress: &str,
    ) -> Result<(), SinkError> {
        let started = std::time::Instant::now();
        self.write(tasks, w, Some((consumer, progress)))
            .map_err(|e| self.sink_error(e))?;
        window_written(started);
        Ok(())
    }

    fn sketch_period(&mut self, task: &TaskSpec, period: &SketchPeriod) -> Result<(), SinkError> {
        self.write_sketch(task, period)
            .map_err(|e| self.sink_error(e))
    }

    fn alerts(&mut self, alerts: &[AlertRecord]) -> Result<(), SinkError> {
        let out = self
            .batch
            .write(&mut self.conn, |tx| insert_alerts(tx, alerts));
        out.map_err(|e| self.sink_error(e))
    }

    /// Commits an open group first.
    fn when_durable(&mut self, done: Box<dyn FnOnce() + Send>) -> Result<(), SinkError> {
        self.batch
            .commit_after(&self.conn, Duration::ZERO)
            .map_err(|e| self.sink_error(e))?;
        done();
        Ok(())
    }
}

/// Records a window's write (one transaction) in the metrics.
fn window_written(started: std::time::Instant) {
    metrics::histogram!("netspectra_store_write_seconds", "store" => "sqlite")
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("netspectra_store_windows_total", "store" => "sqlite").increment(1);
}
