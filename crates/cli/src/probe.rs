//! `netspectra probe`: flags → [`netspectra_node::probe::Probe`], and its
//! summary.

use crate::Outcome;
use anyhow::anyhow;
use clap::Args;
use netspectra_bus::BatchLimits;
use netspectra_capture::live::LiveOptions;
use netspectra_node::probe::{default_align_ns, default_probe_id, Probe, ProbeConfig, ProbeInput};
use netspectra_node::setup::BusFlags;
use netspectra_node::{setup, Shutdown};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `netspectra probe`.
#[derive(Args)]
pub struct ProbeArgs {
    /// Capture live on this interface (libpcap; needs root or CAP_NET_RAW).
    #[arg(
        long,
        value_name = "IF",
        conflicts_with = "file",
        required_unless_present = "file"
    )]
    iface: Option<String>,
    /// Replay pcap/pcapng files instead, in the order given.
    #[arg(long, value_name = "F", num_args = 1..)]
    file: Vec<PathBuf>,
    /// BPF filter for live capture (tcpdump syntax).
    #[arg(long, value_name = "EXPR", requires = "iface")]
    bpf: Option<String>,
    /// NATS URL (default: config `probe.nats_url`, else nats://127.0.0.1:4222).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// YAML configuration.
    #[arg(long, value_name = "F")]
    config: Option<PathBuf>,
    /// Replay files at their recorded speed instead of as fast as possible.
    #[arg(long, requires = "file")]
    realtime: bool,
    /// Publish into a JetStream stream (at-least-once; engines need it too;
    /// default: config `bus.jetstream`).
    #[arg(long)]
    jetstream: bool,
    /// This probe's name in batch ids (default: host name and process id).
    #[arg(long, value_name = "ID")]
    probe_id: Option<String>,
    /// Subject prefix: batches go to `<prefix>.packets.<shard>` (default:
    /// config `bus.prefix`, else `netspectra`).
    #[arg(long, value_name = "P")]
    prefix: Option<String>,
    /// Number of shards, as the engines' (default: config `bus.shards`, else 16).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    shards: Option<u32>,
    /// Packets per batch at most.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    batch_packets: usize,
    /// Batches never span a multiple of this in packet time (e.g. `100ms`;
    /// `0` = off). Engines' window lengths must be multiples of it for
    /// JetStream redelivery to stay exact. Default: the greatest common
    /// divisor of 100 ms and the configured window (`snapshot_interval`).
    #[arg(long, value_name = "DURATION")]
    batch_align: Option<String>,
    /// Live capture: stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS", requires = "iface")]
    duration: Option<f64>,
    /// Summary format on stdout.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    format: String,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` on this
    /// address (e.g. `127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

pub fn run(args: ProbeArgs) -> anyhow::Result<Outcome> {
    let config = setup::load_config(args.config.as_deref())?;
    let url = setup::nats_url(args.nats.as_deref(), &config)?;
    let probe_id = args.probe_id.clone().unwrap_or_else(default_probe_id);
    let align_ns = match &args.batch_align {
        Some(t) if t.trim() == "0" => 0,
        Some(t) => netspectra_model::time::parse_duration_ns(t)
            .map_err(|e| anyhow!("--batch-align: {e}"))?,
        None => default_align_ns(&config),
    };
    let input = match &args.iface {
        Some(iface) => ProbeInput::Live {
            options: LiveOptions {
                bpf: args.bpf.clone(),
                ..LiveOptions::new(iface)
            },
            duration: args.duration.map(|s| Duration::from_secs_f64(s.max(0.0))),
        },
        None => ProbeInput::Files {
            paths: args.file.clone(),
            realtime: args.realtime,
        },
    };
    let probe = Probe::start(ProbeConfig {
        input,
        bus: setup::bus_config(
            url,
            &config,
            &BusFlags {
                prefix: args.prefix.clone(),
                shards: args.shards,
                jetstream: args.jetstream,
            },
            format!("probe {probe_id}"),
        ),
        probe_id,
        limits: BatchLimits {
            max_packets: args.batch_packets.max(1),
            align_ns,
            ..Default::default()
        },
        metrics: args.metrics.clone(),
    })?;
    let stop = Shutdown::on_signals()?;
    tracing::info!(message = "probe started", what = %probe.describe());
    let summary = probe.wait(&stop)?;
    if args.format == "json" {
        println!("{}", summary.json());
    } else {
        print!("{}", summary.text());
    }
    if summary.dropped_packets() > 0 {
        anyhow::bail!(
            "{} captured packets were dropped: NATS could not take them (see the log above)",
            summary.dropped_packets()
        );
    }
    Ok(if summary.damaged() {
        Outcome::Damaged
    } else {
        Outcome::Clean
    })
}
