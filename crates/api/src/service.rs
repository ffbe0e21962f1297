//! The operations, protocol-neutral: validate against the store's tasks,
//! ask the [`Reader`], and shape the answer. HTTP serializes these answers
//! as they are (**contract**: the JSON shapes); gRPC converts them field by
//! field into the messages of `query.proto`.

use crate::ask::Ask;
use crate::error::{bad, ApiError};
use netspectra_model::alert::{AlertFilter, AlertRecord};
use netspectra_model::time::format_rfc3339_ns;
use netspectra_model::{Dimension, FlowKey};
use netspectra_store::read::{Measure, Reader, Scope, SketchMeasure, TaskInfo};
use netspectra_store::RunRecord;
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the task list is reused before it is read again.
const CATALOG_TTL: Duration = Duration::from_secs(2);

/// How old a task list may be when it lacks the task asked for, or for the
/// `tasks` operation: new tasks show at once, yet a stream of unknown
/// names cannot make every request re-read the list.
const CATALOG_FRESH: Duration = Duration::from_millis(250);

/// How much one request, and all of them together, may take: uncached
/// whole-history questions are expensive, so the server bounds them rather
/// than let a burst exhaust the store, threads or memory.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Rows an answer may hold at most; `limit=0` means this many.
    pub max_rows: usize,
    /// Rows an answer holds when the request gives no limit.
    pub default_rows: usize,
    /// Store answers kept until the store changes (0: none).
    pub cache_entries: usize,
    /// Questions answered at once, HTTP and gRPC together; one more is
    /// refused at once with 503 + `Retry-After` (load shedding) instead of
    /// queueing behind the others.
    pub max_in_flight: usize,
    /// Longest a question may take; then it is abandoned (its SQLite
    /// statement interrupted) and answered 503 + `Retry-After`.
    pub request_timeout: Duration,
    /// HTTP connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Time a client has to send a request's head (also the idle time of a
    /// kept-alive connection): slow clients cannot hold connections.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rows: 10_000,
            default_rows: 100,
            cache_entries: netspectra_store::read::DEFAULT_CACHE_ENTRIES,
            max_in_flight: 32,
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// How long a health answer is reused: a flood of unauthenticated health
/// checks costs one store round trip per period, not one each.
const HEALTH_TTL: Duration = Duration::from_secs(1);
/// Longest a health check waits for the store.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// A task with what a client needs to ask about it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TaskView {
    /// Task name.
    pub name: String,
    /// `exact` or `sketch`.
    pub kind: String,
    /// Sketch algorithm (`countmin`, `hh`, `superspread`); absent for exact tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// Key dimensions (serialized by name: `["SrcIP"]`).
    pub key: Vec<Dimension>,
    /// Window length, ns.
    pub window_ns: u64,
    /// The run that defined the task last.
    pub run_id: i64,
}

/// `tasks`: names first, as the reference's SearchTasks, then details.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TasksAnswer {
    /// Task names.
    pub task_names: Vec<String>,
    /// Tasks in name order.
    pub tasks: Vec<TaskView>,
}

/// One exact task's totals.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Task name.
    pub task_name: String,
    /// Packets.
    pub total_packets: u64,
    /// Bytes.
    pub total_bytes: u64,
    /// Distinct keys.
    pub flow_count: u64,
    /// First packet (absent when nothing matched).
    pub first_seen: Option<Time>,
    /// Last packet.
    pub last_seen: Option<Time>,
}

/// `aggregate`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summaries {
    /// One per task.
    pub summaries: Vec<Summary>,
}

/// `trace`: sums over every matching row.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Lifecycle {
    /// First packet.
    pub first_seen: Time,
    /// Last packet.
    pub last_seen: Time,
    /// Packets.
    pub total_packets: u64,
    /// Bytes.
    pub total_bytes: u64,
    /// Distinct windows the matching rows lie in.
    pub windows: u64,
}

/// `trace` answer.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TraceAnswer {
    /// The flow's life.
    pub lifecycle: Lifecycle,
}

/// A time, ns since the epoch; JSON shows it as RFC 3339 UTC with ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Time(pub u64);

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_rfc3339_ns(self.0))
    }
}

/// A key as dimension name → value (**contract**: the `key` object of
/// `analyze --format json` rows).
pub type KeyJson = Map<String, Value>;

/// One row of `top`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FlowRow {
    /// The key.
    pub key: KeyJson,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// First packet.
    pub first_seen: Time,
    /// Last packet.
    pub last_seen: Time,
    /// Distinct windows the key appears in.
    pub windows: u64,
}

/// One row of `heavy-hitters`: `packets` or `bytes` holds the estimate.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HitterRow {
    /// The key.
    pub key: KeyJson,
    /// Estimated packets (by count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// Estimated bytes (by size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Bound on the estimate's error.
    pub error_bound: u64,
    /// Periods that reported the key.
    pub periods: u64,
}

/// One row of `super-spreaders`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SpreaderRow {
    /// The key.
    pub key: KeyJson,
    /// Estimated distinct elements.
    pub distinct: u64,
    /// Bound on the estimate's error.
    pub error_bound: u64,
    /// Periods that reported the key.
    pub periods: u64,
}

/// One row of `timeseries`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PointRow {
    /// Window start.
    pub window_start: Time,
    /// Window end.
    pub window_end: Time,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Distinct keys.
    pub keys: u64,
}

/// One row of `runs`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RunRow {
    /// Run id.
    pub run_id: i64,
    /// Engine that wrote it.
    pub engine_id: String,
    /// Command or role.
    pub command: String,
    /// `running`, `complete`, `damaged` or `failed`.
    pub status: String,
    /// Start.
    pub started_at: Time,
    /// End, once finished.
    pub finished_at: Option<Time>,
    /// Packets read.
    pub packets: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Inputs and their outcome.
    pub inputs: Value,
    /// Decode counters (what the decoder made of the packets read), once
    /// the run finished; null while it runs.
    pub decoded: Value,
}

/// A row-returning answer (**contract**: `{"rows":[…],"truncated":bool}`,
/// and `"partial":bool` for sketch answers).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Rows<T> {
    /// The rows, in the operation's order.
    pub rows: Vec<T>,
    /// Whether more rows matched than were returned.
    pub truncated: bool,
    /// Sketch answers: whether some period in range was split between
    /// engines (a shard changed owner mid-period), so estimates may be low.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<bool>,
}

impl<T> Rows<T> {
    /// Keeps `limit` rows of a fetch of `limit + 1`.
    fn cut(mut rows: Vec<T>, limit: usize) -> Rows<T> {
        let truncated = rows.len() > limit;
        rows.truncate(limit);
        Rows {
            rows,
            truncated,
            partial: None,
        }
    }

    /// Marks a sketch answer partial or not.
    fn partial(mut self, partial: bool) -> Rows<T> {
        self.partial = Some(partial);
        self
    }
}

struct Catalog {
    read_at: Instant,
    tasks: Arc<Vec<TaskView>>,
}

/// The query operations over one store.
pub struct QueryService {
    reader: Reader,
    limits: Limits,
    catalog: Mutex<Option<Catalog>>,
    in_flight: Arc<tokio::sync::Semaphore>,
    health: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

fn key_json(task: &TaskView, key: &FlowKey) -> KeyJson {
    key.render(&task.key).into_iter().collect()
}

impl QueryService {
    /// A service answering from `reader` with an answer cache of
    /// `limits.cache_entries` (what [`crate::serve`] builds).
    pub fn cached(reader: Reader, limits: Limits) -> QueryService {
        QueryService::new(reader.with_cache(limits.cache_entries), limits)
    }

    /// A service answering from `reader`.
    pub fn new(reader: Reader, limits: Limits) -> QueryService {
        QueryService {
            reader,
            limits,
            catalog: Mutex::new(None),
            in_flight: Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight.max(1))),
            health: tokio::sync::Mutex::new(None),
        }
    }

    /// A slot among [`Limits::max_in_flight`], or [`ApiError::Overloaded`]
    /// at once when all are taken; held until the answer is ready.
    pub fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Overloaded)
    }

    /// Runs one question within the limits: admitted or shed at once, and
    /// abandoned after [`Limits::request_timeout`] (dropping the future
    /// interrupts the store query).
    pub async fn bounded<T>(
        &self,
        question: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let _slot = self.admit()?;
        let limit = self.limits.request_timeout;
        tokio::time::timeout(limit, question)
            .await
            .unwrap_or(Err(ApiError::Timeout(limit)))
    }

    /// The answer-size limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// `Ok`, or why the store does not answer (for authenticated callers
    /// and the log only). One bounded ping at a time, its answer reused for
    /// [`HEALTH_TTL`]: health checks never run unbounded store queries.
    pub async fn health(&self) -> Result<(), String> {
        let mut last = self.health.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < HEALTH_TTL {
                return answer.clone();
            }
        }
        let answer = match tokio::time::timeout(HEALTH_TIMEOUT, self.reader.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", HEALTH_TIMEOUT.as_secs())),
        };
        if let Err(reason) = &answer {
            tracing::warn!(message = "store not ready", reason = %reason);
        }
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    /// The task list, read again when older than `max_age`.
    async fn load_tasks(&self, max_age: Duration) -> Result<Arc<Vec<TaskView>>, ApiError> {
        {
            let guard = self.catalog.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = guard.as_ref().filter(|c| c.read_at.elapsed() < max_age) {
                return Ok(c.tasks.clone());
            }
        }
        let mut views = Vec::new();
        for t in self.reader.tasks().await? {
            let TaskInfo {
                name,
                kind,
                key,
                window_ns,
                run_id,
                algorithm,
            } = t;
            // Runs stored before definitions held the algorithm: the one
            // of the task's newest stored estimate.
            let algorithm = match algorithm {
                Some(a) => Some(a),
                None if kind == "sketch" => self.reader.sketch_algorithm(&name).await?,
                None => None,
            };
            views.push(TaskView {
                key,
                name,
                kind,
                algorithm,
                window_ns,
                run_id,
            });
        }
        let tasks = Arc::new(views);
        *self.catalog.lock().unwrap_or_else(|e| e.into_inner()) = Some(Catalog {
            read_at: Instant::now(),
            tasks: tasks.clone(),
        });
        Ok(tasks)
    }

    /// The named task, checked to be of a kind the operation reads and to
    /// have every filtered dimension in its key.
    async fn task(&self, ask: &Ask, wanted: &[&str], op: &str) -> Result<TaskView, ApiError> {
        if ask.task.is_empty() {
            return Err(bad(format!("{op} needs a task (parameter `task`)")));
        }
        let mut tasks = self.load_tasks(CATALOG_TTL).await?;
        if !tasks.iter().any(|t| t.name == ask.task) {
            tasks = self.load_tasks(CATALOG_FRESH).await?;
        }
        let Some(task) = tasks.iter().find(|t| t.name == ask.task) else {
            let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
            return Err(bad(format!(
                "unknown task `{}`; tasks in the store: {}",
                ask.task,
                if names.is_empty() {
                    "none yet".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        // A sketch task that has stored no estimate yet has no known
        // algorithm: any sketch operation answers it (with no rows).
        let unknown_sketch =
            task.kind == "sketch" && task.algorithm.is_none() && !wanted.contains(&"exact");
        let what = task.algorithm.as_deref().unwrap_or(&task.kind);
        if !wanted.contains(&what) && !unknown_sketch {
            let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) || what == "hh" {
                "an"
            } else {
                "a"
            };
            return Err(bad(format!(
                "task `{}` is {article} {what} task; {op} reads {} tasks",
                task.name,
                wanted.join(" or ")
            )));
        }
        check_filter(task, ask)?;
        Ok(task.clone())
    }

    /// `tasks`.
    pub async fn tasks(&self) -> Result<TasksAnswer, ApiError> {
        let tasks = self.load_tasks(CATALOG_FRESH).await?;
        Ok(TasksAnswer {
            task_names: tasks.iter().map(|t| t.name.clone()).collect(),
            tasks: tasks.to_vec(),
        })
    }

    /// `aggregate`: one task, or every exact task whose key can honour the filter.
    pub async fn aggregate(&self, ask: &Ask) -> Result<Summaries, ApiError> {
        let tasks: Vec<TaskView> = if ask.task.is_empty() {
            self.load_tasks(CATALOG_FRESH)
                .await?
                .iter()
                .filter(|t| t.kind == "exact" && check_filter(t, ask).is_ok())
                .cloned()
                .collect()
        } else {
            vec![self.task(ask, &["exact"], "aggregate").await?]
        };
        let mut summaries = Vec::with_capacity(tasks.len());
        for t in tasks {
            let totals = self.reader.exact_totals(&scope(&t, ask)).await?;
            let seen = |ns: u64| (totals.keys > 0).then_some(Time(ns));
            summaries.push(Summary {
                task_name: t.name,
                total_packets: totals.packets,
                total_bytes: totals.bytes,
                flow_count: totals.keys,
                first_seen: seen(totals.first_seen),
                last_seen: seen(totals.last_seen),
            });
        }
        Ok(Summaries { summaries })
    }

    /// `top`: keys of an exact task by packets or bytes.
    pub async fn top(&self, ask: &Ask, by: Measure) -> Result<Rows<FlowRow>, ApiError> {
        let task = self.task(ask, &["exact"], "top").await?;
        let rows = self
            .reader
            .exact_top(&scope(&task, ask), by, ask.limit + 1)
            .await?;
        let rows = rows
            .into_iter()
            .map(|r| FlowRow {
                key: key_json(&task, &r.key),
                packets: r.packets,
                bytes: r.bytes,
                first_seen: Time(r.first_seen),
                last_seen: Time(r.last_seen),
                windows: r.windows,
            })
            .collect();
        Ok(Rows::cut(rows, ask.limit))
    }

    /// `trace`: one flow (or part of a key) over time.
    pub async fn trace(&self, ask: &Ask) -> Result<TraceAnswer, ApiError> {
        let task = self.task(ask, &["exact"], "trace").await?;
        if ask.filter.dimensions().is_empty() {
            return Err(bad(
                "trace needs at least one key field (src_ip, dst_ip, src_port, dst_port, protocol)",
            ));
        }
        let totals = self.reader.exact_trace(&scope(&task, ask)).await?;
        let t = totals.ok_or_else(|| {
            ApiError::NotFound(format!(
                "no row of task `{}` matches the key in this time range",
                task.name
            ))
        })?;
        Ok(TraceAnswer {
            lifecycle: Lifecycle {
                first_seen: Time(t.first_seen),
                last_seen: Time(t.last_seen),
                total_packets: t.packets,
                total_bytes: t.bytes,
                windows: t.keys,
            },
        })
    }

    /// `heavy-hitters`: a Count-Min or bucket task's estimates.
    pub async fn heavy_hitters(&self, ask: &Ask, by: Measure) -> Result<Rows<HitterRow>, ApiError> {
        let task = self.task(ask, &["countmin", "hh"], "heavy-hitters").await?;
        let measure = match by {
            Measure::Packets => SketchMeasure::Packets,
            Measure::Bytes => SketchMeasure::Bytes,
        };
        let rows = self
            .reader
            .sketch_top(&scope(&task, ask), measure, ask.limit + 1)
            .await?;
        let rows = rows
            .into_iter()
            .map(|e| HitterRow {
                key: key_json(&task, &e.key),
                packets: (by == Measure::Packets).then_some(e.estimate),
                bytes: (by == Measure::Bytes).then_some(e.estimate),
                error_bound: e.error_bound,
                periods: e.periods,
            })
            .collect();
        let partial = self.reader.sketch_partial(&scope(&task, ask)).await?;
        Ok(Rows::cut(rows, ask.limit).partial(partial))
    }

    /// `super-spreaders`: a SuperSpread task's estimates.
    pub async fn super_spreaders(&self, ask: &Ask) -> Result<Rows<SpreaderRow>, ApiError> {
        let task = self.task(ask, &["superspread"], "super-spreaders").await?;
        let rows = self
            .reader
            .sketch_top(&scope(&task, ask), SketchMeasure::Distinct, ask.limit + 1)
            .await?;
        let rows = rows
            .into_iter()
            .map(|e| SpreaderRow {
                key: key_json(&task, &e.key),
                distinct: e.estimate,
                error_bound: e.error_bound,
                periods: e.periods,
            })
            .collect();
        let partial = self.reader.sketch_partial(&scope(&task, ask)).await?;
        Ok(Rows::cut(rows, ask.limit).partial(partial))
    }

    /// `timeseries`: an exact task per window.
    pub async fn timeseries(&self, ask: &Ask) -> Result<Rows<PointRow>, ApiError> {
        let task = self.task(ask, &["exact"], "timeseries").await?;
        let rows = self
            .reader
            .exact_series(&scope(&task, ask), ask.limit + 1)
            .await?;
        let rows = rows
            .into_iter()
            .map(|p| PointRow {
                window_start: Time(p.window_start),
                window_end: Time(p.window_end),
                packets: p.packets,
                bytes: p.bytes,
                keys: p.keys,
            })
            .collect();
        Ok(Rows::cut(rows, ask.limit))
    }

    /// `runs`: the `limit` most recent runs (None: the default number of
    /// rows, 0: the maximum), oldest first; `truncated` when older ones
    /// exist.
    pub async fn runs(&self, limit: Option<u64>) -> Result<Rows<RunRow>, ApiError> {
        let limit = crate::ask::row_limit(limit, self.limits)?;
        let mut runs = self.reader.runs(limit + 1).await?;
        let truncated = runs.len() > limit;
        if truncated {
            runs.remove(0);
        }
        let rows: Vec<RunRow> = runs.into_iter().map(run_row).collect();
        Ok(Rows {
            rows,
            truncated,
            partial: None,
        })
    }
}

impl QueryService {
    /// `alerts`: stored alert transitions, newest first, and whether more
    /// match than `limit`.
    pub async fn alerts(&self, filter: &AlertFilter) -> Result<(Vec<AlertRecord>, bool), ApiError> {
        let mut wider = filter.clone();
        wider.limit = filter.limit.saturating_add(1);
        let mut found = self.reader.alerts(&wider).await?;
        let truncated = found.len() > filter.limit;
        found.truncate(filter.limit);
        Ok((found, truncated))
    }
}

fn run_row(r: RunRecord) -> RunRow {
    let ns = |v: i64| Time(v.max(0) as u64);
    RunRow {
        run_id: r.run_id,
        engine_id: r.engine_id,
        command: r.command,
        status: r.status,
        started_at: ns(r.started_at_ns),
        finished_at: r.finished_at_ns.map(ns),
        packets: r.packets.max(0) as u64,
        bytes: r.bytes.max(0) as u64,
        inputs: r.inputs,
        decoded: r.decoded,
    }
}

fn scope<'a>(task: &'a TaskView, ask: &'a Ask) -> Scope<'a> {
    Scope {
        task: &task.name,
        key: &task.key,
        range: ask.range,
        filter: &ask.filter,
        run: ask.run,
    }
}

fn check_filter(task: &TaskView, ask: &Ask) -> Result<(), ApiError> {
    match ask.filter.unsupported_by(&task.key) {
        Some(name) => {
            let key: Vec<String> = task.key.iter().map(|d| d.to_string()).collect();
            Err(bad(format!(
                "task `{}` is keyed by {}; it cannot be filtered by {name}",
                task.name,
                key.join(", ")
            )))
        }
        None => Ok(()),
    }
}
