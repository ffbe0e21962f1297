//! `netspectra engine`: consume the owned shards from NATS → the same
//! engine as `analyze` → windows in the store, every row tagged with the
//! engine id.
//!
//! ```text
//!  tokio (1 thread): one pull/subscription task per owned shard ──► bounded queue
//!  this thread: decode batch ─► Dedupe ─► EngineInput::push  ─► workers ─► collector ─► store
//!                                 └─► (window index, acker) ─► AckQueue ◄── windows written
//! ```
//!
//! JetStream acks follow the store: a batch is acknowledged only once every
//! window holding its packets has been written (and, at a period's end, the
//! period's sketch rows too). A SIGKILLed engine therefore loses nothing it
//! had not stored — the server redelivers those batches to its successor.
//! It counts nothing twice either: each window is stored together with the
//! engine's progress (`bus_progress`: the `Dedupe` ranges of every batch
//! whose packets are in that window or an earlier one; in the same
//! transaction on SQLite, after the rows on ClickHouse), and an engine
//! starting with `--jetstream` seeds its `Dedupe` with the progress stored
//! under its engine id, so batches whose window was written but whose acks
//! had not reached the server are skipped (and acked) when redelivered.
//! Exceptions: a batch whose packets span a window cut (`split_batches`,
//! warned about: the probe aligns batches to the windows) is recorded with
//! its last window, so a crash between the two windows counts its first
//! part twice; and a period's sketch rows, written after the window that
//! ends it, are lost if the engine dies in between (exact rows stay right).
//!
//! SIGTERM/SIGINT (or `--idle-exit`): stop consuming, apply what was
//! already received, flush the open window, ack, mark the run complete.

use crate::telemetry;
use crate::Outcome;
use anyhow::Context;
use clap::Args;
use netspectra_bus::{
    owned_shards, shard_of, AckQueue, BusConfig, Consumer, ConsumerConfig, Dedupe, Delivery, Source,
};
use netspectra_engine::{
    EngineInput, EnginePlan, NullSink, SinkError, SketchPeriod, TaskKind, TaskSpec, WindowResult,
    WindowSink,
};
use netspectra_model::time::window_start;
use netspectra_model::PacketRecord;
use netspectra_proto::wire;
use netspectra_store::StoreUrl;
use serde_json::json;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

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
    /// This engine's index among `--engines` (it owns shards s with s % E == I).
    #[arg(long, value_name = "I", default_value_t = 0)]
    engine_index: u32,
    /// Number of engines sharing the shards.
    #[arg(long, value_name = "E", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    engines: u32,
    /// Consume from the JetStream stream with durable consumers (at-least-once).
    #[arg(long)]
    jetstream: bool,
    /// Id written on every stored row (default: `engine-<index>`).
    #[arg(long, value_name = "ID")]
    engine_id: Option<String>,
    /// Also consume Go2NetSpectra probes' one-packet messages from this
    /// subject (e.g. `gons.packets.raw`); each engine keeps the packets of
    /// its own shards, so none is counted twice.
    #[arg(long, value_name = "S")]
    interop_subject: Option<String>,
    /// Stop after this many seconds without a message.
    #[arg(long, value_name = "SECS")]
    idle_exit: Option<f64>,
    /// Subject prefix (as the probes').
    #[arg(long, value_name = "P", default_value = netspectra_bus::DEFAULT_PREFIX)]
    prefix: String,
    /// Number of shards (as the probes').
    #[arg(long, value_name = "N", default_value_t = netspectra_bus::DEFAULT_SHARDS,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    shards: u32,
    /// Engine workers (default: config `aggregator.num_workers`, else one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// JetStream: seconds before the server redelivers an unacknowledged
    /// batch (set when the durable consumers are created).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    ack_wait: f64,
    /// Summary format on stdout.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    format: String,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` on this
    /// address (e.g. `127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

/// Mirrors `EngineInput`'s window cuts (same rules, same order of records)
/// to know which window each record went into. Windows are numbered from 0
/// in the order the engine flushes (and the store writes) them.
struct WindowTracker {
    window_ns: u64,
    period_ns: u64,
    window: Option<(u64, u64)>,
    period: Option<(u64, u64)>,
    index: u64,
}

impl WindowTracker {
    fn new(plan: &EnginePlan) -> Self {
        WindowTracker {
            window_ns: plan.window_ns,
            period_ns: plan.period_ns,
            window: None,
            period: None,
            index: 0,
        }
    }

    /// Accounts a record about to be pushed (IP records only).
    #[inline]
    fn observe(&mut self, ts: u64) {
        match self.window {
            Some((start, end)) if ts >= start && ts < end => {}
            Some((start, _)) if ts < start => {}
            _ => self.advance(ts),
        }
    }

    fn advance(&mut self, ts: u64) {
        let period_over = self.period.is_none_or(|(_, end)| ts >= end);
        if self.window.is_some() {
            self.index += 1;
        }
        if period_over {
            let start = window_start(ts, self.period_ns);
            self.period = Some((start, start.saturating_add(self.period_ns)));
        }
        let (ps, pe) = self.period.expect("period is open");
        let start = window_start(ts, self.window_ns).max(ps);
        let end = start.saturating_add(self.window_ns).min(pe);
        self.window = Some((start, end));
    }
}

/// A batch applied by the consuming loop: `(window index, probe_id, shard,
/// seq)`, the window being the one its last packet went into.
type Applied = (u64, Arc<str>, u32, u64);

/// Batches applied but not yet covered by a stored window, in apply order
/// (window indices never decrease). The consuming loop appends a batch
/// right after pushing its packets, before pushing any later packet, so
/// every batch of window `w` is here before `w` can be flushed.
type AppliedLog = Arc<Mutex<VecDeque<Applied>>>;

/// Name of the `bus_progress` consumer a JetStream engine stores its
/// progress under.
fn progress_consumer(prefix: &str) -> String {
    format!("jetstream:{prefix}")
}

/// The applied batches as stored in `bus_progress.state`:
/// `{"format":1,"applied":[{"probe":P,"shard":S,"ranges":[[first,last],…]},…]}`.
fn progress_json(d: &Dedupe) -> String {
    let applied: Vec<serde_json::Value> = d
        .ranges()
        .map(|(probe, shard, ranges)| json!({"probe": probe, "shard": shard, "ranges": ranges}))
        .collect();
    json!({"format": 1, "applied": applied}).to_string()
}

/// Reads [`progress_json`]'s output back.
fn dedupe_from_progress(state: &str) -> anyhow::Result<Dedupe> {
    let v: serde_json::Value = serde_json::from_str(state)?;
    if v["format"].as_u64() != Some(1) {
        anyhow::bail!("unknown progress format {}", v["format"]);
    }
    let bad = || anyhow::anyhow!("malformed progress {state}");
    let mut d = Dedupe::default();
    for e in v["applied"].as_array().ok_or_else(bad)? {
        let probe = e["probe"].as_str().ok_or_else(bad)?;
        let shard = e["shard"]
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .ok_or_else(bad)?;
        for r in e["ranges"].as_array().ok_or_else(bad)? {
            let (Some(first), Some(last)) = (r[0].as_u64(), r[1].as_u64()) else {
                return Err(bad());
            };
            d.mark_applied(probe, shard, first, last);
        }
    }
    Ok(d)
}

/// What the sink stores with each window (JetStream mode with a store).
struct Progress {
    consumer: String,
    log: AppliedLog,
    /// Batches of the windows written so far (and the progress loaded at start).
    stored: Dedupe,
}

impl Progress {
    /// The progress covering every batch in windows `..= window`.
    fn through(&mut self, window: u64) -> String {
        {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            while log.front().is_some_and(|a| a.0 <= window) {
                let (_, probe, shard, seq) = log.pop_front().expect("front exists");
                self.stored.accept(&probe, shard, seq);
            }
        }
        progress_json(&self.stored)
    }
}

/// Wraps the store's sink and counts the windows it has written, so acks
/// can follow. A window that ends a period counts once its sketch periods
/// are written too. In JetStream mode each window is written with the
/// progress covering the batches of it and of the windows before.
struct CommitSink {
    inner: Box<dyn WindowSink>,
    written: watch::Sender<u64>,
    sketch_tasks: usize,
    period_ns: u64,
    awaiting_sketches: usize,
    /// Index of the next window to be written (the windows' flush order,
    /// as `WindowTracker` numbers them).
    next_window: u64,
    progress: Option<Progress>,
}

impl WindowSink for CommitSink {
    fn window(&mut self, tasks: &[TaskSpec], window: &WindowResult) -> Result<(), SinkError> {
        match &mut self.progress {
            Some(p) => {
                let state = p.through(self.next_window);
                self.inner
                    .window_with_progress(tasks, window, &p.consumer, &state)?;
            }
            None => self.inner.window(tasks, window)?,
        }
        self.next_window += 1;
        metrics::counter!("netspectra_engine_windows_total").increment(1);
        tracing::debug!(
            message = "window written",
            start_ns = window.start_ns,
            end_ns = window.end_ns
        );
        if self.sketch_tasks > 0 && window.end_ns % self.period_ns.max(1) == 0 {
            self.awaiting_sketches = self.sketch_tasks;
        } else {
            self.written.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    fn sketch_period(&mut self, task: &TaskSpec, period: &SketchPeriod) -> Result<(), SinkError> {
        self.inner.sketch_period(task, period)?;
        if self.awaiting_sketches > 0 {
            self.awaiting_sketches -= 1;
            if self.awaiting_sketches == 0 {
                self.written.send_modify(|n| *n += 1);
            }
        }
        Ok(())
    }
}

/// What the consuming loop counted.
#[derive(Default)]
struct Consumed {
    packets: u64,
    bytes: u64,
    batches: u64,
    duplicates: u64,
    bad: u64,
    interop_packets: u64,
    interop_other_shards: u64,
    /// Batches whose packets went into two windows (probe not aligned).
    split_batches: u64,
    /// Newest packet timestamp applied (ns since the epoch; 0: none yet).
    newest_ts_ns: u64,
}

/// How often the consuming loop refreshes metrics and readiness.
const EXPORT_EVERY: Duration = Duration::from_millis(250);

/// Mirrors the loop's counts into the metrics; lag is now − the newest
/// packet timestamp applied.
fn export(c: &Consumed) {
    telemetry::mirror("netspectra_engine_packets_total", c.packets);
    telemetry::mirror("netspectra_engine_bytes_total", c.bytes);
    telemetry::mirror("netspectra_engine_batches_total", c.batches);
    telemetry::mirror("netspectra_engine_duplicate_batches_total", c.duplicates);
    telemetry::mirror("netspectra_engine_bad_messages_total", c.bad);
    if c.newest_ts_ns > 0 {
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let lag = now_ns.saturating_sub(u128::from(c.newest_ts_ns)) as f64 / 1e9;
        metrics::gauge!("netspectra_engine_lag_seconds").set(lag);
    }
}

pub fn run(args: EngineArgs) -> anyhow::Result<Outcome> {
    if args.engine_index >= args.engines {
        anyhow::bail!(
            "--engine-index {} must be below --engines {}",
            args.engine_index,
            args.engines
        );
    }
    let telemetry = telemetry::from_arg(args.metrics.as_deref())?;
    telemetry.set_ready(false, "opening the store");
    let config = crate::common::load_config(args.config.as_deref())?;
    let plan = EnginePlan::from_config(&config, args.workers.map_or(0, usize::from))?;
    let url = args
        .nats
        .clone()
        .or_else(|| (!config.probe.nats_url.is_empty()).then(|| config.probe.nats_url.clone()))
        .unwrap_or_else(|| netspectra_bus::DEFAULT_URL.to_string());
    let engine_id = args
        .engine_id
        .clone()
        .unwrap_or_else(|| format!("engine-{}", args.engine_index));
    let shards = owned_shards(args.engine_index, args.engines, args.shards);
    if shards.is_empty() {
        anyhow::bail!(
            "engine {} of {} owns no shard of {}: use fewer engines or more shards",
            args.engine_index,
            args.engines,
            args.shards
        );
    }
    let ack_wait = Duration::from_secs_f64(args.ack_wait.max(0.1));
    let ccfg = ConsumerConfig {
        bus: BusConfig {
            url: url.clone(),
            prefix: args.prefix.clone(),
            shards: args.shards,
            jetstream: args.jetstream,
            name: format!("engine {engine_id}"),
        },
        shards: shards.clone(),
        interop_subject: args.interop_subject.clone(),
        ack_wait,
        queue: 256,
    };
    let stop = crate::common::stop_flag()?;

    // Store and run.
    let store_url = crate::common::store_url(args.no_store, args.store.as_deref(), &config);
    let mut store = match &store_url {
        Some(u) => Some(netspectra_store::open(&StoreUrl::parse(u)?, &engine_id)?),
        None => None,
    };
    let inputs = json!({
        "nats": url,
        "prefix": args.prefix,
        "shards": args.shards,
        "owned_shards": shards,
        "jetstream": args.jetstream,
        "interop_subject": args.interop_subject,
    });
    let command = crate::common::recorded_command(std::env::args());
    // JetStream: resume from the batches this engine id has stored.
    let consumer_name = progress_consumer(&args.prefix);
    let mut dedupe = Dedupe::default();
    if let (true, Some(s)) = (args.jetstream, &store) {
        if let Some(state) = s.load_progress(&engine_id, &consumer_name)? {
            dedupe = dedupe_from_progress(&state).with_context(|| {
                format!(
                    "the stored progress of engine {engine_id} ({consumer_name}) cannot be read; \
                     delete its row from bus_progress to start over (redelivered batches \
                     would then be counted again)"
                )
            })?;
            let (keys, ranges) = dedupe
                .ranges()
                .fold((0usize, 0usize), |(k, r), (_, _, rs)| (k + 1, r + rs.len()));
            tracing::info!(message = "resuming from stored progress", engine = %engine_id,
                           consumer = %consumer_name, shards = keys, ranges);
        }
    }
    let applied_log: Option<AppliedLog> =
        (args.jetstream && store.is_some()).then(|| Arc::new(Mutex::new(VecDeque::new())));
    let (written_tx, written_rx) = watch::channel(0u64);
    let mut run_id = None;
    let inner: Box<dyn WindowSink> = match &mut store {
        Some(s) => {
            let id = s.begin_run(&engine_id, &command, &inputs, &plan.tasks, plan.window_ns)?;
            run_id = Some(id);
            s.sink(id, &engine_id)?
        }
        None => Box::new(NullSink),
    };
    let sink = CommitSink {
        inner,
        written: written_tx.clone(),
        sketch_tasks: plan
            .tasks
            .iter()
            .filter(|t| matches!(t.kind, TaskKind::Sketch(_)))
            .count(),
        period_ns: plan.period_ns,
        awaiting_sketches: 0,
        next_window: 0,
        progress: applied_log.as_ref().map(|log| Progress {
            consumer: consumer_name.clone(),
            log: Arc::clone(log),
            stored: dedupe.clone(),
        }),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ns-engine-io")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    telemetry.set_ready(false, "connecting to NATS");
    let (mut consumer, mut rx) = rt.block_on(Consumer::start(&ccfg))?;
    let counters = consumer.counters();
    metrics::counter!("netspectra_engine_windows_total").increment(0);
    export(&Consumed::default());
    crate::probe::export_bus(&telemetry, &counters, &url);
    let mut last_export = Instant::now();
    let acks = {
        let _guard = rt.enter();
        AckQueue::spawn(written_rx, ack_wait)
    };
    let ack_tx = acks.sender();
    let mut tracker = WindowTracker::new(&plan);
    let mut engine = netspectra_engine::Engine::start(plan.clone(), Box::new(sink))?;
    eprintln!(
        "netspectra engine {engine_id}: consuming shards {shards:?} of {} from {url}{}",
        args.shards,
        if args.jetstream { " (JetStream)" } else { "" }
    );

    let started = Instant::now();
    let mut c = Consumed::default();
    let log = applied_log.as_deref();
    let mut recs: Vec<PacketRecord> = Vec::with_capacity(1024);
    let idle = args.idle_exit.map(|s| Duration::from_secs_f64(s.max(0.0)));
    let mut last_message = Instant::now();
    let poll = Duration::from_millis(100);
    let mut first_message: Option<Instant> = None;
    let mut last_applied = Instant::now();
    loop {
        if last_export.elapsed() >= EXPORT_EVERY {
            last_export = Instant::now();
            export(&c);
            crate::probe::export_bus(&telemetry, &counters, &url);
        }
        if stop.load(Ordering::Relaxed) {
            tracing::info!(message = "stop signal: flushing", engine = %engine_id);
            break;
        }
        if idle.is_some_and(|i| last_message.elapsed() >= i) {
            tracing::info!(message = "idle: stopping", engine = %engine_id);
            break;
        }
        let got = rt.block_on(async { tokio::time::timeout(poll, rx.recv()).await });
        let d = match got {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(_) => continue,
        };
        last_message = Instant::now();
        first_message.get_or_insert(last_message);
        // This message, then what is already queued, without going back to
        // the runtime.
        let queued = std::iter::from_fn(|| rx.try_recv().ok());
        for d in std::iter::once(d).chain(queued) {
            apply(
                d,
                &mut c,
                &mut dedupe,
                log,
                &mut recs,
                &mut tracker,
                &mut engine,
                &ack_tx,
                &shards,
                args.shards,
            );
        }
        last_applied = Instant::now();
    }
    // Stop consuming; apply what was already received.
    consumer.stop();
    while let Ok(d) = rx.try_recv() {
        apply(
            d,
            &mut c,
            &mut dedupe,
            log,
            &mut recs,
            &mut tracker,
            &mut engine,
            &ack_tx,
            &shards,
            args.shards,
        );
    }
    drop(rx);
    export(&c);
    crate::probe::export_bus(&telemetry, &counters, &url);
    telemetry.set_ready(false, "stopping: flushing the last window");
    let finished = engine.finish().context("engine failed");
    if finished.is_ok() {
        // Every window (and sketch period) has been written.
        written_tx.send_replace(u64::MAX);
    }
    drop(ack_tx);
    let ack_stats = rt.block_on(acks.finish());
    let output = finished?;
    let (connects, disconnects, slow) = counters.snapshot();
    let decoded = json!({
        "batches": c.batches,
        "duplicate_batches": c.duplicates,
        "bad_messages": c.bad,
        "interop_packets": c.interop_packets,
        "slow_consumer_events": slow,
    });
    if let (Some(s), Some(id)) = (&mut store, run_id) {
        s.finish_run(id, "complete", &inputs, c.packets, c.bytes, &decoded)?;
    }
    // From the first message to the last one applied: the consuming rate.
    let busy = first_message.map_or(0.0, |f| last_applied.duration_since(f).as_secs_f64());
    let summary = json!({
        "engine_id": engine_id,
        "run_id": run_id,
        "store": store_url,
        "shards": shards,
        "jetstream": args.jetstream,
        "packets": c.packets,
        "bytes": c.bytes,
        "batches": c.batches,
        "duplicate_batches": c.duplicates,
        "bad_messages": c.bad,
        "interop_packets": c.interop_packets,
        "interop_other_shards": c.interop_other_shards,
        "split_batches": c.split_batches,
        "windows": output.windows,
        "late_packets": output.late_packets,
        "acks": {"acked": ack_stats.acked, "progress": ack_stats.progress,
                 "unacked": ack_stats.unacked, "failed": ack_stats.failed},
        "nats": {"reconnects": connects.saturating_sub(1), "disconnects": disconnects,
                 "slow_consumer_events": slow},
        "elapsed_s": started.elapsed().as_secs_f64(),
        "busy_s": busy,
        "mpps": c.packets as f64 / busy.max(1e-9) / 1e6,
    });
    tracing::info!(message = "engine done", engine = %engine_id, packets = c.packets,
                   batches = c.batches, duplicates = c.duplicates, windows = output.windows);
    if args.format == "json" {
        println!("{summary}");
    } else {
        println!(
            "engine {engine_id}: {} packets ({} bytes) from {} batches ({} duplicates skipped, {} bad), {} windows stored; first to last message {:.2} s ({:.2} Mpps)",
            c.packets, c.bytes, c.batches, c.duplicates, c.bad, output.windows, busy,
            c.packets as f64 / busy.max(1e-9) / 1e6
        );
    }
    Ok(Outcome::Clean)
}

/// Applies one delivery: decode, dedupe, push; hands its acker to the ack
/// queue with the window its last packet went into.
#[allow(clippy::too_many_arguments)]
#[inline]
fn apply(
    d: Delivery,
    c: &mut Consumed,
    dedupe: &mut Dedupe,
    log: Option<&Mutex<VecDeque<Applied>>>,
    recs: &mut Vec<PacketRecord>,
    tracker: &mut WindowTracker,
    engine: &mut EngineInput,
    ack_tx: &mpsc::UnboundedSender<(u64, netspectra_bus::Acker)>,
    owned: &[u32],
    shards: u32,
) {
    match d.source {
        Source::Batch => {
            recs.clear();
            match wire::decode_batch(&d.payload, recs) {
                Ok(h) => {
                    if dedupe.accept(h.probe_id, h.shard, h.seq) {
                        c.batches += 1;
                        let mut first_window = None;
                        let mut newest = c.newest_ts_ns;
                        for r in recs.iter() {
                            tracker.observe(r.ts_ns);
                            first_window.get_or_insert(tracker.index);
                            engine.push(r);
                            c.bytes += u64::from(r.wire_len);
                            newest = newest.max(r.ts_ns);
                        }
                        c.newest_ts_ns = newest;
                        c.packets += recs.len() as u64;
                        if let Some(log) = log {
                            // Before any later packet is pushed, hence
                            // before this window can be flushed.
                            log.lock().unwrap_or_else(|e| e.into_inner()).push_back((
                                tracker.index,
                                Arc::from(h.probe_id),
                                h.shard,
                                h.seq,
                            ));
                        }
                        if first_window.is_some_and(|w| w != tracker.index) {
                            // Part of this batch is in a window that will be
                            // stored before the batch is acked.
                            if c.split_batches == 0 {
                                tracing::warn!(
                                    message = "a batch spans a window cut: \
                                    a crash could count part of it twice; give probes the \
                                    engines' config or a --batch-align that divides the window",
                                    shard = h.shard,
                                    seq = h.seq
                                );
                            }
                            c.split_batches += 1;
                        }
                        tracing::debug!(
                            message = "batch applied",
                            shard = h.shard,
                            seq = h.seq,
                            window = tracker.index
                        );
                    } else {
                        c.duplicates += 1;
                        tracing::debug!(
                            message = "duplicate batch skipped",
                            shard = h.shard,
                            seq = h.seq
                        );
                    }
                }
                Err(e) => {
                    c.bad += 1;
                    tracing::warn!(message = "undecodable batch skipped", error = %e);
                }
            }
        }
        Source::Interop => match wire::decode_packet(&d.payload) {
            Ok(r) => {
                if owned.contains(&shard_of(&r, shards)) {
                    tracker.observe(r.ts_ns);
                    engine.push(&r);
                    c.packets += 1;
                    c.bytes += u64::from(r.wire_len);
                    c.interop_packets += 1;
                    c.newest_ts_ns = c.newest_ts_ns.max(r.ts_ns);
                } else {
                    c.interop_other_shards += 1;
                }
            }
            Err(e) => {
                c.bad += 1;
                tracing::debug!(message = "undecodable interop message skipped", error = %e);
            }
        },
    }
    if let Some(acker) = d.acker {
        // Acked once the window now open (holding the batch's last packet,
        // or, for a duplicate, later than the original) is written.
        let _ = ack_tx.send((tracker.index, acker));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_json() {
        let mut d = Dedupe::default();
        for seq in [1u64, 2, 3, 9, 10] {
            assert!(d.accept("probe-a", 4, seq));
        }
        assert!(d.accept("probe-b", 0, 7));
        let back = dedupe_from_progress(&progress_json(&d)).unwrap();
        let mut got: Vec<_> = back
            .ranges()
            .map(|(p, s, r)| (p.to_string(), s, r.to_vec()))
            .collect();
        let mut want: Vec<_> = d
            .ranges()
            .map(|(p, s, r)| (p.to_string(), s, r.to_vec()))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert!(dedupe_from_progress("{\"format\":2,\"applied\":[]}").is_err());
        assert!(dedupe_from_progress("{\"format\":1,\"applied\":[{\"probe\":\"p\"}]}").is_err());
    }

    #[test]
    fn progress_covers_exactly_the_batches_of_the_windows_written() {
        let log: AppliedLog = Arc::new(Mutex::new(VecDeque::new()));
        let mut p = Progress {
            consumer: "c".into(),
            log: Arc::clone(&log),
            stored: Dedupe::default(),
        };
        for (w, seq) in [(0u64, 1u64), (0, 2), (1, 3), (3, 4)] {
            log.lock().unwrap().push_back((w, Arc::from("p"), 0, seq));
        }
        let applied = |state: &str| -> Vec<(u64, u64)> {
            dedupe_from_progress(state)
                .unwrap()
                .ranges()
                .flat_map(|(_, _, r)| r.to_vec())
                .collect()
        };
        assert_eq!(applied(&p.through(0)), [(1, 2)]);
        assert_eq!(applied(&p.through(1)), [(1, 3)]);
        assert_eq!(applied(&p.through(2)), [(1, 3)], "window 2 holds no batch");
        assert_eq!(applied(&p.through(3)), [(1, 4)]);
        assert!(log.lock().unwrap().is_empty());
    }

    #[test]
    fn the_tracker_counts_windows_as_the_engine_flushes_them() {
        let mut plan =
            EnginePlan::from_config(&netspectra_model::config::Config::default(), 1).unwrap();
        plan.window_ns = 10;
        plan.period_ns = 30;
        let mut t = WindowTracker::new(&plan);
        let mut idx = Vec::new();
        for ts in [5, 7, 3, 12, 29, 31, 95, 94, 40] {
            t.observe(ts);
            idx.push(t.index);
        }
        // 5,7 in [0,10); 3 in it too; 12 → [10,20); 29 → [20,30); 31 → [30,40);
        // 95 → [90,100); 94 same; 40 is late (counted in the open window).
        assert_eq!(idx, [0, 0, 0, 1, 2, 3, 4, 4, 4]);
        // The engine agrees: it flushes one window per index step, plus the
        // last one at finish.
        let mut input = netspectra_engine::Engine::start(plan, Box::new(NullSink)).unwrap();
        for ts in [5, 7, 3, 12, 29, 31, 95, 94, 40] {
            input.push(&PacketRecord {
                l3: netspectra_model::L3::Ipv4,
                ts_ns: ts,
                wire_len: 1,
                ..Default::default()
            });
        }
        assert_eq!(input.finish().unwrap().windows, 5);
    }
}
