//! Reading the SQLite store: read-only connections from a small pool, each
//! query on tokio's blocking pool so the API's event loop never waits on disk.

use super::sql::{Param, Query};
use super::{KeyedRow, NumberRow, TaskInfo};
use crate::{RunRecord, StoreError};
use netspectra_model::alert::{AlertFilter, AlertRecord};
use netspectra_model::FlowKey;
use rusqlite::{Connection, OpenFlags, Row};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Queries running at once (each holds a connection and a blocking
/// thread); more wait their turn, so a burst of heavy questions cannot
/// occupy every thread or open unbounded connections.
const POOL_SIZE: usize = 4;

/// The running statement of a [`SqliteReader::with_conn`] call, to
/// interrupt when the caller goes away.
#[derive(Default)]
struct Running {
    handle: Option<rusqlite::InterruptHandle>,
    cancelled: bool,
}

/// Interrupts the statement (or stops it from starting) when dropped
/// before [`CancelOnDrop::done`].
#[derive(Default)]
struct CancelOnDrop(Arc<Mutex<Running>>, bool);

impl CancelOnDrop {
    fn done(mut self) {
        self.1 = true;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.1 {
            return;
        }
        let mut r = self.0.lock().unwrap_or_else(|e| e.into_inner());
        r.cancelled = true;
        if let Some(h) = r.handle.take() {
            h.interrupt();
        }
    }
}

/// A read-only view of a SQLite store file.
#[derive(Clone)]
pub(crate) struct SqliteReader {
    /// `exact_rows` holds blocks (schema version 7 on). A file no writer
    /// has upgraded yet is read with the SQL of the version-6 layout.
    blocks: Arc<std::sync::atomic::AtomicBool>,
    path: Arc<PathBuf>,
    idle: Arc<Mutex<Vec<Connection>>>,
    running: Arc<tokio::sync::Semaphore>,
}

impl SqliteReader {
    /// Opens an existing store; fails when the file is missing, is not a
    /// NetSpectra store, or was written by a newer schema.
    pub(crate) fn open(path: &Path) -> Result<SqliteReader, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.display().to_string(),
            });
        }
        let reader = SqliteReader {
            blocks: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            path: Arc::new(path.to_path_buf()),
            idle: Arc::new(Mutex::new(Vec::new())),
            running: Arc::new(tokio::sync::Semaphore::new(POOL_SIZE)),
        };
        let conn = reader.connect()?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| reader.err(e))?;
        if version == 0 {
            return Err(StoreError::Missing {
                path: path.display().to_string(),
            });
        }
        let version = crate::schema::checked_version(version).map_err(|e| e.at(path))?;
        reader.blocks.store(
            version >= crate::schema::BLOCKS_VERSION,
            std::sync::atomic::Ordering::Relaxed,
        );
        reader.put_back(conn);
        Ok(reader)
    }

    fn err(&self, error: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            error,
        }
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&*self.path, flags).map_err(|e| self.err(e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| self.err(e))?;
        conn.pragma_update(None, "query_only", true)
            .map_err(|e| self.err(e))?;
        Ok(conn)
    }

    fn put_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL_SIZE {
            idle.push(conn);
        }
    }

    /// Runs `f` on a pooled connection on the blocking pool. When the
    /// caller stops waiting (the API's request timeout dropped the future),
    /// the running statement is interrupted, so an abandoned whole-history
    /// query does not keep a connection and a blocking thread busy.
    pub(crate) async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let this = self.clone();
        let permit = self.running.clone().acquire_owned().await;
        let cancel = CancelOnDrop::default();
        let slot = cancel.0.clone();
        let out = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let taken = this.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match taken {
                Some(c) => c,
                None => this.connect()?,
            };
            {
                let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
                if s.cancelled {
                    this.put_back(conn);
                    return Err(this.err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERRUPT),
                        Some("the caller stopped waiting".into()),
                    )));
                }
                s.handle = Some(conn.get_interrupt_handle());
            }
            let out = f(&conn).map_err(|e| this.err(e));
            // No interrupt may reach the connection once it is back in the pool.
            slot.lock().unwrap_or_else(|e| e.into_inner()).handle = None;
            this.put_back(conn);
            out
        })
        .await
        .map_err(|e| StoreError::Sqlite {
            path: self.path.display().to_string(),
            error: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
        cancel.done();
        out
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        // Bounded whatever the store holds: one row at most, any row.
        self.with_conn(|c| {
            c.query_row("SELECT 1 FROM runs LIMIT 1", [], |_| Ok(()))
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(()),
                    e => Err(e),
                })
        })
        .await
    }

    /// Grows with every row inserted (rows are only ever appended) and
    /// with every run replaced (its rows are no longer read).
    pub(crate) async fn generation(&self) -> Result<u64, StoreError> {
        self.with_conn(|c| {
            c.query_row(
                "SELECT coalesce((SELECT max(rowid) FROM exact_rows), 0) + coalesce((SELECT max(rowid) FROM sketch_rows), 0) \
                 + (SELECT count(*) FROM runs WHERE status = ?1) * 1099511627776",
                [crate::schema::REPLACED],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|g| g.max(0) as u64)
    }

    pub(crate) async fn task_definitions(&self) -> Result<Vec<TaskInfo>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT name, kind, key, window_ns, run_id, algorithm FROM tasks \
                 WHERE run_id NOT IN (SELECT run_id FROM runs WHERE status = ?1)",
            )?;
            let rows = stmt.query_map([crate::schema::REPLACED], |r| {
                let key: String = r.get(2)?;
                Ok(TaskInfo {
                    name: r.get(0)?,
                    kind: r.get(1)?,
                    key: serde_json::from_str(&key).unwrap_or_default(),
                    window_ns: r.get::<_, i64>(3)? as u64,
                    run_id: r.get(4)?,
                    algorithm: Some(r.get::<_, String>(5)?).filter(|a| !a.is_empty()),
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub(crate) async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |c| crate::sqlite::read_recent_runs(c, limit))
            .await
    }

    pub(crate) async fn fetch_text(&self, q: Query) -> Result<Option<String>, StoreError> {
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&q.text)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(q.params.iter().map(bind)))?;
            rows.next()?.map(|r| r.get(0)).transpose()
        })
        .await
    }

    pub(crate) async fn fetch_numbers(&self, q: Query) -> Result<Vec<NumberRow>, StoreError> {
        self.with_conn(move |c| number_rows(c, &q)).await
    }

    pub(crate) async fn fetch_keyed(&self, q: Query) -> Result<Vec<KeyedRow>, StoreError> {
        self.with_conn(move |c| keyed_rows(c, &q)).await
    }

    /// Runs `blocks` on a store whose `exact_rows` holds blocks, else the
    /// version-6 SQL `q` through `sql` (a file no writer has upgraded yet;
    /// checked again per question until it is, as a writer may upgrade it
    /// while this reader is open).
    pub(crate) async fn exact<T: Send + 'static>(
        &self,
        q: Query,
        blocks: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        sql: fn(&Connection, &Query) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let known = self.blocks.clone();
        self.with_conn(move |c| {
            use std::sync::atomic::Ordering;
            if !known.load(Ordering::Relaxed) {
                let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                if v < crate::schema::BLOCKS_VERSION as i64 {
                    return sql(c, &q);
                }
                known.store(true, Ordering::Relaxed);
            }
            blocks(c)
        })
        .await
    }
}

impl SqliteReader {
    pub(crate) async fn alerts(&self, f: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        let f = f.clone();
        self.with_conn(move |c| {
            // A firing transition shows when its instance resolved, if it did.
            let ends = "coalesce(a.ends_at, (SELECT r.ends_at FROM alerts r WHERE r.rule = a.rule AND r.key = a.key AND r.state = 'resolved' AND r.starts_at = a.starts_at))";
            let mut sql = format!(
                "SELECT a.rule, a.task, a.key, a.metric, a.value, a.operator, a.threshold, a.severity, a.state, a.window_start, a.starts_at, {ends}, a.analysis FROM alerts a WHERE a.window_start >= ?1 AND a.window_start < ?2"
            );
            let mut params: Vec<rusqlite::types::Value> = vec![
                (f.from_ns.min(i64::MAX as u64) as i64).into(),
                (f.to_ns.unwrap_or(i64::MAX as u64).min(i64::MAX as u64) as i64).into(),
            ];
            for (column, value) in [("a.rule = ", &f.rule), ("a.state = ", &f.state)] {
                if let Some(v) = value {
                    params.push(v.clone().into());
                    sql.push_str(&format!(" AND {column}?{}", params.len()));
                }
            }
            if let Some(k) = &f.key {
                params.push(k.clone().into());
                sql.push_str(&format!(" AND instr(a.key, ?{}) > 0", params.len()));
            }
            if f.active {
                sql.push_str(&format!(" AND a.state = 'firing' AND {ends} IS NULL"));
            }
            params.push((f.limit.min(i64::MAX as usize) as i64).into());
            sql.push_str(&format!(
                " ORDER BY a.window_start DESC, a.starts_at DESC, a.rule, a.key, a.state LIMIT ?{}",
                params.len()
            ));
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
                Ok(AlertRecord {
                    rule: r.get(0)?,
                    task: r.get(1)?,
                    key: r.get(2)?,
                    metric: r.get(3)?,
                    value: r.get(4)?,
                    operator: r.get(5)?,
                    threshold: r.get(6)?,
                    severity: r.get(7)?,
                    state: r.get(8)?,
                    window_start_ns: unsigned(r, 9)?,
                    starts_at_ns: unsigned(r, 10)?,
                    ends_at_ns: r.get::<_, Option<i64>>(11)?.map(|t| t.max(0) as u64),
                    analysis: r.get(12)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}

/// The rows of a numbers query (`sql.rs`).
pub(crate) fn number_rows(c: &Connection, q: &Query) -> rusqlite::Result<Vec<NumberRow>> {
    let mut stmt = c.prepare_cached(&q.text)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(q.params.iter().map(bind)), |r| {
        Ok(NumberRow {
            t1: unsigned(r, 0)?,
            t2: unsigned(r, 1)?,
            a: unsigned(r, 2)?,
            b: unsigned(r, 3)?,
            n: unsigned(r, 4)?,
        })
    })?;
    rows.collect()
}

/// The rows of a keyed query (`sql.rs`).
pub(crate) fn keyed_rows(c: &Connection, q: &Query) -> rusqlite::Result<Vec<KeyedRow>> {
    let mut stmt = c.prepare_cached(&q.text)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(q.params.iter().map(bind)), |r| {
        Ok(KeyedRow {
            key: FlowKey {
                src_ip: address(r, 0)?,
                dst_ip: address(r, 1)?,
                src_port: r.get::<_, Option<u16>>(2)?.unwrap_or(0),
                dst_port: r.get::<_, Option<u16>>(3)?.unwrap_or(0),
                protocol: r.get::<_, Option<u8>>(4)?.unwrap_or(0),
                vlan: r.get::<_, Option<u16>>(5)?.unwrap_or(0),
            },
            a: unsigned(r, 6)?,
            b: unsigned(r, 7)?,
            t1: unsigned(r, 8)?,
            t2: unsigned(r, 9)?,
            n: unsigned(r, 10)?,
        })
    })?;
    rows.collect()
}

fn bind(p: &Param) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match p {
        Param::Int(v) => Value::Integer(*v),
        Param::Text(s) => Value::Text(s.clone()),
        Param::Ip(ip) => Value::Blob(ip.to_vec()),
    }
}

/// Counters and ns times are stored as INTEGER (i64); none is negative.
fn unsigned(r: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0).max(0) as u64)
}

/// A 16-byte address column; NULL (dimension not in the key) is zero.
fn address(r: &Row<'_>, i: usize) -> rusqlite::Result<[u8; 16]> {
    let bytes: Option<Vec<u8>> = r.get(i)?;
    Ok(bytes
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .unwrap_or_default())
}
