//! The engine role (`netspectra engine`): consume the owned shards from NATS → the same
//! engine as `analyze` → windows in the store, every row tagged with the
//! engine id.
//!
//! ```text
//!  tokio (1 thread): one pull/subscription task per owned shard ──► bounded queue
//!  this thread: decode batch ─► Dedupe ─► EngineInput::push  ─► workers ─► collector ─► store
//!                                 └─► (window index, acker) ─► AckQueue ◄── windows written
//! ```
//!
//! Which shards an engine consumes: `elastic.rs` (leases in NATS KV) or the
//! static `--engines/--engine-index` split.
//!
//! JetStream acks follow the store: a batch is acknowledged only once every
//! window holding its packets is durable (and, at a period's end, the
//! period's sketch rows too). A SIGKILLed engine therefore loses nothing it
//! had not stored — the server redelivers those batches to its successor.
//! It counts nothing twice either: each window is stored together with the
//! engine's progress (`bus_progress`: the `Dedupe` ranges of every batch
//! whose packets are in that window or an earlier one, and the run and
//! window end it covers; in the same transaction on SQLite, after the rows
//! on ClickHouse), and an engine about to consume a shard seeds its `Dedupe`
//! with every engine's stored progress for it (and drops a dead engine's
//! rows that no progress covers), so batches whose window was written but
//! whose acks had not reached the server are skipped (and acked) when
//! redelivered.
//! Exceptions: a batch whose packets span a window cut (`split_batches`,
//! warned about: the probe aligns batches to the windows) is recorded with
//! its last window, so a crash between the two windows counts its first
//! part twice; and a period's sketch rows, written after the window that
//! ends it, are lost if the engine dies in between (exact rows stay right).
//!
//! SIGTERM/SIGINT (or `--idle-exit`): stop consuming, apply what was
//! already received, flush the open window, ack, mark the run complete.

mod commit;
mod elastic;

use crate::error::{Context, NodeError};
use crate::setup::{recorded_command, without_url_password};
use crate::telemetry::{self, Telemetry};
use crate::Shutdown;
use commit::{Applied, AppliedLog, CommitSink, Progress, Retry, Splits, StoreFailure};
use elastic::Elastic;
use netspectra_bus::lease::Leadership;
use netspectra_bus::{
    cluster, progress, shard_of, AckQueue, AckStats, BusConfig, BusCounters, Consumer,
    ConsumerConfig, Dedupe, Delivery, Source,
};
use netspectra_engine::{EngineInput, EnginePlan, NullSink, TaskKind, WindowSink};
use netspectra_model::config::Config;
use netspectra_model::PacketRecord;
use netspectra_proto::wire;
use netspectra_store::{Store, StoreUrl};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Everything an engine needs.
pub struct EngineConfig {
    /// Tasks, windows and workers.
    pub config: Config,
    /// Engine workers (0: `aggregator.num_workers`, and 0 there: one per core).
    pub workers: usize,
    /// NATS, the shards consumed, interop subject, ack wait. With
    /// `elastic`, `consumer.shards` is ignored: shards come from the cluster.
    pub consumer: ConsumerConfig,
    /// Find the other engines and share the shards with them (membership
    /// lease TTL); `None`: consume exactly `consumer.shards` (the static
    /// `--engines/--engine-index` override).
    pub elastic: Option<Duration>,
    /// Id written on every stored row (and the JetStream progress's owner).
    pub engine_id: String,
    /// Store URL (`None`: results in memory only).
    pub store: Option<String>,
    /// Stop after this long without a message.
    pub idle_exit: Option<Duration>,
    /// Serve `/metrics`, `/healthz` and `/readyz` on this address.
    pub metrics: Option<String>,
}

/// The shards engine `index` of `engines` owns (`s % engines == index`),
/// or why that static assignment is not possible.
pub fn static_shards(index: u32, engines: u32, shards: u32) -> Result<Vec<u32>, NodeError> {
    if index >= engines {
        return Err(NodeError::invalid(format!(
            "--engine-index {index} must be below --engines {engines}"
        )));
    }
    let owned = netspectra_bus::owned_shards(index, engines, shards);
    if owned.is_empty() {
        return Err(NodeError::invalid(format!(
            "engine {index} of {engines} owns no shard of {shards}: use fewer engines or more shards"
        )));
    }
    Ok(owned)
}

/// An id no other running engine has: `<host name>-<pid>`.
pub fn default_engine_id() -> String {
    crate::probe::default_probe_id()
}

/// The shards an engine consumes and the cluster members it sees, kept
/// current by the consuming loop (tests and readiness read it).
#[derive(Clone, Default)]
pub struct ClusterView(Arc<Mutex<(Vec<u32>, Vec<String>)>>);

impl ClusterView {
    fn set(&self, shards: &[u32], members: &[String]) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = (shards.to_vec(), members.to_vec());
    }

    /// The shards consumed now.
    pub fn shards(&self) -> Vec<u32> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// The live members seen at the last heartbeat (empty when static).
    pub fn members(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }
}

/// Marks as applied, in `dedupe`, the batches of `shards` that any engine
/// stored with its progress (JetStream with a store; otherwise nothing).
///
/// Runs of dead engines (`dead`: neither live members nor this engine)
/// that never finished may hold rows their progress does not cover
/// (ClickHouse writes the two separately, and an engine may die before
/// its first progress): those batches were not acked, are redelivered and
/// applied again, so the rows go first. `cleaned` remembers the runs done.
/// Returns how many stored ranges of batches `shards` had (0: no engine
/// applied anything from them yet).
fn seed(
    dedupe: &mut Dedupe,
    store: Option<&dyn Store>,
    bus: &BusConfig,
    shards: &[u32],
    dead: &dyn Fn(&str) -> bool,
    cleaned: &mut HashSet<i64>,
) -> Result<usize, NodeError> {
    let (true, Some(store)) = (bus.jetstream, store) else {
        return Ok(0);
    };
    let consumer_name = progress::consumer_name(&bus.prefix);
    let states = store.all_progress(&consumer_name)?;
    let covered: HashMap<i64, u64> = states
        .iter()
        .filter_map(|(_, state)| progress::written(state))
        .map(|w| (w.run_id, w.through_ns))
        .collect();
    for run in store.runs()? {
        let ours = run.inputs["jetstream"] == true && run.inputs["prefix"] == bus.prefix.as_str();
        if ours && run.status == "running" && dead(&run.engine_id) && cleaned.insert(run.run_id) {
            let from_ns = covered.get(&run.run_id).copied().unwrap_or(0);
            store.drop_uncovered(run.run_id, from_ns)?;
            tracing::info!(message = "a dead engine's unacknowledged rows dropped (their batches are redelivered)",
                engine = %run.engine_id, run_id = run.run_id, from_ns);
        }
    }
    let mut ranges = 0usize;
    for (_, state) in states {
        let stored = progress::decode(&state).context(format!(
            "stored bus progress ({consumer_name}) cannot be read; delete its rows from \
             bus_progress to start over (redelivered batches would then be counted again)"
        ))?;
        for (probe, shard, rs) in stored.ranges() {
            if shards.contains(&shard) {
                for &(first, last) in rs {
                    dedupe.mark_applied(probe, shard, first, last);
                    ranges += 1;
                }
            }
        }
    }
    if ranges > 0 {
        tracing::info!(message = "resuming from stored progress", consumer = %consumer_name, ?shards, ranges);
    }
    Ok(ranges)
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
    /// Core NATS: batches missing from a probe's sequence.
    lost_batches: u64,
    /// Wall clock (ns) of the first message, and after the last one applied
    /// (a fleet's rate spans its engines' first and last).
    first_wall_ns: u64,
    last_wall_ns: u64,
    /// Newest packet timestamp applied (ns since the epoch; 0: none yet).
    newest_ts_ns: u64,
    /// Wall clock when it was applied.
    newest_wall_ns: u64,
    /// And the same instant on the monotonic clock.
    newest_at: Option<Instant>,
}

impl Consumed {
    /// Notes a packet timestamp applied (keeps the newest and when).
    fn saw(&mut self, ts_ns: u64) {
        if ts_ns > self.newest_ts_ns {
            self.newest_ts_ns = ts_ns;
            self.newest_wall_ns = telemetry::wall_ns();
            self.newest_at = Some(Instant::now());
        }
    }
}

/// How often the retention leader deletes expired rows.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// How often the consuming loop refreshes metrics and readiness.
const EXPORT_EVERY: Duration = Duration::from_millis(250);

/// A heartbeat taking this long is logged.
const SLOW_BEAT: Duration = Duration::from_secs(1);

/// Mirrors the loop's counts into the metrics. Lag: how far behind the
/// wall clock the newest packet applied was when it was applied (so it
/// stays put on an idle link instead of growing).
fn export(c: &Consumed) {
    telemetry::mirror("netspectra_engine_packets_total", c.packets);
    telemetry::mirror("netspectra_engine_bytes_total", c.bytes);
    telemetry::mirror("netspectra_engine_batches_total", c.batches);
    telemetry::mirror("netspectra_engine_duplicate_batches_total", c.duplicates);
    telemetry::mirror("netspectra_engine_bad_messages_total", c.bad);
    if c.newest_ts_ns > 0 {
        let lag = c.newest_wall_ns.saturating_sub(c.newest_ts_ns) as f64 / 1e9;
        metrics::gauge!("netspectra_engine_lag_seconds").set(lag);
    }
}

/// The engine role.
pub struct EngineRole;

/// A started engine: store open, run begun, consuming from NATS.
pub struct RunningEngine {
    cfg: EngineConfig,
    telemetry: Telemetry,
    rt: tokio::runtime::Runtime,
    consumer: Consumer,
    rx: mpsc::Receiver<Delivery>,
    elastic: Option<Elastic>,
    /// Shards held but not consumed until their stored progress is read.
    unseeded: Vec<u32>,
    /// Packet times of mid-stream shard moves (sketch periods → partial).
    splits: Splits,
    status: ClusterView,
    sink_stop: Shutdown,
    store_failure: StoreFailure,
    counters: Arc<BusCounters>,
    acks: AckQueue,
    ack_tx: mpsc::UnboundedSender<(u64, netspectra_bus::Acker)>,
    written_tx: watch::Sender<u64>,
    engine: EngineInput,
    dedupe: Dedupe,
    applied_log: Option<AppliedLog>,
    store: Option<Box<dyn Store>>,
    run_id: Option<i64>,
    inputs: Value,
}

impl EngineRole {
    /// Opens the store, begins the run (resuming JetStream progress stored
    /// under this engine id), connects to NATS and starts consuming.
    pub fn start(cfg: EngineConfig) -> Result<RunningEngine, NodeError> {
        let telemetry = telemetry::from_arg(cfg.metrics.as_deref())?;
        telemetry.set_ready(false, "opening the store");
        let plan = EnginePlan::from_config(&cfg.config, cfg.workers)?;
        let bus = &cfg.consumer.bus;
        let engine_id = &cfg.engine_id;
        let mut store = match &cfg.store {
            Some(u) => Some(netspectra_store::open_spooled(
                &StoreUrl::parse(u)?,
                engine_id,
                Path::new(&cfg.config.store.spool_dir),
                netspectra_store::Commits::PerWindow,
            )?),
            None => None,
        };
        let inputs = json!({
            "nats": without_url_password(&bus.url),
            "prefix": bus.prefix,
            "shards": bus.shards,
            "owned_shards": cfg.consumer.shards,
            "jetstream": bus.jetstream,
            "interop_subject": cfg.consumer.interop_subject,
        });
        let command = recorded_command(std::env::args());
        // JetStream: skip the batches whose windows some engine stored.
        let consumer_name = progress::consumer_name(&bus.prefix);
        let mut dedupe = Dedupe::default();
        // Static shards whose stored progress cannot be read yet (the
        // store is down): consumed once it can be (their batches wait in
        // the stream meanwhile).
        let mut unseeded = Vec::new();
        if cfg.elastic.is_none() {
            // Static: our own earlier run is over; the others' are not ours.
            let seeded = seed(
                &mut dedupe,
                store.as_deref(),
                bus,
                &cfg.consumer.shards,
                &|id| id == engine_id,
                &mut HashSet::new(),
            );
            if let Err(error) = seeded.map(|_| ()) {
                tracing::warn!(message = "cannot read the stored progress yet; consuming once the store answers", %error);
                unseeded = cfg.consumer.shards.clone();
            }
        }
        let applied_log: Option<AppliedLog> =
            (bus.jetstream && store.is_some()).then(|| Arc::new(Mutex::new(VecDeque::new())));
        let (written_tx, written_rx) = watch::channel(0u64);
        let mut run_id = None;
        let inner: Box<dyn WindowSink> = match &mut store {
            Some(s) => {
                let id = s.begin_run(engine_id, &command, &inputs, &plan.tasks, plan.window_ns)?;
                run_id = Some(id);
                s.sink(id, engine_id)?
            }
            None => Box::new(NullSink),
        };
        // Store retries end on the caller's stop (linked in `wait`).
        let sink_stop = Shutdown::new();
        let store_failure = StoreFailure::default();
        let splits = Splits::default();
        let sink = CommitSink {
            splits: Arc::clone(&splits),
            retry: Retry {
                shutdown: sink_stop.clone(),
                telemetry: telemetry.clone(),
                failure: Arc::clone(&store_failure),
                first_backoff: Duration::from_millis(100),
            },
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
                run_id: run_id.unwrap_or(0),
                forget_after_ns: bus.max_age.as_nanos() as u64,
            }),
        };

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ns-engine-io")
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        telemetry.set_ready(false, "connecting to NATS");
        let mut consumer_cfg = cfg.consumer.clone();
        if cfg.elastic.is_some() || !unseeded.is_empty() {
            consumer_cfg.shards.clear();
        }
        let (consumer, rx) = rt.block_on(Consumer::start(&consumer_cfg))?;
        let elastic = match cfg.elastic {
            Some(ttl) => {
                let bucket = rt
                    .block_on(cluster::open_bucket(consumer.client(), bus, ttl))
                    .context(format!(
                        "engines find each other through a JetStream key-value bucket on {}, \
                         and it cannot be opened (start nats-server with -js to enable JetStream, \
                         or assign shards by hand with --engines N --engine-index I)",
                        without_url_password(&bus.url)
                    ))?;
                Some(rt.block_on(Elastic::join(consumer.client(), bucket, bus, engine_id))?)
            }
            None => None,
        };
        let status = ClusterView::default();
        status.set(&consumer.shards(), &[]);
        let counters = consumer.counters();
        telemetry.watch_bus(Arc::clone(&counters), &bus.url);
        metrics::counter!("netspectra_engine_windows_total").increment(0);
        export(&Consumed::default());
        crate::probe::export_bus(&telemetry, &counters);
        let acks = {
            let _guard = rt.enter();
            AckQueue::spawn(written_rx, cfg.consumer.ack_wait)
        };
        let ack_tx = acks.sender();
        let engine = netspectra_engine::Engine::start(plan, Box::new(sink))?;
        Ok(RunningEngine {
            cfg,
            telemetry,
            rt,
            consumer,
            rx,
            elastic,
            unseeded,
            splits,
            status,
            sink_stop,
            store_failure,
            counters,
            acks,
            ack_tx,
            written_tx,
            engine,
            dedupe,
            applied_log,
            store,
            run_id,
            inputs,
        })
    }
}

impl RunningEngine {
    /// The shards consumed and the members seen, as they change.
    pub fn cluster(&self) -> ClusterView {
        self.status.clone()
    }

    /// `netspectra engine ID: consuming shards [...] of N from URL` (static)
    /// or `… sharing N shards with the engines on URL` (elastic), for the user.
    pub fn describe(&self) -> String {
        let bus = &self.cfg.consumer.bus;
        let what = match self.cfg.elastic {
            Some(_) => format!("sharing {} shards with the engines on", bus.shards),
            None => format!(
                "consuming shards {:?} of {} from",
                self.cfg.consumer.shards, bus.shards
            ),
        };
        format!(
            "netspectra engine {}: {what} {}{}",
            self.cfg.engine_id,
            without_url_password(&bus.url),
            if bus.jetstream { " (JetStream)" } else { "" }
        )
    }

    /// Consumes until `shutdown` (or `idle_exit` without a message), then
    /// applies what was received, flushes the open window, acks and marks
    /// the run complete.
    pub fn wait(self, shutdown: &Shutdown) -> Result<EngineSummary, NodeError> {
        let RunningEngine {
            cfg,
            telemetry,
            rt,
            mut consumer,
            mut rx,
            mut elastic,
            mut unseeded,
            splits,
            status,
            sink_stop,
            store_failure,
            counters,
            acks,
            ack_tx,
            written_tx,
            mut engine,
            mut dedupe,
            applied_log,
            mut store,
            run_id,
            inputs,
        } = self;
        let mut shards = cfg.consumer.shards.clone();
        if elastic.is_some() {
            shards.clear();
        }
        let shard_count = cfg.consumer.bus.shards;
        let engine_id = cfg.engine_id.clone();
        let mut last_export = Instant::now();
        let started = Instant::now();
        let mut c = Consumed::default();
        let log = applied_log.as_deref();
        let mut recs: Vec<PacketRecord> = Vec::with_capacity(1024);
        let mut last_message = Instant::now();
        let poll = Duration::from_millis(100);
        let mut first_message: Option<Instant> = None;
        let mut last_applied = Instant::now();
        let mut cluster_error = false;
        let mut cleaned = HashSet::new();

        // JetStream shards leaving at the end of their sketch period (its
        // end, ns), batches of the next period given back (NAK) meanwhile,
        // and the shards whose boundary was reached.
        let mut departing: BTreeMap<u32, u64> = BTreeMap::new();
        let grace_ns = cfg.config.aggregator.grace.0;
        let mut naks: Vec<netspectra_bus::Acker> = Vec::new();
        let mut reached: Vec<u32> = Vec::new();
        let mut fresh: BTreeSet<u32> = BTreeSet::new();
        // The shards consumed or the members seen changed since the view
        // and the owned-shards gauge were last set.
        let mut view_changed = true;
        let mut last_seed_try = Instant::now() - poll;
        let mut seed_failing = false;
        // Retention: one engine per cluster (the leader of duty `retention`)
        // applies `store.retention`, hourly.
        let retention = cfg
            .config
            .store
            .retention
            .map(|d| Duration::from_nanos(d.0))
            .filter(|_| store.is_some());
        let retention_leader = match (&elastic, retention) {
            (Some(el), Some(_)) => {
                let _guard = rt.enter();
                Some(Leadership::spawn(
                    el.bucket().clone(),
                    "retention",
                    &engine_id,
                ))
            }
            _ => None,
        };
        let mut last_retention: Option<Instant> = None;
        let mut last_forget = Instant::now();
        dedupe.set_clock(telemetry::wall_ns());
        // The store's retries stop when the caller stops us, even while this
        // loop waits on them.
        let finished_flag = Shutdown::new();
        let link = {
            let (outer, inner, done) = (shutdown.clone(), sink_stop.clone(), finished_flag.clone());
            std::thread::spawn(move || {
                while !done.is_triggered() {
                    if outer.is_triggered() {
                        inner.trigger();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let store_down = || {
            store_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        };
        macro_rules! apply_one {
            ($d:expr) => {
                apply(
                    $d,
                    &mut c,
                    &mut dedupe,
                    log,
                    &mut recs,
                    &mut engine,
                    &ack_tx,
                    &shards,
                    shard_count,
                    &mut Departures {
                        at: &departing,
                        naks: &mut naks,
                        reached: &mut reached,
                        fresh: &mut fresh,
                        splits: &splits,
                    },
                )
            };
        }
        // Stops consuming `$list`, applies what was received from them,
        // and (elastic) hands them over once that is stored; `$boundary`:
        // they stop exactly at a period end (a clean handover).
        macro_rules! stop_shards {
            ($list:expr, $boundary:expr) => {{
                let list: Vec<u32> = $list;
                for &s in &list {
                    rt.block_on(consumer.remove_shard(s));
                }
                while let Ok(d) = rx.try_recv() {
                    apply_one!(d);
                }
                if !naks.is_empty() {
                    rt.block_on(nak_all(&mut naks));
                }
                shards.retain(|s| !list.contains(s));
                view_changed = true;
                unseeded.retain(|s| !list.contains(s));
                fresh.retain(|s| !list.contains(s));
                // Batches of theirs drained just now were given back too.
                reached.retain(|s| !list.contains(s));
                for &s in &list {
                    let boundary = departing.remove(&s).filter(|_| $boundary);
                    if let Some(el) = elastic.as_mut() {
                        el.stopped(
                            s,
                            engine.window_open().then(|| engine.window_index()),
                            boundary,
                        );
                    }
                    tracing::info!(message = "giving a shard to another engine", shard = s,
                        window = engine.window_index(), at_period_end = ?boundary);
                }
            }};
        }
        loop {
            if last_export.elapsed() >= EXPORT_EVERY {
                last_export = Instant::now();
                let now = telemetry::wall_ns();
                dedupe.set_clock(now);
                if last_forget.elapsed() >= Duration::from_secs(60) {
                    last_forget = Instant::now();
                    let max_age = cfg.consumer.bus.max_age.as_nanos() as u64;
                    let forgotten = dedupe.forget_unseen_since(now.saturating_sub(max_age));
                    if forgotten > 0 {
                        tracing::info!(
                            message = "forgot probes older than the stream's max age",
                            forgotten
                        );
                    }
                }
                export(&c);
                crate::probe::export_bus(&telemetry, &counters);
                if let Some(why) = store_down() {
                    telemetry.set_ready(false, &format!("the store refuses writes: {why}"));
                }
            }
            if shutdown.is_triggered() {
                tracing::info!(message = "stop signal: flushing", engine = %engine_id);
                break;
            }
            if cfg.idle_exit.is_some_and(|i| last_message.elapsed() >= i) {
                tracing::info!(message = "idle: stopping", engine = %engine_id);
                break;
            }
            if let (Some(leader), Some(keep), Some(s)) = (&retention_leader, retention, &store) {
                let due = last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY);
                if due && leader.token().is_some() {
                    last_retention = Some(Instant::now());
                    if let Err(error) = crate::setup::apply_retention(s.as_ref(), keep) {
                        tracing::warn!(message = "retention failed; retrying in an hour", %error);
                    }
                }
            }
            if let Some(el) = elastic.as_mut().filter(|e| e.due()) {
                let written = *written_tx.borrow();
                let beat_started = Instant::now();
                let (moves, beat) = rt.block_on(el.beat(written));
                // Nothing is consumed meanwhile: a slow beat delays
                // handovers and stalls every shard.
                let took = beat_started.elapsed();
                if took >= SLOW_BEAT {
                    tracing::warn!(
                        message = "a cluster heartbeat was slow; consuming waited",
                        took_ms = took.as_millis() as u64
                    );
                }
                // Members may have changed.
                view_changed = true;
                match beat {
                    Ok(()) => {
                        if std::mem::take(&mut cluster_error) {
                            tracing::info!(message = "cluster heartbeat works again", engine = %engine_id);
                        }
                        // A departure the cluster no longer wants is cancelled.
                        departing.retain(|s, _| moves.give_back.contains(s));
                    }
                    Err(error) => {
                        if !std::mem::replace(&mut cluster_error, true) {
                            tracing::error!(message = "cluster heartbeat failed; retrying", engine = %engine_id, %error);
                        }
                    }
                }
                // JetStream, once packets flow: a shard leaves at the end of
                // its sketch period, so no period is split. Otherwise (and a
                // lost lease) at once, the rest of the period going elsewhere.
                let mut now: Vec<u32> = moves.lost.clone();
                for &s in &moves.give_back {
                    if departing.contains_key(&s) {
                        continue;
                    }
                    match engine.period_end() {
                        Some(end) if cfg.consumer.bus.jetstream && shards.contains(&s) => {
                            departing.insert(s, end);
                            tracing::info!(
                                message = "a shard leaves at its period's end",
                                shard = s,
                                period_end_ns = end
                            );
                        }
                        _ => now.push(s),
                    }
                }
                if !now.is_empty() {
                    // The open period is the one split (late packets join it).
                    if let Some(start) = engine.period_start() {
                        splits
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(c.newest_ts_ns.max(start + 1));
                    }
                    let lost = moves.lost.clone();
                    for &s in &lost {
                        departing.remove(&s);
                        rt.block_on(consumer.remove_shard(s));
                    }
                    shards.retain(|s| !lost.contains(s));
                    unseeded.retain(|s| !lost.contains(s));
                    let given: Vec<u32> = now.into_iter().filter(|s| !lost.contains(s)).collect();
                    if !given.is_empty() {
                        stop_shards!(given, false);
                    }
                }
                let el = elastic.as_mut().expect("in the elastic branch");
                if !cfg.consumer.bus.jetstream {
                    let last = shards
                        .iter()
                        .map(|&s| (s, dedupe.last_per_probe(s)))
                        .collect();
                    if let Err(error) = rt.block_on(el.post_last(last)) {
                        tracing::debug!(message = "cannot post the last batches applied", %error);
                    }
                }
                unseeded.extend(&moves.take);
                if !moves.take.is_empty() {
                    tracing::info!(message = "took shards", shards = ?moves.take, members = el.members().len());
                }
            }
            let retry_every = if seed_failing {
                Duration::from_secs(2)
            } else {
                poll
            };
            if !unseeded.is_empty() && last_seed_try.elapsed() >= retry_every {
                last_seed_try = Instant::now();
                let members = elastic.as_ref().map(|e| e.members().to_vec());
                // Dead: not a live member (elastic), or ourselves before this run (static).
                let dead = |id: &str| match &members {
                    Some(m) => id != engine_id && !m.iter().any(|x| x == id),
                    None => id == engine_id,
                };
                match seed(
                    &mut dedupe,
                    store.as_deref(),
                    &cfg.consumer.bus,
                    &unseeded,
                    &dead,
                    &mut cleaned,
                ) {
                    Ok(stored_ranges) => {
                        seed_failing = false;
                        let mut had_owner = stored_ranges > 0;
                        // Core NATS: where the previous owners stopped, so
                        // that batches lost in between are counted.
                        for &s in &unseeded {
                            let posted = match &elastic {
                                Some(el) => rt.block_on(el.last_posted(s)).unwrap_or_else(|error| {
                                    tracing::warn!(message = "cannot read where the previous owner stopped; losses at this handover go uncounted", shard = s, %error);
                                    Vec::new()
                                }),
                                None => Vec::new(),
                            };
                            tracing::debug!(
                                message = "previous owner's last batches",
                                shard = s,
                                ?posted
                            );
                            had_owner |= !posted.is_empty();
                            for (probe, last) in posted {
                                if dedupe.last_applied(&probe, s).is_none_or(|l| l < last) {
                                    dedupe.mark_applied(&probe, s, last, last);
                                }
                            }
                        }
                        for &s in &unseeded {
                            rt.block_on(consumer.add_shard(s))?;
                            shards.push(s);
                        }
                        rt.block_on(consumer.flush())?;
                        // Another engine had this period's first part, unless
                        // it left every one of these shards at a period end.
                        if let Some(el) = &elastic {
                            for &s in &unseeded {
                                // Read (and so remove) the handover note even
                                // when no one had the shard: never a stale one.
                                let clean = rt.block_on(el.took_cleanly(s)).unwrap_or(false);
                                if had_owner && !clean {
                                    fresh.insert(s);
                                }
                            }
                        }
                        tracing::info!(message = "consuming shards", shards = ?unseeded);
                        unseeded.clear();
                        view_changed = true;
                    }
                    Err(error) => {
                        telemetry
                            .set_ready(false, &format!("cannot read the stored progress: {error}"));
                        if !std::mem::replace(&mut seed_failing, true) {
                            tracing::warn!(message = "cannot read the stored progress; the shards wait in the stream", ?unseeded, %error);
                        }
                    }
                }
            }
            // Shards or members changed: tell the metrics and the view.
            if std::mem::take(&mut view_changed) {
                shards.sort_unstable();
                metrics::gauge!("netspectra_engine_owned_shards").set(shards.len() as f64);
                status.set(&shards, elastic.as_ref().map_or(&[][..], |e| e.members()));
            }

            // The packet clock: the newest timestamp plus the time since.
            // Closes an idle link's window, and a replay's last one.
            if let Some(at) = c.newest_at {
                let clock = c.newest_ts_ns + at.elapsed().as_nanos() as u64;
                engine.tick(clock);
                // A leaving shard that stays quiet past its period's end
                // leaves then.
                let quiet: Vec<u32> = departing
                    .iter()
                    .filter(|&(_, &end)| clock >= end.saturating_add(grace_ns))
                    .map(|(&s, _)| s)
                    .collect();
                if !quiet.is_empty() {
                    stop_shards!(quiet, true);
                }
            }
            let got = rt.block_on(async { tokio::time::timeout(poll, rx.recv()).await });
            let d = match got {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(_) => continue,
            };
            last_message = Instant::now();
            if first_message.is_none() {
                first_message = Some(last_message);
                c.first_wall_ns = telemetry::wall_ns();
            }
            // This message, then what is already queued, without going back
            // to the runtime.
            apply_one!(d);
            while let Ok(d) = rx.try_recv() {
                apply_one!(d);
            }
            last_applied = Instant::now();
            c.last_wall_ns = telemetry::wall_ns();
            if !naks.is_empty() {
                rt.block_on(nak_all(&mut naks));
            }
            if !reached.is_empty() {
                let at_boundary = std::mem::take(&mut reached);
                stop_shards!(at_boundary, true);
            }
        }
        // Stop consuming; apply what was already received.
        consumer.stop();
        while let Ok(d) = rx.try_recv() {
            apply_one!(d);
        }
        drop(rx);
        export(&c);
        crate::probe::export_bus(&telemetry, &counters);
        telemetry.set_ready(false, "stopping: flushing the last window");
        let finished = engine.finish().context("engine failed");
        finished_flag.trigger();
        let _ = link.join();
        let (_, _, slow) = counters.snapshot();
        let decoded = json!({
            "batches": c.batches,
            "duplicate_batches": c.duplicates,
            "bad_messages": c.bad,
            "interop_packets": c.interop_packets,
            "slow_consumer_events": slow,
        });
        if finished.is_ok() {
            // Waits until the store holds everything (ClickHouse: inserted
            // or spooled); only then is every window durable and acked.
            if let (Some(s), Some(id)) = (&mut store, run_id) {
                s.finish_run(id, "complete", &inputs, c.packets, c.bytes, &decoded)?;
            }
            written_tx.send_replace(u64::MAX);
        }
        drop(ack_tx);
        let ack_stats = rt.block_on(acks.finish());
        let output = finished?;
        if let Some(el) = elastic {
            // Everything applied is stored and acked: hand over at once.
            if let Err(error) = rt.block_on(el.leave()) {
                tracing::warn!(message = "cannot release shard leases; they expire by themselves", %error);
            }
        }
        let (connects, disconnects, _) = counters.snapshot();
        // From the first message to the last one applied: the consuming rate.
        let busy = first_message.map_or(0.0, |f| last_applied.duration_since(f).as_secs_f64());
        tracing::info!(message = "engine done", engine = %engine_id, packets = c.packets,
                       batches = c.batches, duplicates = c.duplicates, windows = output.windows);
        Ok(EngineSummary {
            engine_id,
            run_id,
            store: cfg.store.as_deref().map(without_url_password),
            shards,
            jetstream: cfg.consumer.bus.jetstream,
            consumed: c,
            windows: output.windows,
            late_packets: output.late_packets,
            acks: ack_stats,
            reconnects: connects.saturating_sub(1),
            disconnects,
            slow_consumer_events: slow,
            elapsed_s: started.elapsed().as_secs_f64(),
            busy_s: busy,
        })
    }
}

/// What an engine did.
pub struct EngineSummary {
    engine_id: String,
    run_id: Option<i64>,
    store: Option<String>,
    shards: Vec<u32>,
    jetstream: bool,
    consumed: Consumed,
    windows: u64,
    late_packets: u64,
    acks: AckStats,
    reconnects: u64,
    disconnects: u64,
    slow_consumer_events: u64,
    elapsed_s: f64,
    busy_s: f64,
}

impl EngineSummary {
    /// The summary `engine --format json` prints.
    pub fn json(&self) -> Value {
        let c = &self.consumed;
        json!({
            "engine_id": self.engine_id,
            "run_id": self.run_id,
            "store": self.store,
            "shards": self.shards,
            "jetstream": self.jetstream,
            "packets": c.packets,
            "bytes": c.bytes,
            "batches": c.batches,
            "duplicate_batches": c.duplicates,
            "bad_messages": c.bad,
            "interop_packets": c.interop_packets,
            "interop_other_shards": c.interop_other_shards,
            "split_batches": c.split_batches,
            "lost_batches": c.lost_batches,
            "windows": self.windows,
            "late_packets": self.late_packets,
            "acks": {"acked": self.acks.acked, "progress": self.acks.progress,
                     "unacked": self.acks.unacked, "failed": self.acks.failed},
            "nats": {"reconnects": self.reconnects, "disconnects": self.disconnects,
                     "slow_consumer_events": self.slow_consumer_events},
            "elapsed_s": self.elapsed_s,
            "busy_s": self.busy_s,
            "first_message_unix_ns": c.first_wall_ns,
            "last_applied_unix_ns": c.last_wall_ns,
            "mpps": c.packets as f64 / self.busy_s.max(1e-9) / 1e6,
        })
    }

    /// The summary `engine` prints by default.
    pub fn text(&self) -> String {
        let c = &self.consumed;
        format!(
            "engine {}: {} packets ({} bytes) from {} batches ({} duplicates skipped, {} bad{}), {} stored; first to last message {:.2} s ({:.2} Mpps)",
            self.engine_id, c.packets, c.bytes, c.batches, c.duplicates, c.bad,
            if c.lost_batches > 0 { format!(", {} LOST on core NATS", c.lost_batches) } else { String::new() },
            if self.windows == 1 { "1 window".to_string() } else { format!("{} windows", self.windows) },
            self.busy_s,
            c.packets as f64 / self.busy_s.max(1e-9) / 1e6
        )
    }
}

/// What `apply` needs to know about shards moving between engines.
struct Departures<'a> {
    /// Shard → the end of the period it leaves at.
    at: &'a BTreeMap<u32, u64>,
    /// Batches of the next period, to give back to the stream.
    naks: &'a mut Vec<netspectra_bus::Acker>,
    /// Shards whose boundary a batch reached.
    reached: &'a mut Vec<u32>,
    /// Shards taken mid-period from another engine, until their first batch.
    fresh: &'a mut BTreeSet<u32>,
    /// Packet times of those first batches (their periods are split).
    splits: &'a Splits,
}

/// Gives messages back to JetStream for immediate redelivery (to the
/// shard's next owner).
async fn nak_all(naks: &mut Vec<netspectra_bus::Acker>) {
    for acker in naks.drain(..) {
        if let Err(error) = acker.ack_with(netspectra_bus::AckKind::Nak(None)).await {
            tracing::debug!(message = "nak failed; redelivered after ack_wait", %error);
        }
    }
}

/// A jump in a probe's sequence larger than this is a restarted probe
/// (its sequence starts at its start time in µs), not lost batches.
const RESTART_GAP: u64 = 100_000;

/// Core NATS is at-most-once: a gap in a probe's sequence on a shard is
/// batches lost (a slow consumer, or a shard handover, the previous owner
/// having posted where it stopped). Counted and logged, never silent.
fn count_lost(c: &mut Consumed, dedupe: &Dedupe, probe: &str, shard: u32, seq: u64) {
    let Some(last) = dedupe.last_applied(probe, shard) else {
        return;
    };
    let lost = seq.saturating_sub(last.saturating_add(1));
    if lost == 0 || lost > RESTART_GAP {
        return;
    }
    c.lost_batches += lost;
    metrics::counter!("netspectra_engine_lost_batches_total").increment(lost);
    tracing::warn!(
        message =
            "batches lost on core NATS (slow consumer or shard handover; JetStream loses none)",
        shard,
        probe,
        lost
    );
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
    engine: &mut EngineInput,
    ack_tx: &mpsc::UnboundedSender<(u64, netspectra_bus::Acker)>,
    owned: &[u32],
    shards: u32,
    departures: &mut Departures<'_>,
) {
    let mut d = d;
    match d.source {
        Source::Batch => {
            recs.clear();
            match wire::decode_batch(&d.payload, recs) {
                Ok(h) => {
                    if let (true, Some(first)) = (departures.fresh.remove(&h.shard), recs.first()) {
                        // Another engine had the start of the period this
                        // batch lands in (late packets join the open one).
                        let open = engine.period_start().map_or(0, |p| p + 1);
                        let at = first.ts_ns.max(open).max(1);
                        tracing::info!(message = "a taken shard's period is split between engines: its sketches are marked partial", shard = h.shard, at_ns = at);
                        departures
                            .splits
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(at);
                    }
                    // A leaving shard's batch of the next period: given back.
                    if let (Some(&end), Some(first)) = (departures.at.get(&h.shard), recs.first()) {
                        if first.ts_ns >= end {
                            if let Some(acker) = d.acker.take() {
                                departures.naks.push(acker);
                                if !departures.reached.contains(&h.shard) {
                                    departures.reached.push(h.shard);
                                }
                                return;
                            }
                        }
                    }
                    if d.acker.is_none() {
                        count_lost(c, dedupe, h.probe_id, h.shard, h.seq);
                    }
                    if dedupe.accept(h.probe_id, h.shard, h.seq) {
                        c.batches += 1;
                        let mut first_window = None;
                        let mut newest = c.newest_ts_ns;
                        for r in recs.iter() {
                            engine.push(r);
                            first_window.get_or_insert(engine.window_index());
                            c.bytes += u64::from(r.wire_len);
                            newest = newest.max(r.ts_ns);
                        }
                        c.saw(newest);
                        c.packets += recs.len() as u64;
                        if let Some(log) = log {
                            // Before any later packet is pushed, hence
                            // before this window can be flushed.
                            log.lock().unwrap_or_else(|e| e.into_inner()).push_back((
                                engine.window_index(),
                                Arc::from(h.probe_id),
                                h.shard,
                                h.seq,
                            ));
                        }
                        if first_window.is_some_and(|w| w != engine.window_index()) {
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
                            window = engine.window_index()
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
                    engine.push(&r);
                    c.packets += 1;
                    c.bytes += u64::from(r.wire_len);
                    c.interop_packets += 1;
                    c.saw(r.ts_ns);
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
        let _ = ack_tx.send((engine.window_index(), acker));
    }
}
