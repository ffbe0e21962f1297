//! Health and Prometheus metrics for the long-running roles (`--metrics ADDR`).
//!
//! The `metrics` facade's macros record into a global
//! [`PrometheusRecorder`](metrics_exporter_prometheus::PrometheusRecorder)
//! (a no-op until [`serve`] installs it). A real HTTP/1.1 server (hyper,
//! through [`netspectra_api::listen::serve_http`], the query API's) on a
//! thread of its own serves three routes:
//!
//! - `GET /metrics`: the Prometheus text format;
//! - `GET /healthz`: `200 ok` while the process runs;
//! - `GET /readyz`: `200 ready` once [`Telemetry::set_ready`] said so
//!   and the NATS connection watched by [`Telemetry::watch_bus`] is up,
//!   else `503` and the reason.
//!
//! The NATS connection's state is read when a request comes, not copied
//! by the role's loop: a loop waiting on a request to a dead server (up to
//! the client's request timeout) must not leave `/readyz` saying `ready`.
//!
//! Other paths are `404`, other methods `405`. Slow clients cannot hold
//! the endpoint: a client has [`HEAD_TIMEOUT`] to send its request head
//! (and a kept-alive connection is closed after as long idle), at most
//! [`MAX_CONNECTIONS`] are open at once, and none lives past [`MAX_AGE`].

use crate::error::{Context, NodeError};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use netspectra_api::listen::{serve_http, HttpBounds};
use netspectra_bus::BusCounters;
use netspectra_model::redact::Redacted;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Buckets (seconds) of the latency histograms (`*_seconds`).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Connections open at once at most (more are closed at once). Enough for
/// several scrapers and probes; slow ones are dropped after [`HEAD_TIMEOUT`].
const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request head; also the longest a
/// kept-alive connection may sit idle.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer (a scrape takes milliseconds).
const MAX_AGE: Duration = Duration::from_secs(60);

/// The state the HTTP server answers from.
struct State {
    handle: PrometheusHandle,
    /// `Ok(())` when ready, else why not.
    ready: Mutex<Result<(), String>>,
    /// The role's NATS connection, once it has one.
    bus: OnceLock<BusWatch>,
}

/// A NATS connection whose state `/readyz` and `/metrics` read at each request.
struct BusWatch {
    counters: Arc<BusCounters>,
    /// Why not ready while it is down (the URL without its password:
    /// `/readyz` answers anyone).
    down: String,
}

impl BusWatch {
    /// Copies the connection's counters into the metrics.
    fn export(&self) {
        let (connects, disconnects, slow) = self.counters.snapshot();
        mirror("netspectra_nats_connects_total", connects);
        mirror("netspectra_nats_disconnects_total", disconnects);
        mirror("netspectra_nats_slow_consumer_events_total", slow);
        metrics::gauge!("netspectra_nats_connected")
            .set(f64::from(u8::from(self.counters.connected())));
    }
}

/// The metrics endpoint of a role, or nothing (`--metrics` not given):
/// every method is then a no-op.
#[derive(Clone, Default)]
pub struct Telemetry {
    state: Option<Arc<State>>,
}

impl Telemetry {
    /// No endpoint.
    pub fn off() -> Telemetry {
        Telemetry::default()
    }

    /// Sets what `/readyz` answers: ready, or not ready because of `reason`.
    pub fn set_ready(&self, ready: bool, reason: &str) {
        if let Some(s) = &self.state {
            let mut r = s.ready.lock().unwrap_or_else(|e| e.into_inner());
            *r = if ready {
                Ok(())
            } else {
                Err(reason.to_string())
            };
        }
    }

    /// Makes `/readyz` answer `503` while the NATS connection counted by
    /// `counters` is down, and `/metrics` show its counters. Once per role.
    pub(crate) fn watch_bus(&self, counters: Arc<BusCounters>, url: &str) {
        if let Some(s) = &self.state {
            let watch = BusWatch {
                counters,
                down: format!("not connected to NATS at {}", Redacted(url)),
            };
            watch.export();
            let _ = s.bus.set(watch);
        }
    }
}

/// `--metrics ADDR` when given, else [`Telemetry::off`].
pub fn from_arg(addr: Option<&str>) -> Result<Telemetry, NodeError> {
    match addr {
        Some(a) => serve(a),
        None => Ok(Telemetry::off()),
    }
}

/// Binds `addr` (`host:port`), installs the global Prometheus recorder and
/// serves `/metrics`, `/healthz` and `/readyz` from a background thread.
/// Not ready until [`Telemetry::set_ready`] says so.
pub fn serve(addr: &str) -> Result<Telemetry, NodeError> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .context(format!("--metrics `{addr}` is not a host:port address"))?
        .collect();
    let listener =
        TcpListener::bind(&addrs[..]).context(format!("cannot serve metrics on {addr}"))?;
    let local = listener
        .local_addr()
        .context(format!("cannot serve metrics on {addr}"))?;
    listener
        .set_nonblocking(true)
        .context(format!("cannot serve metrics on {addr}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the metrics runtime")?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .context("metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let state = Arc::new(State {
        handle,
        ready: Mutex::new(Err("starting".into())),
        bus: OnceLock::new(),
    });
    let app = router(Arc::clone(&state));
    std::thread::Builder::new()
        .name("ns-metrics".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(message = "cannot serve metrics", error = %e);
                        return;
                    }
                };
                let bounds = HttpBounds {
                    max_connections: MAX_CONNECTIONS,
                    header_timeout: HEAD_TIMEOUT,
                    max_age: MAX_AGE,
                    grace: Duration::from_secs(1),
                };
                // Serves for the life of the process.
                if let Err(e) = serve_http(listener, app, bounds, std::future::pending()).await {
                    tracing::warn!(message = "metrics server failed", error = %e);
                }
            })
        })
        .context("cannot start the metrics thread")?;
    describe();
    tracing::info!(message = "serving metrics", addr = %local);
    Ok(Telemetry { state: Some(state) })
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// The three routes; anything else 404, other methods 405.
fn router(state: Arc<State>) -> Router {
    let metrics = {
        let state = Arc::clone(&state);
        move || async move {
            if let Some(bus) = state.bus.get() {
                bus.export();
            }
            state.handle.run_upkeep();
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                state.handle.render(),
            )
                .into_response()
        }
    };
    let readyz = move || async move {
        let ready = state
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .and_then(|()| match state.bus.get() {
                Some(bus) if !bus.counters.connected() => Err(bus.down.clone()),
                _ => Ok(()),
            });
        match ready {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        }
    };
    Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/healthz",
            get(|| async { text(StatusCode::OK, "ok\n".into()) }),
        )
        .route("/readyz", get(readyz))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found\n".into()) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "GET"), (header::CONTENT_TYPE, "text/plain")],
                "method not allowed\n",
            )
                .into_response()
        })
}

/// The `# HELP` lines (the README's table lists the same metrics).
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    for (name, help) in [
        (
            "netspectra_capture_packets_total",
            "Packets read from the capture (live or files).",
        ),
        (
            "netspectra_capture_bytes_total",
            "Bytes on the wire of the packets read from the capture.",
        ),
        (
            "netspectra_capture_kernel_dropped_total",
            "Packets the kernel dropped because the capture buffer was full.",
        ),
        (
            "netspectra_capture_if_dropped_total",
            "Packets the interface or its driver dropped.",
        ),
        (
            "netspectra_probe_batches_total",
            "Batches handed to the NATS publisher.",
        ),
        (
            "netspectra_probe_packets_total",
            "Packets in the batches handed to the NATS publisher.",
        ),
        (
            "netspectra_engine_packets_total",
            "Packets applied to the engine.",
        ),
        (
            "netspectra_engine_bytes_total",
            "Bytes on the wire of the packets applied to the engine.",
        ),
        (
            "netspectra_engine_batches_total",
            "Batches applied (duplicates excluded).",
        ),
        (
            "netspectra_engine_duplicate_batches_total",
            "Batches skipped as already applied (JetStream redeliveries).",
        ),
        (
            "netspectra_engine_bad_messages_total",
            "Messages that could not be decoded.",
        ),
        (
            "netspectra_engine_windows_total",
            "Windows written to the store by the engine role.",
        ),
        (
            "netspectra_nats_connects_total",
            "Connections to NATS, the first one included.",
        ),
        (
            "netspectra_nats_disconnects_total",
            "Connections to NATS lost.",
        ),
        (
            "netspectra_nats_slow_consumer_events_total",
            "Slow-consumer events: the client dropped messages (core NATS).",
        ),
        (
            "netspectra_store_windows_total",
            "Windows written to the SQLite store.",
        ),
        (
            "netspectra_store_inserted_rows_total",
            "Rows inserted into ClickHouse.",
        ),
        (
            "netspectra_alert_evaluations_total",
            "Evaluation passes of the alert role (as leader).",
        ),
        (
            "netspectra_alert_notifications_sent_total",
            "Alert notifications delivered, by notifier.",
        ),
        (
            "netspectra_alert_notifications_failed_total",
            "Alert notifications given up after every retry, by notifier.",
        ),
        (
            "netspectra_alert_analysis_total",
            "Alert notifications explained by the AI analysis (alerter.ai_analysis).",
        ),
        (
            "netspectra_ai_model_requests_total",
            "Requests to the AI model server, by outcome (ok, retried, failed).",
        ),
        (
            "netspectra_alert_analysis_failed_total",
            "Alert notifications sent without analysis because it failed or timed out, by reason (error, timeout, backlog: the queue was behind).",
        ),
    ] {
        describe_counter!(name, help);
    }
    describe_gauge!(
        "netspectra_nats_connected",
        "1 while connected to NATS, else 0."
    );
    describe_gauge!(
        "netspectra_engine_lag_seconds",
        Unit::Seconds,
        "Now minus the newest packet timestamp applied."
    );
    describe_gauge!(
        "netspectra_store_spool_batches",
        "ClickHouse batches spooled to disk, waiting for the server."
    );
    describe_gauge!(
        "netspectra_store_spool_rows",
        "Rows in the spooled ClickHouse batches."
    );
    describe_histogram!(
        "netspectra_store_write_seconds",
        Unit::Seconds,
        "Store write latency: one window's transaction (SQLite), one INSERT with its retries (ClickHouse)."
    );
}

/// Sets a counter that mirrors a cumulative count kept elsewhere (kernel
/// drops, bus events): Prometheus counters must not go down, so a smaller
/// value (a restarted source) is ignored by the recorder's `absolute`.
pub fn mirror(name: &'static str, value: u64) {
    metrics::counter!(name).absolute(value);
}

/// The wall clock in ns since the Unix epoch (0 before 1970).
pub(crate) fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
