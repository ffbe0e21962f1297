//! The AI analyst's gRPC faces (the `ai` role): Go2NetSpectra's
//! `v1.AIService` ([`reference`], `proto/go2netspectra/v1/ai.proto`,
//! unchanged so its clients work) and NetSpectra's
//! `netspectra.v1.AnalystService` ([`native`],
//! `proto/netspectra/v1/analyst.proto`: a streaming `Ask` with the tool
//! calls, a structured `AnalyzeAlert`), both over one [`Analyst`], plus
//! `grpc.health.v1` and reflection. [`RemoteAnalyst`] is the other end: an
//! [`Analyst`] that asks such a server (alerters with
//! `alerter.ai_analysis.service_addr`).
//!
//! Answers cost a model's time and tokens, so the faces bound them: at most
//! [`AiLimits::max_in_flight`] answers at once (one more is refused at once
//! with RESOURCE_EXHAUSTED rather than queued), each within
//! [`AiLimits::answer_timeout`], requests at most
//! [`AiLimits::max_request_bytes`]. The same bearer token as the query API
//! guards every method but health.

pub mod alerts;
pub mod native;
pub mod reference;
pub mod remote;

pub use remote::{RemoteAnalyst, RemoteError};

use crate::analyst::{Analyst, AskEvent, ToolCall};
use crate::{Auth, QueryService, Running, ServeError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// How many answers, how long, how large.
#[derive(Clone, Copy, Debug)]
pub struct AiLimits {
    /// Answers in progress at once, over all methods; one more is refused
    /// with RESOURCE_EXHAUSTED (a model answer takes seconds: queueing
    /// would only hide the overload). Default 4, what the analyst of
    /// `netspectra-ai` answers at once (more here would only turn the
    /// refusal into the analyst's own failure).
    pub max_in_flight: usize,
    /// Longest one answer may take, tool calls included; then it is
    /// abandoned with DEADLINE_EXCEEDED (a hung model stream never holds a
    /// slot forever).
    pub answer_timeout: Duration,
    /// Largest request accepted (a question, or one notification's alerts).
    pub max_request_bytes: usize,
}

impl Default for AiLimits {
    fn default() -> Self {
        AiLimits {
            max_in_flight: 4,
            // Within the analyst's own 295 s (netspectra_ai::MAX_ANSWER_TIME).
            answer_timeout: Duration::from_secs(295),
            max_request_bytes: 256 * 1024,
        }
    }
}

/// What the `ai` role serves.
#[derive(Clone)]
pub struct AiServeOptions {
    /// gRPC listen address.
    pub grpc: SocketAddr,
    /// Bearer token (None or empty: open).
    pub token: Option<String>,
    /// Serve a non-loopback address without a token; refused otherwise,
    /// as for the query API.
    pub insecure_no_auth: bool,
    /// Concurrency, time and size bounds.
    pub limits: AiLimits,
    /// The query service the analyst's tools read: `grpc.health.v1` says
    /// NOT_SERVING while its store does not answer (None: always SERVING).
    pub health: Option<Arc<QueryService>>,
}

impl AiServeOptions {
    /// The listen address when anyone on the network could reach it
    /// without a token and that was not asked for explicitly.
    pub fn open_to_network(&self) -> Option<SocketAddr> {
        let token = self.token.as_deref().is_some_and(|t| !t.is_empty());
        (!token && !self.insecure_no_auth && !self.grpc.ip().is_loopback()).then_some(self.grpc)
    }
}

/// What both services share: the analyst, the token, the answer slots.
#[derive(Clone)]
pub(crate) struct Gate {
    analyst: Arc<dyn Analyst>,
    auth: Auth,
    slots: Arc<Semaphore>,
    limits: AiLimits,
}

impl Gate {
    pub(crate) fn new(analyst: Arc<dyn Analyst>, auth: Auth, limits: AiLimits) -> Gate {
        Gate {
            analyst,
            auth,
            slots: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            limits,
        }
    }

    /// Checks the token, then takes an answer slot (held until the answer
    /// ends, streams included).
    pub(crate) fn admit<T>(&self, req: &tonic::Request<T>) -> Result<OwnedSemaphorePermit, Status> {
        self.auth.check(req)?;
        self.slots.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} answers already in progress; retry later",
                self.limits.max_in_flight.max(1)
            ))
        })
    }

    pub(crate) fn analyst(&self) -> &Arc<dyn Analyst> {
        &self.analyst
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.limits.answer_timeout
    }
}

/// The status of an answer abandoned after `limit`.
pub(crate) fn too_slow(limit: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "no answer within {} s; ask a narrower question",
        limit.as_secs_f64()
    ))
}

/// The status of an analyst that failed (model unreachable, bad key…):
/// UNAVAILABLE, as asking again later may work.
pub(crate) fn failed(message: &str) -> Status {
    Status::unavailable(format!("the analyst failed: {message}"))
}

/// A question that is empty once trimmed is INVALID_ARGUMENT.
pub(crate) fn non_empty(what: &str, text: String) -> Result<String, Status> {
    if text.trim().is_empty() {
        Err(Status::invalid_argument(format!("{what} is empty")))
    } else {
        Ok(text)
    }
}

/// Reads an answer to its end: the whole text and the tool calls, or the
/// status it failed with. An empty answer is a failure too (the reference
/// passed one on as if it were an analysis).
pub(crate) async fn whole_answer(
    mut events: mpsc::Receiver<AskEvent>,
    limit: Duration,
) -> Result<(String, Vec<ToolCall>), Status> {
    let read = async {
        while let Some(event) = events.recv().await {
            match event {
                AskEvent::Done { answer, .. } if answer.trim().is_empty() => {
                    return Err(failed("it returned an empty answer"));
                }
                AskEvent::Done { answer, tool_calls } => return Ok((answer, tool_calls)),
                AskEvent::Failed(message) => return Err(failed(&message)),
                AskEvent::ToolCall(_) | AskEvent::Delta(_) => {}
            }
        }
        Err(failed("it stopped without an answer"))
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| Err(too_slow(limit)))
}

/// Binds the listener and serves both AI services, health and reflection
/// on the current tokio runtime until [`Running::stop`].
pub async fn serve_ai(
    analyst: Arc<dyn Analyst>,
    options: AiServeOptions,
) -> Result<Running, ServeError> {
    use crate::go2netspectra::ai_service_server::AiServiceServer;
    use crate::pb::analyst_service_server::AnalystServiceServer;
    if let Some(addr) = options.open_to_network() {
        return Err(ServeError::OpenToNetwork { addr });
    }
    let auth = Auth::new(options.token.as_deref());
    let limits = options.limits;
    let gate = Gate::new(analyst, auth.clone(), limits);
    let listener = tokio::net::TcpListener::bind(options.grpc)
        .await
        .map_err(|error| ServeError::Bind {
            addr: options.grpc,
            what: "gRPC",
            error,
        })?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut running = Running {
        grpc_addr: listener.local_addr().ok(),
        http_addr: None,
        stop,
        tasks: Vec::new(),
    };
    let reference = AiServiceServer::new(reference::Reference(gate.clone()))
        .max_decoding_message_size(limits.max_request_bytes);
    let native = AnalystServiceServer::new(native::Native(gate))
        .max_decoding_message_size(limits.max_request_bytes);
    let names = vec![
        <AiServiceServer<reference::Reference> as tonic::server::NamedService>::NAME,
        <AnalystServiceServer<native::Native> as tonic::server::NamedService>::NAME,
    ];
    let (health, health_service) = tonic_health::server::health_reporter();
    running.tasks.push(tokio::spawn(crate::report_health(
        health,
        options.health,
        names.clone(),
        until_stopped(),
    )));
    let reflection = crate::reflection(&names, &auth)?;
    let shutdown = until_stopped();
    let max_streams = u32::try_from(limits.max_in_flight.max(1) * 4).unwrap_or(u32::MAX);
    running.tasks.push(tokio::spawn(async move {
        tonic::transport::Server::builder()
            // Bounds the unary answers; a stream's forwarder keeps its own
            // deadline (tonic's timeout ends when the handler returns).
            .timeout(limits.answer_timeout + Duration::from_secs(5))
            .max_concurrent_streams(Some(max_streams))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reference)
            .add_service(native)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown,
            )
            .await
            .map_err(|e| ServeError::Failed {
                what: "gRPC",
                message: e.to_string(),
            })
    }));
    Ok(running)
}
