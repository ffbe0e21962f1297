//! The live run role (`netspectra run --iface IF`): single-host live mode. Live capture → decode →
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

use crate::alerter::InProcess;
use crate::api::{ApiConfig, ApiServer};
use crate::error::{Context, NodeError};
use crate::report::{FileReport, Report};
use crate::setup::RunStore;
use crate::telemetry::{self, Telemetry};
use crate::Shutdown;
use netspectra_capture::decode::decode;
use netspectra_capture::link::LinkType;
use netspectra_capture::live::{LiveCapture, LiveOptions, LiveStats};
use netspectra_capture::persist::{PersistOptions, Persister};
use netspectra_engine::{Engine, EngineInput, EnginePlan};
use netspectra_model::config::Config;
use netspectra_model::{DecodeCounters, PacketRecord};
use netspectra_store::StoreUrl;
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Everything a live run needs.
pub struct LiveRunConfig {
    /// Interface, filter, snaplen, promiscuous mode.
    pub capture: LiveOptions,
    /// Tasks, windows and workers.
    pub config: Config,
    /// Engine workers (0: `aggregator.num_workers`, and 0 there: one per core).
    pub workers: usize,
    /// Store URL (`None`: results in memory only).
    pub store: Option<String>,
    /// Rows kept per task in the report, by bytes (0 = all).
    pub top: usize,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many packets (after the filter).
    pub count: Option<u64>,
    /// Also write the packets to rotating pcap files (the link type is
    /// taken from the capture).
    pub persist: Option<PersistOptions>,
    /// Serve the query API from the store while capturing.
    pub serve: Option<ApiConfig>,
    /// Serve `/metrics`, `/healthz` and `/readyz` on this address.
    pub metrics: Option<String>,
}

/// Progress of a live run, for a progress line.
#[derive(Clone, Copy, Debug)]
pub struct LiveProgress {
    /// Packets read.
    pub packets: u64,
    /// Their bytes on the wire.
    pub bytes: u64,
    /// Packets the kernel dropped so far.
    pub dropped: u64,
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

/// The live run role.
pub struct LiveRun;

/// A started live run: capture open, run begun in the store, engine (and
/// API, when asked) running.
pub struct RunningLive {
    cfg: LiveRunConfig,
    cap: LiveCapture,
    telemetry: Telemetry,
    run_store: RunStore,
    api: Option<ApiServer>,
    engine: EngineInput,
    persist: Option<Persister>,
    alerting: Option<InProcess>,
    workers: usize,
    window_ns: u64,
}

impl LiveRun {
    /// Opens the interface (before anything is stored: a missing interface
    /// or a bad filter leaves no run behind), then the store, the API and
    /// the engine.
    pub fn start(mut cfg: LiveRunConfig) -> Result<RunningLive, NodeError> {
        let telemetry = telemetry::from_arg(cfg.metrics.as_deref())?;
        telemetry.set_ready(false, "opening the capture");
        let plan = EnginePlan::from_config(&cfg.config, cfg.workers)?;
        if let Some(url) = &cfg.store {
            StoreUrl::parse(url)?;
        }
        let cap = LiveCapture::open(&cfg.capture)?;
        let inputs = json!([format!("iface:{}", cfg.capture.iface)]);
        let window_ns = plan.window_ns;
        let workers = plan.workers;
        let (mut run_store, sink) = RunStore::begin(
            cfg.store.clone(),
            &cfg.config.store,
            "local",
            &inputs,
            &plan.tasks,
            window_ns,
            netspectra_store::Commits::PerWindow,
        )?;
        // Started once the store exists (a new SQLite file is created by the run).
        let api = match cfg.serve.take() {
            Some(serve) => match ApiServer::start(serve) {
                Ok(api) => Some(api),
                Err(e) => {
                    run_store.abandon();
                    return Err(e);
                }
            },
            None => None,
        };
        let (sink, alerting) =
            InProcess::wrap(&cfg.config, &plan.tasks, cfg.store.as_deref(), sink)?;
        let engine = Engine::start(plan, sink)?;
        telemetry.set_ready(true, "");
        export(&Captured::default(), &LiveStats::default());
        let persist = match &cfg.persist {
            Some(opts) => Some(
                Persister::start(PersistOptions {
                    link_type: cap.link_type(),
                    ..opts.clone()
                })
                .context(format!("cannot persist packets in {}", opts.dir.display()))?,
            ),
            None => None,
        };
        Ok(RunningLive {
            cfg,
            cap,
            telemetry,
            run_store,
            api,
            engine,
            persist,
            workers,
            window_ns,
            alerting,
        })
    }
}

impl RunningLive {
    /// `capturing on IF (link type L, filter `F`)` and where the API
    /// serves, for the user.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "capturing on {} (link type {}{})",
            self.cfg.capture.iface,
            self.cap.link_type(),
            self.cfg
                .capture
                .bpf
                .as_deref()
                .map(|f| format!(", filter `{f}`"))
                .unwrap_or_default()
        );
        if let Some(api) = &self.api {
            text.push_str(&format!("; serving {}", api.describe()));
        }
        text
    }

    /// Captures until `shutdown`, the duration or the packet count; reads
    /// what the kernel captured before the stop, flushes and stores the open
    /// window, stops the API and reports.
    pub fn wait(
        self,
        shutdown: &Shutdown,
        progress: &mut dyn FnMut(LiveProgress),
    ) -> Result<LiveSummary, NodeError> {
        let RunningLive {
            cfg,
            mut cap,
            telemetry,
            mut run_store,
            api,
            mut engine,
            mut persist,
            alerting,
            workers,
            window_ns,
        } = self;
        let iface = cfg.capture.iface.clone();
        let link = cap.link_type();
        tracing::info!(message = "capture started", iface = %iface, link_type = %link, bpf = ?cfg.capture.bpf);
        let started = Instant::now();
        let deadline = cfg.duration.map(|d| started + d);
        let limit = cfg.count.unwrap_or(u64::MAX);

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
                let reason = if shutdown.is_triggered() {
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
                        refresh(&mut cap, &mut stats, &mut last_refresh, progress, &got);
                    }
                }
                Ok(None) => {
                    if let Some(persist) = &mut persist {
                        persist.flush();
                    }
                    // An idle link: its window is stored at its end + grace.
                    engine.tick(crate::telemetry::wall_ns());
                    if let Some(s) = &stopping {
                        if Instant::now() >= s.idle_until {
                            // Idle for longer than the delivery delay: everything
                            // captured before the stop was read.
                            break s.reason;
                        }
                    } else if deadline.is_some_and(|d| Instant::now() >= d) {
                        stopping = Some(Stopping::new(Stop::Duration, drain_for));
                    }
                    refresh(&mut cap, &mut stats, &mut last_refresh, progress, &got);
                }
                Err(e) => {
                    tracing::warn!(message = "live capture failed", iface = %iface, error = %e);
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
            task.top(cfg.top);
        }
        let report = Report {
            files: vec![FileReport {
                path: format!("iface:{iface}"),
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
            top: cfg.top,
            alerts: alerting.map(InProcess::finish),
            replaced: Vec::new(),
        };
        let status = if error.is_some() {
            "failed"
        } else {
            "complete"
        };
        run_store.finish(status, &report)?;
        if let Some(api) = api {
            if let Err(e) = api.stop() {
                tracing::warn!(message = "query API failed", error = %e);
            }
        }
        let persisted_json = persisted.as_ref().map(|p| {
            json!({
                "dir": cfg.persist.as_ref().map(|o| o.dir.display().to_string()),
                "files": p.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                "packets": p.packets,
                "dropped": p.dropped,
            })
        });
        Ok(LiveSummary {
            report,
            iface,
            link,
            bpf: cfg.capture.bpf,
            stats,
            stopped_by: why.name(),
            persisted: persisted_json,
            error,
        })
    }
}

/// What a live run produced: the same report as `analyze`, plus the
/// capture's counters.
pub struct LiveSummary {
    /// Totals and per-task rows.
    pub report: Report,
    iface: String,
    link: LinkType,
    bpf: Option<String>,
    stats: LiveStats,
    stopped_by: &'static str,
    persisted: Option<Value>,
    /// Why the capture broke, if it did (the report covers what was read).
    pub error: Option<String>,
}

impl LiveSummary {
    /// The `capture` object `run --format json` adds to the report.
    pub fn capture_json(&self) -> Value {
        json!({
            "iface": self.iface,
            "link_type": self.link.name(),
            "bpf": self.bpf,
            "received": self.stats.received,
            "dropped": self.stats.dropped,
            "if_dropped": self.stats.if_dropped,
            "stopped_by": self.stopped_by,
            "persist": self.persisted,
        })
    }

    /// The lines the table shows under the totals.
    pub fn capture_lines(&self) -> String {
        let persisted = self
            .persisted
            .as_ref()
            .map(|p| {
                format!(
                    "persisted: {} packets in {} pcap files, {} dropped by the writer\n",
                    p["packets"],
                    p["files"].as_array().map_or(0, Vec::len),
                    p["dropped"]
                )
            })
            .unwrap_or_default();
        // Linux's loopback hands the capture every packet twice (once going
        // out, once coming in); the kernel's counter counts both copies.
        let loopback = if self.iface == "lo" {
            " (on loopback the kernel counts each packet twice, as sent and as received; the packets above count each once)"
        } else {
            ""
        };
        format!(
            "capture on {}: {} received{loopback}, {} dropped by the kernel, {} by the interface; stopped by {}\n{persisted}",
            self.iface, self.stats.received, self.stats.dropped, self.stats.if_dropped, self.stopped_by
        )
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
    progress: &mut dyn FnMut(LiveProgress),
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
    progress(LiveProgress {
        packets: got.packets,
        bytes: got.bytes,
        dropped: stats.dropped,
    });
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
