//! The HTTP/JSON face (**contract**): `GET /api/v1/<operation>?<parameters>`,
//! JSON numbers as numbers, errors as `{"error":{"code","message"}}` with
//! a 4xx/5xx status, the OpenAPI document at `/api/v1/openapi.json`, and
//! `/healthz` (the process is up) and `/readyz` (the store answers).

use crate::analyst::{Analyst, AskEvent};
use crate::ask::{now_ns, parse_number, parse_since, parse_time, AskInput};
use crate::error::{bad, ApiError};
use crate::service::{Limits, QueryService};
use crate::Auth;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use netspectra_model::alert::AlertFilter;
use netspectra_store::read::Measure;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Longest URI accepted (parameters travel in the query string).
const MAX_URI_BYTES: usize = 8 * 1024;

/// The operations' routes, each answered by `GET` (the OpenAPI document
/// lists the same paths; a test holds them together).
pub const ROUTES: &[&str] = &[
    "/api/v1/health",
    "/api/v1/tasks",
    "/api/v1/aggregate",
    "/api/v1/top",
    "/api/v1/trace",
    "/api/v1/heavy-hitters",
    "/api/v1/super-spreaders",
    "/api/v1/timeseries",
    "/api/v1/runs",
    "/api/v1/alerts",
];

/// The OpenAPI 3 document served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

#[derive(Clone)]
struct AppState {
    service: Arc<QueryService>,
    auth: Auth,
    analyst: Option<Arc<dyn Analyst>>,
}

impl axum::extract::FromRef<AppState> for Arc<QueryService> {
    fn from_ref(s: &AppState) -> Arc<QueryService> {
        Arc::clone(&s.service)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::BAD_REQUEST);
        match &self {
            ApiError::Unavailable(e) => {
                tracing::warn!(message = "query failed: store unavailable", error = %e)
            }
            ApiError::Internal(e) => tracing::error!(message = "query failed", error = %e),
            ApiError::Overloaded => tracing::debug!(message = "request shed: too many in progress"),
            ApiError::Timeout(_) => tracing::warn!(message = "request abandoned: too slow"),
            _ => {}
        }
        let body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        let mut response = (status, Json(body)).into_response();
        if let Some(s) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(s));
        }
        response
    }
}

/// Every parameter any operation takes, as text; unknown names are refused
/// so a typo is an error rather than a silently ignored filter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(alias = "task_name")]
    task: Option<String>,
    from: Option<String>,
    to: Option<String>,
    since: Option<String>,
    src_ip: Option<String>,
    dst_ip: Option<String>,
    src_port: Option<String>,
    dst_port: Option<String>,
    protocol: Option<String>,
    limit: Option<String>,
    by: Option<String>,
    run: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    rule: Option<String>,
    state: Option<String>,
    key: Option<String>,
    active: Option<String>,
}

/// `Query<Params>` with our JSON error instead of axum's plain-text one.
struct Q(Params);

impl<S: Send + Sync> FromRequestParts<S> for Q {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Q, ApiError> {
        Query::<Params>::from_request_parts(parts, state)
            .await
            .map(|Query(p)| Q(p))
            .map_err(|e| bad(format!("bad query string: {}", e.body_text())))
    }
}

impl Params {
    /// `from`, or `since` counted back from now (not both).
    fn range_start(&self) -> Result<Option<u64>, ApiError> {
        let from = self
            .from
            .as_deref()
            .map(|t| parse_time("from", t))
            .transpose()?;
        match self.since.as_deref() {
            Some(_) if from.is_some() => Err(bad("give either `since` or `from`, not both")),
            Some(since) => parse_since(since, now_ns()).map(Some),
            None => Ok(from),
        }
    }

    fn ask_within(self, limits: Limits) -> Result<crate::ask::Ask, ApiError> {
        let number = |name: &str, v: &Option<String>| -> Result<Option<u64>, ApiError> {
            v.as_deref().map(|t| parse_number(name, t)).transpose()
        };
        let from_ns = self.range_start()?;
        AskInput {
            task: self.task.unwrap_or_default(),
            from_ns,
            to_ns: self
                .to
                .as_deref()
                .map(|t| parse_time("to", t))
                .transpose()?,
            src_port: number("src_port", &self.src_port)?,
            dst_port: number("dst_port", &self.dst_port)?,
            protocol: number("protocol", &self.protocol)?,
            limit: number("limit", &self.limit)?,
            src_ip: self.src_ip,
            dst_ip: self.dst_ip,
            run: self.run,
        }
        .validate(limits)
    }

    /// The alert history filter of `alerts`: time range, `rule`, `state`
    /// (`firing` or `resolved`), `key` (text the key contains), `limit`.
    fn alert_filter(&self, limits: Limits) -> Result<AlertFilter, ApiError> {
        let from_ns = self.range_start()?;
        let limit = self
            .limit
            .as_deref()
            .map(|t| parse_number("limit", t))
            .transpose()?;
        let to_ns = self
            .to
            .as_deref()
            .map(|t| parse_time("to", t))
            .transpose()?;
        let active = match self.active.as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(bad(format!("active: `{other}` is not true or false")));
            }
        };
        crate::ask::alert_filter(
            (from_ns, to_ns),
            self.rule.clone(),
            self.state.clone(),
            self.key.clone(),
            active,
            limit,
            limits,
        )
    }

    /// `by` (`packets`/`bytes`), or for heavy hitters the reference's
    /// `type` (0 = count, 1 = size).
    fn measure(&self) -> Result<Measure, ApiError> {
        let text = match (&self.by, &self.kind) {
            (Some(_), Some(_)) => return Err(bad("give either `by` or `type`, not both")),
            (Some(t), None) | (None, Some(t)) => t.as_str(),
            (None, None) => "packets",
        };
        match text.to_ascii_lowercase().as_str() {
            "packets" | "count" | "0" => Ok(Measure::Packets),
            "bytes" | "size" | "1" => Ok(Measure::Bytes),
            other => Err(bad(format!(
                "by: `{other}` is not a measure; use packets (type 0, count) or bytes (type 1, size)"
            ))),
        }
    }
}

/// Why the store is not ready, as far as this caller may know: the store's
/// own error text (paths, server messages) only with a valid token.
fn not_ready(s: &AppState, headers: &axum::http::HeaderMap, reason: String) -> ApiError {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if s.auth.authenticated(token) {
        ApiError::NotReady(format!("store unavailable: {reason}"))
    } else {
        ApiError::NotReady("store unavailable".into())
    }
}

async fn health(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    match s.service.health().await {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(reason) => not_ready(&s, &headers, reason).into_response(),
    }
}

/// Operation `op`'s answer (the JSON body of `GET /api/v1/<op>`) to the
/// parameters `p`, validated as the operation requires.
async fn answer(service: &QueryService, op: &str, p: Params) -> Result<Value, ApiError> {
    p.only_for(op)?;
    match op {
        "tasks" => json(service.tasks().await),
        "runs" => {
            let limit = p
                .limit
                .as_deref()
                .map(|t| parse_number("limit", t))
                .transpose()?;
            json(service.runs(limit).await)
        }
        "aggregate" => json(service.aggregate(&p.ask_within(service.limits())?).await),
        "top" => {
            let by = p.measure()?;
            json(service.top(&p.ask_within(service.limits())?, by).await)
        }
        "trace" => json(service.trace(&p.ask_within(service.limits())?).await),
        "heavy-hitters" => {
            let by = p.measure()?;
            json(
                service
                    .heavy_hitters(&p.ask_within(service.limits())?, by)
                    .await,
            )
        }
        "super-spreaders" => json(
            service
                .super_spreaders(&p.ask_within(service.limits())?)
                .await,
        ),
        "timeseries" => json(service.timeseries(&p.ask_within(service.limits())?).await),
        "alerts" => {
            let filter = p.alert_filter(service.limits())?;
            let (alerts, truncated) = service.alerts(&filter).await?;
            // The alert JSON (**contract**), with `truncated` as other lists have.
            let mut body = netspectra_model::alert::alerts_json(&alerts);
            body["truncated"] = truncated.into();
            Ok(body)
        }
        other => Err(ApiError::NotFound(format!("no operation `{other}`"))),
    }
}

/// An operation's answer as JSON. Encoding cannot fail: the answers are
/// plain structs whose maps have string keys.
fn json<T: serde::Serialize>(answer: Result<T, ApiError>) -> Result<Value, ApiError> {
    Ok(serde_json::to_value(answer?).unwrap_or_default())
}

/// Answers operation `op` (`top`, `heavy-hitters`, …) to a query string,
/// exactly as `GET /api/v1/<op>?<query>` would: the same validation, the
/// same JSON. The AI analyst's tools call it.
pub async fn operate(service: &QueryService, op: &str, query: &str) -> Result<Value, ApiError> {
    answer(service, op, params(query)?).await
}

/// A query string's parameters.
fn params(query: &str) -> Result<Params, ApiError> {
    let uri: axum::http::Uri = format!("/?{query}")
        .parse()
        .map_err(|e| bad(format!("bad query string: {e}")))?;
    Query::<Params>::try_from_uri(&uri)
        .map(|Query(p)| p)
        .map_err(|e| bad(format!("bad query string: {}", e.body_text())))
}

/// The `GET` handler of operation `op`.
fn operation(op: &'static str) -> axum::routing::MethodRouter<AppState> {
    get(move |State(s): State<AppState>, Q(p): Q| async move {
        answer(&s.service, op, p).await.map(Json)
    })
}

/// Longest question `POST /api/v1/ask` takes, in characters.
pub const MAX_QUESTION_CHARS: usize = 4000;

/// The body of `POST /api/v1/ask` (**contract**).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AskBody {
    question: String,
}

/// `POST /api/v1/ask` `{"question"}`: the analyst's answer as a
/// `text/event-stream` of [`AskEvent::sse`] events, ending with `done` or
/// `error`. Closing the connection abandons the answer.
async fn ask(State(s): State<AppState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let Some(analyst) = s.analyst.clone() else {
        return Err(ApiError::NotFound(
            "this server has no analyst (the `api` and `run` roles offer one)".into(),
        ));
    };
    let AskBody { question } = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("the body must be {{\"question\": \"…\"}}: {e}")))?;
    let question = question.trim().to_string();
    if question.is_empty() {
        return Err(bad("question: empty"));
    }
    if question.chars().count() > MAX_QUESTION_CHARS {
        return Err(bad(format!(
            "question: longer than {MAX_QUESTION_CHARS} characters"
        )));
    }
    let events = tokio_stream::wrappers::ReceiverStream::new(analyst.ask(question));
    let events = futures::StreamExt::map(events, |event: AskEvent| {
        let (name, data) = event.sse();
        Ok::<_, std::convert::Infallible>(Event::default().event(name).data(data.to_string()))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Each operation's parameters: whether it takes the time range and key
/// filter ([`SCOPE`]), and what else. One table for the handlers and
/// [`parse_query`].
const OPERATIONS: &[(&str, bool, &[&str])] = &[
    ("tasks", false, &[]),
    ("runs", false, &["limit"]),
    ("aggregate", true, &[]),
    ("top", true, &["limit", "by"]),
    ("trace", true, &[]),
    ("heavy-hitters", true, &["limit", "by", "type"]),
    ("super-spreaders", true, &["limit"]),
    ("timeseries", true, &["limit"]),
    (
        "alerts",
        false,
        &[
            "from", "to", "since", "rule", "state", "key", "active", "limit",
        ],
    ),
];

/// A query string as the operation `op` reads it, validated.
#[derive(Debug)]
pub struct Question {
    /// The question (operations with a scope).
    pub ask: Option<crate::ask::Ask>,
    /// `by` / `type` (top, heavy-hitters).
    pub by: Option<Measure>,
    /// `limit` as given (runs).
    pub limit: Option<u64>,
}

/// Parses and validates the query string of operation `op` (`top`,
/// `runs`, …) exactly as its handler does, without a store: the fuzz
/// target and tests use it to reach the parsing without a server.
pub fn parse_query(op: &str, query: &str, limits: Limits) -> Result<Question, ApiError> {
    let p = params(query)?;
    p.only_for(op)?;
    let by = matches!(op, "top" | "heavy-hitters")
        .then(|| p.measure())
        .transpose()?;
    let limit = p
        .limit
        .as_deref()
        .map(|t| parse_number("limit", t))
        .transpose()?;
    let scoped = OPERATIONS
        .iter()
        .any(|(name, scoped, _)| *name == op && *scoped);
    let ask = if scoped {
        Some(p.ask_within(limits)?)
    } else {
        None
    };
    Ok(Question { ask, by, limit })
}

/// Parameters of the time range and key filter, which every question takes.
const SCOPE: &[&str] = &[
    "task", "from", "to", "since", "src_ip", "dst_ip", "src_port", "dst_port", "protocol", "run",
];

impl Params {
    /// [`Params::only`] with the operation's entry of [`OPERATIONS`].
    fn only_for(&self, op: &str) -> Result<(), ApiError> {
        let Some((_, scoped, extra)) = OPERATIONS.iter().find(|(name, ..)| *name == op) else {
            return Err(ApiError::NotFound(format!("no operation `{op}`")));
        };
        self.only(op, *scoped, extra)
    }

    /// Refuses parameters the operation would ignore, so a misplaced
    /// `limit` or `by` is an error rather than a silent no-op.
    /// `scoped`: whether the operation takes [`SCOPE`]; `extra`: what else.
    fn only(&self, op: &str, scoped: bool, extra: &[&str]) -> Result<(), ApiError> {
        let given = [
            ("task", &self.task),
            ("from", &self.from),
            ("to", &self.to),
            ("since", &self.since),
            ("src_ip", &self.src_ip),
            ("dst_ip", &self.dst_ip),
            ("src_port", &self.src_port),
            ("dst_port", &self.dst_port),
            ("protocol", &self.protocol),
            ("limit", &self.limit),
            ("by", &self.by),
            ("type", &self.kind),
            ("rule", &self.rule),
            ("state", &self.state),
            ("key", &self.key),
            ("active", &self.active),
            ("run", &self.run),
        ];
        let allowed = |name: &str| (scoped && SCOPE.contains(&name)) || extra.contains(&name);
        match given.iter().find(|(name, v)| v.is_some() && !allowed(name)) {
            Some((name, _)) => Err(bad(format!("{op} does not take parameter `{name}`"))),
            None => Ok(()),
        }
    }
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    match s.service.health().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(reason) => not_ready(&s, &headers, reason).into_response(),
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn fallback(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route {} {}; operations: {}",
        req.method(),
        req.uri().path(),
        ROUTES.join(", ")
    ))
}

async fn method_not_allowed(req: Request) -> Response {
    let body = json!({"error": {"code": "method_not_allowed",
        "message": format!("{} is not allowed on {}; every operation is a GET, except POST /api/v1/ask", req.method(), req.uri().path())}});
    let allow = if req.uri().path() == "/api/v1/ask" {
        "POST"
    } else {
        "GET"
    };
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, allow)],
        Json(body),
    )
        .into_response()
}

/// Refuses over-long URIs, then checks the bearer token.
async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().to_string().len() > MAX_URI_BYTES {
        return (
            StatusCode::URI_TOO_LONG,
            Json(json!({"error": {"code": "uri_too_long", "message": format!("request URI longer than {MAX_URI_BYTES} bytes")}})),
        )
            .into_response();
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !s.auth.allows(token) {
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
}

/// Answers within [`crate::Limits`]: shed at once when too many requests
/// are in progress, abandoned after the request timeout.
async fn bounded(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match s
        .service
        .bounded(async { Ok::<_, ApiError>(next.run(req).await) })
        .await
    {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The HTTP router: operations (and the Grafana SimpleJSON face) behind
/// the token; health, the OpenAPI document and the dashboard's page open.
pub fn router(service: Arc<QueryService>, auth: Auth, analyst: Option<Arc<dyn Analyst>>) -> Router {
    let dashboard = crate::web::Features {
        token_required: auth.required(),
        alerts: ROUTES.contains(&"/api/v1/alerts"),
        analyst: analyst.is_some(),
    };
    let state = AppState {
        service,
        auth,
        analyst,
    };
    let api = Router::new()
        .route("/api/v1/tasks", operation("tasks"))
        .route("/api/v1/aggregate", operation("aggregate"))
        .route("/api/v1/top", operation("top"))
        .route("/api/v1/trace", operation("trace"))
        .route("/api/v1/heavy-hitters", operation("heavy-hitters"))
        .route("/api/v1/super-spreaders", operation("super-spreaders"))
        .route("/api/v1/timeseries", operation("timeseries"))
        .route("/api/v1/runs", operation("runs"))
        .route("/api/v1/alerts", operation("alerts"))
        .route("/api/v1/ask", post(ask))
        .merge(crate::simplejson::routes())
        // Outermost last: the token is checked before a slot is taken, so
        // unauthenticated callers cannot occupy the slots.
        .route_layer(middleware::from_fn_with_state(state.clone(), bounded))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard));
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::web::routes(dashboard))
        .merge(api)
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_parse_as_the_handlers_read_them() {
        let l = Limits::default();
        let q = parse_query("top", "task=t&by=bytes&limit=3&src_ip=10.0.0.0/8", l).unwrap();
        assert_eq!(q.by, Some(Measure::Bytes));
        assert_eq!(q.ask.unwrap().limit, 3);
        assert_eq!(parse_query("runs", "limit=5", l).unwrap().limit, Some(5));
        for (op, query) in [
            ("runs", "task=t"),
            ("top", "nope=1"),
            ("top", "limit=-1"),
            ("trace", "limit=1"),
            ("heavy-hitters", "by=x"),
            ("aggregate", "from=2024-13-01T00:00:00Z"),
            ("top", "limit=99999999999999999999999"),
            ("alerts", "task=t"),
            ("top", "rule=x"),
            ("nope", ""),
        ] {
            assert!(parse_query(op, query, l).is_err(), "{op}?{query}");
        }
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        let mut served: Vec<&str> = ROUTES.to_vec();
        served.extend(["/api/v1/openapi.json", "/api/v1/ask", "/healthz", "/readyz"]);
        documented.sort_unstable();
        served.sort_unstable();
        assert_eq!(documented, served);
        assert!(doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .all(|p| p["get"]["operationId"].is_string() || p["post"]["operationId"].is_string()));
    }
}
