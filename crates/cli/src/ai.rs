//! `netspectra ai`: the AI analyst gateway. Flags → [`netspectra_node::ai`]
//! configuration; serves until SIGINT/SIGTERM.

use crate::Outcome;
use anyhow::bail;
use clap::Args;
use netspectra_api::ai_grpc::AiLimits;
use netspectra_api::Limits;
use netspectra_node::ai::{AiGateway, AiGatewayConfig, AiListen};
use netspectra_node::api::{store_text, TOKEN_ENV};
use netspectra_node::{setup, Shutdown};
use netspectra_store::StoreUrl;
use std::path::PathBuf;

/// Arguments of `netspectra ai` (**contract**: `--config`, `--store`,
/// `--grpc`).
#[derive(Args)]
pub struct AiArgs {
    /// YAML configuration (built-in defaults when absent); its `ai` section
    /// names the model (none: the built-in offline analyst).
    #[arg(long, value_name = "F")]
    config: Option<PathBuf>,
    /// Store the analyst reads: `sqlite:PATH`, a file path or
    /// `clickhouse://…` (default: config `store.url`, `sqlite:netspectra.db`).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// gRPC listen address: `host:port` or `:port` (every interface)
    /// (default: config `ai.grpc_listen_addr`, else `127.0.0.1:50052`).
    #[arg(long, value_name = "ADDR")]
    grpc: Option<String>,
    /// Bearer token every method but health requires (default: env
    /// NETSPECTRA_API_TOKEN, else config `api.token`; none: no
    /// authentication).
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` (ready while
    /// the store answers) on this `host:port`.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Serve a non-loopback address without a token: anyone who reaches it
    /// can ask about the stored traffic (refused without this flag).
    #[arg(long)]
    insecure_no_auth: bool,
    /// Answers in progress at once (at most 4, what the analyst answers at
    /// once); one more is refused at once (RESOURCE_EXHAUSTED).
    #[arg(long, value_name = "N", default_value_t = AiLimits::default().max_in_flight as u64,
          value_parser = clap::value_parser!(u64).range(1..=netspectra_ai::MAX_CONCURRENT_ANSWERS as u64))]
    max_answers: u64,
    /// Seconds one answer may take, tool calls included (DEADLINE_EXCEEDED);
    /// at most 295, the analyst's own limit.
    #[arg(long, value_name = "SECS", default_value_t = AiLimits::default().answer_timeout.as_secs_f64())]
    answer_timeout: f64,
}

/// `netspectra ai`: serves the analyst until SIGINT/SIGTERM.
pub fn run(args: AiArgs) -> anyhow::Result<Outcome> {
    let config = setup::load_config(args.config.as_deref())?;
    let Some(store) = setup::store_url(false, args.store.as_deref(), &config)? else {
        bail!(
            "no store for the analyst to read: pass --store URL (or set `store.url` in the config)"
        );
    };
    // A token from an unset variable would silently open the gateway.
    let given = args.token.is_some() || std::env::var(TOKEN_ENV).is_ok_and(|t| !t.is_empty());
    if !given {
        config.require_set("api.token")?;
    }
    let limits = AiLimits {
        max_in_flight: usize::try_from(args.max_answers).unwrap_or(usize::MAX),
        answer_timeout: std::time::Duration::try_from_secs_f64(args.answer_timeout)
            .ok()
            .filter(|d| !d.is_zero() && *d <= netspectra_ai::MAX_ANSWER_TIME)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--answer-timeout must be a positive number of seconds, at most {}",
                    netspectra_ai::MAX_ANSWER_TIME.as_secs()
                )
            })?,
        ..AiLimits::default()
    };
    let options = AiListen {
        grpc: args.grpc,
        token: args.token,
        insecure_no_auth: args.insecure_no_auth,
    }
    .options(&config, limits)?;
    let url = StoreUrl::parse(&store)?;
    let store = store_text(&url);
    let stop = Shutdown::on_signals()?;
    let gateway = AiGateway::start(AiGatewayConfig {
        url,
        ai: config.ai.clone(),
        options,
        query_limits: Limits::default(),
        metrics: args.metrics,
    })?;
    eprintln!(
        "serving {} from {store}; stop with Ctrl-C",
        gateway.describe()
    );
    gateway.serve_until(&stop)?;
    tracing::info!(message = "AI gateway stopped");
    Ok(Outcome::Clean)
}
