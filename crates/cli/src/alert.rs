//! `netspectra alert` (the standalone alerter) and `netspectra alert
//! backtest` (the rules replayed over stored windows, sending nothing).

use crate::report::{columns, OutputFormat};
use crate::Outcome;
use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use netspectra_model::alert::{alerts_json, key_text, rfc3339, AlertRecord};
use netspectra_model::time::parse_rfc3339_ns;
use netspectra_node::alerter::{self, Alerter, AlerterConfig};
use netspectra_node::setup::BusFlags;
use netspectra_node::{setup, Shutdown};
use netspectra_store::StoreUrl;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `netspectra alert`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AlertArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// YAML configuration with `alerter.rules`, `alerter.notifiers`, `smtp`.
    #[arg(long, value_name = "F")]
    config: Option<PathBuf>,
    /// Store whose windows are evaluated (default: config `store.url`).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// NATS URL: replicas elect one leader; only it evaluates and notifies.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// This replica's id (default: `<host>-<pid>`).
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Subject prefix of the cluster (default: config `bus.prefix`).
    #[arg(long, value_name = "P")]
    prefix: Option<String>,
    /// Seconds without renewal after which another replica takes over.
    #[arg(long, value_name = "SECS", default_value_t = 6.0)]
    lease_ttl: f64,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` on this
    /// address (e.g. `127.0.0.1:9465`).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

#[derive(Subcommand)]
enum Action {
    /// Replay the rules over stored windows and print the transitions that
    /// would have happened; sends nothing.
    Backtest(BacktestArgs),
}

/// Arguments of `netspectra alert backtest`.
#[derive(Args)]
struct BacktestArgs {
    /// YAML configuration with `alerter.rules`.
    #[arg(long, value_name = "F")]
    config: Option<PathBuf>,
    /// Store to replay (default: config `store.url`).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Only windows starting at or after T (RFC 3339, or integer ns).
    #[arg(long, value_name = "T")]
    from: Option<String>,
    /// Only windows ending at or before T (RFC 3339, or integer ns).
    #[arg(long, value_name = "T")]
    to: Option<String>,
    /// Output: a table, or the alert JSON (**contract**).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

pub fn run(args: AlertArgs) -> anyhow::Result<Outcome> {
    if let Some(Action::Backtest(b)) = args.action {
        return backtest(b);
    }
    let config = setup::load_config(args.config.as_deref())?;
    let store = store_url(args.store.as_deref(), &config)?;
    let id = args
        .id
        .unwrap_or_else(netspectra_node::engine::default_engine_id);
    let nats = args.nats.map(|url| {
        let flags = BusFlags {
            prefix: args.prefix.clone(),
            ..BusFlags::default()
        };
        setup::bus_config(url, &config, &flags, format!("alerter {id}"))
    });
    let lease_ttl = Duration::from_secs_f64(args.lease_ttl.clamp(1.0, 600.0));
    let stop = Shutdown::on_signals()?;
    eprintln!(
        "alerter {id}: {} rules over {}{}",
        config.alerter.rules.len(),
        netspectra_node::api::store_text(&store),
        if nats.is_some() {
            " (one leader among replicas, through NATS)"
        } else {
            ""
        }
    );
    let summary = Alerter::run(
        AlerterConfig {
            config,
            store,
            nats,
            id,
            lease_ttl,
            retry: Default::default(),
            metrics: args.metrics,
        },
        &stop,
    )?;
    let (firing, resolved) = summary.outcome.counts();
    println!(
        "alerter stopped after {} passes: {firing} fired, {resolved} resolved; notifications: {} sent, {} failed",
        summary.passes, summary.outcome.sent, summary.outcome.failed
    );
    Ok(Outcome::Clean)
}

fn store_url(
    flag: Option<&str>,
    config: &netspectra_model::config::Config,
) -> anyhow::Result<StoreUrl> {
    let url = setup::store_url(false, flag, config)?
        .ok_or_else(|| anyhow!("no store: pass --store or set store.url"))?;
    Ok(StoreUrl::parse(&url)?)
}

fn time_arg(flag: &str, text: Option<&str>) -> anyhow::Result<Option<u64>> {
    text.map(|t| {
        t.parse::<u64>()
            .or_else(|_| parse_rfc3339_ns(t))
            .with_context(|| format!("--{flag}"))
    })
    .transpose()
}

fn backtest(args: BacktestArgs) -> anyhow::Result<Outcome> {
    let config = setup::load_config(args.config.as_deref())?;
    let store = store_url(args.store.as_deref(), &config)?;
    let from = time_arg("from", args.from.as_deref())?.unwrap_or(0);
    let to = time_arg("to", args.to.as_deref())?.unwrap_or(i64::MAX as u64);
    let alerts = alerter::backtest(&config, &store, from, to)?;
    match args.format {
        OutputFormat::Json => println!("{}", alerts_json(&alerts)),
        OutputFormat::Table => print!("{}", table(&alerts)),
    }
    Ok(Outcome::Clean)
}

/// One line per transition, oldest first.
pub fn table(alerts: &[AlertRecord]) -> String {
    if alerts.is_empty() {
        return "no transitions\n".into();
    }
    let rows: Vec<Vec<String>> = alerts
        .iter()
        .map(|a| {
            vec![
                rfc3339(a.at_ns()),
                a.state.clone(),
                a.rule.clone(),
                key_text(&a.key),
                format!("{} {} {}", a.metric, a.operator, a.threshold),
                a.value.to_string(),
                a.severity.clone(),
            ]
        })
        .collect();
    columns(
        &[
            "at",
            "state",
            "rule",
            "key",
            "condition",
            "value",
            "severity",
        ],
        &rows,
        &[false, false, false, false, false, true, false],
    )
}
