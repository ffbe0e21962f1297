//! `netspectra run --iface IF`: single-host live mode. Live capture → decode →
//! engine → embedded store → the same report as `analyze`, plus the capture's
//! kernel counters.
//!
//! One thread captures, decodes and feeds the engine (whose workers run on
//! their own threads). The capture stops on SIGINT/SIGTERM, after
//! `--duration` seconds or after `--count` packets. On a signal or the end of
//! the duration, packets the kernel had captured before the stop are still
//! read (for the capture's delivery delay, at most [`DRAIN_LIMIT`]; packets
//! stamped after the stop are left out); then the open window is flushed and
//! stored, so what was captured before the stop is counted. A second SIGINT/SIGTERM exits
//! at once (status 1) in case the shutdown hangs.
//!
//! With `--serve`, the query API answers from the store while the run goes
//! on (on its own thread and runtime) and stops after the last window is
//! stored.

use crate::common::{self, RunStore};
use crate::report::{self, FileReport, OutputFormat, Report};
use crate::serve::{self, ServeArgs};
use crate::telemetry;
use crate::Outcome;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use netspectra_capture::decode::decode;
use netspectra_capture::live::{LiveCapture, LiveOptions, LiveStats};
use netspectra_capture::persist::{PersistOptions, Persister};
use netspectra_engine::{Engine, EnginePlan};
use netspectra_model::{DecodeCounters, PacketRecord};
use netspectra_store::StoreUrl;
use serde_json::json;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// Engine workers (default: config `aggregator.num_workers`, else one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
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

/// After a stop signal or the end of `--duration`, packets captured before the
/// stop are still read for at most this long (a link that never goes idle
/// must not delay the exit).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// Added to the capture's delivery delay while draining (kernel timer slack).
const DRAIN_MARGIN: Duration = Duration::from_millis(50);
/// How often the kernel counters and the progress line are refreshed.
const REFRESH: Duration = Duration::from_millis(500);
/// Packets between two looks at the clock on a busy link.
const CLOCK_EVERY: u64 = 256;

/// Why the capture stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    Signal,
    Duration,
    Count,
    Error,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Signal => "signal",
            Stop::Duration => "duration",
            Stop::Count => "count",
            Stop::Error => "error",
        }
    }
}

/// A stop being carried out: packets captured before it are still read.
struct Stopping {
    reason: Stop,
    /// Wall clock at the stop, ns (the clock of packet timestamps).
    at_ns: u64,
    /// An empty read after this means nothing captured before the stop is left.
    idle_until: Instant,
    /// Give up draining at this point even if packets keep coming.
    hard_until: Instant,
}

impl Stopping {
    fn new(reason: Stop, drain_for: Duration) -> Self {
        let now = Instant::now();
        Stopping {
            reason,
            at_ns: wall_ns(),
            idle_until: now + drain_for,
            hard_until: now + DRAIN_LIMIT,
        }
    }
}

/// What the capture loop read.
#[derive(Default)]
struct Captured {
    packets: u64,
    bytes: u64,
    decoded: DecodeCounters,
}

/// Captures until a stop condition, then reports (exit 0) — or fails (exit 1)
/// when the interface cannot be opened or the capture breaks.
pub fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let telemetry = telemetry::from_arg(args.metrics.as_deref())?;
    telemetry.set_ready(false, "opening the capture");
    let config = common::load_config(args.config.as_deref())?;
    let plan = EnginePlan::from_config(&config, args.workers.map_or(0, usize::from))?;
    let url = common::store_url(args.no_store, args.store.as_deref(), &config);
    if let Some(url) = &url {
        StoreUrl::parse(url)?;
    }
    let serve = args.serve.plan(&config, url.as_deref())?;

    // Open the interface before anything is stored: a missing interface or
    // a bad filter is a usage error that leaves no run behind.
    let opts = LiveOptions {
        bpf: args.bpf.clone(),
        snaplen: args.snaplen,
        promisc: !args.no_promisc,
        ..LiveOptions::new(args.iface.clone())
    };
    let mut cap = LiveCapture::open(&opts)?;

    let stop = common::stop_flag()?;

    let inputs = json!([format!("iface:{}", args.iface)]);
    let window_ns = plan.window_ns;
    let workers = plan.workers;
    let (mut run_store, sink) = RunStore::begin(url, "local", &inputs, &plan.tasks, window_ns)?;
    // Started once the store exists (a new SQLite file is created by the run).
    let api = match serve {
        Some(serve) => {
            let store = serve::store_text(&serve.url);
            match serve::Api::start(serve) {
                Ok(api) => {
                    eprintln!("serving {} from {store} while capturing", api.describe());
                    Some(api)
                }
                Err(e) => {
                    run_store.abandon();
                    return Err(e);
                }
            }
        }
        None => None,
    };
    let mut engine = Engine::start(plan, sink)?;
    telemetry.set_ready(true, "");
    export(&Captured::default(), &LiveStats::default());

    let link = cap.link_type();
    let mut persist = match &args.persist {
        Some(dir) => Some(
            Persister::start(PersistOptions {
                snaplen: u32::try_from(args.snaplen).unwrap_or(65535),
                max_file_bytes: args.persist_rotate_mb << 20,
                max_file_age: Duration::from_secs(args.persist_rotate_secs),
                ..PersistOptions::new(dir, link)
            })
            .with_context(|| format!("cannot persist packets in {}", dir.display()))?,
        ),
        None => None,
    };
    eprintln!(
        "capturing on {} (link type {link}{}); stop with Ctrl-C",
        args.iface,
        args.bpf
            .as_deref()
            .map(|f| format!(", filter `{f}`"))
            .unwrap_or_default()
    );
    tracing::info!(message = "capture started", iface = %args.iface, link_type = %link, bpf = ?args.bpf);
    let progress = progress_line();
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let limit = args.count.unwrap_or(u64::MAX);

    let mut got = Captured::default();
    let mut rec = PacketRecord::default();
    let mut error = None;
    let mut stats = LiveStats::default();
    let mut last_refresh = started;
    // Set when a stop is decided.
    let mut stopping: Option<Stopping> = None;
    let drain_for = (cap.max_delay() * 2 + DRAIN_MARGIN).min(DRAIN_LIMIT);
    let why = loop {
        if got.packets >= limit {
            break Stop::Count;
        }
        if stopping.is_none() {
            let reason = if stop.load(Ordering::Relaxed) {
                Some(Stop::Signal)
            } else if got.packets % CLOCK_EVERY == 0
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                Some(Stop::Duration)
            } else {
                None
            };
            if let Some(reason) = reason {
                stopping = Some(Stopping::new(reason, drain_for));
            }
        }
        if let Some(s) = &stopping {
            if got.packets % CLOCK_EVERY == 0 && Instant::now() >= s.hard_until {
                break s.reason;
            }
        }
        match cap.next_packet() {
            Ok(Some(p)) => {
                if let Some(s) = &stopping {
                    if p.ts_ns > s.at_ns {
                        // Captured after the stop: not part of this run.
                        break s.reason;
                    }
                }
                decode(p.link_type, p.data, &mut rec);
                rec.ts_ns = p.ts_ns;
                rec.wire_len = p.wire_len;
                rec.cap_len = p.data.len() as u32;
                got.packets += 1;
                got.bytes += u64::from(p.wire_len);
                got.decoded.count(&rec);
                engine.push(&rec);
                if let Some(persist) = &mut persist {
                    persist.write(p.ts_ns, p.wire_len, p.data);
                }
                if got.packets % CLOCK_EVERY == 0 {
                    refresh(&mut cap, &mut stats, &mut last_refresh, &progress, &got);
                }
            }
            Ok(None) => {
                if let Some(persist) = &mut persist {
                    persist.flush();
                }
                if let Some(s) = &stopping {
                    if Instant::now() >= s.idle_until {
                        // Idle for longer than the delivery delay: everything
                        // captured before the stop was read.
                        break s.reason;
                    }
                } else if deadline.is_some_and(|d| Instant::now() >= d) {
                    stopping = Some(Stopping::new(Stop::Duration, drain_for));
                }
                refresh(&mut cap, &mut stats, &mut last_refresh, &progress, &got);
            }
            Err(e) => {
                tracing::warn!(message = "live capture failed", iface = %args.iface, error = %e);
                error = Some(e.to_string());
                break Stop::Error;
            }
        }
    };
    let elapsed = started.elapsed();
    match cap.stats() {
        Ok(s) => stats = s,
        Err(e) => tracing::warn!(message = "cannot read capture statistics", error = %e),
    }
    drop(cap);
    progress.finish_and_clear();
    export(&got, &stats);
    telemetry.set_ready(false, "capture stopped; flushing");
    tracing::info!(
        message = "capture stopped",
        reason = why.name(),
        packets = got.packets,
        dropped = stats.dropped
    );

    let persisted = match persist.map(Persister::finish).transpose() {
        Ok(stats) => stats,
        Err(e) => {
            tracing::warn!(message = "writing pcap files failed", error = %e);
            error.get_or_insert_with(|| format!("writing pcap files failed: {e}"));
            None
        }
    };
    let mut output = engine.finish().context("engine failed")?;
    for task in &mut output.tasks {
        task.top(args.top);
    }
    let report = Report {
        files: vec![FileReport {
            path: format!("iface:{}", args.iface),
            format: Some("live".into()),
            link_types: vec![link.name()],
            packets: got.packets,
            bytes: got.bytes,
            error: error.clone(),
        }],
        packets: got.packets,
        bytes: got.bytes,
        decoded: got.decoded,
        elapsed,
        workers,
        window_ns,
        store: run_store.describe(),
        engine: output,
        top: args.top,
    };
    run_store.finish(
        if error.is_some() {
            "failed"
        } else {
            "complete"
        },
        &report,
    )?;
    let capture = json!({
        "iface": args.iface,
        "link_type": link.name(),
        "bpf": args.bpf,
        "received": stats.received,
        "dropped": stats.dropped,
        "if_dropped": stats.if_dropped,
        "stopped_by": why.name(),
        "persist": persisted.as_ref().map(|p| json!({
            "dir": args.persist.as_ref().map(|d| d.display().to_string()),
            "files": p.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "packets": p.packets,
            "dropped": p.dropped,
        })),
    });
    match args.format {
        OutputFormat::Json => {
            let mut v = report::json(&report);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("capture".into(), capture);
            }
            println!("{v}");
        }
        OutputFormat::Table => {
            let table = report::table(&report);
            // The capture line goes right under the totals line.
            let (head, rest) = table.split_at(table.find('\n').map_or(table.len(), |i| i + 1));
            let persisted = persisted
                .as_ref()
                .map(|p| {
                    format!(
                        "persisted: {} packets in {} pcap files, {} dropped by the writer\n",
                        p.packets,
                        p.files.len(),
                        p.dropped
                    )
                })
                .unwrap_or_default();
            print!(
                "{head}capture on {}: {} received, {} dropped by the kernel, {} by the interface; stopped by {}\n{persisted}{rest}",
                args.iface,
                stats.received,
                stats.dropped,
                stats.if_dropped,
                why.name()
            );
        }
    }
    if let Some(api) = api {
        if let Err(e) = api.stop() {
            tracing::warn!(message = "query API failed", error = %format!("{e:#}"));
        }
    }
    match error {
        Some(e) => Err(anyhow::anyhow!(e)),
        None => Ok(Outcome::Clean),
    }
}

/// Wall clock in ns since the Unix epoch (the clock packet timestamps use).
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Reads the kernel counters (often enough that libpcap's 32-bit counters
/// cannot wrap twice) and redraws the progress line, at most every [`REFRESH`].
fn refresh(
    cap: &mut LiveCapture,
    stats: &mut LiveStats,
    last: &mut Instant,
    progress: &ProgressBar,
    got: &Captured,
) {
    let now = Instant::now();
    if now.duration_since(*last) < REFRESH {
        return;
    }
    *last = now;
    match cap.stats() {
        Ok(s) => *stats = s,
        Err(e) => tracing::warn!(message = "cannot read capture statistics", error = %e),
    }
    progress.set_message(format!(
        "{} packets, {} bytes, {} dropped by the kernel",
        got.packets, got.bytes, stats.dropped
    ));
    progress.tick();
    export(got, stats);
}

/// Mirrors the loop's counts and the kernel's into the metrics (at each
/// refresh, never per packet).
fn export(got: &Captured, stats: &LiveStats) {
    telemetry::mirror("netspectra_capture_packets_total", got.packets);
    telemetry::mirror("netspectra_capture_bytes_total", got.bytes);
    telemetry::mirror("netspectra_capture_kernel_dropped_total", stats.dropped);
    telemetry::mirror("netspectra_capture_if_dropped_total", stats.if_dropped);
    // Every packet read is pushed into the engine.
    telemetry::mirror("netspectra_engine_packets_total", got.packets);
    telemetry::mirror("netspectra_engine_bytes_total", got.bytes);
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
