//! The writer thread: owns a tokio current-thread runtime and its own HTTP
//! client, batches rows, retries with backoff and spools what the server
//! cannot take.
//!
//! ```text
//!  sink (collector thread) ──bounded channel──► writer ──INSERT──► ClickHouse
//!                           (full: the sink waits)   │ retries 100 ms … 5 s, 2 s deadline
//!                                                    └──► spool dir ──replay, oldest first──┘
//! ```
//!
//! States: *up* — every batch is inserted (after the spool, so order holds);
//! *down* (an insert failed past the deadline) — batches go straight to the
//! spool without waiting, and the server is probed with a ping on a backoff
//! (100 ms doubling to 5 s); when it answers, the spool is replayed oldest
//! first, then new batches flow again. A flush (on `finish_run`, `flush()`
//! or drop) tries the server at once whatever the state.
//!
//! Delivery is at least once per batch and, in practice, exactly once: a
//! batch is removed from the spool only after ClickHouse acknowledged it, and
//! a refused connection or a stopped server never applied it. The one window
//! for a duplicate is a connection lost after the server received a whole
//! INSERT but before its answer arrived (ClickHouse deduplicates inserts
//! only on replicated tables).

use super::rows::Batch;
use super::spool::Spool;
use crate::url::ClickHouseUrl;
use clickhouse::{Client, RowOwned, RowWrite};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Rows per INSERT at most (bigger windows are cut into several batches).
pub(crate) const MAX_BATCH_ROWS: usize = 100_000;
/// Rows held in memory at most when neither the server nor the spool takes
/// them; beyond, the writer stops reading its channel (back-pressure).
const MAX_PENDING_ROWS: usize = 4 * MAX_BATCH_ROWS;
/// Batches waiting in the channel before the sink blocks (back-pressure).
const CHANNEL_BATCHES: usize = 8;

/// How hard the writer tries before it spools.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriterConfig {
    /// First pause between attempts.
    pub backoff_min: Duration,
    /// Longest pause between attempts (and between probes while down).
    pub backoff_max: Duration,
    /// An insert failing for longer than this goes to the spool.
    pub retry_deadline: Duration,
    /// Sending one chunk of an INSERT (connecting included) may take this
    /// long: a server that drops packets counts as down, not as slow.
    pub send_timeout: Duration,
    /// The server may take this long to answer a whole INSERT.
    pub end_timeout: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            retry_deadline: Duration::from_secs(2),
            send_timeout: Duration::from_secs(10),
            end_timeout: Duration::from_secs(60),
        }
    }
}

/// What a flush left behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Batches still in the spool (0: the server has everything).
    pub spooled_batches: usize,
    /// Rows in those batches.
    pub spooled_rows: u64,
}

/// Counters shared with the store (tests, metrics).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub spooled_batches: AtomicUsize,
    pub spooled_rows: AtomicU64,
    pub inserted_rows: AtomicU64,
    pub inserted_batches: AtomicU64,
}

pub(crate) enum Command {
    Batch(Batch),
    Flush(mpsc::Sender<FlushReport>),
    /// Called once every batch queued before it is inserted or spooled.
    Notify(Box<dyn FnOnce() + Send>),
    Shutdown,
}

/// The store's end of the writer.
pub(crate) struct WriterHandle {
    tx: SyncSender<Command>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<Stats>,
}

impl WriterHandle {
    /// A sender for a sink (blocks when the writer is behind).
    pub fn sender(&self) -> SyncSender<Command> {
        self.tx.clone()
    }

    /// Queues rows; false when the writer has stopped.
    pub fn send(&self, batch: Batch) -> bool {
        self.tx.send(Command::Batch(batch)).is_ok()
    }

    /// Waits until everything queued so far is in ClickHouse or the spool.
    pub fn flush(&self) -> Option<FlushReport> {
        let (tx, rx) = mpsc::channel();
        self.tx.send(Command::Flush(tx)).ok()?;
        rx.recv().ok()
    }

    /// Flushes and stops the thread.
    pub fn shutdown(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Builds an HTTP client for the URL (one per runtime: pooled connections
/// belong to the runtime that opened them).
pub(crate) fn make_client(url: &ClickHouseUrl, with_database: bool) -> Client {
    let mut c = Client::default()
        .with_url(url.http_endpoint())
        .with_user(url.user.clone().unwrap_or_else(|| "default".to_string()))
        .with_validation(false);
    if let Some(p) = &url.password {
        c = c.with_password(p.clone());
    }
    if with_database {
        c = c.with_database(url.database.clone());
    }
    c
}

/// Starts the writer thread over the spool in `spool_dir`.
///
/// `schema`: the server was down when the store opened; the database and
/// tables are created (migrated) before the first insert.
pub(crate) fn spawn(
    url: &ClickHouseUrl,
    spool_dir: &Path,
    config: WriterConfig,
    schema: Option<ClickHouseUrl>,
    adopt: bool,
) -> std::io::Result<WriterHandle> {
    let mut spool = Spool::open(spool_dir)?;
    let adopted = if adopt {
        spool.adopt_orphans()
    } else {
        Ok((0, 0))
    };
    match adopted {
        Ok((0, _)) => {}
        Ok((batches, rows)) => tracing::info!(
            message = "adopted the spool of a writer that died; replaying it",
            spool = %spool.dir().display(),
            batches,
            rows
        ),
        Err(error) => tracing::warn!(
            message = "cannot adopt an orphaned spool directory",
            spool = %spool.dir().display(),
            %error
        ),
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stats = Arc::new(Stats::default());
    stats.spooled_batches.store(spool.len(), Ordering::Relaxed);
    stats.spooled_rows.store(spool.rows(), Ordering::Relaxed);
    export_spool(spool.len(), spool.rows());
    if !spool.is_empty() {
        tracing::info!(
            message = "ClickHouse spool holds batches from an earlier run; replaying them first",
            spool = %spool.dir().display(),
            batches = spool.len(),
            rows = spool.rows(),
        );
    }
    let writer = Writer {
        client: make_client(url, true),
        url: url.to_string(),
        rt,
        spool,
        pending: VecDeque::new(),
        schema,
        durable_waiters: VecDeque::new(),
        down: None,
        config,
        stats: stats.clone(),
    };
    let (tx, rx) = mpsc::sync_channel(CHANNEL_BATCHES);
    let thread = std::thread::Builder::new()
        .name("clickhouse-writer".into())
        .spawn(move || writer.run(rx))?;
    Ok(WriterHandle {
        tx,
        thread: Some(thread),
        stats,
    })
}

struct Down {
    next_probe: Instant,
    backoff: Duration,
}

enum Failure {
    /// The server did not answer in time: keep the batch, retry later.
    Unreachable(clickhouse::error::Error),
    /// The server answered and refused this batch: retrying will not help.
    Refused(clickhouse::error::Error),
}

struct Writer {
    client: Client,
    url: String,
    rt: tokio::runtime::Runtime,
    spool: Spool,
    pending: VecDeque<Batch>,
    /// Set while the schema still has to be created on the server.
    schema: Option<ClickHouseUrl>,
    /// `Notify` callbacks waiting for `pending` to be inserted or spooled.
    durable_waiters: VecDeque<Box<dyn FnOnce() + Send>>,
    down: Option<Down>,
    config: WriterConfig,
    stats: Arc<Stats>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Command>) {
        loop {
            if self.pending_rows() >= MAX_PENDING_ROWS {
                // Neither the server nor the spool takes rows (disk full?):
                // stop taking more, so the sink waits instead of this
                // queue growing without bound.
                std::thread::sleep(self.config.backoff_max);
                self.pump(false);
                continue;
            }
            let cmd = match self.wait() {
                None => rx.recv().ok(),
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => {
                        self.pump(false);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                },
            };
            let Some(cmd) = cmd else {
                self.shutdown();
                return;
            };
            if !self.handle(cmd) {
                return;
            }
            // Take whatever else is queued, so that inserts grow large.
            while self.pending_rows() < MAX_BATCH_ROWS {
                let Ok(cmd) = rx.try_recv() else { break };
                if !self.handle(cmd) {
                    return;
                }
            }
            self.pump(false);
        }
    }

    /// How long to wait for a command before working on our own (None:
    /// nothing to do).
    fn wait(&self) -> Option<Duration> {
        if !self.pending.is_empty() {
            // The spool could not be written (disk full?): try again soon.
            return Some(self.config.backoff_max);
        }
        if self.spool.is_empty() {
            return None;
        }
        Some(match &self.down {
            Some(d) => d.next_probe.saturating_duration_since(Instant::now()),
            None => Duration::ZERO,
        })
    }

    /// Handles one command; false once the writer has shut down.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Batch(b) => {
                match self.pending.back_mut() {
                    Some(last) => {
                        if let Err(b) = last.try_append(b, MAX_BATCH_ROWS) {
                            self.pending.push_back(b);
                        }
                    }
                    None => self.pending.push_back(b),
                }
                true
            }
            Command::Flush(reply) => {
                let report = self.pump(true);
                let _ = reply.send(report);
                true
            }
            Command::Notify(done) => {
                self.durable_waiters.push_back(done);
                self.pump(false);
                true
            }
            Command::Shutdown => {
                self.shutdown();
                false
            }
        }
    }

    fn pending_rows(&self) -> usize {
        self.pending.iter().map(Batch::len).sum()
    }

    fn shutdown(&mut self) {
        let report = self.pump(true);
        if report.spooled_batches > 0 {
            tracing::warn!(
                message = "ClickHouse writer stopping with rows left in the spool; they are replayed by the next writer on this spool directory",
                url = %self.url,
                spool = %self.spool.dir().display(),
                batches = report.spooled_batches,
                rows = report.spooled_rows,
            );
        }
    }

    /// The spool's state after a pump; releases the `Notify` callbacks
    /// once nothing is pending (all inserted or spooled).
    fn report(&mut self) -> FlushReport {
        if self.pending.is_empty() {
            for done in self.durable_waiters.drain(..) {
                done();
            }
        }
        let report = FlushReport {
            spooled_batches: self.spool.len(),
            spooled_rows: self.spool.rows(),
        };
        self.stats
            .spooled_batches
            .store(report.spooled_batches, Ordering::Relaxed);
        self.stats
            .spooled_rows
            .store(report.spooled_rows, Ordering::Relaxed);
        export_spool(report.spooled_batches, report.spooled_rows);
        report
    }

    /// Moves everything pending to the server (spool first) or, when the
    /// server is down, to the spool. `force`: try the server now even while
    /// it is considered down.
    fn pump(&mut self, force: bool) -> FlushReport {
        if self.pending.is_empty() && self.spool.is_empty() {
            return self.report();
        }
        if let Some(down) = &mut self.down {
            if !force {
                let now = Instant::now();
                if now < down.next_probe || !self.rt.block_on(ping(&self.client)) {
                    if now >= down.next_probe {
                        down.backoff = (down.backoff * 2).min(self.config.backoff_max);
                        down.next_probe = now + down.backoff;
                    }
                    self.spool_pending();
                    return self.report();
                }
            }
        }
        if let Some(url) = &self.schema {
            match self.rt.block_on(super::migrate(url, &self.client)) {
                Ok(version) => {
                    tracing::info!(message = "ClickHouse answers; schema set up", url = %self.url, %version);
                    self.schema = None;
                }
                Err(error) => {
                    if self.down.is_none() {
                        tracing::warn!(message = "ClickHouse schema not set up yet; spooling", url = %self.url, %error);
                    }
                    self.down = Some(Down {
                        next_probe: Instant::now() + self.config.backoff_max,
                        backoff: self.config.backoff_max,
                    });
                    self.spool_pending();
                    return self.report();
                }
            }
        }
        while let Some((entry, batch)) = self.spool.oldest() {
            let batch = match batch {
                Ok(b) => b,
                Err(error) => {
                    self.reject(&error.to_string());
                    continue;
                }
            };
            match self.insert_retrying(&batch) {
                Ok(()) => {
                    if let Err(error) = self.spool.remove_oldest() {
                        // Left on disk it would be inserted again: stop here.
                        tracing::error!(
                            message = "cannot remove a replayed ClickHouse spool file; stop replaying to avoid inserting it twice",
                            path = %entry.path.display(),
                            %error,
                        );
                        self.spool_pending();
                        return self.report();
                    }
                    self.report();
                }
                Err(Failure::Unreachable(error)) => {
                    self.mark_down(&error);
                    self.spool_pending();
                    return self.report();
                }
                Err(Failure::Refused(error)) => self.reject(&error.to_string()),
            }
        }
        while let Some(batch) = self.pending.pop_front() {
            match self.insert_retrying(&batch) {
                Ok(()) => {}
                Err(Failure::Unreachable(error)) => {
                    self.pending.push_front(batch);
                    self.mark_down(&error);
                    self.spool_pending();
                    return self.report();
                }
                Err(Failure::Refused(error)) => match self.spool.push_rejected(&batch) {
                    Ok(to) => tracing::error!(
                        message = "ClickHouse refused a batch; kept aside, not retried",
                        url = %self.url,
                        path = %to.display(),
                        %error,
                    ),
                    Err(io_error) => {
                        tracing::error!(
                            message = "ClickHouse refused a batch and it cannot be kept aside; it stays in memory",
                            url = %self.url,
                            %error,
                            %io_error,
                        );
                        self.pending.push_front(batch);
                        return self.report();
                    }
                },
            }
        }
        if self.down.take().is_some() {
            tracing::info!(
                message = "ClickHouse answers again; spool replayed",
                url = %self.url,
            );
        }
        self.report()
    }

    fn mark_down(&mut self, error: &clickhouse::error::Error) {
        if self.down.is_none() {
            tracing::warn!(
                message = "ClickHouse unreachable; spooling batches to disk until it answers",
                url = %self.url,
                spool = %self.spool.dir().display(),
                %error,
            );
        }
        self.down = Some(Down {
            next_probe: Instant::now() + self.config.backoff_min,
            backoff: self.config.backoff_min,
        });
    }

    fn reject(&mut self, reason: &str) {
        match self.spool.reject_oldest() {
            Ok(Some(to)) => tracing::error!(
                message = "ClickHouse refused a batch (or it could not be read); kept aside, not retried",
                url = %self.url,
                path = %to.display(),
                reason,
            ),
            Ok(None) => {}
            Err(error) => tracing::error!(
                message = "cannot move a refused ClickHouse batch aside",
                spool = %self.spool.dir().display(),
                reason,
                %error,
            ),
        }
        self.report();
    }

    fn spool_pending(&mut self) {
        while let Some(batch) = self.pending.pop_front() {
            if let Err(error) = self.spool.push(&batch) {
                tracing::error!(
                    message = "cannot write the ClickHouse spool; rows stay in memory and are retried",
                    spool = %self.spool.dir().display(),
                    rows = batch.len(),
                    %error,
                );
                self.pending.push_front(batch);
                break;
            }
        }
        self.report();
    }

    /// Inserts one batch, retrying with backoff until the deadline.
    fn insert_retrying(&mut self, batch: &Batch) -> Result<(), Failure> {
        let started = Instant::now();
        let mut backoff = self.config.backoff_min;
        let mut attempt = 1u32;
        loop {
            let result = self.rt.block_on(insert(&self.client, batch, &self.config));
            let error = match result {
                Ok(()) => {
                    // Retries included: the time the rows took to get in.
                    metrics::histogram!("netspectra_store_write_seconds", "store" => "clickhouse")
                        .record(started.elapsed().as_secs_f64());
                    metrics::counter!("netspectra_store_inserted_rows_total", "store" => "clickhouse")
                        .increment(batch.len() as u64);
                    self.stats
                        .inserted_rows
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    self.stats.inserted_batches.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => e,
            };
            if !is_transient(&error) && self.rt.block_on(ping(&self.client)) {
                return Err(Failure::Refused(error));
            }
            if started.elapsed() + backoff > self.config.retry_deadline {
                return Err(Failure::Unreachable(error));
            }
            tracing::debug!(
                message = "ClickHouse insert failed; retrying",
                url = %self.url,
                table = batch.table(),
                attempt,
                %error,
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(self.config.backoff_max);
            attempt += 1;
        }
    }
}

/// The spool's size in the metrics (a gauge: the writer may run in any
/// role that stores to ClickHouse).
fn export_spool(batches: usize, rows: u64) {
    metrics::gauge!("netspectra_store_spool_batches").set(batches as f64);
    metrics::gauge!("netspectra_store_spool_rows").set(rows as f64);
}

/// Errors worth retrying: the network, timeouts, and server answers that
/// say "later" (too many parts, memory, too many queries, timeouts).
fn is_transient(e: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error;
    match e {
        Error::Network(_) | Error::TimedOut => true,
        Error::BadResponse(msg) => {
            const LATER: [&str; 6] = [
                "Code: 159.", // TIMEOUT_EXCEEDED
                "Code: 202.", // TOO_MANY_SIMULTANEOUS_QUERIES
                "Code: 241.", // MEMORY_LIMIT_EXCEEDED
                "Code: 252.", // TOO_MANY_PARTS
                "Code: 209.", // SOCKET_TIMEOUT
                "Code: 210.", // NETWORK_ERROR
            ];
            LATER.iter().any(|c| msg.contains(c))
        }
        _ => false,
    }
}

/// Whether the server answers a trivial query within a second.
pub(crate) async fn ping(client: &Client) -> bool {
    let q = client.query("SELECT 1").fetch_one::<u8>();
    matches!(
        tokio::time::timeout(Duration::from_secs(1), q).await,
        Ok(Ok(1))
    )
}

async fn insert(
    client: &Client,
    batch: &Batch,
    config: &WriterConfig,
) -> Result<(), clickhouse::error::Error> {
    match batch {
        Batch::Runs(rows) => write_all(client, "runs", rows, config).await,
        Batch::Tasks(rows) => write_all(client, "tasks", rows, config).await,
        Batch::ExactRows(rows) => write_all(client, "exact_rows", rows, config).await,
        Batch::SketchRows(rows) => write_all(client, "sketch_rows", rows, config).await,
        Batch::Progress(rows) => write_all(client, "bus_progress", rows, config).await,
        Batch::Alerts(rows) => write_all(client, "alerts", rows, config).await,
        Batch::AlertState(rows) => write_all(client, "alert_state", rows, config).await,
    }
}

async fn write_all<T: RowOwned + RowWrite>(
    client: &Client,
    table: &str,
    rows: &[T],
    config: &WriterConfig,
) -> Result<(), clickhouse::error::Error> {
    let mut insert = client
        .insert::<T>(table)
        .await?
        .with_timeouts(Some(config.send_timeout), Some(config.end_timeout));
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}
