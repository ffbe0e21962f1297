//! Health and Prometheus metrics for the long-running roles (`--metrics ADDR`).
//!
//! The `metrics` facade's macros record into a global
//! [`PrometheusRecorder`](metrics_exporter_prometheus::PrometheusRecorder)
//! (a no-op until [`serve`] installs it). A tiny HTTP/1.1 responder on its
//! own thread serves three routes, one request per connection:
//!
//! - `GET /metrics`: the Prometheus text format;
//! - `GET /healthz`: `200 ok` while the process runs;
//! - `GET /readyz`: `200 ready` once [`Telemetry::set_ready`] said so,
//!   else `503` and the reason.
//!
//! Other paths are `404`, other methods `405`.

use crate::error::{Context, NodeError};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Buckets (seconds) of the latency histograms (`*_seconds`).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// A request's head may be this long at most.
const MAX_REQUEST: usize = 8 * 1024;
/// Connections served at the same time at most (more are closed at once).
const MAX_CONNECTIONS: usize = 16;
/// A client has this long to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The state the HTTP thread answers from.
struct State {
    handle: PrometheusHandle,
    /// `Ok(())` when ready, else why not.
    ready: Mutex<Result<(), String>>,
    connections: AtomicUsize,
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
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .context("metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let state = Arc::new(State {
        handle,
        ready: Mutex::new(Err("starting".into())),
        connections: AtomicUsize::new(0),
    });
    let served = Arc::clone(&state);
    std::thread::Builder::new()
        .name("ns-metrics".into())
        .spawn(move || accept(listener, served))
        .context("cannot start the metrics thread")?;
    describe();
    tracing::info!(message = "serving metrics", addr = %local);
    Ok(Telemetry { state: Some(state) })
}

fn accept(listener: TcpListener, state: Arc<State>) {
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(message = "metrics accept failed", error = %e);
                // Out of descriptors and the like: do not spin.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if state.connections.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            state.connections.fetch_sub(1, Ordering::AcqRel);
            continue; // dropped: closed
        }
        let state = Arc::clone(&state);
        let spawned = std::thread::Builder::new()
            .name("ns-metrics-conn".into())
            .spawn(move || {
                if let Err(e) = handle(stream, &state) {
                    tracing::debug!(message = "metrics request failed", error = %e);
                }
                state.connections.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            tracing::debug!(message = "cannot start a metrics connection thread");
        }
    }
}

/// Reads one request head and answers it.
fn handle(mut stream: TcpStream, state: &State) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        if buf.len() >= MAX_REQUEST {
            return respond(&mut stream, 431, "text/plain", b"request too large\n");
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return respond(&mut stream, 400, "text/plain", b"bad request\n");
    };
    let path = target.split('?').next().unwrap_or(target);
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return respond(&mut stream, 404, "text/plain", b"not found\n");
    }
    if method != "GET" {
        return respond(&mut stream, 405, "text/plain", b"method not allowed\n");
    }
    match path {
        "/metrics" => {
            state.handle.run_upkeep();
            let body = state.handle.render();
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
            )
        }
        "/healthz" => respond(&mut stream, 200, "text/plain", b"ok\n"),
        _ => {
            let ready = state
                .ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match ready {
                Ok(()) => respond(&mut stream, 200, "text/plain", b"ready\n"),
                Err(why) => respond(
                    &mut stream,
                    503,
                    "text/plain",
                    format!("not ready: {why}\n").as_bytes(),
                ),
            }
        }
    }
}

fn respond(stream: &mut TcpStream, status: u16, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
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
