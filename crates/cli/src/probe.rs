//! `netspectra probe`: capture (live or from files) → decode → per-shard
//! batches → NATS.
//!
//! The capture loop runs on this thread and owns the [`Batcher`]; sealed
//! batches go through a small bounded channel to one publishing task on a
//! tokio runtime (back-pressure: when NATS is slower than the capture, the
//! loop waits rather than buffering without bound).

use crate::telemetry::{self, Telemetry};
use crate::Outcome;
use anyhow::{bail, Context};
use clap::Args;
use netspectra_bus::{
    BatchLimits, Batcher, BusConfig, BusCounters, PublishStats, Publisher, SealedBatch,
};
use netspectra_capture::decode::decode;
use netspectra_capture::reader::{CaptureReader, RawPacket};
use netspectra_model::{DecodeCounters, PacketRecord};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

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
    /// Publish into a JetStream stream (at-least-once; engines need `--jetstream` too).
    #[arg(long)]
    jetstream: bool,
    /// This probe's name in batch ids (default: host name and process id).
    #[arg(long, value_name = "ID")]
    probe_id: Option<String>,
    /// Subject prefix: batches go to `<prefix>.packets.<shard>`.
    #[arg(long, value_name = "P", default_value = netspectra_bus::DEFAULT_PREFIX)]
    prefix: String,
    /// Number of shards (engines must use the same).
    #[arg(long, value_name = "N", default_value_t = netspectra_bus::DEFAULT_SHARDS,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    shards: u32,
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

/// How often (in packets) the capture loop checks timers and the stop flag.
const POLL_EVERY: u64 = 1024;

/// What the capture side counted.
#[derive(Default)]
struct Captured {
    files: Vec<serde_json::Value>,
    packets: u64,
    bytes: u64,
    decoded: DecodeCounters,
    damaged: bool,
    kernel: Option<serde_json::Value>,
}

pub fn run(args: ProbeArgs) -> anyhow::Result<Outcome> {
    for f in &args.file {
        if !f.exists() {
            bail!("input file {} does not exist", f.display());
        }
    }
    let telemetry = telemetry::from_arg(args.metrics.as_deref())?;
    telemetry.set_ready(false, "connecting to NATS");
    let config = crate::common::load_config(args.config.as_deref())?;
    let url = args
        .nats
        .clone()
        .or_else(|| (!config.probe.nats_url.is_empty()).then(|| config.probe.nats_url.clone()))
        .unwrap_or_else(|| netspectra_bus::DEFAULT_URL.to_string());
    let probe_id = args.probe_id.clone().unwrap_or_else(default_probe_id);
    let bus = BusConfig {
        url,
        prefix: args.prefix.clone(),
        shards: args.shards,
        jetstream: args.jetstream,
        name: format!("probe {probe_id}"),
    };
    let stop = crate::common::stop_flag()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ns-probe-io")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut publisher = rt.block_on(Publisher::connect(&bus, &probe_id))?;
    let counters = publisher.counters();
    let health = Health {
        telemetry: telemetry.clone(),
        counters: Arc::clone(&counters),
        url: bus.url.clone(),
        last: None,
    };
    let (tx, mut rx) = mpsc::channel::<SealedBatch>(64);
    let publishing = rt.spawn(async move {
        while let Some(b) = rx.recv().await {
            publisher.publish(b).await?;
        }
        publisher.finish().await
    });
    tracing::info!(message = "probe publishing", probe = %probe_id, url = %bus.url,
                   prefix = %bus.prefix, shards = bus.shards, jetstream = bus.jetstream);

    // Sequence numbers start at the start time in µs: a restarted probe
    // with the same id keeps them increasing (the dedupe contract).
    let seq_base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
        .max(1);
    let align_ns = match &args.batch_align {
        Some(t) if t.trim() == "0" => 0,
        Some(t) => netspectra_model::time::parse_duration_ns(t)
            .map_err(|e| anyhow::anyhow!("--batch-align: {e}"))?,
        None => gcd(netspectra_bus::DEFAULT_ALIGN_NS, config.window_ns()),
    };
    let limits = BatchLimits {
        max_packets: args.batch_packets.max(1),
        align_ns,
        ..Default::default()
    };
    let mut out = Output {
        batcher: Batcher::new(&probe_id, bus.shards, limits, seq_base),
        tx,
        sealed: Vec::new(),
        closed: false,
        health,
        captured: (0, 0),
    };
    out.export(Instant::now());
    let started = Instant::now();
    let captured = match &args.iface {
        Some(iface) => live(&args, iface, &mut out, &stop)?,
        None => files(&args, &mut out, &stop),
    };
    out.captured = (captured.packets, captured.bytes);
    out.finish();
    telemetry.set_ready(false, "capture finished; publishing the last batches");
    let stats = rt
        .block_on(publishing)
        .context("publisher task failed")?
        .context("publishing failed")?;
    let elapsed = started.elapsed().as_secs_f64();
    let (connects, disconnects, _) = counters.snapshot();
    let summary = json!({
        "probe_id": probe_id,
        "nats": bus.url,
        "jetstream": bus.jetstream,
        "files": captured.files,
        "packets": captured.packets,
        "bytes": captured.bytes,
        "decoded": captured.decoded,
        "kernel": captured.kernel,
        "published": {
            "packets": stats.packets,
            "batches": stats.batches,
            "bytes": stats.bytes,
            "duplicates": stats.duplicates,
            "per_shard": stats.per_shard.iter().map(|s| json!({"batches": s.batches, "packets": s.packets, "bytes": s.bytes})).collect::<Vec<_>>(),
        },
        "reconnects": connects.saturating_sub(1),
        "disconnects": disconnects,
        "elapsed_s": elapsed,
        "mpps": stats.packets as f64 / elapsed.max(1e-9) / 1e6,
    });
    tracing::info!(
        message = "probe done",
        packets = captured.packets,
        published = stats.packets,
        batches = stats.batches,
        bytes = stats.bytes,
        elapsed_s = elapsed
    );
    if args.format == "json" {
        println!("{summary}");
    } else {
        print!("{}", text_summary(&captured, &stats, elapsed));
    }
    Ok(if captured.damaged {
        Outcome::Damaged
    } else {
        Outcome::Clean
    })
}

/// The capture side of the pipeline: the batcher and the channel to the
/// publishing task.
struct Output {
    batcher: Batcher,
    tx: mpsc::Sender<SealedBatch>,
    sealed: Vec<SealedBatch>,
    /// The publisher stopped (it failed; its error is reported at the end).
    closed: bool,
    health: Health,
    /// Packets and bytes captured so far (set by the capture loop at its
    /// polls, exported with the batches).
    captured: (u64, u64),
}

/// Readiness and the NATS connection's metrics, refreshed at most every
/// [`EXPORT_EVERY`].
struct Health {
    telemetry: Telemetry,
    counters: Arc<BusCounters>,
    url: String,
    last: Option<Instant>,
}

/// How often the capture loop refreshes metrics and readiness.
const EXPORT_EVERY: Duration = Duration::from_millis(250);

/// Mirrors the bus counters into the metrics and readiness (connected to
/// NATS or not). Shared by the probe and the engine.
pub(crate) fn export_bus(telemetry: &Telemetry, counters: &BusCounters, url: &str) {
    let (connects, disconnects, slow) = counters.snapshot();
    telemetry::mirror("netspectra_nats_connects_total", connects);
    telemetry::mirror("netspectra_nats_disconnects_total", disconnects);
    telemetry::mirror("netspectra_nats_slow_consumer_events_total", slow);
    let connected = connects > disconnects;
    metrics::gauge!("netspectra_nats_connected").set(if connected { 1.0 } else { 0.0 });
    if connected {
        telemetry.set_ready(true, "");
    } else {
        telemetry.set_ready(false, &format!("not connected to NATS at {url}"));
    }
}

impl Output {
    #[inline]
    fn push(&mut self, rec: &PacketRecord) {
        if let Some(b) = self.batcher.push(rec) {
            self.send(b);
        }
    }

    fn send(&mut self, b: SealedBatch) {
        metrics::counter!("netspectra_probe_batches_total").increment(1);
        metrics::counter!("netspectra_probe_packets_total").increment(u64::from(b.packets));
        if !self.closed && self.tx.blocking_send(b).is_err() {
            self.closed = true;
        }
    }

    /// Refreshes metrics and readiness, at most every [`EXPORT_EVERY`].
    fn export(&mut self, now: Instant) {
        if self
            .health
            .last
            .is_some_and(|l| now.duration_since(l) < EXPORT_EVERY)
        {
            return;
        }
        self.health.last = Some(now);
        telemetry::mirror("netspectra_capture_packets_total", self.captured.0);
        telemetry::mirror("netspectra_capture_bytes_total", self.captured.1);
        // Registered at zero so that they are listed before the first batch.
        metrics::counter!("netspectra_probe_batches_total").increment(0);
        metrics::counter!("netspectra_probe_packets_total").increment(0);
        let h = &self.health;
        export_bus(&h.telemetry, &h.counters, &h.url);
    }

    /// Sends batches whose time limit passed.
    fn poll(&mut self, now: Instant) {
        self.export(now);
        self.batcher.expired(now, &mut self.sealed);
        for b in std::mem::take(&mut self.sealed) {
            self.send(b);
        }
    }

    fn finish(mut self) {
        self.batcher.flush(&mut self.sealed);
        for b in std::mem::take(&mut self.sealed) {
            self.send(b);
        }
        self.health.last = None;
        self.export(Instant::now());
    }
}

#[inline]
fn record(p: &RawPacket<'_>, rec: &mut PacketRecord) {
    decode(p.link_type, p.data, rec);
    rec.ts_ns = p.ts_ns;
    rec.wire_len = p.wire_len;
    rec.cap_len = p.data.len() as u32;
}

fn files(args: &ProbeArgs, out: &mut Output, stop: &AtomicBool) -> Captured {
    let mut c = Captured::default();
    let mut rec = PacketRecord::default();
    // Realtime pacing: packet time `first_ts` is wall time `origin`.
    let mut pace: Option<(u64, Instant)> = None;
    for path in &args.file {
        let mut file =
            json!({"path": path.display().to_string(), "packets": 0, "bytes": 0, "error": null});
        let (mut packets, mut bytes) = (0u64, 0u64);
        match CaptureReader::open(path) {
            Err(e) => {
                file["error"] = json!(e.to_string());
                c.damaged = true;
            }
            Ok(mut reader) => loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match reader.next_packet() {
                    Ok(Some(p)) => {
                        record(&p, &mut rec);
                        packets += 1;
                        bytes += u64::from(p.wire_len);
                        if args.realtime {
                            let (first, origin) = *pace.get_or_insert((rec.ts_ns, Instant::now()));
                            let due =
                                origin + Duration::from_nanos(rec.ts_ns.saturating_sub(first));
                            wait_until(due, out, stop);
                        }
                        c.decoded.count(&rec);
                        out.push(&rec);
                        if packets % POLL_EVERY == 0 {
                            out.captured = (c.packets + packets, c.bytes + bytes);
                            out.poll(Instant::now());
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(message = "damaged capture", file = %path.display(), error = %e);
                        file["error"] = json!(e.to_string());
                        c.damaged = true;
                        break;
                    }
                }
            },
        }
        file["packets"] = json!(packets);
        file["bytes"] = json!(bytes);
        c.packets += packets;
        c.bytes += bytes;
        c.files.push(file);
    }
    c
}

/// Sleeps until `due`, sending batches as their time limit passes.
fn wait_until(due: Instant, out: &mut Output, stop: &AtomicBool) {
    loop {
        let now = Instant::now();
        out.poll(now);
        if now >= due || stop.load(Ordering::Relaxed) {
            return;
        }
        let next = out.batcher.next_deadline().map_or(due, |d| d.min(due));
        std::thread::sleep(
            next.saturating_duration_since(now)
                .min(Duration::from_millis(50)),
        );
    }
}

fn live(
    args: &ProbeArgs,
    iface: &str,
    out: &mut Output,
    stop: &AtomicBool,
) -> anyhow::Result<Captured> {
    use netspectra_capture::live::{LiveCapture, LiveOptions};
    let mut cap = LiveCapture::open(&LiveOptions {
        bpf: args.bpf.clone(),
        ..LiveOptions::new(iface)
    })?;
    let mut c = Captured::default();
    let mut rec = PacketRecord::default();
    let end = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut n = 0u64;
    let mut last_stats = Instant::now();
    // After a stop, packets the kernel captured before it are still read
    // for the capture's delivery delay (as `run` does); later ones are left out.
    let mut drain: Option<(Instant, u64)> = None;
    loop {
        let now = Instant::now();
        match drain {
            None if stop.load(Ordering::Relaxed) || end.is_some_and(|e| now >= e) => {
                let stop_ns = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(u64::MAX, |d| d.as_nanos() as u64);
                let wait =
                    (cap.max_delay() * 2 + Duration::from_millis(50)).min(Duration::from_secs(1));
                drain = Some((now + wait, stop_ns));
            }
            Some((until, _)) if now >= until => break,
            _ => {}
        }
        match cap.next_packet()? {
            Some(p) if drain.is_some_and(|(_, stop_ns)| p.ts_ns > stop_ns) => {}
            Some(p) => {
                record(&p, &mut rec);
                c.packets += 1;
                c.bytes += u64::from(p.wire_len);
                c.decoded.count(&rec);
                out.push(&rec);
                n += 1;
                if n % 64 == 0 {
                    out.captured = (c.packets, c.bytes);
                    out.poll(Instant::now());
                    kernel_drops(&mut cap, &mut last_stats);
                }
            }
            None => {
                out.captured = (c.packets, c.bytes);
                out.poll(Instant::now());
                kernel_drops(&mut cap, &mut last_stats);
            }
        }
    }
    let stats = cap.stats()?;
    telemetry::mirror("netspectra_capture_kernel_dropped_total", stats.dropped);
    telemetry::mirror("netspectra_capture_if_dropped_total", stats.if_dropped);
    if stats.dropped > 0 || stats.if_dropped > 0 {
        tracing::warn!(
            message = "kernel dropped packets",
            dropped = stats.dropped,
            if_dropped = stats.if_dropped
        );
    }
    c.kernel = Some(serde_json::to_value(stats)?);
    c.files
        .push(json!({"iface": iface, "packets": c.packets, "bytes": c.bytes, "error": null}));
    Ok(c)
}

/// Mirrors the kernel's drop counters into the metrics, at most every
/// [`EXPORT_EVERY`] (often enough that libpcap's 32-bit counters cannot wrap
/// twice).
fn kernel_drops(cap: &mut netspectra_capture::live::LiveCapture, last: &mut Instant) {
    let now = Instant::now();
    if now.duration_since(*last) < EXPORT_EVERY {
        return;
    }
    *last = now;
    match cap.stats() {
        Ok(s) => {
            telemetry::mirror("netspectra_capture_kernel_dropped_total", s.dropped);
            telemetry::mirror("netspectra_capture_if_dropped_total", s.if_dropped);
        }
        Err(e) => tracing::debug!(message = "cannot read capture statistics", error = %e),
    }
}

fn text_summary(c: &Captured, s: &PublishStats, elapsed: f64) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "captured {} packets ({} bytes), {} IP; published {} packets in {} batches ({} bytes) in {:.2} s ({:.2} Mpps)",
        c.packets,
        c.bytes,
        c.decoded.ipv4 + c.decoded.ipv6,
        s.packets,
        s.batches,
        s.bytes,
        elapsed,
        s.packets as f64 / elapsed.max(1e-9) / 1e6
    );
    for (i, sh) in s.per_shard.iter().enumerate() {
        let _ = writeln!(
            t,
            "  shard {i:>3}: {:>10} packets {:>7} batches {:>12} bytes",
            sh.packets, sh.batches, sh.bytes
        );
    }
    if s.duplicates > 0 {
        let _ = writeln!(
            t,
            "  {} batches were already in the stream (duplicates)",
            s.duplicates
        );
    }
    t
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `<host name>-<pid>`: unique per running probe.
fn default_probe_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "probe".into());
    format!("{host}-{}", std::process::id())
}
