//! The query API in the CLI: `netspectra api`, and `--serve` of `analyze`
//! and `run`. The API (crate `netspectra-api`) runs on a thread of its own
//! with its own tokio runtime, so the synchronous roles keep their shape;
//! [`Api`] starts it, reports where it listens and stops it gracefully.

use crate::common;
use crate::Outcome;
use anyhow::{bail, Context};
use clap::Args;
use netspectra_api::{Limits, ServeError, ServeOptions};
use netspectra_model::config::{ApiConfig, Config};
use netspectra_store::read::Reader;
use netspectra_store::StoreUrl;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// gRPC listen address when neither flag nor config sets one (Go2NetSpectra's).
pub const DEFAULT_GRPC: &str = ":50051";
/// HTTP listen address when neither flag nor config sets one (Go2NetSpectra's).
pub const DEFAULT_HTTP: &str = ":8080";
/// Environment variable holding the bearer token when `--token` is absent.
pub const TOKEN_ENV: &str = "NETSPECTRA_API_TOKEN";
/// Requests in flight get this long to finish once a stop is asked for.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a waiting role looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Where the query API listens and who may ask (`netspectra api`, and
/// `analyze`/`run` with `--serve`).
#[derive(Args, Clone, Default)]
pub struct ListenArgs {
    /// gRPC listen address: `host:port`, `:port` (every interface) or `off`
    /// (default: config `api.grpc_listen_addr`, else `:50051`).
    #[arg(long, value_name = "ADDR")]
    pub grpc: Option<String>,
    /// HTTP listen address: `host:port`, `:port` (every interface) or `off`
    /// (default: config `api.http_listen_addr`, else `:8080`).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Bearer token both protocols require (default: env NETSPECTRA_API_TOKEN,
    /// else config `api.token`; none: no authentication).
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
}

/// `--serve` and its listeners: the same flags for `analyze` and `run`.
#[derive(Args, Clone, Default)]
pub struct ServeArgs {
    /// Serve the query API (gRPC and HTTP) from the store: `analyze` after
    /// its report until Ctrl-C, `run` while it captures.
    #[arg(long)]
    pub serve: bool,
    #[command(flatten)]
    pub listen: ListenArgs,
}

impl ServeArgs {
    /// What to serve when `--serve` is given (None otherwise), checked
    /// before any work is done: addresses parse, a store is configured.
    pub fn plan(&self, config: &Config, store: Option<&str>) -> anyhow::Result<Option<Plan>> {
        if !self.serve {
            let l = &self.listen;
            if l.grpc.is_some() || l.http.is_some() || l.token.is_some() {
                bail!("--grpc, --http and --token apply only with --serve");
            }
            return Ok(None);
        }
        let Some(store) = store else {
            bail!("--serve needs a store: pass --store URL (or set `store.url` in the config)");
        };
        Ok(Some(Plan {
            url: StoreUrl::parse(store)?,
            options: self.listen.options(&config.api, Limits::default())?,
        }))
    }
}

impl ListenArgs {
    /// The listeners and token: flags first, then the config's `api`
    /// section (and NETSPECTRA_API_TOKEN), then the defaults.
    pub fn options(&self, config: &ApiConfig, limits: Limits) -> anyhow::Result<ServeOptions> {
        let grpc = resolve(
            "gRPC",
            "--grpc",
            self.grpc.as_deref(),
            "api.grpc_listen_addr",
            &config.grpc_listen_addr,
            DEFAULT_GRPC,
        )?;
        let http = resolve(
            "HTTP",
            "--http",
            self.http.as_deref(),
            "api.http_listen_addr",
            &config.http_listen_addr,
            DEFAULT_HTTP,
        )?;
        if grpc.is_none() && http.is_none() {
            bail!("both gRPC and HTTP are off: nothing to serve");
        }
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var(TOKEN_ENV).ok())
            .or_else(|| Some(config.token.clone()))
            .filter(|t| !t.is_empty());
        Ok(ServeOptions {
            grpc,
            http,
            token,
            limits,
        })
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
) -> anyhow::Result<Option<SocketAddr>> {
    let (text, source) = match given {
        Some(t) => (t, flag.to_string()),
        None if !configured.trim().is_empty() => (configured, format!("config `{key}`")),
        None => (default, format!("the default {what} address")),
    };
    listen_addr(text)
        .with_context(|| format!("{source} `{text}` is not a listen address for {what}"))
}

/// Parses a listen address: `off` (none), `:port` (every interface, as in
/// Go), `host:port` or `[v6]:port`; host names are resolved.
pub fn listen_addr(text: &str) -> anyhow::Result<Option<SocketAddr>> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow::anyhow!("`{port}` is not a port (0-65535)"))?;
        return Ok(Some(SocketAddr::from(([0, 0, 0, 0], port))));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Some(addr));
    }
    if !text.contains(':') {
        bail!("use host:port, :port or off");
    }
    let mut addrs = text
        .to_socket_addrs()
        .with_context(|| "use host:port, :port or off")?;
    match addrs.next() {
        Some(a) => Ok(Some(a)),
        None => bail!("the host name resolves to no address"),
    }
}

/// A checked `--serve`: the store to read and how to serve it.
pub struct Plan {
    /// The store the role writes.
    pub url: StoreUrl,
    /// Listeners, token and limits.
    pub options: ServeOptions,
}

/// Where the API listens, reported by the API thread once bound.
type Bound = (Option<SocketAddr>, Option<SocketAddr>);

/// The query API serving on its own thread; stopped by [`Api::stop`] or
/// when dropped.
pub struct Api {
    /// Where gRPC listens (the bound port when 0 was asked for).
    pub grpc_addr: Option<SocketAddr>,
    /// Where HTTP listens.
    pub http_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Api {
    /// Opens the store for reading and binds the listeners; returns once
    /// the API answers (or why it cannot).
    pub fn start(plan: Plan) -> anyhow::Result<Api> {
        let Plan { url, options } = plan;
        let open_to_all = options.token.is_none();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<Bound>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ns-api".into())
            .spawn(move || serve_thread(url, options, ready_tx, stop_rx))
            .context("cannot start the query API thread")?;
        let mut api = Api {
            grpc_addr: None,
            http_addr: None,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok((grpc, http))) => {
                api.grpc_addr = grpc;
                api.http_addr = http;
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("the query API thread stopped before serving"),
        }
        for (what, addr) in [("gRPC", api.grpc_addr), ("HTTP", api.http_addr)] {
            let Some(addr) = addr else { continue };
            tracing::info!(message = "query API listening", protocol = what, %addr);
            if open_to_all && !addr.ip().is_loopback() {
                tracing::warn!(
                    message = "query API reachable from the network without a token; set --token or NETSPECTRA_API_TOKEN",
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

    /// Serves until `stop` is raised (SIGINT/SIGTERM), then stops.
    pub fn serve_until(self, stop: &AtomicBool) -> anyhow::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                break;
            }
            std::thread::sleep(POLL);
        }
        self.stop()
    }

    /// Asks the servers to finish the requests in flight and stop; waits
    /// for them (at most a few seconds).
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
            .map_err(|e| anyhow::Error::new(e).context("query API"))
    }

    fn shutdown(&mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ServeError::Failed {
                what: "API",
                message: "its thread panicked".into(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(message = "query API failed", error = %e);
        }
    }
}

/// The API thread: a runtime, the reader, the servers; reports the bound
/// addresses (or the failure) on `ready`, then serves until `stop`.
fn serve_thread(
    url: StoreUrl,
    options: ServeOptions,
    ready: mpsc::Sender<anyhow::Result<Bound>>,
    stop: oneshot::Receiver<()>,
) -> Result<(), ServeError> {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ns-api-rt")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(
                anyhow::Error::new(e).context("cannot start the API runtime")
            ));
            return Ok(());
        }
    };
    let result = rt.block_on(async move {
        // Opened on the runtime: a ClickHouse reader's client lives there.
        let reader = match Reader::open(&url) {
            Ok(r) => r,
            Err(e) => {
                let _ = ready.send(Err(e.into()));
                return Ok(());
            }
        };
        let running = match netspectra_api::serve(reader, options).await {
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
                    message =
                        "query API requests still running after the grace period; closing them",
                    grace_s = STOP_GRACE.as_secs()
                );
                Ok(())
            }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Arguments of `netspectra api`.
#[derive(Args)]
pub struct ApiArgs {
    /// YAML configuration (built-in defaults when absent).
    #[arg(long, value_name = "F")]
    config: Option<PathBuf>,
    /// Store to answer from: `sqlite:PATH`, a file path or `clickhouse://…`
    /// (default: config `store.url`, `sqlite:netspectra.db`).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    #[command(flatten)]
    listen: ListenArgs,
    /// Rows one answer may hold at most (`limit=0` means this many).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_rows as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_rows: u64,
    /// Answers kept until the store changes (0: ask the store every time).
    #[arg(long, value_name = "N", default_value_t = Limits::default().cache_entries)]
    cache_entries: usize,
}

/// `netspectra api`: serves the store until SIGINT/SIGTERM.
pub fn run(args: ApiArgs) -> anyhow::Result<Outcome> {
    let config = common::load_config(args.config.as_deref())?;
    let Some(store) = common::store_url(false, args.store.as_deref(), &config) else {
        bail!("no store to serve: pass --store URL (or set `store.url` in the config)");
    };
    let options = args.listen.options(
        &config.api,
        Limits {
            max_rows: usize::try_from(args.max_rows).unwrap_or(usize::MAX),
            cache_entries: args.cache_entries,
            ..Limits::default()
        },
    )?;
    let url = StoreUrl::parse(&store)?;
    let stop = common::stop_flag()?;
    let api = Api::start(Plan {
        url: url.clone(),
        options,
    })?;
    eprintln!(
        "serving {} from {}; stop with Ctrl-C",
        api.describe(),
        store_text(&url)
    );
    api.serve_until(&stop)?;
    tracing::info!(message = "query API stopped");
    Ok(Outcome::Clean)
}

/// The store for messages (a ClickHouse URL without its password).
pub fn store_text(url: &StoreUrl) -> String {
    match url {
        StoreUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
        StoreUrl::ClickHouse(c) => c.to_string(),
    }
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
        let config = ApiConfig {
            grpc_listen_addr: "127.0.0.1:6000".into(),
            http_listen_addr: String::new(),
            token: "from-config".into(),
        };
        let args = ListenArgs {
            grpc: None,
            http: Some("off".into()),
            token: Some("t".into()),
        };
        let o = args.options(&config, Limits::default()).unwrap();
        assert_eq!(o.grpc, Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(o.http, None);
        assert_eq!(o.token.as_deref(), Some("t"));
        if std::env::var(TOKEN_ENV).is_err() {
            let o = ListenArgs::default()
                .options(&config, Limits::default())
                .unwrap();
            assert_eq!(o.token.as_deref(), Some("from-config"));
        }
        let o = ListenArgs {
            token: Some("x".into()),
            ..ListenArgs::default()
        }
        .options(&ApiConfig::default(), Limits::default())
        .unwrap();
        assert_eq!(o.grpc, Some("0.0.0.0:50051".parse().unwrap()));
        assert_eq!(o.http, Some("0.0.0.0:8080".parse().unwrap()));
        let both_off = ListenArgs {
            grpc: Some("off".into()),
            http: Some("off".into()),
            token: None,
        };
        assert!(both_off
            .options(&ApiConfig::default(), Limits::default())
            .is_err());
        let err = ListenArgs {
            http: Some("nonsense".into()),
            ..ListenArgs::default()
        }
        .options(&ApiConfig::default(), Limits::default())
        .err()
        .expect("a bad address is refused");
        assert!(format!("{err:#}").contains("--http `nonsense`"), "{err:#}");
    }
}
