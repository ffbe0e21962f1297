//! Reading results back: the queries behind the query API, answered the same
//! way by every backend.
//!
//! Every question is asked of one task over a [`TimeRange`] of windows (or
//! sketch periods) with a [`Filter`] on key dimensions. Rows are deltas per
//! window and per engine, so answers are sums grouped by key: they merge
//! across windows, engines and runs. Which runs a question reads is its
//! [`RunSelect`]: every run by default (live runs covering different times
//! add up; a re-analysis of the same input replaces its earlier run, which
//! is then never read, see [`crate::Store::replace_run`]), the newest run
//! that defined the task, or one run by id. The SQL is
//! written once (module `sql`) and rendered per backend; values always travel as
//! bound parameters, never spliced into the text.
//!
//! ```no_run
//! # async fn demo() -> Result<(), netspectra_store::StoreError> {
//! use netspectra_store::read::{Filter, Measure, Reader, RunSelect, Scope, TimeRange};
//! use netspectra_store::StoreUrl;
//!
//! let reader = Reader::open(&StoreUrl::parse("sqlite:netspectra.db")?)?;
//! let filter = Filter { src_ip: Some("10.0.0.0/8".parse().unwrap()), ..Filter::default() };
//! let key = [netspectra_model::Dimension::SrcIp];
//! let scope = Scope { task: "per_src_ip", key: &key, range: TimeRange::ALL, filter: &filter, run: RunSelect::All };
//! for row in reader.exact_top(&scope, Measure::Bytes, 10).await? {
//!     println!("{:?} {} packets {} bytes", row.key, row.packets, row.bytes);
//! }
//! # Ok(()) }
//! ```

mod blocks;
mod cache;
mod clickhouse;
mod sql;
mod sqlite;

use self::cache::{Cached, ResultCache};
use self::sql::Query;
use crate::{RunRecord, StoreError, StoreUrl};
use netspectra_model::alert::{AlertFilter, AlertRecord};
use netspectra_model::ip::{self, Cidr};
use netspectra_model::{Dimension, FlowKey};
use std::sync::Arc;

pub use self::cache::DEFAULT_ENTRIES as DEFAULT_CACHE_ENTRIES;
use self::clickhouse::ClickHouseReader;
use self::sqlite::SqliteReader;

/// Windows (or sketch periods) whose start lies in `[from_ns, to_ns)`.
/// Answers are window-granular: a window counts whole or not at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive lower bound, ns since the epoch.
    pub from_ns: u64,
    /// Exclusive upper bound, ns since the epoch.
    pub to_ns: u64,
}

impl TimeRange {
    /// Every window ever stored.
    pub const ALL: TimeRange = TimeRange {
        from_ns: 0,
        to_ns: i64::MAX as u64,
    };
}

/// Conditions on key dimensions; `None` leaves a dimension free. A task can
/// only be filtered on dimensions of its key (see [`Filter::unsupported_by`]);
/// on a `SrcNet/N` task an address filter matches the networks it overlaps
/// ([`Filter::for_key`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Source address or network.
    pub src_ip: Option<Cidr>,
    /// Destination address or network.
    pub dst_ip: Option<Cidr>,
    /// Source port.
    pub src_port: Option<u16>,
    /// Destination port.
    pub dst_port: Option<u16>,
    /// IP protocol number.
    pub protocol: Option<u8>,
}

impl Filter {
    /// The dimensions this filter constrains, by name, for checking them
    /// against a task's key.
    pub fn dimensions(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.src_ip.is_some() {
            out.push("SrcIP");
        }
        if self.dst_ip.is_some() {
            out.push("DstIP");
        }
        if self.src_port.is_some() {
            out.push("SrcPort");
        }
        if self.dst_port.is_some() {
            out.push("DstPort");
        }
        if self.protocol.is_some() {
            out.push("Protocol");
        }
        out
    }

    /// The filter as it applies to rows of a task keyed by `key`: on a
    /// `SrcNet/N` (`DstNet/N`) task the stored address is the network, so an
    /// address range becomes the range of the networks it overlaps (a host
    /// filter finds its /N network instead of nothing).
    pub fn for_key(&self, key: &[Dimension]) -> Filter {
        let widen = |c: Option<Cidr>, p: netspectra_model::dimension::NetPrefix| {
            c.map(|c| Cidr {
                first: ip::mask(&c.first, p.for_addr(&c.first)),
                last: ip::mask(&c.last, p.for_addr(&c.last)),
            })
        };
        let mut f = self.clone();
        for d in key {
            match *d {
                Dimension::SrcNet(p) => f.src_ip = widen(f.src_ip, p),
                Dimension::DstNet(p) => f.dst_ip = widen(f.dst_ip, p),
                _ => {}
            }
        }
        f
    }

    /// The first constrained dimension that `key` cannot answer, if any.
    pub fn unsupported_by(&self, key: &[Dimension]) -> Option<&'static str> {
        self.dimensions().into_iter().find(|name| {
            !key.iter().any(|d| {
                matches!(
                    (*name, d),
                    ("SrcIP", Dimension::SrcIp | Dimension::SrcNet(_))
                        | ("DstIP", Dimension::DstIp | Dimension::DstNet(_))
                        | ("SrcPort", Dimension::SrcPort)
                        | ("DstPort", Dimension::DstPort)
                        | ("Protocol", Dimension::Protocol)
                )
            })
        })
    }
}

/// Which runs a question reads (the API's `run` parameter). Runs that a
/// re-analysis replaced are never read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunSelect {
    /// Every run that defined the task with the question's key: their rows
    /// add up (the default).
    #[default]
    All,
    /// Only the newest such run.
    Latest,
    /// Only this run.
    Id(i64),
}

impl RunSelect {
    /// Parses `all`, `latest` or a run id.
    pub fn parse(text: &str) -> Result<RunSelect, String> {
        match text.trim() {
            "" | "all" => Ok(RunSelect::All),
            "latest" => Ok(RunSelect::Latest),
            t => t
                .parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .map(RunSelect::Id)
                .ok_or_else(|| format!("`{t}` is not a run id, `latest` or `all`")),
        }
    }
}

impl std::fmt::Display for RunSelect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunSelect::All => f.write_str("all"),
            RunSelect::Latest => f.write_str("latest"),
            RunSelect::Id(id) => write!(f, "{id}"),
        }
    }
}

/// One question's subject: a task, a time range, a filter and the runs.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// Task name.
    pub task: &'a str,
    /// The task's key as the question understands it: only runs that
    /// defined the task with this key are read, so rows of an older
    /// definition (another key under the same name) never mix in.
    pub key: &'a [Dimension],
    /// Which windows.
    pub range: TimeRange,
    /// Which keys.
    pub filter: &'a Filter,
    /// Which runs.
    pub run: RunSelect,
}

/// What exact top keys are ranked by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Packet count.
    Packets,
    /// Byte count.
    Bytes,
}

/// Which estimates of a sketch task to read (the `measure` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SketchMeasure {
    /// Heavy hitters by packets.
    Packets,
    /// Heavy hitters by bytes.
    Bytes,
    /// Super-spreaders by distinct elements.
    Distinct,
}

impl SketchMeasure {
    /// The value stored in `sketch_rows.measure`.
    pub fn name(self) -> &'static str {
        match self {
            SketchMeasure::Packets => "packets",
            SketchMeasure::Bytes => "bytes",
            SketchMeasure::Distinct => "distinct",
        }
    }
}

/// A task as its most recent run defined it.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskInfo {
    /// Task name (unique in a store: a newer run's definition wins).
    pub name: String,
    /// `exact` or `sketch`.
    pub kind: String,
    /// Key dimensions.
    pub key: Vec<Dimension>,
    /// Window (exact) length in ns.
    pub window_ns: u64,
    /// Run that defined it last.
    pub run_id: i64,
    /// Sketch algorithm as the run defined it (None: an exact task, or a
    /// run stored before definitions held it).
    pub algorithm: Option<String>,
}

/// One key's sums over the windows of a question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyTotals {
    /// The key (dimensions outside the task's key are zero).
    pub key: FlowKey,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// First packet, ns.
    pub first_seen: u64,
    /// Last packet, ns.
    pub last_seen: u64,
    /// Distinct windows the key appears in (whatever the engines and runs).
    pub windows: u64,
}

/// Sums over every key of a question.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Distinct keys.
    pub keys: u64,
    /// First packet, ns (0 when nothing matched).
    pub first_seen: u64,
    /// Last packet, ns (0 when nothing matched).
    pub last_seen: u64,
}

impl From<&NumberRow> for Totals {
    /// The unkeyed queries select first seen, last seen, packets, bytes and
    /// a count (keys, or matching rows for a trace).
    fn from(n: &NumberRow) -> Totals {
        Totals {
            first_seen: n.t1,
            last_seen: n.t2,
            packets: n.a,
            bytes: n.b,
            keys: n.n,
        }
    }
}

/// One window of a time series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesPoint {
    /// Window start, ns.
    pub window_start: u64,
    /// Window end, ns.
    pub window_end: u64,
    /// Packets in the window.
    pub packets: u64,
    /// Bytes in the window.
    pub bytes: u64,
    /// Distinct keys in the window.
    pub keys: u64,
}

/// One key's sketch estimate over the periods of a question: packet and
/// byte estimates (and their error bounds) add up across periods and
/// engines; a distinct count is the largest any period reported, because
/// distinct sets overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SketchEstimate {
    /// The key.
    pub key: FlowKey,
    /// Estimated packets, bytes or distinct elements.
    pub estimate: u64,
    /// Bound on the estimate's error (same combination as the estimate).
    pub error_bound: u64,
    /// Periods (per engine) that reported the key.
    pub periods: u64,
    /// Start of the first such period, ns.
    pub first_period: u64,
    /// End of the last such period, ns.
    pub last_period: u64,
}

/// A read-only connection to a store, for the query API, with a cache of
/// answers that lasts until the store changes (module `cache`).
pub struct Reader {
    backend: Backend,
    cache: ResultCache,
}

enum Backend {
    Sqlite(SqliteReader),
    ClickHouse(Box<ClickHouseReader>),
}

macro_rules! dispatch {
    ($self:ident, $r:ident => $e:expr) => {
        match &$self.backend {
            Backend::Sqlite($r) => $e,
            Backend::ClickHouse($r) => $e,
        }
    };
}

impl Reader {
    /// Opens the store a URL names, without creating or changing anything:
    /// a SQLite file must exist (a writer creates it).
    pub fn open(url: &StoreUrl) -> Result<Reader, StoreError> {
        let backend = match url {
            StoreUrl::Sqlite(path) => Backend::Sqlite(SqliteReader::open(path)?),
            StoreUrl::ClickHouse(url) => Backend::ClickHouse(Box::new(ClickHouseReader::new(url))),
        };
        Ok(Reader {
            backend,
            cache: ResultCache::new(cache::DEFAULT_ENTRIES),
        })
    }

    /// Keeps at most `entries` answers (0: ask the store every time).
    pub fn with_cache(mut self, entries: usize) -> Reader {
        self.cache = ResultCache::new(entries);
        self
    }

    /// The store's generation (grows with every insert), when caching.
    async fn generation(&self) -> Result<Option<u64>, StoreError> {
        if !self.cache.enabled() {
            return Ok(None);
        }
        dispatch!(self, r => r.generation().await).map(Some)
    }

    /// Runs a query through the cache: `wrap`/`unwrap` move its rows in
    /// and out of a [`Cached`] of the right kind.
    async fn cached<T: Clone>(
        &self,
        q: Query,
        fetch: impl AsyncFnOnce(Query) -> Result<T, StoreError>,
        wrap: fn(T) -> Cached,
        unwrap: fn(Cached) -> Option<T>,
    ) -> Result<T, StoreError> {
        let Some(generation) = self.generation().await? else {
            return fetch(q).await;
        };
        let key = ResultCache::key(&q);
        if let Some(hit) = self.cache.get(generation, &key).and_then(unwrap) {
            return Ok(hit);
        }
        let value = fetch(q).await?;
        self.cache.put(generation, key, wrap(value.clone()));
        Ok(value)
    }

    async fn keyed(&self, q: Query) -> Result<Vec<KeyedRow>, StoreError> {
        self.cached(
            q,
            async |q| dispatch!(self, r => r.fetch_keyed(q).await),
            |v| Cached::Keyed(Arc::new(v)),
            |c| match c {
                Cached::Keyed(v) => Some(v.to_vec()),
                _ => None,
            },
        )
        .await
    }

    async fn numbers(&self, q: Query) -> Result<Vec<NumberRow>, StoreError> {
        self.cached(
            q,
            async |q| dispatch!(self, r => r.fetch_numbers(q).await),
            |v| Cached::Numbers(Arc::new(v)),
            |c| match c {
                Cached::Numbers(v) => Some(v.to_vec()),
                _ => None,
            },
        )
        .await
    }

    /// Like [`Reader::keyed`], but SQLite answers with `sqlite` (a scan of
    /// its blocks, module `blocks`); `q` still keys the cache.
    async fn keyed_or(
        &self,
        q: Query,
        sqlite: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<Vec<KeyedRow>> + Send + 'static,
    ) -> Result<Vec<KeyedRow>, StoreError> {
        let Backend::Sqlite(r) = &self.backend else {
            return self.keyed(q).await;
        };
        self.cached(
            q,
            async |q| r.exact(q, sqlite, sqlite::keyed_rows).await,
            |v| Cached::Keyed(Arc::new(v)),
            |c| match c {
                Cached::Keyed(v) => Some(v.to_vec()),
                _ => None,
            },
        )
        .await
    }

    /// Like [`Reader::numbers`], with SQLite answering through `sqlite`.
    async fn numbers_or(
        &self,
        q: Query,
        sqlite: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<Vec<NumberRow>> + Send + 'static,
    ) -> Result<Vec<NumberRow>, StoreError> {
        let Backend::Sqlite(r) = &self.backend else {
            return self.numbers(q).await;
        };
        self.cached(
            q,
            async |q| r.exact(q, sqlite, sqlite::number_rows).await,
            |v| Cached::Numbers(Arc::new(v)),
            |c| match c {
                Cached::Numbers(v) => Some(v.to_vec()),
                _ => None,
            },
        )
        .await
    }

    /// Whether the store answers (for readiness checks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, r => r.ping().await)
    }

    /// Every task, as the most recent run that has it defined it, by name.
    pub async fn tasks(&self) -> Result<Vec<TaskInfo>, StoreError> {
        let mut defs = dispatch!(self, r => r.task_definitions().await)?;
        defs.sort_by(|a, b| a.name.cmp(&b.name).then(b.run_id.cmp(&a.run_id)));
        defs.dedup_by(|later, first| later.name == first.name);
        Ok(defs)
    }

    /// The `limit` most recent runs, oldest first.
    pub async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        dispatch!(self, r => r.runs(limit).await)
    }

    /// The algorithm (`countmin`, `hh`, `superspread`) of a sketch task's
    /// stored estimates, or None when it has stored none.
    pub async fn sketch_algorithm(&self, task: &str) -> Result<Option<String>, StoreError> {
        let q = sql::sketch_algorithm(self.dialect(), task);
        self.cached(
            q,
            async |q| dispatch!(self, r => r.fetch_text(q).await),
            Cached::Text,
            |c| match c {
                Cached::Text(v) => Some(v),
                _ => None,
            },
        )
        .await
    }

    /// Sums over every matching key of an exact task.
    pub async fn exact_totals(&self, scope: &Scope<'_>) -> Result<Totals, StoreError> {
        let q = sql::exact_totals(self.dialect(), scope);
        let (blocks, filter) = (sql::exact_blocks(scope), scope.filter.for_key(scope.key));
        let row = self
            .numbers_or(q, move |c| Ok(vec![blocks::totals(c, &blocks, &filter)?]))
            .await?;
        Ok(row.first().map_or(Totals::default(), Totals::from))
    }

    /// The `limit` keys with most packets or bytes; ties in key order.
    pub async fn exact_top(
        &self,
        scope: &Scope<'_>,
        by: Measure,
        limit: usize,
    ) -> Result<Vec<KeyTotals>, StoreError> {
        let q = sql::exact_top(self.dialect(), scope, by, limit);
        let (blocks, filter) = (sql::exact_blocks(scope), scope.filter.for_key(scope.key));
        Ok(self
            .keyed_or(q, move |c| blocks::top(c, &blocks, &filter, by, limit))
            .await?
            .into_iter()
            .map(KeyTotals::from)
            .collect())
    }

    /// Sums over every row matching the filter (a whole key, or a part of
    /// one), or None when nothing matches.
    pub async fn exact_trace(&self, scope: &Scope<'_>) -> Result<Option<Totals>, StoreError> {
        let q = sql::exact_trace(self.dialect(), scope);
        let (blocks, filter) = (sql::exact_blocks(scope), scope.filter.for_key(scope.key));
        let row = self
            .numbers_or(q, move |c| Ok(vec![blocks::trace(c, &blocks, &filter)?]))
            .await?;
        Ok(row.first().filter(|n| n.n > 0).map(Totals::from))
    }

    /// Packets, bytes and keys per window, oldest first, at most `limit`.
    pub async fn exact_series(
        &self,
        scope: &Scope<'_>,
        limit: usize,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let q = sql::exact_series(self.dialect(), scope, limit);
        let (blocks, filter) = (sql::exact_blocks(scope), scope.filter.for_key(scope.key));
        let rows = self
            .numbers_or(q, move |c| blocks::series(c, &blocks, &filter, limit))
            .await?;
        Ok(rows
            .into_iter()
            .map(|n| SeriesPoint {
                window_start: n.t1,
                window_end: n.t2,
                packets: n.a,
                bytes: n.b,
                keys: n.n,
            })
            .collect())
    }

    /// A sketch task's estimates of one measure, largest first, at most `limit`.
    pub async fn sketch_top(
        &self,
        scope: &Scope<'_>,
        measure: SketchMeasure,
        limit: usize,
    ) -> Result<Vec<SketchEstimate>, StoreError> {
        let q = sql::sketch_top(self.dialect(), scope, measure, limit);
        let rows = self.keyed(q).await?;
        Ok(rows
            .into_iter()
            .map(|k| SketchEstimate {
                key: k.key,
                estimate: k.a,
                error_bound: k.b,
                first_period: k.t1,
                last_period: k.t2,
                periods: k.n,
            })
            .collect())
    }

    /// Whether some of the sketch rows in scope are partial: a shard
    /// changed owner during their period, so estimates may be low.
    pub async fn sketch_partial(&self, scope: &Scope<'_>) -> Result<bool, StoreError> {
        let q = sql::sketch_partial(self.dialect(), scope);
        Ok(self.numbers(q).await?.first().is_some_and(|r| r.n > 0))
    }

    /// Keys of an exact task whose packets (or bytes) lie in `[lo, hi]`
    /// (`None`: open), largest first, at most `limit`.
    pub async fn exact_in_range(
        &self,
        scope: &Scope<'_>,
        by: Measure,
        lo: Option<u64>,
        hi: Option<u64>,
        limit: usize,
    ) -> Result<Vec<KeyTotals>, StoreError> {
        let q = sql::exact_in_range(self.dialect(), scope, by, lo, hi, limit);
        let (blocks, filter) = (sql::exact_blocks(scope), scope.filter.for_key(scope.key));
        Ok(self
            .keyed_or(q, move |c| {
                blocks::in_range(c, &blocks, &filter, by, lo, hi, limit)
            })
            .await?
            .into_iter()
            .map(KeyTotals::from)
            .collect())
    }

    /// A sketch task's stored periods, oldest first: `(start, end,
    /// partial)`, at most `limit`.
    pub async fn sketch_periods(
        &self,
        scope: &Scope<'_>,
        limit: usize,
    ) -> Result<Vec<(u64, u64, bool)>, StoreError> {
        let q = sql::sketch_periods(self.dialect(), scope, limit);
        let rows = self.numbers(q).await?;
        Ok(rows.into_iter().map(|n| (n.t1, n.t2, n.n > 0)).collect())
    }

    /// Per engine that stored a window or period starting at or after
    /// `from_ns`: the end of its newest one. An alerter treats a window as
    /// closed once every such engine has moved past it.
    pub async fn watermarks(&self, from_ns: u64) -> Result<Vec<u64>, StoreError> {
        let q = sql::watermarks(self.dialect(), from_ns);
        let rows = self.numbers(q).await?;
        Ok(rows.into_iter().map(|n| n.t2).collect())
    }

    /// Stored alert transitions matching `filter`, newest first.
    pub async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        dispatch!(self, r => r.alerts(filter).await)
    }

    fn dialect(&self) -> sql::Dialect {
        match self.backend {
            Backend::Sqlite(_) => sql::Dialect::Sqlite,
            Backend::ClickHouse(_) => sql::Dialect::ClickHouse,
        }
    }
}

/// A result row with a key: the shape every keyed query selects.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyedRow {
    pub(crate) key: FlowKey,
    pub(crate) a: u64,
    pub(crate) b: u64,
    pub(crate) t1: u64,
    pub(crate) t2: u64,
    pub(crate) n: u64,
}

impl From<KeyedRow> for KeyTotals {
    /// The exact keyed queries select packets, bytes, first seen, last
    /// seen and windows.
    fn from(k: KeyedRow) -> KeyTotals {
        KeyTotals {
            key: k.key,
            packets: k.a,
            bytes: k.b,
            first_seen: k.t1,
            last_seen: k.t2,
            windows: k.n,
        }
    }
}

/// A result row of numbers: the shape every unkeyed query selects.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NumberRow {
    pub(crate) t1: u64,
    pub(crate) t2: u64,
    pub(crate) a: u64,
    pub(crate) b: u64,
    pub(crate) n: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_tasks_match_the_networks_an_address_filter_overlaps() {
        let host = Filter {
            src_ip: Some("10.1.2.3".parse().unwrap()),
            dst_ip: Some("10.9.0.0/16".parse().unwrap()),
            ..Filter::default()
        };
        use netspectra_model::dimension::NetPrefix;
        let on_nets = host.for_key(&[
            Dimension::SrcNet(NetPrefix::both(24)),
            Dimension::DstNet(NetPrefix::per_family(8, 64)),
        ]);
        let src = on_nets.src_ip.unwrap();
        assert_eq!(
            (ip::to_string(&src.first), ip::to_string(&src.last)),
            ("10.1.2.0".into(), "10.1.2.0".into())
        );
        let dst = on_nets.dst_ip.unwrap();
        assert_eq!(
            (ip::to_string(&dst.first), ip::to_string(&dst.last)),
            ("10.0.0.0".into(), "10.0.0.0".into())
        );
        assert_eq!(host.for_key(&[Dimension::SrcIp, Dimension::DstIp]), host);
    }
}
