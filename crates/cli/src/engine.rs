//! `netspectra engine`: flags → [`netspectra_node::engine::EngineRole`],
//! and its summary.

use crate::Outcome;
use clap::Args;
use netspectra_bus::ConsumerConfig;
use netspectra_node::alerter::{Alerter, AlerterConfig};
use netspectra_node::engine::{default_engine_id, static_shards, EngineConfig, EngineRole};
use netspectra_node::setup::BusFlags;
use netspectra_node::{setup, Shutdown};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `netspectra engine`.
#[derive(Args)]
pub struct EngineArgs {
    /// NATS URL (default: config `probe.nats_url`, else nats://127.0.0.1:4222).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Result store: `sqlite:PATH` or a path (default: config `store.url`).
    #[arg(long, value_name = "URL", conflicts_with = "no_store")]
    store: Option<String>,
    /// Keep results in memory only (benchmarks).
    #[arg(long)]
    no_store: bool,
    /// YAML configuration (tasks, windows, workers).
    #[arg(long, value_name = "F")]
    config: Option<PathBuf>,
    /// Static override: this engine's index among `--engines` (it owns the
    /// shards s with s % E == I). Without it, engines find each other
    /// through NATS and share the shards on their own.
    #[arg(long, value_name = "I", requires = "engines")]
    engine_index: Option<u32>,
    /// Static override: the number of engines sharing the shards.
    #[arg(long, value_name = "E", requires = "engine_index",
          value_parser = clap::value_parser!(u32).range(1..))]
    engines: Option<u32>,
    /// Seconds after which a silent engine is taken for dead and its shards
    /// move to the others (they renew four times per period; default:
    /// config `bus.member_ttl`, else 4).
    #[arg(long, value_name = "SECS")]
    member_ttl: Option<f64>,
    /// Consume from the JetStream stream with durable consumers
    /// (at-least-once; default: config `bus.jetstream`).
    #[arg(long)]
    jetstream: bool,
    /// Id written on every stored row, unique per running engine (default:
    /// `<host>-<pid>`; `engine-<index>` with `--engine-index`).
    #[arg(long, value_name = "ID")]
    engine_id: Option<String>,
    /// Also consume Go2NetSpectra probes' one-packet messages from this
    /// subject (e.g. `gons.packets.raw`); each engine keeps the packets of
    /// its own shards, so none is counted twice (default: config
    /// `bus.interop_subject`).
    #[arg(long, value_name = "S")]
    interop_subject: Option<String>,
    /// Stop after this many seconds without a message.
    #[arg(long, value_name = "SECS")]
    idle_exit: Option<f64>,
    /// Subject prefix, as the probes' (default: config `bus.prefix`, else `netspectra`).
    #[arg(long, value_name = "P")]
    prefix: Option<String>,
    /// Number of shards, as the probes' (default: config `bus.shards`, else 16).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    shards: Option<u32>,
    /// Engine workers; 0 = one per core (default: config `aggregator.num_workers`, else one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=1024))]
    workers: Option<u16>,
    /// JetStream: seconds before the server redelivers an unacknowledged
    /// batch (set when the durable consumers are created; default: config
    /// `bus.ack_wait`, else 30).
    #[arg(long, value_name = "SECS")]
    ack_wait: Option<f64>,
    /// Summary format on stdout.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    format: String,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` on this
    /// address (e.g. `127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

pub fn run(args: EngineArgs) -> anyhow::Result<Outcome> {
    let config = setup::load_config(args.config.as_deref())?;
    let url = setup::nats_url(args.nats.as_deref(), &config)?;
    let engine_id = args
        .engine_id
        .clone()
        .unwrap_or_else(|| match args.engine_index {
            Some(i) => format!("engine-{i}"),
            None => default_engine_id(),
        });
    let flags = BusFlags {
        prefix: args.prefix.clone(),
        shards: args.shards,
        jetstream: args.jetstream,
    };
    let bus = setup::bus_config(url, &config, &flags, format!("engine {engine_id}"));
    let shards = match (args.engine_index, args.engines) {
        (Some(index), Some(engines)) => static_shards(index, engines, bus.shards)?,
        _ => Vec::new(),
    };
    let seconds = |flag: Option<f64>, config: u64| {
        flag.map_or(Duration::from_nanos(config), Duration::from_secs_f64)
    };
    let elastic = args.engine_index.is_none().then(|| {
        seconds(args.member_ttl, config.bus.member_ttl.0)
            .clamp(Duration::from_secs(1), Duration::from_secs(3600))
    });
    let ack_wait = seconds(args.ack_wait, config.bus.ack_wait.0).max(Duration::from_millis(100));
    let interop_subject = args.interop_subject.clone().or_else(|| {
        (!config.bus.interop_subject.is_empty()).then(|| config.bus.interop_subject.clone())
    });
    let store = setup::store_url(args.no_store, args.store.as_deref(), &config)?;
    // `alerter.enabled`: the alerter runs beside the engine, over its store;
    // engines sharing a bus elect one to act.
    let alerter = match (&store, config.alerter.enabled) {
        (Some(url), true) => Some(AlerterConfig {
            config: config.clone(),
            store: netspectra_store::StoreUrl::parse(url)?,
            nats: Some(bus.clone()),
            id: engine_id.clone(),
            lease_ttl: Duration::from_secs(6),
            retry: Default::default(),
            metrics: None,
        }),
        _ => None,
    };
    let engine = EngineRole::start(EngineConfig {
        config,
        workers: args.workers.map_or(0, usize::from),
        consumer: ConsumerConfig {
            bus,
            shards,
            interop_subject,
            ack_wait,
            queue: 256,
        },
        elastic,
        engine_id,
        store,
        idle_exit: args.idle_exit.map(|s| Duration::from_secs_f64(s.max(0.0))),
        metrics: args.metrics.clone(),
    })?;
    let stop = Shutdown::on_signals()?;
    eprintln!("{}", engine.describe());
    let alerting = alerter.map(|cfg| {
        let stop = stop.clone();
        std::thread::spawn(move || Alerter::run(cfg, &stop))
    });
    let summary = engine.wait(&stop);
    stop.trigger();
    if let Some(Ok(Err(error))) = alerting.map(std::thread::JoinHandle::join) {
        eprintln!("warning: the alerter failed: {error}");
    }
    let summary = summary?;
    if args.format == "json" {
        println!("{}", summary.json());
    } else {
        println!("{}", summary.text());
    }
    Ok(Outcome::Clean)
}
