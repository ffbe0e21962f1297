//! The embedded store: one SQLite file, WAL mode, versioned schema.

use crate::schema::{MIGRATIONS, SCHEMA_VERSION};
use crate::StoreError;
use netspectra_model::alert::AlertRecord;
use netspectra_model::task::{TaskKind, TaskSpec};
use netspectra_model::window::{
    Estimate, FlowCounters, SinkError, SketchPeriod, WindowResult, WindowSink,
};
use netspectra_model::Dimension;
use rusqlite::{params, Connection};
use serde_json::Value;
use std::path::{Path, PathBuf};

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
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let err = |error| StoreError::Sqlite {
        path: path.display().to_string(),
        error,
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(err)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
    )
    .map_err(err)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let mut conn = open_conn(path)?;
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
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
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
            conn: open_conn(&self.path)?,
            path: self.path.clone(),
            run_id,
            engine_id: engine_id.to_string(),
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

/// Writes merged windows of one run into `exact_rows`, one transaction per window.
pub struct SqliteSink {
    conn: Connection,
    path: PathBuf,
    run_id: i64,
    engine_id: String,
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
        let mut c = Columns::default();
        for d in key {
            match d {
                Dimension::SrcIp | Dimension::SrcNet(_) => c.src_ip = true,
                Dimension::DstIp | Dimension::DstNet(_) => c.dst_ip = true,
                Dimension::SrcPort => c.src_port = true,
                Dimension::DstPort => c.dst_port = true,
                Dimension::Protocol => c.protocol = true,
                Dimension::Vlan => c.vlan = true,
            }
        }
        c
    }
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
        let tx = self.conn.transaction()?;
        {
            // Rows go in groups of ROWS_PER_INSERT: one statement per row
            // spends most of its time in statement overhead.
            let mut many = tx.prepare_cached(&insert_sql(ROWS_PER_INSERT))?;
            let mut one = tx.prepare_cached(&insert_sql(1))?;
            let mut group = Vec::with_capacity(ROWS_PER_INSERT);
            for (i, task) in tasks.iter().enumerate() {
                let cols = Columns::of(&task.key);
                let row = |(key, counters)| ExactRow {
                    run_id: self.run_id,
                    engine_id: &self.engine_id,
                    task: &task.name,
                    window: (w.start_ns, w.end_ns),
                    cols: &cols,
                    key,
                    counters,
                };
                for r in w.rows(i) {
                    group.push(r);
                    if group.len() == ROWS_PER_INSERT {
                        for (j, r) in group.drain(..).enumerate() {
                            row(r).bind(&mut many, j * COLUMNS)?;
                        }
                        many.raw_execute()?;
                    }
                }
                for r in group.drain(..) {
                    row(r).bind(&mut one, 0)?;
                    one.raw_execute()?;
                }
            }
        }
        if let Some((consumer, state)) = progress {
            tx.prepare_cached(
                "INSERT INTO bus_progress (engine_id, consumer, state, updated_at_ns) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (engine_id, consumer) DO UPDATE SET state = excluded.state, updated_at_ns = excluded.updated_at_ns",
            )?
            .execute(params![self.engine_id, consumer, state, now_ns()])?;
        }
        tx.commit()
    }
}

/// Columns of `exact_rows` a row binds.
const COLUMNS: usize = 15;
/// Rows per multi-row INSERT (15 × 64 = 960 parameters, well under SQLite's limit).
const ROWS_PER_INSERT: usize = 64;

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO exact_rows (run_id, engine_id, task, window_start, window_end, src_ip, dst_ip, src_port, dst_port, protocol, vlan, packets, bytes, first_seen, last_seen) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    }
    sql
}

/// One `exact_rows` row, bound in place (no per-row allocation).
struct ExactRow<'a> {
    run_id: i64,
    engine_id: &'a str,
    task: &'a str,
    window: (u64, u64),
    cols: &'a Columns,
    key: &'a netspectra_model::FlowKey,
    counters: &'a FlowCounters,
}

impl ExactRow<'_> {
    fn bind(
        &self,
        stmt: &mut rusqlite::CachedStatement<'_>,
        offset: usize,
    ) -> rusqlite::Result<()> {
        let (k, c, cols) = (self.key, self.counters, self.cols);
        let at = |i: usize| offset + i;
        stmt.raw_bind_parameter(at(1), self.run_id)?;
        stmt.raw_bind_parameter(at(2), self.engine_id)?;
        stmt.raw_bind_parameter(at(3), self.task)?;
        stmt.raw_bind_parameter(at(4), self.window.0 as i64)?;
        stmt.raw_bind_parameter(at(5), self.window.1 as i64)?;
        stmt.raw_bind_parameter(at(6), cols.src_ip.then_some(&k.src_ip[..]))?;
        stmt.raw_bind_parameter(at(7), cols.dst_ip.then_some(&k.dst_ip[..]))?;
        stmt.raw_bind_parameter(at(8), cols.src_port.then_some(k.src_port))?;
        stmt.raw_bind_parameter(at(9), cols.dst_port.then_some(k.dst_port))?;
        stmt.raw_bind_parameter(at(10), cols.protocol.then_some(k.protocol))?;
        stmt.raw_bind_parameter(at(11), cols.vlan.then_some(k.vlan))?;
        stmt.raw_bind_parameter(at(12), c.packets as i64)?;
        stmt.raw_bind_parameter(at(13), c.bytes as i64)?;
        stmt.raw_bind_parameter(at(14), c.first_seen as i64)?;
        stmt.raw_bind_parameter(at(15), c.last_seen as i64)
    }
}

impl SqliteSink {
    fn write_sketch(&mut self, task: &TaskSpec, p: &SketchPeriod) -> rusqlite::Result<()> {
        let TaskKind::Sketch(algorithm) = task.kind else {
            return Ok(());
        };
        let cols = Columns::of(&task.key);
        let tx = self.conn.transaction()?;
        {
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
                        self.run_id,
                        self.engine_id,
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
        }
        tx.commit()
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
            .conn
            .transaction()
            .and_then(|tx| insert_alerts(&tx, alerts).and_then(|()| tx.commit()));
        out.map_err(|e| self.sink_error(e))
    }
}

/// Records a window's write (one transaction) in the metrics.
fn window_written(started: std::time::Instant) {
    metrics::histogram!("netspectra_store_write_seconds", "store" => "sqlite")
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("netspectra_store_windows_total", "store" => "sqlite").increment(1);
}
