//! The alerter in its three forms:
//!
//! - **in-process** ([`InProcess`]): `analyze` and `run` evaluate the rules
//!   on each window as it is stored (`alerter.enabled`);
//! - **standalone** ([`Alerter`], `netspectra alert`): over any store,
//!   every `check_interval`, on the windows every engine has stored; with
//!   NATS, replicas elect one leader, and the alert state lives in the
//!   store so a new leader neither repeats nor loses a transition;
//! - **backtest** ([`backtest`]): the rules replayed over stored windows,
//!   sending nothing.

use crate::error::{Context, NodeError};
use crate::Shutdown;
use netspectra_alert::notify::DispatchStats;
use netspectra_alert::stored::{self, Span};
use netspectra_alert::{AlertingSink, Book, Dispatcher, Enrichment, Notice, Retry, Rules};
use netspectra_bus::lease::Leadership;
use netspectra_bus::BusConfig;
use netspectra_engine::{TaskSpec, WindowSink};
use netspectra_model::alert::AlertRecord;
use netspectra_model::config::Config;
use netspectra_model::task::configured_tasks;
use netspectra_store::read::Reader;
use netspectra_store::{Store, StoreUrl};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a finishing role waits for queued notifications at most.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(60);

/// Key of the standalone alerter's state in the store.
pub const STATE_KEY: &str = "alerter";

/// The checked rules of `config` (an error names the config key).
pub fn rules(config: &Config) -> Result<Rules, NodeError> {
    checked(config, &configured_tasks(config))
}

/// The rules of `config` over `tasks`, checked, with every `${VAR}` the
/// alerter uses set (its rules and notifiers, and `smtp` when mail is
/// sent; not `alerter.ai_analysis`, which the AI role reads).
fn checked(config: &Config, tasks: &[TaskSpec]) -> Result<Rules, NodeError> {
    let rules = Rules::from_config(config, tasks).map_err(|e| NodeError::invalid(e.to_string()))?;
    config.require_set("alerter.rules")?;
    config.require_set("alerter.notifiers")?;
    if rules.notifiers.iter().any(|n| n.kind == "email") {
        config.require_set("smtp")?;
    }
    Ok(rules)
}

/// The analysis of each notification (`alerter.ai_analysis.enabled`):
/// the `ai` role's at `alerter.ai_analysis.service_addr` when set (with
/// the API's token, which the gateway shares), else an
/// analyst here (the `ai` section's model, or the offline analyst) over
/// `store`. None when off, or when there is no store to read context from.
fn enrichment(config: &Config, store: Option<&StoreUrl>) -> Result<Option<Enrichment>, NodeError> {
    use netspectra_api::analyst::Analyst as _;
    let section = &config.alerter.ai_analysis;
    if !section.enabled {
        return Ok(None);
    }
    let timeout = Duration::from_nanos(section.timeout.0);
    let addr = section.service_addr.trim();
    if !addr.is_empty() {
        // The gateway's client keeps its connection on a runtime of its
        // own, which lives as long as the analysis does.
        let rt = std::sync::Arc::new(OwnRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("ns-alert-ai")
                .enable_all()
                .build()
                .context("cannot start the AI client's runtime")?,
        )));
        let token = crate::api::token(None, &config.api);
        let remote = {
            let _in_runtime = rt.0.as_ref().map(tokio::runtime::Runtime::enter);
            netspectra_api::ai_grpc::RemoteAnalyst::connect(addr, token.as_deref())
                .map_err(|e| NodeError::invalid(format!("alerter.ai_analysis.service_addr: {e}")))?
        };
        return Ok(Some(Enrichment::new(
            std::sync::Arc::new(move |alerts: Vec<AlertRecord>| {
                let _runtime = &rt;
                remote.analyse_alerts(alerts)
            }),
            timeout,
        )));
    }
    let analyst = {
        let Some(store) = store else {
            tracing::warn!(message = "alerter.ai_analysis is enabled but there is no store to read the alerts' context from: notifications go without analysis");
            return Ok(None);
        };
        crate::api::analyst(store, &config.ai, netspectra_api::Limits::default())?
    };
    Ok(Some(Enrichment::new(
        std::sync::Arc::new(move |alerts: Vec<AlertRecord>| analyst.analyse_alerts(alerts)),
        timeout,
    )))
}

/// A runtime that may be dropped anywhere, even inside another runtime
/// (the notifier thread drops the analysis from its own): it shuts down in
/// the background instead of blocking, which tokio forbids there.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// How long to wait for queued notifications: `base`, or longer when each
/// may first wait for its analysis.
fn flush_deadline(base: Duration, enrichment: &Option<Enrichment>) -> Duration {
    enrichment
        .as_ref()
        .map_or(base, |e| base.max(e.timeout + Duration::from_secs(30)))
}

/// What an alerter did, for the role's summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertOutcome {
    /// Every transition found, in order.
    pub alerts: Vec<AlertRecord>,
    /// Notifications delivered / given up / dropped (queue full).
    pub sent: u64,
    /// Notifications given up after retries.
    pub failed: u64,
    /// Groups dropped because the queue was full.
    pub dropped: u64,
}

impl AlertOutcome {
    fn with_stats(alerts: Vec<AlertRecord>, s: &DispatchStats) -> AlertOutcome {
        AlertOutcome {
            alerts,
            sent: s.sent.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
        }
    }

    /// `(firing, resolved)` transitions.
    pub fn counts(&self) -> (usize, usize) {
        let firing = self.alerts.iter().filter(|a| a.state == "firing").count();
        (firing, self.alerts.len() - firing)
    }
}

/// In-process alerting of one run.
pub struct InProcess {
    dispatcher: Dispatcher,
    found: netspectra_alert::sink::Transitions,
    flush: Duration,
}

impl InProcess {
    /// When `alerter.enabled`, puts the alerter in front of `sink` (the
    /// run's `store`, if any, gives alert analyses their context);
    /// otherwise returns `sink` as it is.
    pub fn wrap(
        config: &Config,
        tasks: &[TaskSpec],
        store: Option<&str>,
        sink: Box<dyn WindowSink>,
    ) -> Result<(Box<dyn WindowSink>, Option<InProcess>), NodeError> {
        if !config.alerter.enabled {
            return Ok((sink, None));
        }
        let rules = checked(config, tasks)?;
        let store = store.map(StoreUrl::parse).transpose()?;
        let enrichment = enrichment(config, store.as_ref())?;
        let flush = flush_deadline(FLUSH_DEADLINE, &enrichment);
        let dispatcher = Dispatcher::start_with(&rules, &config.smtp, Retry::default(), enrichment)
            .map_err(|e| NodeError::invalid(e.to_string()))?;
        let wrapped = AlertingSink::new(sink, rules, Some(dispatcher.outbox()));
        let found = wrapped.transitions();
        Ok((
            Box::new(wrapped),
            Some(InProcess {
                dispatcher,
                found,
                flush,
            }),
        ))
    }

    /// After the engine finished (its sink dropped, so the last group is
    /// queued): sends what is queued, at most [`FLUSH_DEADLINE`].
    pub fn finish(self) -> AlertOutcome {
        let alerts = std::mem::take(&mut *self.found.lock().unwrap_or_else(|p| p.into_inner()));
        if !self.dispatcher.flush(self.flush) {
            tracing::warn!(
                message = "alert notifications still queued at exit",
                waited_s = self.flush.as_secs()
            );
        }
        let outcome = AlertOutcome::with_stats(alerts, self.dispatcher.stats());
        self.dispatcher.finish(Duration::ZERO);
        outcome
    }
}

/// Settings of the standalone alerter.
pub struct AlerterConfig {
    /// Rules, notifiers, `smtp`, `aggregator.grace`.
    pub config: Config,
    /// The store whose windows it evaluates and where it keeps its state.
    pub store: StoreUrl,
    /// NATS, to elect one leader among replicas (None: act alone).
    pub nats: Option<BusConfig>,
    /// This replica's id (lease holder).
    pub id: String,
    /// Leadership lease TTL: how fast a replica takes over from a dead one.
    pub lease_ttl: Duration,
    /// How notifiers retry.
    pub retry: Retry,
    /// Serve `/metrics`, `/healthz` and `/readyz` here (`--metrics`).
    pub metrics: Option<String>,
}

/// The standalone alerter role.
pub struct Alerter;

/// What a standalone alerter did.
#[derive(Debug, Default)]
pub struct AlerterSummary {
    /// Transitions and notifications.
    pub outcome: AlertOutcome,
    /// Evaluation passes made as leader.
    pub passes: u64,
}

impl Alerter {
    /// Evaluates every `check_interval` until `shutdown`; see the module
    /// documentation.
    pub fn run(cfg: AlerterConfig, shutdown: &Shutdown) -> Result<AlerterSummary, NodeError> {
        let rules = rules(&cfg.config)?;
        if rules.rules.is_empty() {
            return Err(NodeError::invalid(
                "no alert rules: add alerter.rules to the config",
            ));
        }
        let telemetry = crate::telemetry::from_arg(cfg.metrics.as_deref())?;
        telemetry.set_ready(false, "starting");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the runtime")?;
        let reader = Reader::open(&cfg.store)?.with_cache(0);
        let mut store = netspectra_store::open(&cfg.store, &format!("alerter-{}", cfg.id))?;
        let enrichment = enrichment(&cfg.config, Some(&cfg.store))?;
        let final_flush = flush_deadline(Duration::from_secs(10), &enrichment);
        let dispatcher = Dispatcher::start_with(&rules, &cfg.config.smtp, cfg.retry, enrichment)
            .map_err(|e| NodeError::invalid(e.to_string()))?;
        let outbox = dispatcher.outbox();
        let leader = match &cfg.nats {
            Some(bus) => Some(rt.block_on(async {
                let client = netspectra_bus::connect(bus, 64, Default::default()).await?;
                let bucket =
                    netspectra_bus::cluster::open_alerter_bucket(&client, bus, cfg.lease_ttl)
                        .await?;
                Ok::<_, NodeError>((client, Leadership::spawn(bucket, "alerter", &cfg.id)))
            })?),
            None => None,
        };
        let grace = cfg.config.aggregator.grace.0;
        let interval = Duration::from_nanos(rules.check_interval_ns);
        let mut summary = AlerterSummary::default();
        let mut book: Option<Book> = None;
        let mut last_pass: Option<Instant> = None;
        tracing::info!(message = "alerter started", id = %cfg.id, rules = rules.rules.len(), store = %crate::api::store_text(&cfg.store), leader_election = leader.is_some());
        while !shutdown.is_triggered() {
            let leading = leader.as_ref().is_none_or(|(_, l)| l.token().is_some());
            if !leading {
                // A follower forgets: when it leads, it starts from the store.
                book = None;
                telemetry.set_ready(true, "");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            if last_pass.is_some_and(|t| t.elapsed() < interval) {
                std::thread::sleep(Duration::from_millis(50).min(interval));
                continue;
            }
            last_pass = Some(Instant::now());
            // The lease this pass acts under: it writes only while it still
            // holds the same one (a fencing token), never after a successor
            // took over.
            let token = leader.as_ref().and_then(|(_, l)| l.token());
            let still_leading = || leader.as_ref().is_none_or(|(_, l)| l.token() == token);
            let pass = rt.block_on(pass(
                &reader,
                store.as_mut(),
                &rules,
                &mut book,
                grace,
                &still_leading,
            ));
            match pass {
                Ok(groups) => {
                    telemetry.set_ready(true, "");
                    metrics::counter!("netspectra_alert_evaluations_total").increment(1);
                    summary.passes += 1;
                    for (_, group) in groups {
                        summary
                            .outcome
                            .alerts
                            .extend(group.iter().filter(|n| !n.repeat).map(|n| n.alert.clone()));
                        outbox.send(group);
                    }
                }
                Err(error) => {
                    // Nothing was recorded or sent: the next pass starts
                    // again from the state in the store.
                    book = None;
                    telemetry.set_ready(false, &format!("evaluation failed: {error}"));
                    tracing::warn!(message = "alert evaluation failed; retrying", %error);
                }
            }
        }
        if let Some((_, l)) = leader {
            l.abandon();
        }
        // The dispatcher's thread ends once every sender is gone.
        drop(outbox);
        dispatcher.flush(final_flush);
        let alerts = std::mem::take(&mut summary.outcome.alerts);
        summary.outcome = AlertOutcome::with_stats(alerts, dispatcher.stats());
        dispatcher.finish(Duration::ZERO);
        Ok(summary)
    }
}

/// One evaluation pass: load the state if needed, evaluate the closed
/// windows, store the transitions with the new state, then return the
/// notices to send (stored first: a leader dying after the store write
/// loses at most the sending, never repeats a transition).
async fn pass(
    reader: &Reader,
    store: &mut dyn Store,
    rules: &Rules,
    book: &mut Option<Book>,
    grace_ns: u64,
    still_leading: &dyn Fn() -> bool,
) -> Result<Vec<(u64, Vec<Notice>)>, NodeError> {
    let fresh = if book.is_none() {
        let saved = store.alert_state(STATE_KEY)?;
        let mut loaded = match saved.as_deref().map(serde_json::from_str::<Book>) {
            Some(Ok(b)) => b,
            Some(Err(error)) => {
                tracing::warn!(message = "stored alert state unreadable; starting afresh", %error);
                Book::default()
            }
            None => Book::default(),
        };
        loaded.keep_only(&rules.rules);
        let fresh = saved.is_none();
        *book = Some(loaded);
        fresh
    } else {
        false
    };
    let b = book.as_mut().expect("loaded above");
    let since = rules
        .rules
        .iter()
        .map(|r| b.cursors.get(&r.name).copied().unwrap_or(0))
        .min()
        .unwrap_or(0);
    let Some(closed) = stored::closed_through(reader, since, grace_ns).await? else {
        return Ok(Vec::new());
    };
    let span = Span {
        from_ns: 0,
        through_ns: closed,
        latest_only: fresh,
    };
    let before = b.clone();
    let groups = match stored::evaluate(reader, rules, b, span).await {
        Ok(g) => g,
        Err(e) => {
            *b = before;
            return Err(e.into());
        }
    };
    if groups.is_empty() && *b == before && !fresh {
        return Ok(groups);
    }
    let records: Vec<AlertRecord> = groups
        .iter()
        .flat_map(|(_, g)| g.iter().filter(|n| !n.repeat).map(|n| n.alert.clone()))
        .collect();
    let doc = serde_json::to_string(b).context("serializing the alert state")?;
    if !still_leading() {
        *b = before;
        return Err(NodeError::invalid(
            "leadership lost during the evaluation: nothing recorded or sent",
        ));
    }
    if let Err(e) = store.record_alerts(&records, Some((STATE_KEY, &doc))) {
        *b = before;
        return Err(e.into());
    }
    for r in &records {
        tracing::info!(message = "alert", alert = %r.summary());
    }
    Ok(groups)
}

/// The transitions the rules of `config` would have produced over the
/// windows of `store` starting at or after `from_ns` and ending by `to_ns`;
/// sends nothing.
pub fn backtest(
    config: &Config,
    store: &StoreUrl,
    from_ns: u64,
    to_ns: u64,
) -> Result<Vec<AlertRecord>, NodeError> {
    let rules = rules(config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let reader = Reader::open(store)?.with_cache(0);
    let mut book = Book::default();
    let groups = rt.block_on(async {
        // History ends where the newest engine's stored windows end: empty
        // windows are filled in only up to there, never up to an open `to`.
        let newest = reader.watermarks(from_ns).await?.into_iter().max();
        let through_ns = to_ns.min(newest.unwrap_or(0));
        let span = Span {
            from_ns,
            through_ns,
            latest_only: false,
        };
        stored::evaluate(&reader, &rules, &mut book, span).await
    })?;
    Ok(groups
        .into_iter()
        .flat_map(|(_, g)| g.into_iter().filter(|n| !n.repeat).map(|n| n.alert))
        .collect())
}
