//! `netspectra query <op>`: a client of the HTTP query API (`netspectra api`,
//! `analyze --serve`, `run --serve`).
//!
//! Each operation is one `GET /api/v1/<op>` carrying only the flags given
//! (and `limit`, default 20, for the operations that return rows).
//! **Contract**: `--format json` prints the response body exactly as
//! received; `--format table` renders it as aligned columns. An error answer
//! prints `error: <message>` and exits 2 when the API refused the request
//! (HTTP 4xx: a bad parameter, an unknown task, a missing token), 1 when
//! no answer could be had (unreachable, HTTP 5xx). An empty answer is not a
//! refusal: `trace` with no matching row prints `no rows match` and exits 0,
//! as the other operations do.
//!
//! The table names the question's scope under the rows (which runs, which
//! windows) and, when no row matches, the range the store holds. `--since D
//! --of latest` counts back from the newest stored packet instead of the
//! clock, for captures of the past.

use crate::report::{columns, num, OutputFormat};
use crate::Outcome;
use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use netspectra_model::time::format_rfc3339_ns;
use serde_json::{Map, Value};
use std::io::Write;
use std::time::Duration;

/// Where the API is when neither `--api` nor NETSPECTRA_API says.
pub const DEFAULT_API: &str = "http://127.0.0.1:8080";
/// Environment variable holding the API's URL.
pub const API_ENV: &str = "NETSPECTRA_API";
/// Rows asked for when `--limit` is not given.
const DEFAULT_LIMIT: u64 = 20;
/// Time allowed to connect, and to get the whole answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Arguments of `netspectra query` (**contract**).
#[derive(Args)]
pub struct QueryArgs {
    /// Operation (the HTTP route `/api/v1/<op>`).
    #[arg(value_enum, value_name = "OP")]
    op: Op,
    /// API base URL (default: env NETSPECTRA_API, else http://127.0.0.1:8080).
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// Output: aligned columns, or the API's JSON answer as received.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Bearer token (default: env NETSPECTRA_API_TOKEN).
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// Task to ask about (`query tasks` lists them).
    #[arg(long, value_name = "NAME")]
    task: Option<String>,
    /// Rows wanted; 0 = all, up to the server's maximum [default: 20].
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Only windows of the last DURATION (`90s`, `15m`, `1h`, `7d`), back
    /// from now (or from the newest stored packet with `--of latest`).
    #[arg(long, value_name = "DURATION", conflicts_with = "from")]
    since: Option<String>,
    /// What `--since` counts back from: `now` (the clock, default) or
    /// `latest` (the newest packet stored, for captures of the past).
    #[arg(long, value_enum, value_name = "WHEN", requires = "since", default_value_t = Anchor::Now)]
    of: Anchor,
    /// Runs to read: a run id (`query runs`), `latest` (the newest run that
    /// defined the task) or `all` [API default: all; a re-analysis of the
    /// same input replaces its earlier run].
    #[arg(long, value_name = "ID|latest|all")]
    run: Option<String>,
    /// Only windows starting at or after T (RFC 3339, or integer ns since the epoch).
    #[arg(long, value_name = "T")]
    from: Option<String>,
    /// Only windows starting before T (RFC 3339, or integer ns since the epoch).
    #[arg(long, value_name = "T")]
    to: Option<String>,
    /// Source address or CIDR (`10.0.0.1`, `10.0.0.0/8`).
    #[arg(long, value_name = "IP")]
    src_ip: Option<String>,
    /// Destination address or CIDR.
    #[arg(long, value_name = "IP")]
    dst_ip: Option<String>,
    /// Source port.
    #[arg(long, value_name = "PORT")]
    src_port: Option<String>,
    /// Destination port.
    #[arg(long, value_name = "PORT")]
    dst_port: Option<String>,
    /// IP protocol number (6 TCP, 17 UDP).
    #[arg(long, value_name = "N")]
    protocol: Option<String>,
    /// Rank by packets or bytes (top, heavy-hitters) [API default: packets].
    #[arg(long, value_enum)]
    by: Option<By>,
    /// alerts: only this rule.
    #[arg(long, value_name = "NAME")]
    rule: Option<String>,
    /// alerts: only `firing` or `resolved` transitions.
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// alerts: only instances whose key contains this text (e.g. an address).
    #[arg(long, value_name = "TEXT")]
    key: Option<String>,
}

/// The API's operations.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Op {
    /// Tasks in the store.
    Tasks,
    /// Totals of exact tasks.
    Aggregate,
    /// Top keys of an exact task.
    Top,
    /// One flow (or part of a key) over time.
    Trace,
    /// A sketch task's heavy hitters.
    HeavyHitters,
    /// A sketch task's super-spreaders.
    SuperSpreaders,
    /// An exact task per window.
    Timeseries,
    /// Runs recorded in the store.
    Runs,
    /// Alert transitions (firing, resolved), newest first.
    Alerts,
}

impl Op {
    /// The route's last segment.
    fn path(self) -> &'static str {
        match self {
            Op::Tasks => "tasks",
            Op::Aggregate => "aggregate",
            Op::Top => "top",
            Op::Trace => "trace",
            Op::HeavyHitters => "heavy-hitters",
            Op::SuperSpreaders => "super-spreaders",
            Op::Timeseries => "timeseries",
            Op::Runs => "runs",
            Op::Alerts => "alerts",
        }
    }

    /// Whether the answer is `{"rows":[…],"truncated":…}` cut at `limit`.
    fn has_limit(self) -> bool {
        matches!(
            self,
            Op::Top | Op::HeavyHitters | Op::SuperSpreaders | Op::Timeseries | Op::Alerts
        )
    }
}

/// What `--since` counts back from.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Anchor {
    /// The clock.
    Now,
    /// The newest packet stored (of the runs asked about).
    Latest,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum By {
    Packets,
    Bytes,
}

/// The API refused the request (HTTP 4xx): `netspectra` exits 2.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl QueryArgs {
    /// The query string: only the flags given, plus the default `limit`
    /// where the operation returns rows.
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        let since = self.since.as_ref().filter(|_| self.of == Anchor::Now);
        for (name, value) in [
            ("task", &self.task),
            ("since", &since.cloned()),
            ("from", &self.from),
            ("to", &self.to),
            ("run", &self.run),
            ("src_ip", &self.src_ip),
            ("dst_ip", &self.dst_ip),
            ("src_port", &self.src_port),
            ("dst_port", &self.dst_port),
            ("protocol", &self.protocol),
            ("rule", &self.rule),
            ("state", &self.state),
            ("key", &self.key),
        ] {
            if let Some(v) = value {
                p.push((name, v.clone()));
            }
        }
        match self.limit {
            Some(n) => p.push(("limit", n.to_string())),
            None if self.op.has_limit() => p.push(("limit", DEFAULT_LIMIT.to_string())),
            None => {}
        }
        if let Some(by) = self.by {
            let by = match by {
                By::Packets => "packets",
                By::Bytes => "bytes",
            };
            p.push(("by", by.to_string()));
        }
        p
    }
}

/// Asks the API and prints its answer.
pub fn run(mut args: QueryArgs) -> anyhow::Result<Outcome> {
    if args.by.is_some() && !matches!(args.op, Op::Top | Op::HeavyHitters) {
        bail!("--by applies to top and heavy-hitters only");
    }
    if args.run.is_some() && matches!(args.op, Op::Tasks | Op::Runs) {
        bail!(
            "--run applies to the operations that read rows, not to `query tasks` or `query runs`"
        );
    }
    let given = args
        .api
        .clone()
        .or_else(|| std::env::var(API_ENV).ok().filter(|u| !u.trim().is_empty()))
        .unwrap_or_else(|| DEFAULT_API.to_string());
    let base = base_url(&given)?;
    let url = format!("{base}/api/v1/{}", args.op.path());
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var(netspectra_node::api::TOKEN_ENV).ok())
        .filter(|t| !t.is_empty());
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(ANSWER_TIMEOUT)
        .build()
        .context("cannot set up the HTTP client")?;
    let api = Api {
        client,
        base: base.clone(),
        token: token.clone(),
    };
    if args.of == Anchor::Latest {
        let since = args.since.clone().unwrap_or_default();
        let span = netspectra_model::time::parse_duration_ns(&since)
            .map_err(|e| anyhow!("--since: {e}"))?;
        let Some((_, newest)) = api.stored_range(&args)? else {
            println!(
                "no rows match: the store holds no windows{}",
                runs_note(&args)
            );
            return Ok(Outcome::Clean);
        };
        // Windows starting in (newest - span, newest]: the newest packet's
        // window and those before it within the span.
        args.to = Some((newest + 1).to_string());
        args.from = Some((newest + 1).saturating_sub(span).to_string());
    }
    let (status, body) = api.get(args.op.path(), &args.params())?;
    if !status.is_success() {
        if status.as_u16() == 404 && args.op == Op::Trace && is_not_found(&body) {
            if args.format == OutputFormat::Json {
                println!("{}", String::from_utf8_lossy(&body).trim_end());
            } else {
                print!("no rows match\n{}", scope_note(&args));
                print!("{}", api.stored_note(&args));
            }
            return Ok(Outcome::Clean);
        }
        return Err(failure(status.as_u16(), &body, &url, token.is_some()));
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        OutputFormat::Json => {
            out.write_all(&body)?;
            if !body.ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
        }
        OutputFormat::Table => {
            let mut answer: Value = serde_json::from_slice(&body).with_context(|| {
                format!("the answer from {url} is not JSON: is {base} a NetSpectra API?")
            })?;
            if matches!(args.op, Op::HeavyHitters | Op::SuperSpreaders) {
                let algorithm = match args.op {
                    Op::SuperSpreaders => Some("superspread".to_string()),
                    _ => api.algorithm(args.task.as_deref().unwrap_or_default()),
                };
                one_sided_bounds(&mut answer, algorithm.as_deref());
            }
            let text = render(args.op, &answer, args.limit.unwrap_or(DEFAULT_LIMIT))
                .with_context(|| format!("unexpected answer from {url}"))?;
            out.write_all(text.as_bytes())?;
            if !matches!(args.op, Op::Tasks | Op::Runs) {
                out.write_all(scope_note(&args).as_bytes())?;
                if is_empty(args.op, &answer) {
                    out.write_all(api.stored_note(&args).as_bytes())?;
                }
            }
        }
    }
    out.flush()?;
    Ok(Outcome::Clean)
}

/// Shows each row's `error_bound` on the side the estimate errs: Count-Min
/// over-counts (`≤ N over`), heavy-hitter buckets under-count (`≤ N
/// under`), SuperSpread either way (`± N`); unknown: the number as is.
fn one_sided_bounds(answer: &mut Value, algorithm: Option<&str>) {
    let side = |n: u64| match algorithm {
        Some("countmin") => format!("≤ {} over", num(n)),
        Some("hh") => format!("≤ {} under", num(n)),
        Some("superspread") => format!("± {}", num(n)),
        _ => num(n),
    };
    for row in answer["rows"].as_array_mut().into_iter().flatten() {
        if let Some(n) = row["error_bound"].as_u64() {
            row["error_bound"] = Value::from(side(n));
        }
    }
}

/// A connection to the API, for the question and the ones that explain it.
struct Api {
    client: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    /// The algorithm of sketch task `task` (`countmin`, `hh`,
    /// `superspread`), if the API says.
    fn algorithm(&self, task: &str) -> Option<String> {
        let (status, body) = self.get("tasks", &[]).ok()?;
        let tasks: Value = serde_json::from_slice(&body)
            .ok()
            .filter(|_| status.is_success())?;
        tasks["tasks"]
            .as_array()?
            .iter()
            .find(|t| t["name"] == task)?["algorithm"]
            .as_str()
            .map(str::to_string)
    }

    /// `GET /api/v1/<op>?<params>`: the status and the body.
    fn get(
        &self,
        op: &str,
        params: &[(&str, String)],
    ) -> anyhow::Result<(reqwest::StatusCode, Vec<u8>)> {
        let url = format!("{}/api/v1/{op}", self.base);
        let mut request = self
            .client
            .get(&url)
            .query(params)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(t) = &self.token {
            request = request.bearer_auth(t);
        }
        let response = request
            .send()
            .map_err(|e| unreachable(&self.base, &url, &e))?;
        let status = response.status();
        let body = response
            .bytes()
            .map_err(|e| anyhow!("reading the answer from {url}: {}", root_cause(&e)))?;
        Ok((status, body.to_vec()))
    }

    /// First and last packet stored by the exact tasks (of the runs asked
    /// about), whatever the time range: one `aggregate` without a range.
    /// None when nothing is stored.
    fn stored_range(&self, args: &QueryArgs) -> anyhow::Result<Option<(u64, u64)>> {
        let mut params = Vec::new();
        if let Some(run) = &args.run {
            params.push(("run", run.clone()));
        }
        let (status, body) = self.get("aggregate", &params)?;
        if !status.is_success() {
            let url = format!("{}/api/v1/aggregate", self.base);
            return Err(failure(status.as_u16(), &body, &url, self.token.is_some()));
        }
        let answer: Value = serde_json::from_slice(&body)?;
        let mut range: Option<(u64, u64)> = None;
        for s in answer["summaries"].as_array().into_iter().flatten() {
            let time = |f: &str| {
                s[f].as_str()
                    .and_then(|t| netspectra_model::time::parse_rfc3339_ns(t).ok())
            };
            if let (Some(a), Some(b)) = (time("first_seen"), time("last_seen")) {
                range = Some(range.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
            }
        }
        Ok(range)
    }

    /// For an empty answer: the range of packets the store holds, so that
    /// a range that misses it is seen at once (best effort: an error here
    /// says nothing rather than hide the answer).
    fn stored_note(&self, args: &QueryArgs) -> String {
        match self.stored_range(args) {
            Ok(Some((first, last))) => format!(
                "stored: packets from {} to {}{}\n",
                format_rfc3339_ns(first),
                format_rfc3339_ns(last),
                if args.since.is_some() && args.of == Anchor::Now {
                    " (--since counts back from now; `--of latest` counts back from the newest stored packet)"
                } else {
                    ""
                }
            ),
            Ok(None) => format!("stored: no windows{}\n", runs_note(args)),
            Err(_) => String::new(),
        }
    }
}

/// ` of run N` / ` of the latest run` when `--run` narrows the question.
fn runs_note(args: &QueryArgs) -> String {
    match args.run.as_deref().map(str::trim) {
        None | Some("all") | Some("") => String::new(),
        Some("latest") => " in the latest run".to_string(),
        Some(id) => format!(" in run {id}"),
    }
}

/// The scope line under a table: which runs and which windows were read.
fn scope_note(args: &QueryArgs) -> String {
    let runs = match args.run.as_deref().map(str::trim) {
        None | Some("all") | Some("") => "all runs (--run ID|latest narrows it)".to_string(),
        Some("latest") => "the latest run".to_string(),
        Some(id) => format!("run {id}"),
    };
    let time = |t: &str| match t.parse::<u64>() {
        Ok(ns) => format_rfc3339_ns(ns),
        Err(_) => t.to_string(),
    };
    let windows = match (&args.since, &args.from, &args.to) {
        (Some(d), Some(f), Some(t)) if args.of == Anchor::Latest => format!(
            "windows starting in [{}, {}) (the {d} up to the newest stored packet)",
            time(f),
            time(t)
        ),
        (Some(d), _, None) => format!("windows of the last {d} (starting at or after now - {d})"),
        (Some(d), _, Some(t)) => format!("windows of the last {d}, starting before {}", time(t)),
        (None, Some(f), Some(t)) => format!("windows starting in [{}, {})", time(f), time(t)),
        (None, Some(f), None) => format!("windows starting at or after {}", time(f)),
        (None, None, Some(t)) => format!("windows starting before {}", time(t)),
        (None, None, None) => "every stored window".to_string(),
    };
    format!("scope: {runs}; {windows}\n")
}

/// Whether an answer holds no row.
fn is_empty(op: Op, answer: &Value) -> bool {
    let field = if op == Op::Aggregate {
        "summaries"
    } else {
        "rows"
    };
    answer[field].as_array().is_some_and(Vec::is_empty)
        || (op == Op::Aggregate
            && answer["summaries"]
                .as_array()
                .is_some_and(|s| s.iter().all(|x| x["flow_count"] == 0)))
}

/// Whether an error answer is the API's "nothing matches" (`not_found`).
fn is_not_found(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .is_ok_and(|v| v["error"]["code"].as_str() == Some("not_found"))
}

/// The API's base URL: `http://host:port[/prefix]`, without a trailing
/// slash or `/api/v1`; a bare `host:port` gets `http://`.
pub(crate) fn base_url(given: &str) -> anyhow::Result<String> {
    let trimmed = given.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/api/v1").unwrap_or(trimmed);
    let lower = trimmed.to_ascii_lowercase();
    let url = if lower.starts_with("https://") {
        bail!(
            "`{given}`: https is not supported, this build of netspectra has no TLS; \
             use an http:// URL (the API serves plain HTTP; put a TLS proxy or an SSH tunnel in front for remote access)"
        );
    } else if lower.starts_with("http://") {
        trimmed.to_string()
    } else if trimmed.contains("://") {
        bail!("`{given}` is not an http:// URL");
    } else {
        format!("http://{trimmed}")
    };
    reqwest::Url::parse(&url).with_context(|| format!("--api `{given}` is not a URL"))?;
    Ok(url)
}

/// The innermost cause of an error (`Connection refused (os error 111)`).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Why no answer came, naming the API.
fn unreachable(base: &str, url: &str, e: &reqwest::Error) -> anyhow::Error {
    let cause = root_cause(e);
    if e.is_connect() {
        anyhow!(
            "cannot reach the NetSpectra API at {base}: {cause}; is `netspectra api` (or `analyze --serve`) running there? Set --api or {API_ENV}"
        )
    } else if e.is_timeout() {
        anyhow!("the NetSpectra API at {base} did not answer in time ({cause})")
    } else {
        anyhow!("request to {url} failed: {cause}")
    }
}

/// The error an answer carries: [`Refused`] for a 4xx, else a plain error.
pub(crate) fn failure(status: u16, body: &[u8], url: &str, sent_token: bool) -> anyhow::Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let mut message = parsed
        .as_ref()
        .and_then(|v| v["error"]["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(200).collect();
            if text.is_empty() {
                format!("HTTP {status} from {url}")
            } else {
                format!("HTTP {status} from {url}: {text}")
            }
        });
    if status == 401 {
        message.push_str(if sent_token {
            "; the token given was refused"
        } else {
            "; pass --token or set NETSPECTRA_API_TOKEN"
        });
    }
    if (400..500).contains(&status) {
        Refused(message).into()
    } else {
        anyhow!(message)
    }
}

/// Alert transitions as `at state rule key condition value severity`.
fn alerts_table(alerts: &[Value]) -> String {
    let records: Vec<netspectra_model::alert::AlertRecord> = alerts
        .iter()
        .map(netspectra_model::alert::AlertRecord::from_json)
        .collect();
    crate::alert::table(&records)
}

/// The table for an operation's answer.
fn render(op: Op, answer: &Value, limit: u64) -> anyhow::Result<String> {
    let list = |field: &str| -> anyhow::Result<&Vec<Value>> {
        answer[field]
            .as_array()
            .ok_or_else(|| anyhow!("no `{field}` list in the answer"))
    };
    let mut out = match op {
        Op::Tasks => {
            let tasks: Vec<Value> = list("tasks")?.iter().map(task_row).collect();
            if tasks.is_empty() {
                return Ok("no tasks in the store yet\n".to_string());
            }
            rows_table(&tasks, &["name", "kind", "algorithm", "key", "window"])
        }
        Op::Aggregate => {
            let rows = list("summaries")?;
            if rows.is_empty() {
                return Ok("no exact task matches\n".to_string());
            }
            rows_table(rows, &["task_name"])
        }
        Op::Trace => {
            let life = &answer["lifecycle"];
            if !life.is_object() {
                bail!("no `lifecycle` in the answer");
            }
            rows_table(std::slice::from_ref(life), &["first_seen", "last_seen"])
        }
        Op::Runs => {
            let rows = list("rows")?;
            let mut t = rows_table(
                rows,
                &["run_id", "status", "engine_id", "started_at", "finished_at"],
            );
            if rows.iter().any(|r| {
                r["run_id"]
                    .as_u64()
                    .is_some_and(|id| id >= 1_000_000_000_000_000)
            }) {
                t.push_str("run ids are ClickHouse's: each run's start time in ns since the epoch (--run takes them as shown)\n");
            }
            t
        }
        Op::Timeseries => rows_table(list("rows")?, &["window_start", "window_end"]),
        Op::Top | Op::HeavyHitters | Op::SuperSpreaders => rows_table(list("rows")?, &[]),
        Op::Alerts => alerts_table(list("alerts")?),
    };
    if op.has_limit() || op == Op::Runs {
        let rows = if op == Op::Alerts { "alerts" } else { "rows" };
        if list(rows)?.is_empty() {
            return Ok("no rows match\n".to_string());
        }
        if answer["truncated"] == Value::Bool(true) {
            out.push_str(&if limit == 0 {
                "more rows match: the answer stops at the server's maximum (--max-rows)\n"
                    .to_string()
            } else {
                format!("more rows match: --limit {limit} (0 = all, up to the server's maximum)\n")
            });
        }
    }
    Ok(out)
}

/// A task as a row: the key as `A+B`, the window in seconds.
fn task_row(t: &Value) -> Value {
    let mut row = Map::new();
    for field in ["name", "kind", "algorithm", "key"] {
        row.insert(field.into(), t[field].clone());
    }
    if let Some(ns) = t["window_ns"].as_u64() {
        row.insert(
            "window".into(),
            Value::String(format!("{} s", ns as f64 / 1e9)),
        );
    }
    row.insert("run_id".into(), t["run_id"].clone());
    Value::Object(row)
}

/// How a column is shown.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A key dimension: as is, left-aligned.
    Key,
    /// A number: thousands grouped, right-aligned.
    Number,
    /// Text, or a list of words joined by `+`.
    Text,
}

/// Rows of objects as columns: the dimensions of `key` first, then the
/// `lead` fields, then the numeric fields, then the other text fields, each
/// group in the order the fields first appear. Nested objects are left out.
fn rows_table(rows: &[Value], lead: &[&str]) -> String {
    let mut keys: Vec<String> = Vec::new();
    let mut fields: Vec<(String, Kind)> = Vec::new();
    for row in rows.iter().filter_map(Value::as_object) {
        if let Some(key) = row.get("key").and_then(Value::as_object) {
            for name in key.keys() {
                if !keys.contains(name) {
                    keys.push(name.clone());
                }
            }
        }
        for (name, v) in row {
            if (name == "key" && v.is_object()) || fields.iter().any(|(n, _)| n == name) {
                continue;
            }
            let kind = match v {
                Value::Number(_) => Kind::Number,
                Value::String(_) | Value::Bool(_) => Kind::Text,
                Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => Kind::Text,
                // Null: unknown until a row has a value; nested objects are left out.
                _ => continue,
            };
            fields.push((name.clone(), kind));
        }
    }
    let mut ordered: Vec<(String, Kind)> = keys.into_iter().map(|k| (k, Kind::Key)).collect();
    for name in lead {
        if let Some(f) = fields.iter().find(|(n, _)| n == name) {
            ordered.push(f.clone());
        } else if rows.iter().any(|r| r.get(*name).is_some()) {
            // Present but null in every row.
            ordered.push((name.to_string(), Kind::Text));
        }
    }
    for wanted in [Kind::Number, Kind::Text] {
        for f in &fields {
            if f.1 == wanted && !lead.contains(&f.0.as_str()) {
                ordered.push(f.clone());
            }
        }
    }
    let header: Vec<&str> = ordered.iter().map(|(n, _)| n.as_str()).collect();
    let right: Vec<bool> = ordered.iter().map(|(_, k)| *k == Kind::Number).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            ordered
                .iter()
                .map(|(name, kind)| {
                    let v = if *kind == Kind::Key {
                        &row["key"][name.as_str()]
                    } else {
                        &row[name.as_str()]
                    };
                    // Ids are names, not quantities: never grouped
                    // (ClickHouse's are start times in ns).
                    let kind = if name == "run_id" { Kind::Text } else { *kind };
                    cell(v, kind)
                })
                .collect()
        })
        .collect();
    columns(&header, &cells, &right)
}

fn cell(v: &Value, kind: Kind) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match (kind, n.as_u64()) {
            (Kind::Number, Some(u)) => num(u),
            _ => n.to_string(),
        },
        Value::Array(a) => a
            .iter()
            .map(|x| cell(x, Kind::Text))
            .collect::<Vec<_>>()
            .join("+"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base_urls_are_normalised_and_https_is_refused_clearly() {
        assert_eq!(
            base_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(base_url("localhost:8080").unwrap(), "http://localhost:8080");
        assert_eq!(base_url("http://h:1/api/v1").unwrap(), "http://h:1");
        assert_eq!(base_url("http://h:1/ns").unwrap(), "http://h:1/ns");
        let e = base_url("https://h:443").unwrap_err().to_string();
        assert!(e.contains("no TLS"), "{e}");
        assert!(base_url("ftp://h").is_err());
    }

    #[test]
    fn top_rows_put_key_dimensions_first_then_numbers() {
        let answer = json!({"rows": [
            {"key": {"SrcIP": "10.0.0.1", "SrcPort": 443}, "packets": 1234, "bytes": 5678901,
             "first_seen": "a", "last_seen": "b", "windows": 2},
        ], "truncated": true});
        let runs = json!({"rows": [{"run_id": 1_764_552_000_123_456_789u64, "status": "complete"}], "truncated": false});
        let text = render(Op::Runs, &runs, 20).unwrap();
        assert!(
            text.contains("1764552000123456789"),
            "ids without separators: {text}"
        );
        assert!(text.contains("start time in ns"), "{text}");
        let text = render(Op::Top, &answer, 1).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "SrcIP",
                "SrcPort",
                "packets",
                "bytes",
                "windows",
                "first_seen",
                "last_seen"
            ]
        );
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            ["10.0.0.1", "443", "1,234", "5,678,901", "2", "a", "b"]
        );
        assert!(text.contains("more rows match: --limit 1"), "{text}");
        let none = render(Op::Top, &json!({"rows": [], "truncated": false}), 20).unwrap();
        assert_eq!(none, "no rows match\n");
    }

    #[test]
    fn sketch_bounds_show_the_side_they_err_on() {
        let rows = || json!({"rows": [{"key": {"SrcIP": "10.0.0.1"}, "packets": 100, "error_bound": 1200}]});
        for (algorithm, want) in [
            (Some("countmin"), "≤ 1,200 over"),
            (Some("hh"), "≤ 1,200 under"),
            (Some("superspread"), "± 1,200"),
            (None, "1,200"),
        ] {
            let mut a = rows();
            one_sided_bounds(&mut a, algorithm);
            assert_eq!(a["rows"][0]["error_bound"], want);
            assert!(render(Op::HeavyHitters, &a, 20).unwrap().contains(want));
        }
    }

    #[test]
    fn tasks_aggregate_and_trace_render() {
        let tasks = json!({"task_names": ["a"], "tasks": [
            {"name": "a", "kind": "exact", "key": ["SrcIP", "DstIP"], "window_ns": 10_000_000_000u64, "run_id": 1}
        ]});
        let text = render(Op::Tasks, &tasks, 20).unwrap();
        assert!(
            text.contains("SrcIP+DstIP") && text.contains("10 s"),
            "{text}"
        );
        let agg = json!({"summaries": [{"task_name": "a", "total_packets": 1, "total_bytes": 2,
            "flow_count": 1, "first_seen": null, "last_seen": null}]});
        let text = render(Op::Aggregate, &agg, 20).unwrap();
        assert!(
            text.lines()
                .next()
                .unwrap()
                .trim_start()
                .starts_with("task_name"),
            "{text}"
        );
        let trace = json!({"lifecycle": {"first_seen": "x", "last_seen": "y", "total_packets": 3,
            "total_bytes": 4, "windows": 1}});
        let text = render(Op::Trace, &trace, 20).unwrap();
        assert!(
            text.contains("total_packets") && text.contains('x'),
            "{text}"
        );
    }

    #[test]
    fn a_4xx_is_refused_and_a_5xx_is_a_failure() {
        let body = br#"{"error":{"code":"bad_request","message":"src_ip: bad"}}"#;
        let e = failure(400, body, "u", false);
        assert_eq!(e.downcast_ref::<Refused>().unwrap().0, "src_ip: bad");
        let e = failure(401, b"{}", "u", false);
        assert!(e.to_string().contains("--token"), "{e}");
        let e = failure(503, b"<html>", "http://x/api/v1/top", false);
        assert!(e.downcast_ref::<Refused>().is_none());
        assert!(e.to_string().contains("HTTP 503"), "{e}");
    }
}
