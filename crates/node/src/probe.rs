//! `netspectra probe`: capture (live or from files) → decode → per-shard
//! batches → NATS.
//!
//! The capture loop runs on this thread and owns the [`Batcher`]; sealed
//! batches go through a small bounded channel to one publishing task on a
//! tokio runtime (back-pressure: when NATS is slower than the capture, the
//! loop waits rather than buffering without bound).

use crate::error::{Context, NodeError};
use crate::telemetry::{self, Telemetry};
use crate::Shutdown;
use netspectra_bus::{
    BatchLimits, Batcher, BusConfig, BusCounters, PublishHealth, PublishStats, Publisher,
    RetryPolicy, SealedBatch,
};
use netspectra_capture::decode::decode;
use netspectra_capture::live::{LiveCapture, LiveOptions};
use netspectra_capture::reader::{CaptureReader, RawPacket};
use netspectra_model::config::Config;
use netspectra_model::redact::Redacted;
use netspectra_model::{DecodeCounters, PacketRecord};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};

/// Where the probe's packets come from.
pub enum ProbeInput {
    /// Replay capture files, in this order.
    Files {
        /// pcap or pcapng files.
        paths: Vec<PathBuf>,
        /// At their recorded speed instead of as fast as possible.
        realtime: bool,
    },
    /// Capture live on an interface.
    Live {
        /// Interface, filter and capture settings.
        options: LiveOptions,
        /// Stop after this long (default: until the shutdown).
        duration: Option<Duration>,
    },
}

/// Everything a probe needs.
pub struct ProbeConfig {
    /// Where packets come from.
    pub input: ProbeInput,
    /// NATS URL, subject prefix, shards, core or JetStream.
    pub bus: BusConfig,
    /// This probe's name in batch ids (see [`default_probe_id`]).
    pub probe_id: String,
    /// Batch size, age and alignment (see [`default_align_ns`]).
    pub limits: BatchLimits,
    /// Serve `/metrics`, `/healthz` and `/readyz` on this address.
    pub metrics: Option<String>,
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

/// The probe role: capture, decode, batch, publish.
pub struct Probe;

/// A started probe: connected to NATS, its capture open.
pub struct RunningProbe {
    config: ProbeConfig,
    capture: Option<LiveCapture>,
    telemetry: Telemetry,
    rt: tokio::runtime::Runtime,
    publishing: tokio::task::JoinHandle<PublishStats>,
    counters: Arc<BusCounters>,
    out: Output,
}

impl Probe {
    /// Checks the inputs, opens the live capture (if any), connects to NATS
    /// and starts the publisher.
    pub fn start(config: ProbeConfig) -> Result<RunningProbe, NodeError> {
        let capture = match &config.input {
            ProbeInput::Files { paths, .. } => {
                for f in paths {
                    if !f.exists() {
                        return Err(NodeError::invalid(format!(
                            "input file {} does not exist",
                            f.display()
                        )));
                    }
                }
                None
            }
            ProbeInput::Live { options, .. } => Some(LiveCapture::open(options)?),
        };
        let telemetry = telemetry::from_arg(config.metrics.as_deref())?;
        telemetry.set_ready(false, "connecting to NATS");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ns-probe-io")
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        // NATS may come up after the probe: batches wait in the
        // publisher's buffer meanwhile.
        let publisher = rt.block_on(Publisher::connect_in_background(
            &config.bus,
            &config.probe_id,
        ))?;
        let counters = publisher.counters();
        telemetry.watch_bus(Arc::clone(&counters), &config.bus.url);
        let (health_tx, publish_health) = watch::channel(PublishHealth::default());
        let health = Health {
            telemetry: telemetry.clone(),
            counters: Arc::clone(&counters),
            publish: publish_health,
            last: None,
        };
        let (tx, rx) = mpsc::channel::<SealedBatch>(64);
        let publishing = rt.spawn(publisher.run(rx, health_tx, RetryPolicy::default()));
        let bus = &config.bus;
        tracing::info!(message = "probe publishing", probe = %config.probe_id, url = %Redacted(&bus.url),
                       prefix = %bus.prefix, shards = bus.shards, jetstream = bus.jetstream);
        // Sequence numbers start at the start time in µs: a restarted probe
        // with the same id keeps them increasing (the dedupe contract).
        let seq_base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64)
            .max(1);
        let mut out = Output {
            batcher: Batcher::new(&config.probe_id, bus.shards, config.limits, seq_base),
            tx,
            sealed: Vec::new(),
            closed: false,
            health,
            captured: (0, 0),
        };
        out.export(Instant::now());
        Ok(RunningProbe {
            config,
            capture,
            telemetry,
            rt,
            publishing,
            counters,
            out,
        })
    }
}

impl RunningProbe {
    /// `publishing to URL (JetStream)`, for the user.
    pub fn describe(&self) -> String {
        format!(
            "probe {}: publishing to {}{}",
            self.config.probe_id,
            Redacted(&self.config.bus.url),
            if self.config.bus.jetstream {
                " (JetStream)"
            } else {
                ""
            }
        )
    }

    /// Captures until the input ends (files), the duration passes or
    /// `shutdown` is triggered; publishes the last batches and reports.
    pub fn wait(self, shutdown: &Shutdown) -> Result<ProbeSummary, NodeError> {
        let RunningProbe {
            config,
            capture,
            telemetry,
            rt,
            publishing,
            counters,
            mut out,
        } = self;
        let started = Instant::now();
        let captured = match (&config.input, capture) {
            (ProbeInput::Live { duration, options }, Some(cap)) => {
                live(cap, &options.iface, *duration, &mut out, shutdown)?
            }
            (ProbeInput::Files { paths, realtime }, _) => {
                files(paths, *realtime, &mut out, shutdown)
            }
            (ProbeInput::Live { .. }, None) => unreachable!("opened by start"),
        };
        out.captured = (captured.packets, captured.bytes);
        out.finish();
        telemetry.set_ready(false, "capture finished; publishing the last batches");
        let stats = rt.block_on(publishing).context("publisher task failed")?;
        let elapsed = started.elapsed().as_secs_f64();
        let (connects, disconnects, _) = counters.snapshot();
        tracing::info!(
            message = "probe done",
            packets = captured.packets,
            published = stats.packets,
            batches = stats.batches,
            bytes = stats.bytes,
            elapsed_s = elapsed
        );
        Ok(ProbeSummary {
            probe_id: config.probe_id,
            url: crate::setup::without_url_password(&config.bus.url),
            jetstream: config.bus.jetstream,
            captured,
            stats,
            reconnects: connects.saturating_sub(1),
            disconnects,
            elapsed_s: elapsed,
        })
    }
}

/// What a probe did.
pub struct ProbeSummary {
    probe_id: String,
    url: String,
    jetstream: bool,
    captured: Captured,
    stats: PublishStats,
    reconnects: u64,
    disconnects: u64,
    elapsed_s: f64,
}

impl ProbeSummary {
    /// Whether some input file was damaged (what was read was published).
    pub fn damaged(&self) -> bool {
        self.captured.damaged
    }

    /// Packets captured but never published (NATS could not take them).
    pub fn dropped_packets(&self) -> u64 {
        self.stats.dropped_packets
    }

    /// The summary `probe --format json` prints.
    pub fn json(&self) -> Value {
        let (c, stats) = (&self.captured, &self.stats);
        json!({
            "probe_id": self.probe_id,
            "nats": self.url,
            "jetstream": self.jetstream,
            "files": c.files,
            "packets": c.packets,
            "bytes": c.bytes,
            "decoded": c.decoded,
            "kernel": c.kernel,
            "published": {
                "packets": stats.packets,
                "batches": stats.batches,
                "bytes": stats.bytes,
                "duplicates": stats.duplicates,
                "retries": stats.retries,
                "dropped_batches": stats.dropped_batches,
                "dropped_packets": stats.dropped_packets,
                "per_shard": stats.per_shard.iter().map(|s| json!({"batches": s.batches, "packets": s.packets, "bytes": s.bytes})).collect::<Vec<_>>(),
            },
            "reconnects": self.reconnects,
            "disconnects": self.disconnects,
            "elapsed_s": self.elapsed_s,
            "mpps": stats.packets as f64 / self.elapsed_s.max(1e-9) / 1e6,
        })
    }

    /// The summary `probe` prints by default.
    pub fn text(&self) -> String {
        text_summary(&self.captured, &self.stats, self.elapsed_s)
    }
}

/// Batch alignment when none is given: the greatest common divisor of
/// 100 ms and the configured window, so a batch never spans a window cut.
pub fn default_align_ns(config: &Config) -> u64 {
    gcd(netspectra_bus::DEFAULT_ALIGN_NS, config.window_ns())
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
    /// The publishing loop's state (failing, dropped).
    publish: watch::Receiver<PublishHealth>,
    last: Option<Instant>,
}

/// How often the capture loop refreshes metrics and readiness.
const EXPORT_EVERY: Duration = Duration::from_millis(250);

/// Ready once connected to NATS (while the connection is down, `/readyz`
/// says so by itself: [`Telemetry::watch_bus`]). Shared by the probe and
/// the engine.
pub(crate) fn export_bus(telemetry: &Telemetry, counters: &BusCounters) {
    if counters.connected() {
        telemetry.set_ready(true, "");
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
        export_bus(&h.telemetry, &h.counters);
        let publish = h.publish.borrow();
        telemetry::mirror(
            "netspectra_probe_dropped_batches_total",
            publish.dropped_batches,
        );
        telemetry::mirror(
            "netspectra_probe_dropped_packets_total",
            publish.dropped_packets,
        );
        metrics::gauge!("netspectra_probe_buffered_batches").set(publish.buffered as f64);
        if let Some(why) = &publish.failing {
            h.telemetry
                .set_ready(false, &format!("publishing to NATS fails: {why}"));
        }
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

fn files(paths: &[PathBuf], realtime: bool, out: &mut Output, stop: &Shutdown) -> Captured {
    let mut c = Captured::default();
    let mut rec = PacketRecord::default();
    // Realtime pacing: packet time `first_ts` is wall time `origin`.
    let mut pace: Option<(u64, Instant)> = None;
    for path in paths {
        let mut file =
            json!({"path": path.display().to_string(), "packets": 0, "bytes": 0, "error": null});
        let (mut packets, mut bytes) = (0u64, 0u64);
        // Streamed, not mapped: a long-running probe should not die of
        // SIGBUS if the file is truncated meanwhile, and it is not bound by
        // reading speed (it waits on the bus, or on `--realtime` pacing).
        match CaptureReader::open_streamed(path) {
            Err(e) => {
                file["error"] = json!(e.to_string());
                c.damaged = true;
            }
            Ok(mut reader) => loop {
                if stop.is_triggered() {
                    break;
                }
                match reader.next_packet() {
                    Ok(Some(p)) => {
                        record(&p, &mut rec);
                        packets += 1;
                        bytes += u64::from(p.wire_len);
                        if realtime {
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
fn wait_until(due: Instant, out: &mut Output, stop: &Shutdown) {
    loop {
        let now = Instant::now();
        out.poll(now);
        if now >= due || stop.is_triggered() {
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
    mut cap: LiveCapture,
    iface: &str,
    duration: Option<Duration>,
    out: &mut Output,
    stop: &Shutdown,
) -> Result<Captured, NodeError> {
    let mut c = Captured::default();
    let mut rec = PacketRecord::default();
    let end = duration.map(|d| Instant::now() + d);
    let mut n = 0u64;
    let mut last_stats = Instant::now();
    // After a stop, packets the kernel captured before it are still read
    // for the capture's delivery delay (as `run` does); later ones are left out.
    let mut drain: Option<(Instant, u64)> = None;
    loop {
        let now = Instant::now();
        match drain {
            None if stop.is_triggered() || end.is_some_and(|e| now >= e) => {
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
                if n.is_multiple_of(64) {
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
    c.kernel = Some(serde_json::to_value(stats).unwrap_or_default());
    c.files
        .push(json!({"iface": iface, "packets": c.packets, "bytes": c.bytes, "error": null}));
    Ok(c)
}

/// Mirrors the kernel's drop counters into the metrics, at most every
/// [`EXPORT_EVERY`] (often enough that libpcap's 32-bit counters cannot wrap
/// twice).
fn kernel_drops(cap: &mut LiveCapture, last: &mut Instant) {
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
    if s.dropped_batches > 0 {
        let _ = writeln!(
            t,
            "  {} batches ({} packets) were DROPPED: NATS could not take them (see the log)",
            s.dropped_batches, s.dropped_packets
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
pub fn default_probe_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "probe".into());
    format!("{host}-{}", std::process::id())
}
