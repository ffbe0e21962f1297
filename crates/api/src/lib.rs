//! The query API: how users, dashboards and the AI analyst reach stored
//! results.
//!
//! One [`QueryService`] holds the operations (tasks, aggregate, top, trace,
//! heavy hitters, super-spreaders, time series, runs) over a store
//! [`Reader`]; two faces expose it with the same parameters and answers:
//! gRPC ([`grpc`], `proto/netspectra/v1/query.proto`, with health and
//! reflection) and HTTP/JSON ([`http`], `/api/v1/…`, with an OpenAPI
//! document). Parameters are validated once ([`ask`]), an optional bearer
//! token guards both, and answers are capped at [`Limits::max_rows`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use netspectra_api::{serve, ServeOptions};
//! use netspectra_store::{read::Reader, StoreUrl};
//!
//! let reader = Reader::open(&StoreUrl::parse("sqlite:netspectra.db")?)?;
//! let running = serve(reader, ServeOptions {
//!     grpc: Some("127.0.0.1:50051".parse()?),
//!     http: Some("127.0.0.1:8080".parse()?),
//!     ..ServeOptions::default()
//! }).await?;
//! println!("HTTP on {:?}", running.http_addr);
//! running.wait().await?;
//! # Ok(()) }
//! ```

pub mod ask;
mod error;
pub mod grpc;
pub mod http;
pub mod service;

pub use error::ApiError;
pub use service::{Limits, QueryService};

use netspectra_store::read::Reader;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Types and client/server stubs generated from `query.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("netspectra.v1");

    /// The encoded descriptors, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("query_descriptor");
}

/// Go2NetSpectra's `v1.QueryService`, over the messages of [`pb`].
#[allow(missing_docs, clippy::all)]
pub mod go2netspectra {
    tonic::include_proto!("v1");

    /// The encoded descriptors, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("go2netspectra_descriptor");
}

/// Largest gRPC request accepted (requests are a few fields).
const MAX_GRPC_REQUEST: usize = 64 * 1024;

/// The bearer token both faces require when one is configured.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<Arc<str>>,
}

impl Auth {
    /// Requires `token` (None or empty: no authentication).
    pub fn new(token: Option<&str>) -> Auth {
        Auth {
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
        }
    }

    /// Whether an `Authorization` header value is acceptable (the scheme
    /// is case-insensitive, RFC 7235).
    pub fn allows(&self, header: Option<&str>) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let given = header
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token);
        // Same work whatever the first differing byte: no timing oracle.
        let (a, b) = (want.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Auth {
    /// [`Auth::allows`] for a gRPC request's `authorization` metadata.
    pub fn check<T>(&self, req: &tonic::Request<T>) -> Result<(), tonic::Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if self.allows(header) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized.into())
        }
    }
}

/// How often gRPC health (`grpc.health.v1`) re-checks the store.
const HEALTH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What to serve.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// gRPC listen address (None: no gRPC).
    pub grpc: Option<SocketAddr>,
    /// HTTP listen address (None: no HTTP).
    pub http: Option<SocketAddr>,
    /// Bearer token (None: open).
    pub token: Option<String>,
    /// Answer-size limits.
    pub limits: Limits,
}

/// Why the API could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({what}): {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `gRPC` or `HTTP`.
        what: &'static str,
        /// The cause (in the message, so not also a `source`).
        error: std::io::Error,
    },
    /// A server failed while running.
    #[error("{what} server failed: {message}")]
    Failed {
        /// `gRPC` or `HTTP`.
        what: &'static str,
        /// The cause.
        message: String,
    },
}

/// Servers started by [`serve`]; they run until [`Running::stop`].
pub struct Running {
    /// Where gRPC listens (the bound port when 0 was asked for).
    pub grpc_addr: Option<SocketAddr>,
    /// Where HTTP listens.
    pub http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), ServeError>>>,
}

impl Running {
    /// Asks both servers to finish their requests and stop.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until both servers stopped; the first failure, if any.
    pub async fn wait(self) -> Result<(), ServeError> {
        let mut result = Ok(());
        for t in self.tasks {
            let r = t.await.unwrap_or_else(|e| {
                Err(ServeError::Failed {
                    what: "API",
                    message: e.to_string(),
                })
            });
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// Keeps `grpc.health.v1` telling the truth: the query service (and the
/// server as a whole) is SERVING while the store answers, NOT_SERVING
/// otherwise, re-checked every few seconds until `stopped`.
async fn report_health(
    reporter: tonic_health::server::HealthReporter,
    service: Arc<QueryService>,
    stopped: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    use tonic_health::ServingStatus;
    let name = <pb::query_service_server::QueryServiceServer<grpc::Grpc> as tonic::server::NamedService>::NAME;
    let watch = async {
        loop {
            let status = match service.health().await {
                Ok(()) => ServingStatus::Serving,
                Err(_) => ServingStatus::NotServing,
            };
            reporter.set_service_status(name, status).await;
            reporter.set_service_status("", status).await;
            tokio::time::sleep(HEALTH_EVERY).await;
        }
    };
    tokio::select! {
        () = watch => {}
        () = stopped => {}
    }
    Ok(())
}

/// Binds the requested listeners and serves the API on the current tokio
/// runtime until [`Running::stop`].
pub async fn serve(reader: Reader, options: ServeOptions) -> Result<Running, ServeError> {
    let reader = reader.with_cache(options.limits.cache_entries);
    let service = Arc::new(QueryService::new(reader, options.limits));
    let auth = Auth::new(options.token.as_deref());
    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let bind = |addr: SocketAddr, what: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| ServeError::Bind { addr, what, error })
    };
    let mut running = Running {
        grpc_addr: None,
        http_addr: None,
        stop,
        tasks: Vec::new(),
    };
    if let Some(addr) = options.http {
        let listener = bind(addr, "HTTP").await?;
        running.http_addr = listener.local_addr().ok();
        let app = http::router(service.clone(), auth.clone());
        let shutdown = until_stopped();
        running.tasks.push(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(|e| ServeError::Failed {
                    what: "HTTP",
                    message: e.to_string(),
                })
        }));
    }
    if let Some(addr) = options.grpc {
        let listener = bind(addr, "gRPC").await?;
        running.grpc_addr = listener.local_addr().ok();
        let (health, health_service) = tonic_health::server::health_reporter();
        running.tasks.push(tokio::spawn(report_health(
            health,
            service.clone(),
            until_stopped(),
        )));
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(go2netspectra::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServeError::Failed {
                what: "gRPC",
                message: format!("reflection: {e}"),
            })?;
        let reflection_auth = auth.clone();
        let reflection = tonic::service::interceptor::InterceptedService::new(
            reflection,
            move |req: tonic::Request<()>| reflection_auth.check(&req).map(|()| req),
        );
        let native = Arc::new(grpc::Grpc::new(service, auth));
        let reference = go2netspectra::query_service_server::QueryServiceServer::new(
            grpc::Reference(native.clone()),
        )
        .max_decoding_message_size(MAX_GRPC_REQUEST);
        let query = pb::query_service_server::QueryServiceServer::from_arc(native)
            .max_decoding_message_size(MAX_GRPC_REQUEST);
        let shutdown = until_stopped();
        running.tasks.push(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(reflection)
                .add_service(query)
                .add_service(reference)
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
    }
    Ok(running)
}
