//! Reading the ClickHouse store over its HTTP interface, on the caller's
//! tokio runtime. Values are bound by the client (`?` + `.bind()`), which
//! escapes them: 18.16 has no server-side query parameters.

use super::sql::{Param, Query};
use super::{KeyedRow, NumberRow, TaskInfo};
use crate::clickhouse::rows::{AlertRow, RunRow, TaskRow};
use crate::clickhouse::writer::make_client;
use crate::{ClickHouseUrl, RunRecord, StoreError};
use netspectra_model::alert::{AlertFilter, AlertRecord};
use netspectra_model::FlowKey;
use serde::Deserialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one query may take before the API gives up on it.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a read generation is trusted before asking again: a round trip
/// per question would cap cached answers at a few hundred a second, and the
/// writers batch their inserts for longer than this anyway.
const GENERATION_TTL: Duration = Duration::from_secs(1);

/// A ClickHouse store, read through one pooled HTTP client.
pub(crate) struct ClickHouseReader {
    url: ClickHouseUrl,
    client: clickhouse::Client,
    generation: Mutex<Option<(Instant, u64)>>,
}

#[derive(clickhouse::Row, Deserialize)]
struct KeyedCh {
    src_ip: [u8; 16],
    dst_ip: [u8; 16],
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    vlan: u16,
    a: u64,
    b: u64,
    t1: i64,
    t2: i64,
    n: u64,
}

#[derive(clickhouse::Row, Deserialize)]
struct NumberCh {
    t1: i64,
    t2: i64,
    a: u64,
    b: u64,
    n: u64,
}

impl ClickHouseReader {
    /// A reader for the URL; nothing is contacted until the first query, so
    /// an API can start (and report not ready) while the server is down.
    pub(crate) fn new(url: &ClickHouseUrl) -> ClickHouseReader {
        ClickHouseReader {
            url: url.clone(),
            // The server gives up too, not only the client.
            client: make_client(url, true)
                .with_setting("max_execution_time", QUERY_TIMEOUT.as_secs().to_string()),
            generation: Mutex::new(None),
        }
    }

    fn err(&self, message: String) -> StoreError {
        StoreError::ClickHouse {
            url: self.url.to_string(),
            message,
        }
    }

    fn query(&self, q: Query) -> clickhouse::query::Query {
        q.params
            .into_iter()
            .fold(self.client.query(&q.text), |query, p| match p {
                Param::Int(v) => query.bind(v),
                Param::Text(s) => query.bind(s),
                Param::Ip(ip) => query.bind(hex(&ip)),
            })
    }

    async fn fetch<T>(&self, query: clickhouse::query::Query) -> Result<Vec<T>, StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        match tokio::time::timeout(QUERY_TIMEOUT, query.fetch_all::<T>()).await {
            Ok(rows) => rows.map_err(|e| {
                let text = e.to_string();
                self.err(self.url.auth_failure(&text).unwrap_or(text))
            }),
            Err(_) => Err(self.err(format!("no answer within {QUERY_TIMEOUT:?}"))),
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.fetch::<u8>(self.client.query("SELECT 1"))
            .await
            .map(drop)
    }

    /// Changes with every insert (`runs` included: a replaced run) and
    /// every dropped partition: the active
    /// parts' row count and newest modification time (metadata only, no
    /// data read); read at most once per [`GENERATION_TTL`].
    pub(crate) async fn generation(&self) -> Result<u64, StoreError> {
        let recent = *self.generation.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, g)) = recent.filter(|(at, _)| at.elapsed() < GENERATION_TTL) {
            return Ok(g);
        }
        let q = self.client.query(
            "SELECT sum(rows), toUInt64(max(modification_time)) FROM system.parts \
             WHERE active AND database = currentDatabase() AND table IN ('exact_rows', 'sketch_rows', 'runs')",
        );
        let (rows, modified) = self
            .fetch::<(u64, u64)>(q)
            .await?
            .first()
            .copied()
            .unwrap_or_default();
        let g = rows.rotate_left(32) ^ modified;
        *self.generation.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), g));
        Ok(g)
    }

    pub(crate) async fn task_definitions(&self) -> Result<Vec<TaskInfo>, StoreError> {
        let rows: Vec<TaskRow> = self
            .fetch(
                self.client
                    .query(
                        "SELECT ?fields FROM tasks \
                         WHERE run_id NOT IN (SELECT run_id FROM runs FINAL WHERE status = ?)",
                    )
                    .bind(crate::schema::REPLACED),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|t| TaskInfo {
                name: t.name,
                kind: t.kind,
                key: serde_json::from_str(&t.key).unwrap_or_default(),
                window_ns: t.window_ns.max(0) as u64,
                run_id: t.run_id as i64,
                algorithm: Some(t.algorithm).filter(|a| !a.is_empty()),
            })
            .collect())
    }

    pub(crate) async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut rows: Vec<RunRow> = self
            .fetch(
                self.client
                    .query("SELECT ?fields FROM runs FINAL ORDER BY run_id DESC LIMIT ?")
                    .bind(limit as u64),
            )
            .await?;
        rows.reverse();
        Ok(rows.into_iter().map(RunRecord::from).collect())
    }

    pub(crate) async fn fetch_text(&self, q: Query) -> Result<Option<String>, StoreError> {
        Ok(self
            .fetch::<String>(self.query(q))
            .await?
            .into_iter()
            .next())
    }

    pub(crate) async fn fetch_numbers(&self, q: Query) -> Result<Vec<NumberRow>, StoreError> {
        let rows: Vec<NumberCh> = self.fetch(self.query(q)).await?;
        Ok(rows
            .into_iter()
            .map(|r| NumberRow {
                t1: r.t1.max(0) as u64,
                t2: r.t2.max(0) as u64,
                a: r.a,
                b: r.b,
                n: r.n,
            })
            .collect())
    }

    pub(crate) async fn fetch_keyed(&self, q: Query) -> Result<Vec<KeyedRow>, StoreError> {
        let rows: Vec<KeyedCh> = self.fetch(self.query(q)).await?;
        Ok(rows
            .into_iter()
            .map(|r| KeyedRow {
                key: FlowKey {
                    src_ip: r.src_ip,
                    dst_ip: r.dst_ip,
                    src_port: r.src_port,
                    dst_port: r.dst_port,
                    protocol: r.protocol,
                    vlan: r.vlan,
                },
                a: r.a,
                b: r.b,
                t1: r.t1.max(0) as u64,
                t2: r.t2.max(0) as u64,
                n: r.n,
            })
            .collect())
    }
}

impl ClickHouseReader {
    pub(crate) async fn alerts(&self, f: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        // A firing transition shows when its instance resolved, if it did
        // (18.16 has no correlated subqueries: a join on the instance).
        let mut sql = String::from(
            "SELECT rule, task, key, metric, value, operator, threshold, severity, state, \
             window_start, window_start_ns, starts_at_ns, \
             if(ends_at_ns = 0 AND state = 'firing', closed, ends_at_ns) AS ended, \
             analysis, recorded_at_ns \
             FROM alerts FINAL ANY LEFT JOIN \
             (SELECT rule, key, starts_at_ns, ends_at_ns AS closed FROM alerts FINAL WHERE state = 'resolved') \
             USING (rule, key, starts_at_ns) \
             WHERE window_start_ns >= ? AND window_start_ns < ?",
        );
        if f.rule.is_some() {
            sql.push_str(" AND rule = ?");
        }
        if f.state.is_some() {
            sql.push_str(" AND state = ?");
        }
        if f.key.is_some() {
            sql.push_str(" AND position(key, ?) > 0");
        }
        if f.active {
            sql.push_str(" AND state = 'firing' AND ends_at_ns = 0 AND closed = 0");
        }
        sql.push_str(" ORDER BY window_start_ns DESC, starts_at_ns DESC, rule, key, state LIMIT ?");
        let mut q = self
            .client
            .query(&sql)
            .bind(f.from_ns.min(i64::MAX as u64) as i64)
            .bind(f.to_ns.unwrap_or(i64::MAX as u64).min(i64::MAX as u64) as i64);
        for v in [&f.rule, &f.state, &f.key].into_iter().flatten() {
            q = q.bind(v.as_str());
        }
        let rows: Vec<AlertRow> = self.fetch(q.bind(f.limit as u64)).await?;
        Ok(rows.into_iter().map(AlertRow::into_record).collect())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
