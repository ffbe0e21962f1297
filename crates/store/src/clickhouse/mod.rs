//! The ClickHouse store: the logical schema of [`crate::schema`] on a
//! ClickHouse server reached over HTTP, written by a background thread that
//! batches, retries and spools to local disk when the server is down.
//!
//! # Schema mapping (SQLite → ClickHouse)
//!
//! DDL: [`schema`]. Same tables and column names as SQLite, with these
//! differences, all forced by ClickHouse (and its 18.16 release):
//!
//! | SQLite | ClickHouse | why |
//! |---|---|---|
//! | `src_ip`/`dst_ip` BLOB or NULL | `FixedString(16)`, zeros when not in the key | no `Nullable` in a sort key; the task's `key` in `tasks` says which columns count (as `FlowKey` does) |
//! | ports, protocol, vlan INTEGER or NULL | `UInt16`/`UInt8`, 0 when not in the key | idem |
//! | `exact_rows.window_start`/`window_end` (ns) | `window_start DateTime('UTC')` (partition and sort key) + `window_start_ns`, `window_end_ns` Int64 | day partitions, retention by partition; ns kept for exact ranges |
//! | `sketch_rows.period_start`/`period_end` (ns) | `period_start DateTime('UTC')` + `period_start_ns`, `period_end_ns` | idem |
//! | `runs.run_id` AUTOINCREMENT | `UInt64` from the wall clock in ns, made strictly increasing in the process | no sequences in ClickHouse; two engines starting in the same nanosecond is the only clash |
//! | `UPDATE runs` at finish | `ReplacingMergeTree(version)` ordered by `run_id`: version 1 at start, version 2 at finish | no lightweight UPDATE on 18.16; read with `FROM runs FINAL` or `argMax(col, version)` |
//! | `runs.finished_at_ns` NULL, `decoded` NULL | 0 and `''` while running | no `Nullable` needed |
//! | `PRAGMA user_version` | table `schema_version`, `max(version)` | migrations |
//!
//! So `SUM(packets) … WHERE run_id = ? AND task = ? AND src_ip = ?` works on
//! both, with `src_ip` bound as the 16 bytes (`toFixedString(…, 16)`).
//! `exact_rows` and `sketch_rows` are partitioned by UTC day
//! (`toYYYYMMDD`) and ordered by `(task, window_start, key…)`; retention is
//! [`ClickHouseStore::drop_older_than`] (any version) or
//! [`ClickHouseStore::set_retention_ttl`] (≥ 19.6).
//!
//! # Writing
//!
//! `begin_run`, `finish_run` and the sink only queue rows for the writer
//! thread (`writer.rs`: batches of up to 100 000 rows, retries with backoff
//! from 100 ms to 5 s, spooled after 2 s of failure), so a ClickHouse outage neither stops nor loses a
//! run: rows wait in the spool (`./netspectra-spool/<database>` unless
//! [`ClickHouseStore::with_spool_dir`] says otherwise) and are replayed in
//! order when the server answers. `finish_run` waits until everything queued
//! is in ClickHouse or the spool.
//!
//! # Bus progress (JetStream engines)
//!
//! ClickHouse 18.16 has no transactions, so
//! [`WindowSink::window_with_progress`] cannot store a window's rows and the
//! engine's progress atomically as SQLite does. The sink queues the
//! window's `exact_rows` batches and then one `bus_progress` row (a
//! `ReplacingMergeTree(version)` by `(engine_id, consumer)`), and the writer
//! inserts (or spools, and replays) batches strictly in queue order, so the
//! guarantee is: **progress is written after the rows it covers**. A crash
//! between the two leaves rows whose progress is missing; the restarted
//! engine loads the older progress, takes the redelivered batches as new
//! and counts that window's batches twice — it errs towards double
//! counting, never towards skipping batches whose rows are not stored. Two
//! exceptions, both logged: a batch ClickHouse *refuses* (not an outage) is
//! set aside in the spool's rejected directory and the queue goes on, so a
//! later progress row may cover rows that sit there instead of in the
//! table; and a progress row still in the spool of a server that is down
//! when the engine restarts is not seen by
//! [`ClickHouseStore::load_progress`] (which flushes the spool first), so
//! the engine starts from the older progress (double counting again).

pub(crate) mod rows;
pub mod schema;
mod spool;
pub(crate) mod writer;

pub use writer::FlushReport;

use self::rows::{AlertRow, AlertStateRow, Batch, ProgressRow, RunRow, TaskRow};
use self::writer::{Command, WriterConfig, WriterHandle, MAX_BATCH_ROWS};
use crate::url::ClickHouseUrl;
use crate::{RunRecord, StoreError};
use netspectra_model::alert::AlertRecord;
use netspectra_model::task::TaskSpec;
use netspectra_model::window::{SinkError, SketchPeriod, WindowResult, WindowSink};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Mutex;
use std::time::Duration;

impl From<RunRow> for RunRecord {
    fn from(r: RunRow) -> RunRecord {
        RunRecord {
            run_id: r.run_id as i64,
            engine_id: r.engine_id,
            command: r.command,
            started_at_ns: r.started_at_ns,
            finished_at_ns: (r.finished_at_ns != 0).then_some(r.finished_at_ns),
            status: r.status,
            inputs: serde_json::from_str(&r.inputs).unwrap_or(Value::Null),
            packets: r.packets as i64,
            bytes: r.bytes as i64,
            decoded: serde_json::from_str(&r.decoded).unwrap_or(Value::Null),
        }
    }
}

/// How long opening may wait for the server (connect, create, migrate).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The same when the store may open without the server.
const DEFER_TIMEOUT: Duration = Duration::from_secs(3);

/// An open ClickHouse store.
pub struct ClickHouseStore {
    url: ClickHouseUrl,
    client: clickhouse::Client,
    rt: tokio::runtime::Runtime,
    server_version: String,
    spool_dir: PathBuf,
    config: WriterConfig,
    /// Started on first use, so `with_spool_dir` can still choose the directory.
    writer: Mutex<Option<WriterHandle>>,
    /// Start rows of this process's runs, repeated in their finish rows.
    runs: HashMap<i64, RunRow>,
    /// Opened while the server was down: the writer sets the schema up
    /// before its first insert.
    schema_pending: bool,
    /// The spool directory sits among other writers' spools (one per
    /// writer under `<root>/<database>/`): take over those of dead writers.
    adopt_orphans: bool,
}

impl ClickHouseStore {
    /// Connects, creates the database if missing and brings its tables up to
    /// date. The spool defaults to `./netspectra-spool/<database>`.
    ///
    /// Fails, naming the URL (without its password), when the server does
    /// not answer within 10 s or refuses the schema.
    pub fn open(url: &ClickHouseUrl) -> Result<ClickHouseStore, StoreError> {
        ClickHouseStore::open_inner(url, false)
    }

    /// [`ClickHouseStore::open`] for a writer that must start while the
    /// server is down (an engine, a live run): when no server answers, the
    /// store opens anyway, its writer spools from the first row and sets up
    /// the schema once the server answers. Other errors (authentication,
    /// newer schema) still fail here.
    pub fn open_or_defer(url: &ClickHouseUrl) -> Result<ClickHouseStore, StoreError> {
        ClickHouseStore::open_inner(url, true)
    }

    fn open_inner(url: &ClickHouseUrl, defer: bool) -> Result<ClickHouseStore, StoreError> {
        let err = |message: String| StoreError::ClickHouse {
            url: url.to_string(),
            message,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err(format!("cannot start the client runtime: {e}")))?;
        let client = writer::make_client(url, true);
        let timeout = if defer { DEFER_TIMEOUT } else { OPEN_TIMEOUT };
        let migrated = block_on(&rt, async {
            tokio::time::timeout(timeout, migrate(url, &client))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "{UNREACHABLE}no answer within {timeout:?} (is the server running, and is {} its HTTP port?)",
                        url.port
                    ))
                })
        });
        let mut schema_pending = false;
        let migrated = match migrated {
            Err(message) if defer && message.starts_with(UNREACHABLE) => {
                tracing::warn!(
                    message = "ClickHouse unreachable at start; rows are spooled until it answers",
                    %url,
                    error = %message,
                );
                schema_pending = true;
                Ok(String::new())
            }
            other => other,
        };
        let server_version = migrated.map_err(|message| match message.strip_prefix(NEWER) {
            Some(found) => StoreError::NewerSchema {
                path: url.to_string(),
                found: found.parse().unwrap_or(i64::MAX),
                supported: i64::from(schema::SCHEMA_VERSION),
            },
            None => err(message),
        })?;
        Ok(ClickHouseStore {
            spool_dir: Path::new("netspectra-spool").join(&url.database),
            url: url.clone(),
            client,
            rt,
            server_version,
            config: WriterConfig::default(),
            writer: Mutex::new(None),
            runs: HashMap::new(),
            schema_pending,
            adopt_orphans: false,
        })
    }

    /// Keeps the spool in `dir` instead of `./netspectra-spool/<database>`
    /// (one writing process per directory). Call before writing.
    pub fn with_spool_dir(mut self, dir: impl Into<PathBuf>) -> ClickHouseStore {
        self.stop_writer();
        self.spool_dir = dir.into();
        self
    }

    /// Spools in `dir`, one of the writer directories under a spool root
    /// (`<root>/<database>/<writer>`), and replays the spools that dead
    /// writers left beside it (what [`crate::open_spooled`] does).
    pub fn with_shared_spool_root(mut self, dir: impl Into<PathBuf>) -> ClickHouseStore {
        self = self.with_spool_dir(dir);
        self.adopt_orphans = true;
        self
    }

    /// Changes how long an insert is retried before its batch is spooled
    /// (default 2 s); tests shorten it. Call before writing.
    pub fn with_retry_deadline(mut self, deadline: Duration) -> ClickHouseStore {
        self.stop_writer();
        self.config.retry_deadline = deadline;
        self
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    /// The URL (its `Display` hides the password).
    pub fn url(&self) -> &ClickHouseUrl {
        &self.url
    }

    /// `SELECT version()` as the server answered it on open.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// Whether the server knows table `TTL` (19.6 and newer); older servers
    /// need [`ClickHouseStore::drop_older_than`] run periodically.
    pub fn supports_ttl(&self) -> bool {
        schema::version_at_least(&self.server_version, 19, 6)
    }

    /// A client on the store's database, for queries (run them with
    /// [`ClickHouseStore::fetch_all`]). Bind values with `?` and `.bind()`:
    /// 18.16 has no server-side query parameters.
    pub fn client(&self) -> &clickhouse::Client {
        &self.client
    }

    /// Runs a query built on [`ClickHouseStore::client`] and returns its rows.
    pub fn fetch_all<T>(&self, query: clickhouse::query::Query) -> Result<Vec<T>, StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead + Send,
    {
        block_on(&self.rt, query.fetch_all::<T>()).map_err(|e| self.error(e.to_string()))
    }

    /// Runs a statement built on [`ClickHouseStore::client`].
    pub fn execute(&self, query: clickhouse::query::Query) -> Result<(), StoreError> {
        block_on(&self.rt, query.execute()).map_err(|e| self.error(e.to_string()))
    }

    fn error(&self, message: String) -> StoreError {
        StoreError::ClickHouse {
            url: self.url.to_string(),
            message,
        }
    }

    /// Every run, oldest first, with its latest state.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let rows: Vec<RunRow> = self.fetch_all(
            self.client
                .query("SELECT ?fields FROM runs FINAL ORDER BY run_id"),
        )?;
        Ok(rows.into_iter().map(RunRecord::from).collect())
    }

    /// Batches waiting in the spool for the server (0 when it has everything).
    pub fn pending_spooled_batches(&self) -> usize {
        let guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        match &*guard {
            Some(w) => w.stats.spooled_batches.load(Ordering::Relaxed),
            None => spool::Spool::peek_len(&self.spool_dir),
        }
    }

    /// Rows the writer has inserted since the store was opened.
    pub fn inserted_rows(&self) -> u64 {
        let guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .map_or(0, |w| w.stats.inserted_rows.load(Ordering::Relaxed))
    }

    /// Waits until every row queued so far is in ClickHouse or, when the
    /// server does not answer, in the spool; tries the server (and replays
    /// the spool) at once even if it was down.
    pub fn flush(&self) -> Result<FlushReport, StoreError> {
        self.with_writer(|w| w.flush())?
            .ok_or_else(|| self.error("the writer thread stopped".into()))
    }

    /// Drops whole days older than `days` days (UTC) from `exact_rows` and
    /// `sketch_rows` (`ALTER TABLE … DROP PARTITION`, works on every
    /// version); returns how many partitions went.
    pub fn drop_older_than(&self, days: u32) -> Result<usize, StoreError> {
        let tables: Vec<&str> = schema::PARTITIONED.iter().map(|t| t.0).collect();
        let old: Vec<(String, String)> = self.fetch_all(
            self.client
                .query(
                    "SELECT DISTINCT table, partition FROM system.parts \
                     WHERE database = ? AND active AND has(?, table) \
                     AND toUInt32(partition) < toYYYYMMDD(subtractDays(now(), ?), 'UTC') \
                     ORDER BY table, partition",
                )
                .bind(&self.url.database)
                .bind(tables)
                .bind(days),
        )?;
        for (table, partition) in &old {
            let partition: u32 = partition.parse().map_err(|_| {
                self.error(format!("unexpected partition `{partition}` of {table}"))
            })?;
            self.execute(
                self.client
                    .query("ALTER TABLE ? DROP PARTITION ?")
                    .bind(clickhouse::sql::Identifier(table))
                    .bind(partition),
            )?;
            tracing::info!(message = "dropped old partition", table, partition);
        }
        Ok(old.len())
    }

    /// Sets a `TTL` of `days` on `exact_rows` and `sketch_rows` when the
    /// server supports it (≥ 19.6); returns false (and changes nothing) on
    /// older servers, where [`ClickHouseStore::drop_older_than`] does the job.
    pub fn set_retention_ttl(&self, days: u32) -> Result<bool, StoreError> {
        if !self.supports_ttl() {
            return Ok(false);
        }
        for (table, column) in schema::PARTITIONED {
            self.execute(
                self.client
                    .query("ALTER TABLE ? MODIFY TTL ? + toIntervalDay(?)")
                    .bind(clickhouse::sql::Identifier(table))
                    .bind(clickhouse::sql::Identifier(column))
                    .bind(days),
            )?;
        }
        Ok(true)
    }

    fn with_writer<R>(&self, f: impl FnOnce(&WriterHandle) -> R) -> Result<R, StoreError> {
        let mut guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let schema = self.schema_pending.then(|| self.url.clone());
            let handle = writer::spawn(
                &self.url,
                &self.spool_dir,
                self.config,
                schema,
                self.adopt_orphans,
            )
            .map_err(|e| {
                self.error(format!(
                    "cannot open the spool directory {}: {e}",
                    self.spool_dir.display()
                ))
            })?;
            *guard = Some(handle);
        }
        Ok(f(guard.as_ref().expect("writer started")))
    }

    fn queue(&self, batch: Batch) -> Result<(), StoreError> {
        if self.with_writer(|w| w.send(batch))? {
            Ok(())
        } else {
            Err(self.error("the writer thread stopped".into()))
        }
    }

    fn stop_writer(&mut self) {
        let handle = self
            .writer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(handle);
    }

    /// Records a new run and its tasks (queued like any rows: an outage at
    /// start does not stop the run); returns its id.
    pub fn begin_run(
        &mut self,
        engine_id: &str,
        command: &str,
        inputs: &Value,
        tasks: &[TaskSpec],
        window_ns: u64,
    ) -> Result<i64, StoreError> {
        let started = now_ns();
        let run_id = next_run_id(started);
        let row = RunRow {
            run_id,
            version: 1,
            engine_id: engine_id.to_string(),
            command: command.to_string(),
            started_at: rows::datetime(started),
            started_at_ns: started as i64,
            finished_at_ns: 0,
            status: "running".to_string(),
            inputs: inputs.to_string(),
            packets: 0,
            bytes: 0,
            decoded: String::new(),
        };
        let task_rows: Vec<TaskRow> = tasks
            .iter()
            .map(|t| TaskRow {
                run_id,
                name: t.name.clone(),
                kind: t.kind.name().to_string(),
                key: crate::schema::key_text(&t.key),
                window_ns: window_ns as i64,
                algorithm: crate::schema::algorithm_text(t),
            })
            .collect();
        self.queue(Batch::Runs(vec![row.clone()]))?;
        if !task_rows.is_empty() {
            self.queue(Batch::Tasks(task_rows))?;
        }
        self.runs.insert(run_id as i64, row);
        Ok(run_id as i64)
    }

    /// Marks a run finished (a version-2 row of `runs`), then waits until
    /// the run's rows are in ClickHouse or the spool.
    pub fn finish_run(
        &mut self,
        run_id: i64,
        status: &str,
        inputs: &Value,
        packets: u64,
        bytes: u64,
        decoded: &Value,
    ) -> Result<FlushReport, StoreError> {
        let start = match self.runs.remove(&run_id) {
            Some(row) => row,
            None => self
                .fetch_all::<RunRow>(
                    self.client
                        .query("SELECT ?fields FROM runs FINAL WHERE run_id = ?")
                        .bind(run_id as u64),
                )?
                .pop()
                .ok_or_else(|| self.error(format!("no run {run_id} in table runs")))?,
        };
        let row = RunRow {
            version: 2,
            finished_at_ns: now_ns() as i64,
            status: status.to_string(),
            inputs: inputs.to_string(),
            packets,
            bytes,
            decoded: decoded.to_string(),
            ..start
        };
        self.queue(Batch::Runs(vec![row]))?;
        let report = self.flush()?;
        if report.spooled_batches > 0 {
            tracing::warn!(
                message = "run finished while ClickHouse is unreachable; its rows wait in the spool",
                url = %self.url,
                run_id,
                spool = %self.spool_dir.display(),
                batches = report.spooled_batches,
                rows = report.spooled_rows,
            );
        }
        Ok(report)
    }

    /// A sink queueing this run's windows for the writer thread.
    pub fn sink(&self, run_id: i64, engine_id: &str) -> Result<ClickHouseSink, StoreError> {
        Ok(ClickHouseSink {
            tx: self.with_writer(|w| w.sender())?,
            run_id: run_id as u64,
            engine_id: engine_id.to_string(),
            url: self.url.to_string(),
            progress_version: 0,
        })
    }

    /// The progress `engine_id`'s sink last stored for `consumer` (newest
    /// version), if any. Flushes the writer first, so that progress rows
    /// waiting in this store's spool reach the server before it is read;
    /// when the server cannot take them, warns and reads what the server
    /// has (older progress: the caller may count some batches twice).
    pub fn load_progress(
        &self,
        engine_id: &str,
        consumer: &str,
    ) -> Result<Option<String>, StoreError> {
        let report = self.flush()?;
        if report.spooled_batches > 0 {
            tracing::warn!(
                message = "loading bus progress while ClickHouse rows wait in the spool; the progress read may be older than the rows stored",
                url = %self.url,
                spool = %self.spool_dir.display(),
                batches = report.spooled_batches,
            );
        }
        let rows: Vec<(u64, String)> = self.fetch_all(
            self.client
                .query(
                    "SELECT count(), argMax(state, version) FROM bus_progress \
                     WHERE engine_id = ? AND consumer = ?",
                )
                .bind(engine_id)
                .bind(consumer),
        )?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|(n, state)| (n > 0).then_some(state)))
    }

    /// The progress every engine last stored for `consumer` (after
    /// flushing this store's writer, as [`ClickHouseStore::load_progress`]).
    pub fn all_progress(&self, consumer: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.flush()?;
        self.fetch_all(
            self.client
                .query(
                    "SELECT engine_id, argMax(state, version) FROM bus_progress \
                     WHERE consumer = ? GROUP BY engine_id",
                )
                .bind(consumer),
        )
    }

    /// Queues alert transitions and the alerter's state through the writer
    /// (so an outage spools them), then waits until they are in ClickHouse
    /// or in the spool.
    pub fn record_alerts(
        &self,
        alerts: &[AlertRecord],
        state: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        let now = now_ns();
        if !alerts.is_empty() {
            self.queue(Batch::Alerts(
                alerts
                    .iter()
                    .map(|a| AlertRow::from_record(a, now as i64))
                    .collect(),
            ))?;
        }
        if let Some((alerter, doc)) = state {
            self.queue(Batch::AlertState(vec![AlertStateRow {
                alerter: alerter.to_string(),
                version: now,
                state: doc.to_string(),
                updated_at_ns: now as i64,
            }]))?;
        }
        self.flush().map(drop)
    }

    /// The state `alerter` saved last (newest version).
    pub fn alert_state(&self, alerter: &str) -> Result<Option<String>, StoreError> {
        let rows: Vec<(u64, String)> = self.fetch_all(
            self.client
                .query("SELECT count(), argMax(state, version) FROM alert_state WHERE alerter = ?")
                .bind(alerter),
        )?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|(n, state)| (n > 0).then_some(state)))
    }

    /// Marks a run replaced (a version-3 row of `runs`, which every query
    /// reads through `FINAL`), then deletes its rows (mutations, applied in
    /// the background) ([`crate::Store::replace_run`]).
    pub fn replace_run(&mut self, run_id: i64) -> Result<(), StoreError> {
        let mut row = self
            .fetch_all::<RunRow>(
                self.client
                    .query("SELECT ?fields FROM runs FINAL WHERE run_id = ?")
                    .bind(run_id as u64),
            )?
            .pop()
            .ok_or_else(|| self.error(format!("no run {run_id} in table runs")))?;
        row.version = 3;
        row.status = crate::schema::REPLACED.to_string();
        self.queue(Batch::Runs(vec![row]))?;
        let report = self.flush()?;
        if report.spooled_batches > 0 {
            return Err(self.error(format!(
                "run {run_id} could not be marked replaced: the server does not take rows"
            )));
        }
        for table in ["exact_rows", "sketch_rows"] {
            self.execute(
                self.client
                    .query("ALTER TABLE ? DELETE WHERE run_id = ?")
                    .bind(clickhouse::sql::Identifier(table))
                    .bind(run_id as u64),
            )?;
        }
        Ok(())
    }

    /// Deletes run `run_id`'s exact rows in windows from `from_ns` on (a
    /// mutation; ClickHouse applies it in the background, so queries may
    /// still see them for a moment).
    pub fn drop_uncovered(&self, run_id: i64, from_ns: u64) -> Result<(), StoreError> {
        self.execute(
            self.client
                .query("ALTER TABLE exact_rows DELETE WHERE run_id = ? AND window_start_ns >= ?")
                .bind(run_id as u64)
                .bind(from_ns as i64),
        )
    }
}

impl Drop for ClickHouseStore {
    fn drop(&mut self) {
        // The writer flushes what it can and leaves the rest in the spool.
        self.stop_writer();
    }
}

impl crate::Store for ClickHouseStore {
    fn begin_run(
        &mut self,
        engine_id: &str,
        command: &str,
        inputs: &Value,
        tasks: &[TaskSpec],
        window_ns: u64,
    ) -> Result<i64, StoreError> {
        ClickHouseStore::begin_run(self, engine_id, command, inputs, tasks, window_ns)
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
        ClickHouseStore::finish_run(self, run_id, status, inputs, packets, bytes, decoded)
            .map(|_| ())
    }

    fn sink(&self, run_id: i64, engine_id: &str) -> Result<Box<dyn WindowSink>, StoreError> {
        Ok(Box::new(ClickHouseStore::sink(self, run_id, engine_id)?))
    }

    fn load_progress(&self, engine_id: &str, consumer: &str) -> Result<Option<String>, StoreError> {
        ClickHouseStore::load_progress(self, engine_id, consumer)
    }

    fn all_progress(&self, consumer: &str) -> Result<Vec<(String, String)>, StoreError> {
        ClickHouseStore::all_progress(self, consumer)
    }

    fn replace_run(&mut self, run_id: i64) -> Result<(), StoreError> {
        ClickHouseStore::replace_run(self, run_id)
    }

    fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        ClickHouseStore::runs(self)
    }

    /// Day partitions older than `keep` (rounded up to whole days) are
    /// dropped: a metadata operation on every server version, unlike a
    /// `MODIFY TTL`, which rewrites every part at once.
    fn apply_retention(&self, keep: std::time::Duration) -> Result<u64, StoreError> {
        let days = keep.as_secs().div_ceil(86_400).max(1);
        Ok(self.drop_older_than(u32::try_from(days).unwrap_or(u32::MAX))? as u64)
    }

    fn record_alerts(
        &mut self,
        alerts: &[AlertRecord],
        state: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        ClickHouseStore::record_alerts(self, alerts, state)
    }

    fn alert_state(&self, alerter: &str) -> Result<Option<String>, StoreError> {
        ClickHouseStore::alert_state(self, alerter)
    }

    fn drop_uncovered(&self, run_id: i64, from_ns: u64) -> Result<(), StoreError> {
        ClickHouseStore::drop_uncovered(self, run_id, from_ns)
    }
}

/// Turns merged windows into owned rows on the collector thread and hands
/// them to the writer; waits only when the writer is 8 batches behind
/// (back-pressure, never a drop) — never on the network.
pub struct ClickHouseSink {
    tx: SyncSender<Command>,
    run_id: u64,
    engine_id: String,
    url: String,
    /// Version of the last `bus_progress` row queued.
    progress_version: u64,
}

impl ClickHouseSink {
    fn send(&self, batch: Batch) -> Result<(), SinkError> {
        self.tx.send(Command::Batch(batch)).map_err(|_| {
            SinkError(format!(
                "ClickHouse store {}: the writer thread stopped",
                self.url
            ))
        })
    }
}

impl WindowSink for ClickHouseSink {
    fn window(&mut self, tasks: &[TaskSpec], window: &WindowResult) -> Result<(), SinkError> {
        for batch in
            rows::exact_batches(self.run_id, &self.engine_id, tasks, window, MAX_BATCH_ROWS)
        {
            self.send(batch)?;
        }
        Ok(())
    }

    /// Queues the window's rows, then the progress row: the writer inserts
    /// in queue order, so the progress never reaches the server before the
    /// rows it covers (see the module documentation for what a crash
    /// between them does).
    fn window_with_progress(
        &mut self,
        tasks: &[TaskSpec],
        window: &WindowResult,
        consumer: &str,
        progress: &str,
    ) -> Result<(), SinkError> {
        self.window(tasks, window)?;
        let now = now_ns();
        self.progress_version = now.max(self.progress_version + 1);
        self.send(Batch::Progress(vec![ProgressRow {
            engine_id: self.engine_id.clone(),
            consumer: consumer.to_string(),
            version: self.progress_version,
            state: progress.to_string(),
            updated_at_ns: now as i64,
        }]))
    }

    fn sketch_period(&mut self, task: &TaskSpec, period: &SketchPeriod) -> Result<(), SinkError> {
        match rows::sketch_batch(self.run_id, &self.engine_id, task, period) {
            Some(batch) => self.send(batch),
            None => Ok(()),
        }
    }

    fn alerts(&mut self, alerts: &[AlertRecord]) -> Result<(), SinkError> {
        let now = now_ns() as i64;
        self.send(Batch::Alerts(
            alerts
                .iter()
                .map(|a| AlertRow::from_record(a, now))
                .collect(),
        ))
    }

    /// `done` runs on the writer thread once the rows queued so far are in
    /// ClickHouse or fsynced into the spool.
    fn when_durable(&mut self, done: Box<dyn FnOnce() + Send>) -> Result<(), SinkError> {
        self.tx.send(Command::Notify(done)).map_err(|_| {
            SinkError(format!(
                "ClickHouse store {}: the writer thread stopped",
                self.url
            ))
        })
    }
}

/// Marks a migration error as "the database is newer than this build".
const NEWER: &str = "newer schema:";
/// Starts a migration error that means "no server answered".
const UNREACHABLE: &str = "cannot reach the server: ";

/// Creates the database and brings the schema up to date; returns the
/// server's version.
pub(crate) async fn migrate(
    url: &ClickHouseUrl,
    client: &clickhouse::Client,
) -> Result<String, String> {
    let server = writer::make_client(url, false);
    let version: String =
        server
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(|e| match e {
                clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut => {
                    format!("{UNREACHABLE}{e}")
                }
                e => url
                    .auth_failure(&e.to_string())
                    .unwrap_or_else(|| format!("the server refused the connection: {e}")),
            })?;
    server
        .query("CREATE DATABASE IF NOT EXISTS ?")
        .bind(clickhouse::sql::Identifier(&url.database))
        .execute()
        .await
        .map_err(|e| format!("cannot create database {}: {e}", url.database))?;
    let ddl = |e: clickhouse::error::Error| format!("schema: {e}");
    client
        .query(schema::SCHEMA_VERSION_TABLE)
        .execute()
        .await
        .map_err(ddl)?;
    let current: u32 = client
        .query("SELECT max(version) FROM schema_version")
        .fetch_one()
        .await
        .map_err(ddl)?;
    if current > schema::SCHEMA_VERSION {
        return Err(format!("{NEWER}{current}"));
    }
    for (v, statements) in schema::MIGRATIONS.iter().enumerate().skip(current as usize) {
        for statement in *statements {
            match client.query(statement).execute().await {
                Ok(()) => {}
                // Another process added the column first.
                Err(e)
                    if statement.contains("ADD COLUMN")
                        && e.to_string().contains("already exists") => {}
                Err(e) => return Err(ddl(e)),
            }
        }
        client
            .query("INSERT INTO schema_version (version, applied_at) VALUES (?, now())")
            .bind(v as u32 + 1)
            .execute()
            .await
            .map_err(ddl)?;
        tracing::info!(
            message = "ClickHouse schema migrated",
            url = %url,
            version = v + 1,
        );
    }
    Ok(version)
}

/// Runs `f` on the store's runtime. Inside another runtime (an async role
/// opening the store) `block_on` would panic, so it runs on a helper thread.
fn block_on<F>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return rt.block_on(f);
    }
    std::thread::scope(|s| {
        s.spawn(|| rt.block_on(f))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Wall-clock ns, strictly increasing within the process.
fn next_run_id(now: u64) -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let id = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, id, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return id,
            Err(p) => prev = p,
        }
    }
}
