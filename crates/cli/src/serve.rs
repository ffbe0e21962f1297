//! `netspectra api`, and the `--serve` flags of `analyze` and `run`: flags
//! → [`netspectra_node::api`] configuration.

use crate::Outcome;
use anyhow::bail;
use clap::Args;
use netspectra_api::Limits;
use netspectra_model::config::Config;
use netspectra_node::api::{store_text, ApiConfig, ApiServer, Listen};
use netspectra_node::{setup, Shutdown};
use netspectra_store::StoreUrl;
use std::path::PathBuf;

/// Where the query API listens and who may ask (`netspectra api`, and
/// `analyze`/`run` with `--serve`).
#[derive(Args, Clone, Default)]
pub struct ListenArgs {
    /// gRPC listen address: `host:port`, `:port` (every interface) or `off`
    /// (default: config `api.grpc_listen_addr`, else `:50051` with a token,
    /// `127.0.0.1:50051` without).
    #[arg(long, value_name = "ADDR")]
    pub grpc: Option<String>,
    /// HTTP listen address: `host:port`, `:port` (every interface) or `off`
    /// (default: config `api.http_listen_addr`, else `:8080` with a token,
    /// `127.0.0.1:8080` without).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Bearer token both protocols require (default: env NETSPECTRA_API_TOKEN,
    /// else config `api.token`; none: no authentication).
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// Serve a non-loopback address without a token: anyone who reaches it
    /// reads the stored traffic (refused without this flag).
    #[arg(long)]
    pub insecure_no_auth: bool,
}

impl ListenArgs {
    fn listen(&self) -> Listen {
        Listen {
            grpc: self.grpc.clone(),
            http: self.http.clone(),
            token: self.token.clone(),
            insecure_no_auth: self.insecure_no_auth,
        }
    }
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
    pub fn plan(&self, config: &Config, store: Option<&str>) -> anyhow::Result<Option<ApiConfig>> {
        if !self.serve {
            let l = &self.listen;
            if l.grpc.is_some() || l.http.is_some() || l.token.is_some() || l.insecure_no_auth {
                bail!("--grpc, --http, --token and --insecure-no-auth apply only with --serve");
            }
            return Ok(None);
        }
        let Some(store) = store else {
            bail!("--serve needs a store: pass --store URL (or set `store.url` in the config)");
        };
        require_token(&self.listen, config)?;
        Ok(Some(ApiConfig {
            url: StoreUrl::parse(store)?,
            options: self
                .listen
                .listen()
                .options(&config.api, Limits::default())?,
            ai: Some(config.ai.clone()),
        }))
    }
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
    /// Questions answered at once (HTTP and gRPC together); more are
    /// refused at once with 503 and Retry-After.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_in_flight as u64,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_in_flight: u64,
    /// Seconds a question may take before it is abandoned (503, Retry-After).
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().request_timeout.as_secs_f64())]
    request_timeout: f64,
}

/// `netspectra api`: serves the store until SIGINT/SIGTERM.
pub fn run(args: ApiArgs) -> anyhow::Result<Outcome> {
    let config = setup::load_config(args.config.as_deref())?;
    let Some(store) = setup::store_url(false, args.store.as_deref(), &config)? else {
        bail!("no store to serve: pass --store URL (or set `store.url` in the config)");
    };
    let limits = Limits {
        max_rows: usize::try_from(args.max_rows).unwrap_or(usize::MAX),
        cache_entries: args.cache_entries,
        max_in_flight: usize::try_from(args.max_in_flight).unwrap_or(usize::MAX),
        request_timeout: std::time::Duration::try_from_secs_f64(args.request_timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                anyhow::anyhow!("--request-timeout must be a positive number of seconds")
            })?,
        ..Limits::default()
    };
    require_token(&args.listen, &config)?;
    let options = args.listen.listen().options(&config.api, limits)?;
    let url = StoreUrl::parse(&store)?;
    serve_until_stopped(ApiConfig {
        url,
        options,
        ai: Some(config.ai.clone()),
    })?;
    tracing::info!(message = "query API stopped");
    Ok(Outcome::Clean)
}

/// An `api.token` that came from an unset variable is an error (unless a
/// token is given otherwise): serving without the token someone meant to
/// set would open the stored traffic.
fn require_token(listen: &ListenArgs, config: &Config) -> anyhow::Result<()> {
    let given = listen.token.is_some()
        || std::env::var(netspectra_node::api::TOKEN_ENV).is_ok_and(|t| !t.is_empty());
    if !given {
        config.require_set("api.token")?;
    }
    Ok(())
}

/// Serves `config` until SIGINT/SIGTERM (`api`, `analyze --serve`).
pub fn serve_until_stopped(config: ApiConfig) -> anyhow::Result<()> {
    let stop = Shutdown::on_signals()?;
    let store = store_text(&config.url);
    let api = ApiServer::start(config)?;
    eprintln!("serving {} from {store}; stop with Ctrl-C", api.describe());
    api.serve_until(&stop)?;
    Ok(())
}
