//! The AI analyst gateway role (`netspectra ai`): serves Go2NetSpectra's
//! `v1.AIService` and NetSpectra's `netspectra.v1.AnalystService` (crate
//! `netspectra-api`, `ai_grpc`) over gRPC, answered by the analyst of the
//! config's `ai` section (crate `netspectra-ai`: a model with the query
//! operations as tools, or the offline analyst) reading a store through a
//! local query service. Like [`crate::api::ApiServer`] it runs on a thread
//! of its own with its own runtime, starts only once it serves, and stops
//! gracefully; with `--metrics` its `/healthz` and `/readyz` (ready while
//! the store answers) are on the telemetry endpoint.

use crate::api::{listen_addr, TOKEN_ENV};
use crate::error::{Context, NodeError};
use crate::server_thread::{Ready, ServerThread};
use crate::telemetry::Telemetry;
use crate::Shutdown;
use netspectra_api::ai_grpc::{serve_ai, AiLimits, AiServeOptions};
use netspectra_api::{Limits, QueryService, ServeError};
use netspectra_model::config::{AiConfig, Config};
use netspectra_store::read::Reader;
use netspectra_store::StoreUrl;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// gRPC listen address when neither `--grpc` nor `ai.grpc_listen_addr`
/// sets one: the reference's port, on loopback (a gateway nobody secured
/// is not reachable from the network).
pub const DEFAULT_GRPC: &str = "127.0.0.1:50052";
/// Answers in progress get this long to finish once a stop is asked for.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a waiting role looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// How often `/readyz` re-checks the store.
const READY_EVERY: Duration = Duration::from_secs(5);

/// Where the gateway listens and who may ask, as given on the command line
/// (each `None` falls back to the config, then to the defaults).
#[derive(Clone, Debug, Default)]
pub struct AiListen {
    /// gRPC listen address: `host:port` or `:port` (every interface).
    pub grpc: Option<String>,
    /// Bearer token (default: env NETSPECTRA_API_TOKEN, else config
    /// `api.token`; none: no authentication) — the query API's, as both
    /// answer from the same store.
    pub token: Option<String>,
    /// Allow a non-loopback address without a token.
    pub insecure_no_auth: bool,
}

impl AiListen {
    /// The listener and token: flags, then the config (`ai.grpc_listen_addr`,
    /// NETSPECTRA_API_TOKEN, `api.token`), then the defaults. A non-loopback
    /// address without a token is refused unless `insecure_no_auth`.
    pub fn options(&self, config: &Config, limits: AiLimits) -> Result<AiServeOptions, NodeError> {
        let token = crate::api::token(self.token.as_deref(), &config.api);
        let configured = config.ai.grpc_listen_addr.trim();
        let (text, source) = match self.grpc.as_deref() {
            Some(t) => (t, "--grpc".to_string()),
            None if !configured.is_empty() => {
                (configured, "config `ai.grpc_listen_addr`".to_string())
            }
            None => (DEFAULT_GRPC, "the default gRPC address".to_string()),
        };
        let grpc = listen_addr(text)
            .map_err(|e| {
                NodeError::invalid(format!(
                    "{source} `{text}` is not a listen address for gRPC: {e}"
                ))
            })?
            .ok_or_else(|| {
                NodeError::invalid(format!(
                    "{source} is `off`: the AI gateway serves only gRPC, so there is nothing to serve"
                ))
            })?;
        let options = AiServeOptions {
            grpc,
            token,
            insecure_no_auth: self.insecure_no_auth,
            limits,
            health: None,
        };
        if let Some(addr) = options.open_to_network() {
            return Err(NodeError::invalid(format!(
                "refusing to serve {addr} without a token: anyone who can reach it could ask about the stored traffic (and spend the model's tokens); set --token (or {TOKEN_ENV}), listen on loopback (e.g. 127.0.0.1:PORT), or pass --insecure-no-auth"
            )));
        }
        Ok(options)
    }
}

/// What the gateway serves and how.
pub struct AiGatewayConfig {
    /// The store the analyst's tools read.
    pub url: StoreUrl,
    /// The model (or none: the offline analyst).
    pub ai: AiConfig,
    /// Listener, token and answer bounds (`health` is filled in here).
    pub options: AiServeOptions,
    /// Bounds of the tools' store queries.
    pub query_limits: Limits,
    /// Serve `/metrics`, `/healthz` and `/readyz` here (`--metrics`).
    pub metrics: Option<String>,
}

impl AiGatewayConfig {
    /// `url` served on a loopback port chosen by the system, without a
    /// token, by the analyst `ai` configures (tests, embedding).
    pub fn loopback(url: StoreUrl, ai: AiConfig) -> AiGatewayConfig {
        AiGatewayConfig {
            url,
            ai,
            options: AiServeOptions {
                grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
                token: None,
                insecure_no_auth: false,
                limits: AiLimits::default(),
                health: None,
            },
            query_limits: Limits::default(),
            metrics: None,
        }
    }
}

/// What the serving thread reports once bound.
struct Bound {
    grpc: SocketAddr,
    model: Option<String>,
}

/// The AI gateway serving on its own thread; stopped by
/// [`AiGateway::stop`] or when dropped.
pub struct AiGateway {
    /// Where gRPC listens (the bound port when 0 was asked for).
    pub grpc_addr: SocketAddr,
    /// The model answering (None: the offline analyst).
    pub model: Option<String>,
    telemetry: Telemetry,
    server: ServerThread,
}

impl AiGateway {
    /// Opens the store, builds the analyst and binds the listener; returns
    /// once the gateway answers (or why it cannot).
    pub fn start(config: AiGatewayConfig) -> Result<AiGateway, NodeError> {
        let telemetry = crate::telemetry::from_arg(config.metrics.as_deref())?;
        telemetry.set_ready(false, "starting");
        let open_to_all = config.options.token.is_none();
        let thread_telemetry = telemetry.clone();
        let (server, bound) = ServerThread::spawn("ns-ai", "AI gateway", move |ready, stop| {
            serve(config, thread_telemetry, ready, stop)
        })?;
        let gateway = AiGateway {
            grpc_addr: bound.grpc,
            model: bound.model,
            telemetry,
            server,
        };
        let addr = gateway.grpc_addr;
        tracing::info!(message = "AI gateway listening", %addr, model = gateway.model.as_deref().unwrap_or("offline"));
        if open_to_all && !addr.ip().is_loopback() {
            tracing::warn!(
                message = "AI gateway reachable from the network without a token (--insecure-no-auth); set --token or NETSPECTRA_API_TOKEN",
                %addr
            );
        }
        Ok(gateway)
    }

    /// `AI analyst (offline) on gRPC 127.0.0.1:50052 (v1.AIService,
    /// netspectra.v1.AnalystService)`, for the user.
    pub fn describe(&self) -> String {
        let who = match &self.model {
            Some(m) => format!("model {m}"),
            None => "offline".to_string(),
        };
        format!(
            "AI analyst ({who}) on gRPC {} (v1.AIService, netspectra.v1.AnalystService)",
            self.grpc_addr
        )
    }

    /// Serves until `shutdown` is triggered, then stops.
    pub fn serve_until(self, shutdown: &Shutdown) -> Result<(), NodeError> {
        while !shutdown.is_triggered() && !self.server.is_finished() {
            std::thread::sleep(POLL);
        }
        self.stop()
    }

    /// Asks the server to finish the answers in flight and stop; waits
    /// for it (at most a few seconds).
    pub fn stop(mut self) -> Result<(), NodeError> {
        self.telemetry.set_ready(false, "stopping");
        self.server.shutdown().context("AI gateway")
    }
}

/// The gateway thread's body: the store's query service, the analyst, the
/// server; reports the bound address (or the failure) on `ready`, keeps
/// `/readyz` following the store, then serves until `stop`.
async fn serve(
    config: AiGatewayConfig,
    telemetry: Telemetry,
    ready: Ready<Bound>,
    stop: oneshot::Receiver<()>,
) -> Result<(), ServeError> {
    let AiGatewayConfig {
        url,
        ai,
        mut options,
        query_limits,
        metrics: _,
    } = config;
    // Opened on the runtime: a ClickHouse reader's client lives there.
    let reader = match Reader::open(&url) {
        Ok(r) => r.with_cache(query_limits.cache_entries),
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return Ok(());
        }
    };
    let service = Arc::new(QueryService::new(reader, query_limits));
    let analyst = match crate::api::analyst_over(&ai, service.clone()) {
        Ok(a) => a,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let model = analyst.model();
    options.health = Some(service.clone());
    // The analyst refuses more itself; refused here they get the
    // right status (RESOURCE_EXHAUSTED, not UNAVAILABLE).
    if options.limits.max_in_flight > netspectra_ai::MAX_CONCURRENT_ANSWERS {
        tracing::warn!(
            message = "fewer answers at once than asked: the analyst answers at most this many",
            asked = options.limits.max_in_flight,
            max = netspectra_ai::MAX_CONCURRENT_ANSWERS
        );
        options.limits.max_in_flight = netspectra_ai::MAX_CONCURRENT_ANSWERS;
    }
    let running = match serve_ai(analyst, options).await {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return Ok(());
        }
    };
    let Some(grpc) = running.grpc_addr else {
        let _ = ready.send(Err(NodeError::invalid("the AI gateway bound no address")));
        return Ok(());
    };
    let _ = ready.send(Ok(Bound { grpc, model }));
    // Ready while the store the tools read answers.
    let readiness = tokio::spawn(async move {
        loop {
            match service.health().await {
                Ok(()) => telemetry.set_ready(true, ""),
                Err(e) => telemetry.set_ready(false, &format!("store: {e}")),
            }
            tokio::time::sleep(READY_EVERY).await;
        }
    });
    // A dropped sender (the handle is gone) also means stop.
    let _ = stop.await;
    readiness.abort();
    running.stop();
    match tokio::time::timeout(STOP_GRACE, running.wait()).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                message = "answers still running after the grace period; closing them",
                grace_s = STOP_GRACE.as_secs()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_config_over_the_loopback_default() {
        if std::env::var(TOKEN_ENV).is_ok() {
            return; // the environment supplies a token
        }
        let mut config = Config::default();
        let o = AiListen::default()
            .options(&config, AiLimits::default())
            .unwrap();
        assert_eq!(o.grpc, "127.0.0.1:50052".parse().unwrap());
        assert_eq!(o.token, None);
        config.ai.grpc_listen_addr = "127.0.0.1:6001".into();
        config.api.token = "from-config".into();
        let o = AiListen::default()
            .options(&config, AiLimits::default())
            .unwrap();
        assert_eq!(o.grpc, "127.0.0.1:6001".parse().unwrap());
        assert_eq!(o.token.as_deref(), Some("from-config"));
        let o = AiListen {
            grpc: Some(":7000".into()),
            token: Some("t".into()),
            insecure_no_auth: false,
        }
        .options(&config, AiLimits::default())
        .unwrap();
        assert_eq!(o.grpc, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(o.token.as_deref(), Some("t"));
        for bad in ["off", "nonsense"] {
            let err = AiListen {
                grpc: Some(bad.into()),
                ..AiListen::default()
            }
            .options(&config, AiLimits::default())
            .err()
            .expect("refused");
            assert!(format!("{err:#}").contains("--grpc"), "{err:#}");
        }
    }

    #[test]
    fn without_a_token_only_loopback_is_served_unless_insecure_no_auth() {
        if std::env::var(TOKEN_ENV).is_ok() {
            return;
        }
        let mut config = Config::default();
        config.ai.grpc_listen_addr = ":50052".into();
        let err = AiListen::default()
            .options(&config, AiLimits::default())
            .err()
            .expect("a non-loopback address without a token is refused");
        assert!(format!("{err:#}").contains("--insecure-no-auth"), "{err:#}");
        let o = AiListen {
            insecure_no_auth: true,
            ..AiListen::default()
        }
        .options(&config, AiLimits::default())
        .unwrap();
        assert_eq!(o.grpc, "0.0.0.0:50052".parse().unwrap());
    }
}
