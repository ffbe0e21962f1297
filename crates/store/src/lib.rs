//! Result storage.
//!
//! One logical schema (see [`schema`]) for every backend: a `runs` table
//! (which inputs, when, totals), a `tasks` table (each run's task
//! definitions) and `exact_rows`: per window, task and key, that window's
//! delta — so `sum()` over any set of windows is right and two runs never
//! overwrite each other (SQLite keeps a window's keys in compact blocks,
//! see [`block`] and [`schema`]). The embedded backend is SQLite
//! ([`SqliteStore`]); [`ClickHouseStore`] holds the same shape on a
//! ClickHouse server (mapping in [`clickhouse`]), batching, retrying and
//! spooling to disk so that an outage loses nothing.
//!
//! ```
//! use netspectra_store::StoreUrl;
//! assert!(matches!(StoreUrl::parse("sqlite:/tmp/x.db"), Ok(StoreUrl::Sqlite(_))));
//! assert!(matches!(StoreUrl::parse("results.db"), Ok(StoreUrl::Sqlite(_))));
//! assert!(matches!(StoreUrl::parse("clickhouse://u:p@h:8123/ns"), Ok(StoreUrl::ClickHouse(_))));
//! assert!(StoreUrl::parse("mysql://h/db").is_err());
//! ```

pub mod block;
pub mod clickhouse;
pub mod read;
pub mod schema;
mod sqlite;
mod url;

pub use clickhouse::{ClickHouseSink, ClickHouseStore, FlushReport};
pub use sqlite::{expand_exact_rows, RunRecord, SqliteSink, SqliteStore};
pub use url::{ClickHouseUrl, StoreUrl};

use netspectra_model::alert::AlertRecord;
use netspectra_model::task::TaskSpec;
use netspectra_model::window::WindowSink;
use serde_json::Value;

/// What every backend offers a role that writes results: runs that never
/// overwrite each other, and a sink for the engine's merged windows.
pub trait Store: Send {
    /// Records a new run and its tasks; returns the id its rows will carry.
    fn begin_run(
        &mut self,
        engine_id: &str,
        command: &str,
        inputs: &Value,
        tasks: &[TaskSpec],
        window_ns: u64,
    ) -> Result<i64, StoreError>;

    /// Marks a run finished with its outcome (`complete`, `damaged`,
    /// `failed`) and totals.
    fn finish_run(
        &mut self,
        run_id: i64,
        status: &str,
        inputs: &Value,
        packets: u64,
        bytes: u64,
        decoded: &Value,
    ) -> Result<(), StoreError>;

    /// A sink writing this run's windows, to hand to the engine.
    fn sink(&self, run_id: i64, engine_id: &str) -> Result<Box<dyn WindowSink>, StoreError>;

    /// The progress an engine's sink last stored for `consumer` with a
    /// window ([`WindowSink::window_with_progress`]), whatever the run; None
    /// when it never stored any (or the backend keeps none).
    fn load_progress(
        &self,
        _engine_id: &str,
        _consumer: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    /// `(engine_id, progress)` of every engine that stored progress for
    /// `consumer`: what an engine taking over shards from others seeds its
    /// dedupe with (each engine's state covers only the batches it applied).
    fn all_progress(&self, _consumer: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }

    /// Every run, oldest first.
    fn runs(&self) -> Result<Vec<RunRecord>, StoreError>;

    /// Marks run `run_id` replaced (`runs.status = 'replaced'`, see
    /// [`schema::REPLACED`]) and deletes its rows: a re-analysis of the same
    /// input supersedes it, so answers never count that input twice.
    /// Queries skip a replaced run at once, whatever the backend's delete
    /// takes (ClickHouse deletes in the background).
    fn replace_run(&mut self, run_id: i64) -> Result<(), StoreError>;

    /// Deletes rows whose window (or sketch period) ended more than `keep`
    /// ago (`store.retention`); returns how many rows (SQLite) or day
    /// partitions (ClickHouse) went. One process per store should do it:
    /// the engines elect one.
    fn apply_retention(&self, keep: std::time::Duration) -> Result<u64, StoreError>;

    /// Deletes the exact rows of run `run_id` in windows starting at or
    /// after `from_ns`: rows a dead engine stored without the progress that
    /// would cover them (their batches are redelivered and applied again by
    /// another engine). A store that writes rows and progress atomically
    /// (SQLite) has none, hence the default.
    fn drop_uncovered(&self, _run_id: i64, _from_ns: u64) -> Result<(), StoreError> {
        Ok(())
    }

    /// Stores alert transitions (table `alerts`; storing one twice keeps
    /// one) and, when given, the state `(alerter, JSON)` a standalone
    /// alerter goes on from after a restart or a change of leader.
    fn record_alerts(
        &mut self,
        alerts: &[AlertRecord],
        state: Option<(&str, &str)>,
    ) -> Result<(), StoreError>;

    /// The state the alerter `alerter` saved last.
    fn alert_state(&self, alerter: &str) -> Result<Option<String>, StoreError>;
}

/// Opens the store a URL names, for the writer `writer_id` (an engine id,
/// or `local`): a ClickHouse store spools to
/// `./netspectra-spool/<database>/<writer_id>`, so engines sharing a host and
/// a database never share a spool, and a restarted engine replays its own.
pub fn open(url: &StoreUrl, writer_id: &str) -> Result<Box<dyn Store>, StoreError> {
    open_spooled(
        url,
        writer_id,
        std::path::Path::new("netspectra-spool"),
        Commits::PerWindow,
    )
}

/// How a writer's windows are committed to the embedded store (ClickHouse
/// batches on its own and ignores it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commits {
    /// Each window in its own transaction, in WAL mode: readers never wait
    /// for the writer and see a window as soon as it is stored. For roles
    /// that run for days (`run`, `engine`).
    PerWindow,
    /// Windows gathered for about a second per transaction, with a rollback
    /// journal, and committed at the end of the run
    /// ([`WindowSink::when_durable`]): the file's pages are written once,
    /// where WAL writes them twice. For `analyze`, which stores a whole
    /// capture's windows as fast as it reads them; readers see its windows
    /// a second late and wait out each commit.
    Grouped,
}

/// [`open`] with the spool under `spool_root` (config `store.spool_dir`).
/// A ClickHouse server that does not answer does not stop it: rows are
/// spooled until it does ([`ClickHouseStore::open_or_defer`]).
pub fn open_spooled(
    url: &StoreUrl,
    writer_id: &str,
    spool_root: &std::path::Path,
    commits: Commits,
) -> Result<Box<dyn Store>, StoreError> {
    match url {
        StoreUrl::Sqlite(path) => Ok(Box::new(SqliteStore::open_for(path, commits)?)),
        StoreUrl::ClickHouse(url) => {
            let spool = spool_root
                .join(&url.database)
                .join(netspectra_model::safe_name(writer_id));
            Ok(Box::new(
                ClickHouseStore::open_or_defer(url)?.with_shared_spool_root(spool),
            ))
        }
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one we can open.
    #[error("invalid store URL `{url}`: {reason}")]
    BadUrl {
        /// The URL given, its password replaced by `***`.
        url: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// SQLite reported an error.
    #[error("SQLite store {path}: {error}")]
    Sqlite {
        /// The database file.
        path: String,
        /// The cause (in the message, so not also a `source`: `{:#}`
        /// would print it twice).
        error: rusqlite::Error,
    },
    /// The ClickHouse server could not be reached or refused a request.
    #[error("ClickHouse store {url}: {message}")]
    ClickHouse {
        /// The store URL, without its password.
        url: String,
        /// What failed.
        message: String,
    },
    /// There is no store to read at this path (readers never create one).
    #[error("no NetSpectra store at {path}: run `netspectra analyze` (or any role with a store) to create it, or pass --store")]
    Missing {
        /// The database file.
        path: String,
    },
    /// The file is a SQLite database but not one NetSpectra wrote (or it
    /// was altered): opening it would be guesswork.
    #[error("{path} is not a NetSpectra store: {reason}")]
    NotAStore {
        /// The database file.
        path: String,
        /// What gives it away.
        reason: String,
    },
    /// The database was written by a newer schema than this build knows.
    #[error("store {path} has schema version {found}; this build understands up to {supported}: upgrade NetSpectra or use another file")]
    NewerSchema {
        /// The database file.
        path: String,
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
}

impl StoreError {
    /// Whether the store could not be reached or was busy (asking again
    /// later can succeed), as opposed to a query or data error that will
    /// fail the same way again. The API answers the first with 503, the
    /// second with 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::ClickHouse { .. } | StoreError::Missing { .. } => true,
            StoreError::Sqlite { error, .. } => matches!(
                error.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::SystemIoFailure
                        | rusqlite::ErrorCode::OperationInterrupted
                )
            ),
            StoreError::BadUrl { .. }
            | StoreError::NotAStore { .. }
            | StoreError::NewerSchema { .. } => false,
        }
    }
}
