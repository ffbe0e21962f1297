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

impl ListenArgs {
    fn listen(&self) -> Listen {
        Listen {
            grpc: self.grpc.clone(),
            http: self.http.clone(),
            token: self.token.clone(),
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
            if l.grpc.is_some() || l.http.is_some() || l.token.is_some() {
                bail!("--grpc, --http and --token apply only with --serve");
            }
            return Ok(None);
        }
        let Some(store) = store else {
            bail!("--serve needs a store: pass --store URL (or set `store.url` in the config)");
        };
        Ok(Some(ApiConfig {
            url: StoreUrl::parse(store)?,
            options: self
                .listen
                .listen()
                .options(&config.api, Limits::default())?,
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
}

/// `netspectra api`: serves the store until SIGINT/SIGTERM.
pub fn run(args: ApiArgs) -> anyhow::Result<Outcome> {
    let config = setup::load_config(args.config.as_deref())?;
    let Some(store) = setup::store_url(false, args.store.as_deref(), &config) else {
        bail!("no store to serve: pass --store URL (or set `store.url` in the config)");
    };
    let limits = Limits {
        max_rows: usize::try_from(args.max_rows).unwrap_or(usize::MAX),
        cache_entries: args.cache_entries,
        ..Limits::default()
    };
    let options = args.listen.listen().options(&config.api, limits)?;
    let url = StoreUrl::parse(&store)?;
    serve_until_stopped(ApiConfig { url, options })?;
    tracing::info!(message = "query API stopped");
    Ok(Outcome::Clean)
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
