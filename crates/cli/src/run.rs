//! `netspectra run --iface IF`: flags → [`netspectra_node::live::LiveRun`],
//! a progress line, the same report as `analyze` plus the capture's
//! counters. A second SIGINT/SIGTERM exits at once (status 1) in case the
//! shutdown hangs.

use crate::report::{self, OutputFormat};
use crate::serve::ServeArgs;
use crate::Outcome;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use netspectra_capture::link::LinkType;
use netspectra_capture::live::LiveOptions;
use netspectra_capture::persist::PersistOptions;
use netspectra_node::live::{LiveRun, LiveRunConfig};
use netspectra_node::{setup, Shutdown};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `netspectra run`.
#[derive(Args)]
pub struct RunArgs {
    /// Interface to capture on (`ip link` names it; `any` for all).
    #[arg(long, value_name = "IF")]
    iface: String,
    /// BPF filter expression (tcpdump syntax), applied in the kernel.
    #[arg(long, value_name = "EXPR")]
    bpf: Option<String>,
    /// Bytes kept of each packet (headers are enough for counting).
    #[arg(long, value_name = "BYTES", default_value_t = 65535,
          value_parser = clap::value_parser!(i32).range(64..=262_144))]
    snaplen: i32,
    /// Do not put the interface in promiscuous mode.
    #[arg(long)]
    no_promisc: bool,
    /// YAML configuration (built-in defaults when absent).
    #[arg(long, value_name = "F")]
    config: Option<PathBuf>,
    /// Result store: `sqlite:PATH` or a file path (default: config `store.url`, `sqlite:netspectra.db`).
    #[arg(long, value_name = "URL", conflicts_with = "no_store")]
    store: Option<String>,
    /// Keep results in memory only.
    #[arg(long, conflicts_with = "serve")]
    no_store: bool,
    /// Engine workers; 0 = one per core (default: config `aggregator.num_workers`, else one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=1024))]
    workers: Option<u16>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Rows shown per task, by bytes; 0 = all.
    #[arg(long, value_name = "N", default_value_t = 10)]
    top: usize,
    /// Stop after this many seconds of capture (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many packets (counted after the BPF filter).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Also write the captured packets to rotating pcap files in DIR
    /// (`YYYYmmdd-HHMMSS.pcap`, by one writer thread; dropped, and counted,
    /// if the disk falls behind).
    #[arg(long, value_name = "DIR")]
    persist: Option<PathBuf>,
    /// Start a new pcap file after this many MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256, requires = "persist",
          value_parser = clap::value_parser!(u64).range(1..))]
    persist_rotate_mb: u64,
    /// Start a new pcap file after this many seconds of packet time.
    #[arg(long, value_name = "SECS", default_value_t = 300, requires = "persist",
          value_parser = clap::value_parser!(u64).range(1..))]
    persist_rotate_secs: u64,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` on this
    /// address (e.g. `127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("duration must be positive, got `{s}`"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// Captures until a stop condition, then reports (exit 0) — or fails (exit 1)
/// when the interface cannot be opened or the capture breaks.
pub fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let config = setup::load_config(args.config.as_deref())?;
    let store = setup::store_url(args.no_store, args.store.as_deref(), &config)?;
    let serve = args.serve.plan(&config, store.as_deref())?;
    let persist = args.persist.as_ref().map(|dir| PersistOptions {
        snaplen: u32::try_from(args.snaplen).unwrap_or(65535),
        max_file_bytes: args.persist_rotate_mb << 20,
        max_file_age: Duration::from_secs(args.persist_rotate_secs),
        // The capture's own link type replaces this once it is open.
        ..PersistOptions::new(dir, LinkType(1))
    });
    let live = LiveRun::start(LiveRunConfig {
        capture: LiveOptions {
            bpf: args.bpf.clone(),
            snaplen: args.snaplen,
            promisc: !args.no_promisc,
            ..LiveOptions::new(args.iface.clone())
        },
        config,
        workers: args.workers.map_or(0, usize::from),
        store,
        top: args.top,
        duration: args.duration,
        count: args.count,
        persist,
        serve,
        metrics: args.metrics.clone(),
    })?;
    let stop = Shutdown::on_signals()?;
    eprintln!("{}; stop with Ctrl-C", live.describe());
    let bar = progress_line();
    let summary = live.wait(&stop, &mut |p| {
        bar.set_message(format!(
            "{} packets, {} bytes, {} dropped by the kernel",
            p.packets, p.bytes, p.dropped
        ));
        bar.tick();
    })?;
    bar.finish_and_clear();
    match args.format {
        OutputFormat::Json => {
            let mut v = report::json(&summary.report);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("capture".into(), summary.capture_json());
            }
            println!("{v}");
        }
        OutputFormat::Table => {
            let table = report::table(&summary.report);
            // The capture lines go right under the totals line.
            let (head, rest) = table.split_at(table.find('\n').map_or(table.len(), |i| i + 1));
            print!("{head}{}{rest}", summary.capture_lines());
        }
    }
    match summary.error {
        Some(e) => Err(anyhow::anyhow!(e)),
        None => Ok(Outcome::Clean),
    }
}

fn progress_line() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar
}
