//! The query API server role (`netspectra api`, and `--serve` of `analyze`
//! and `run`). The API (crate `netspectra-api`) runs on a thread of its own
//! with its own tokio runtime, so the synchronous roles keep their shape;
//! [`ApiServer`] starts it, reports where it listens and stops it gracefully.

use crate::error::{Context, NodeError};
use crate::server_thread::{Ready, ServerThread};
use crate::Shutdown;
use netspectra_api::{Limits, QueryService, ServeError, ServeOptions};
use netspectra_model::config::{AiConfig as AiSection, ApiConfig as ApiSection};
use netspectra_store::read::Reader;
use netspectra_store::StoreUrl;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// gRPC listen address when neither flag nor config sets one and a token
/// is configured (Go2NetSpectra's: every interface).
pub const DEFAULT_GRPC: &str = ":50051";
/// HTTP listen address when neither flag nor config sets one and a token
/// is configured (Go2NetSpectra's: every interface).
pub const DEFAULT_HTTP: &str = ":8080";
/// gRPC default without a token: loopback only, so an API nobody secured
/// is not reachable from the network.
pub const DEFAULT_GRPC_NO_TOKEN: &str = "127.0.0.1:50051";
/// HTTP default without a token: loopback only.
pub const DEFAULT_HTTP_NO_TOKEN: &str = "127.0.0.1:8080";
/// Environment variable holding the bearer token when `--token` is absent.
pub const TOKEN_ENV: &str = "NETSPECTRA_API_TOKEN";
/// Requests in flight get this long to finish once a stop is asked for.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a waiting role looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// The bearer token the API (and the `ai` gateway, which shares it)
/// requires: `flag`, else env NETSPECTRA_API_TOKEN, else `api.token`; an
/// empty one is none.
pub fn token(flag: Option<&str>, config: &ApiSection) -> Option<String> {
    flag.map(str::to_string)
        .or_else(|| std::env::var(TOKEN_ENV).ok())
        .or_else(|| Some(config.token.clone()))
        .filter(|t| !t.is_empty())
}

/// Where the query API listens and who may ask, as given on the command
/// line (each `None` falls back to the config's `api` section, then to the
/// defaults).
#[derive(Clone, Debug, Default)]
pub struct Listen {
    /// gRPC listen address: `host:port`, `:port` (every interface) or `off`.
    pub grpc: Option<String>,
    /// HTTP listen address: `host:port`, `:port` (every interface) or `off`.
    pub http: Option<String>,
    /// Bearer token both protocols require (default: env NETSPECTRA_API_TOKEN,
    /// else config `api.token`; none: no authentication).
    pub token: Option<String>,
    /// Allow a non-loopback address without a token
    /// (`--insecure-no-auth`); without it such a listener is refused.
    pub insecure_no_auth: bool,
}

impl Listen {
    /// The listeners and token: flags first, then the config's `api`
    /// section (and NETSPECTRA_API_TOKEN), then the defaults.
    pub fn options(&self, config: &ApiSection, limits: Limits) -> Result<ServeOptions, NodeError> {
        let token = token(self.token.as_deref(), config);
        let (default_grpc, default_http) = if token.is_some() {
            (DEFAULT_GRPC, DEFAULT_HTTP)
        } else {
            (DEFAULT_GRPC_NO_TOKEN, DEFAULT_HTTP_NO_TOKEN)
        };
        let grpc = resolve(
            "gRPC",
            "--grpc",
            self.grpc.as_deref(),
            "api.grpc_listen_addr",
            &config.grpc_listen_addr,
            default_grpc,
        )?;
        let http = resolve(
            "HTTP",
            "--http",
            self.http.as_deref(),
            "api.http_listen_addr",
            &config.http_listen_addr,
            default_http,
        )?;
        if grpc.is_none() && http.is_none() {
            return Err(NodeError::invalid(
                "both gRPC and HTTP are off: nothing to serve",
            ));
        }
        let options = ServeOptions {
            grpc,
            http,
            token,
            limits,
            insecure_no_auth: self.insecure_no_auth,
            analyst: None,
        };
        // Refused here too (the server refuses as well), before any work:
        // `analyze --serve` must not read a whole capture first.
        if let Some(addr) = options.open_to_network() {
            return Err(NodeError::invalid(format!(
                "refusing to serve {addr} without a token: anyone who can reach it could read the stored traffic; set --token (or {TOKEN_ENV}), listen on loopback (e.g. 127.0.0.1:PORT), or pass --insecure-no-auth"
            )));
        }
        Ok(options)
    }
}

/// One listener address from its flag, its config key or the default.
fn resolve(
    what: &str,
    flag: &str,
    given: Option<&str>,
    key: &str,
    configured: &str,
    default: &str,
) -> Result<Option<SocketAddr>, NodeError> {
    let (text, source) = match given {
        Some(t) => (t, flag.to_string()),
        None if !configured.trim().is_empty() => (configured, format!("config `{key}`")),
        None => (default, format!("the default {what} address")),
    };
    listen_addr(text).map_err(|e| {
        NodeError::invalid(format!(
            "{source} `{text}` is not a listen address for {what}: {e}"
        ))
    })
}

/// Parses a listen address: `off` (none), `:port` (every interface, as in
/// Go), `host:port` or `[v6]:port`; host names are resolved.
pub fn listen_addr(text: &str) -> Result<Option<SocketAddr>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{port}` is not a port (0-65535)"))?;
        return Ok(Some(SocketAddr::from(([0, 0, 0, 0], port))));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Some(addr));
    }
    if !text.contains(':') {
        return Err("use host:port, :port or off".into());
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("use host:port, :port or off ({e})"))?;
    match addrs.next() {
        Some(a) => Ok(Some(a)),
        None => Err("the host name resolves to no address".into()),
    }
}

/// What the API server serves and how.
pub struct ApiConfig {
    /// The store to answer from.
    pub url: StoreUrl,
    /// Listeners, token and limits.
    pub options: ServeOptions,
    /// The `ai` section of the analyst answering `POST /api/v1/ask` and
    /// the dashboard's Ask view (None: no analyst; an empty section: the
    /// offline analyst).
    pub ai: Option<AiSection>,
}

impl ApiConfig {
    /// `url` served over HTTP and gRPC on loopback ports chosen by the
    /// system, without a token (tests, embedding).
    pub fn loopback(url: StoreUrl) -> ApiConfig {
        let any_port = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        ApiConfig {
            url,
            options: ServeOptions {
                grpc: any_port,
                http: any_port,
                token: None,
                limits: Limits::default(),
                insecure_no_auth: false,
                analyst: None,
            },
            ai: None,
        }
    }
}

/// Where the API listens, reported by the API thread once bound.
type Bound = (Option<SocketAddr>, Option<SocketAddr>);

/// The query API serving on its own thread; stopped by [`ApiServer::stop`]
/// or when dropped.
pub struct ApiServer {
    /// Where gRPC listens (the bound port when 0 was asked for).
    pub grpc_addr: Option<SocketAddr>,
    /// Where HTTP listens.
    pub http_addr: Option<SocketAddr>,
    server: ServerThread,
}

impl ApiServer {
    /// Opens the store for reading and binds the listeners; returns once
    /// the API answers (or why it cannot).
    pub fn start(config: ApiConfig) -> Result<ApiServer, NodeError> {
        let ApiConfig { url, options, ai } = config;
        let open_to_all = options.token.is_none();
        let (server, (grpc_addr, http_addr)) =
            ServerThread::spawn("ns-api", "query API", move |ready, stop| {
                serve(url, options, ai, ready, stop)
            })?;
        let api = ApiServer {
            grpc_addr,
            http_addr,
            server,
        };
        for (what, addr) in [("gRPC", api.grpc_addr), ("HTTP", api.http_addr)] {
            let Some(addr) = addr else { continue };
            tracing::info!(message = "query API listening", protocol = what, %addr);
            if open_to_all && !addr.ip().is_loopback() {
                tracing::warn!(
                    message = "query API reachable from the network without a token (--insecure-no-auth); set --token or NETSPECTRA_API_TOKEN",
                    protocol = what,
                    %addr
                );
            }
        }
        Ok(api)
    }

    /// `HTTP on http://…/api/v1, gRPC on …`, for the user.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = self.http_addr {
            parts.push(format!("HTTP on http://{a}/api/v1"));
        }
        if let Some(a) = self.grpc_addr {
            parts.push(format!("gRPC on {a}"));
        }
        parts.join(", ")
    }

    /// Serves until `shutdown` is triggered, then stops.
    pub fn serve_until(self, shutdown: &Shutdown) -> Result<(), NodeError> {
        while !shutdown.is_triggered() && !self.server.is_finished() {
            std::thread::sleep(POLL);
        }
        self.stop()
    }

    /// Asks the servers to finish the requests in flight and stop; waits
    /// for them (at most a few seconds).
    pub fn stop(mut self) -> Result<(), NodeError> {
        self.server.shutdown().context("query API")
    }
}

/// The API thread's body: the reader, the analyst, the servers; reports
/// the bound addresses (or the failure) on `ready`, then serves until
/// `stop`.
async fn serve(
    url: StoreUrl,
    mut options: ServeOptions,
    ai: Option<AiSection>,
    ready: Ready<Bound>,
    stop: oneshot::Receiver<()>,
) -> Result<(), ServeError> {
    // Opened on the runtime: a ClickHouse reader's client lives there.
    let reader = match Reader::open(&url) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return Ok(());
        }
    };
    // One query service: the analyst's tools share the API's reader, cache
    // and slots.
    let service = Arc::new(QueryService::cached(reader, options.limits));
    if let Some(ai) = &ai {
        match analyst_over(ai, service.clone()) {
            Ok(a) => options.analyst = Some(a),
            Err(e) => {
                let _ = ready.send(Err(e));
                return Ok(());
            }
        }
    }
    let running = match netspectra_api::serve_service(service, options).await {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return Ok(());
        }
    };
    let _ = ready.send(Ok((running.grpc_addr, running.http_addr)));
    // A dropped sender (the handle is gone) also means stop.
    let _ = stop.await;
    running.stop();
    match tokio::time::timeout(STOP_GRACE, running.wait()).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                message = "query API requests still running after the grace period; closing them",
                grace_s = STOP_GRACE.as_secs()
            );
            Ok(())
        }
    }
}

/// The store for messages (a ClickHouse URL without its password).
pub fn store_text(url: &StoreUrl) -> String {
    match url {
        StoreUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
        StoreUrl::ClickHouse(c) => c.to_string(),
    }
}

/// The analyst of `ai` over the store at `url` (a reader of its own, with
/// the API's limits); call on the runtime that will run it.
pub fn analyst(
    url: &StoreUrl,
    ai: &AiSection,
    limits: Limits,
) -> Result<Arc<dyn netspectra_api::analyst::Analyst>, NodeError> {
    analyst_over(ai, Arc::new(QueryService::new(Reader::open(url)?, limits)))
}

/// The analyst of `ai` (a model's, or the offline one) whose tools ask
/// `service`.
pub fn analyst_over(
    ai: &AiSection,
    service: Arc<QueryService>,
) -> Result<Arc<dyn netspectra_api::analyst::Analyst>, NodeError> {
    netspectra_ai::build(ai, netspectra_ai::Tools::local(service))
        .map_err(|e| NodeError::invalid(format!("config error at `ai`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_accept_go_style_host_port_and_off() {
        assert_eq!(
            listen_addr(":8080").unwrap(),
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(
            listen_addr("127.0.0.1:0").unwrap(),
            Some("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            listen_addr("[::1]:9").unwrap(),
            Some("[::1]:9".parse().unwrap())
        );
        assert!(listen_addr("localhost:8080").unwrap().is_some());
        assert_eq!(listen_addr("off").unwrap(), None);
        assert_eq!(listen_addr("OFF").unwrap(), None);
        for bad in ["8080", ":http", ":70000", "host:port", ""] {
            assert!(listen_addr(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn flags_win_over_config_over_defaults() {
        let config = ApiSection {
            grpc_listen_addr: "127.0.0.1:6000".into(),
            http_listen_addr: String::new(),
            token: "from-config".into(),
        };
        let args = Listen {
            grpc: None,
            http: Some("off".into()),
            token: Some("t".into()),
            insecure_no_auth: false,
        };
        let o = args.options(&config, Limits::default()).unwrap();
        assert_eq!(o.grpc, Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(o.http, None);
        assert_eq!(o.token.as_deref(), Some("t"));
        if std::env::var(TOKEN_ENV).is_err() {
            let o = Listen::default()
                .options(&config, Limits::default())
                .unwrap();
            assert_eq!(o.token.as_deref(), Some("from-config"));
        }
        let o = Listen {
            token: Some("x".into()),
            ..Listen::default()
        }
        .options(&ApiSection::default(), Limits::default())
        .unwrap();
        assert_eq!(o.grpc, Some("0.0.0.0:50051".parse().unwrap()));
        assert_eq!(o.http, Some("0.0.0.0:8080".parse().unwrap()));
        let both_off = Listen {
            grpc: Some("off".into()),
            http: Some("off".into()),
            ..Listen::default()
        };
        assert!(both_off
            .options(&ApiSection::default(), Limits::default())
            .is_err());
        let err = Listen {
            http: Some("nonsense".into()),
            token: Some("x".into()),
            ..Listen::default()
        }
        .options(&ApiSection::default(), Limits::default())
        .err()
        .expect("a bad address is refused");
        assert!(format!("{err:#}").contains("--http `nonsense`"), "{err:#}");
    }

    #[test]
    fn without_a_token_only_loopback_is_served_unless_insecure_no_auth() {
        if std::env::var(TOKEN_ENV).is_ok() {
            return; // the environment supplies a token
        }
        let o = Listen::default()
            .options(&ApiSection::default(), Limits::default())
            .unwrap();
        assert_eq!(o.grpc, Some("127.0.0.1:50051".parse().unwrap()));
        assert_eq!(o.http, Some("127.0.0.1:8080".parse().unwrap()));
        for (grpc, http) in [
            (":50051", "127.0.0.1:8080"),
            ("off", "0.0.0.0:8080"),
            ("off", "[::]:8080"),
        ] {
            let open = Listen {
                grpc: Some(grpc.into()),
                http: Some(http.into()),
                ..Listen::default()
            };
            let err = open
                .options(&ApiSection::default(), Limits::default())
                .err()
                .expect("a non-loopback address without a token is refused");
            assert!(format!("{err:#}").contains("--insecure-no-auth"), "{err:#}");
            let o = Listen {
                insecure_no_auth: true,
                ..open
            }
            .options(&ApiSection::default(), Limits::default())
            .unwrap();
            assert!(o.insecure_no_auth);
        }
        // A configured address counts the same as a flag.
        let config = ApiSection {
            http_listen_addr: ":8080".into(),
            grpc_listen_addr: "off".into(),
            token: String::new(),
        };
        assert!(Listen::default()
            .options(&config, Limits::default())
            .is_err());
    }
}
