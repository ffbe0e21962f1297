//! Sending notifications without ever holding up the data path.
//!
//! Evaluation hands each group of notices (one evaluation's transitions) to
//! a [`Dispatcher`]: a bounded queue drained by its own thread, which sends
//! every group to the notifiers its rules name, retrying failures with
//! backoff. A notifier that stays down costs a logged error and a count in
//! `netspectra_alert_notifications_failed_total{notifier}`; the alerts are
//! recorded either way, and counting goes on.
//!
//! With an [`Enrichment`] (`alerter.ai_analysis`), the thread first asks
//! the analysis for an explanation of each group, at most its timeout; the
//! answer fills the alerts' `analysis`. A failure or a timeout is logged
//! and counted (`netspectra_alert_analysis_failed_total{reason}`), and the
//! group is sent without analysis: the analysis never costs a notification.

mod email;
mod enrich;
mod http;
pub mod markdown;
pub mod text;
mod webhook;

pub use email::Email;
pub use enrich::{Analysis, AnalysisFuture, Enrichment};
pub use webhook::Webhook;

use crate::rule::Rules;
use crate::state::Notice;
use netspectra_model::alert::AlertRecord;
use netspectra_model::config::SmtpConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why a notifier could not be set up or could not send.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Its configuration cannot work.
    #[error("{0}")]
    Setup(String),
    /// One attempt failed.
    #[error("{0}")]
    Send(String),
}

/// One configured destination.
enum Notifier {
    Webhook(Webhook),
    Email(Box<Email>),
}

impl Notifier {
    async fn send(&self, alerts: &[AlertRecord]) -> Result<(), NotifyError> {
        match self {
            Notifier::Webhook(w) => w.send(alerts).await,
            Notifier::Email(e) => e.send(alerts).await,
        }
    }
}

/// Counts of what the dispatcher did, for summaries and tests.
#[derive(Debug, Default)]
pub struct DispatchStats {
    /// Notifications delivered (one per notifier per group).
    pub sent: AtomicU64,
    /// Notifications given up after every retry failed.
    pub failed: AtomicU64,
    /// Groups dropped because the queue was full (notifiers far behind).
    pub dropped: AtomicU64,
    /// Groups the analysis explained.
    pub analysed: AtomicU64,
    /// Groups sent without analysis because it failed or timed out.
    pub analysis_failed: AtomicU64,
}

/// How a dispatcher retries: attempts and the first delay (doubling).
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Attempts per notification, the first included.
    pub attempts: u32,
    /// Delay before the second attempt; doubles after each failure.
    pub first_delay: Duration,
}

impl Default for Retry {
    /// 5 attempts over about 8 s.
    fn default() -> Retry {
        Retry {
            attempts: 5,
            first_delay: Duration::from_millis(500),
        }
    }
}

/// Groups waiting to be sent at most; beyond, new groups are dropped and
/// counted (they are recorded in the store regardless).
const QUEUE: usize = 1024;

/// Groups waiting behind the one at hand from which it is sent without
/// analysis.
const ANALYSIS_BACKLOG: usize = 8;

/// The sending side: a queue and the thread that drains it.
pub struct Dispatcher {
    /// The enrichment's flag: set in the second half of a flush, when
    /// analyses are skipped.
    hurry: Option<Arc<std::sync::atomic::AtomicBool>>,
    tx: Option<tokio::sync::mpsc::Sender<Vec<Notice>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<DispatchStats>,
    idle: Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
}

/// A cheap handle to queue groups from any thread without blocking.
#[derive(Clone)]
pub struct Outbox {
    tx: tokio::sync::mpsc::Sender<Vec<Notice>>,
    stats: Arc<DispatchStats>,
    idle: Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
}

impl Outbox {
    /// Queues one evaluation's notices (nothing happens for an empty group).
    pub fn send(&self, group: Vec<Notice>) {
        if group.is_empty() {
            return;
        }
        *self.idle.0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        if self.tx.try_send(group).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            done(&self.idle);
            tracing::error!(
                message = "alert notification queue full: group dropped (still recorded)"
            );
        }
    }
}

fn done(idle: &(std::sync::Mutex<usize>, std::sync::Condvar)) {
    let mut n = idle.0.lock().unwrap_or_else(|p| p.into_inner());
    *n = n.saturating_sub(1);
    if *n == 0 {
        idle.1.notify_all();
    }
}

impl Dispatcher {
    /// Starts a dispatcher for the notifiers of `rules` (`smtp` for email).
    pub fn start(
        rules: &Rules,
        smtp: &SmtpConfig,
        retry: Retry,
    ) -> Result<Dispatcher, NotifyError> {
        Dispatcher::start_with(rules, smtp, retry, None)
    }

    /// [`Dispatcher::start`], and with `enrichment` each group is analysed
    /// before it is sent (see the module documentation).
    pub fn start_with(
        rules: &Rules,
        smtp: &SmtpConfig,
        retry: Retry,
        enrichment: Option<Enrichment>,
    ) -> Result<Dispatcher, NotifyError> {
        let mut notifiers: Vec<(String, Notifier)> = Vec::new();
        for n in &rules.notifiers {
            let notifier = match n.kind.as_str() {
                "email" => Notifier::Email(Box::new(Email::new(smtp)?)),
                _ => Notifier::Webhook(Webhook::new(&n.url, &n.format)?),
            };
            notifiers.push((n.name.clone(), notifier));
        }
        let routes: HashMap<String, Vec<String>> = rules
            .rules
            .iter()
            .map(|r| (r.name.clone(), r.notifiers.clone()))
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let stats = Arc::new(DispatchStats::default());
        let idle = Arc::new((std::sync::Mutex::new(0usize), std::sync::Condvar::new()));
        let (s, i) = (stats.clone(), idle.clone());
        let hurry = enrichment.as_ref().map(|e| e.hurry.clone());
        let thread = std::thread::Builder::new()
            .name("alert-notify".into())
            .spawn(move || drain(rx, notifiers, routes, retry, enrichment, s, i))
            .map_err(|e| NotifyError::Setup(format!("cannot start the notifier thread: {e}")))?;
        Ok(Dispatcher {
            hurry,
            tx: Some(tx),
            thread: Some(thread),
            stats,
            idle,
        })
    }

    /// A handle to queue groups.
    pub fn outbox(&self) -> Outbox {
        Outbox {
            tx: self.tx.clone().expect("dispatcher running"),
            stats: self.stats.clone(),
            idle: self.idle.clone(),
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> &DispatchStats {
        &self.stats
    }

    /// Waits until every queued group is sent or given up, at most
    /// `deadline`; returns whether the queue emptied.
    /// Analyses go on for the first half of `deadline`; in the second, the
    /// groups still queued are sent without.
    pub fn flush(&self, deadline: Duration) -> bool {
        let half = deadline / 2;
        if self.wait_idle(half) {
            return true;
        }
        let hurry = |on| {
            if let Some(h) = &self.hurry {
                h.store(on, Ordering::Relaxed);
            }
        };
        hurry(true);
        let emptied = self.wait_idle(deadline - half);
        hurry(false);
        emptied
    }

    fn wait_idle(&self, deadline: Duration) -> bool {
        let (lock, cv) = &*self.idle;
        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, deadline, |n| *n > 0)
            .unwrap_or_else(|p| p.into_inner());
        *guard == 0
    }

    /// Sends what is queued (at most `deadline`), then stops the thread.
    pub fn finish(mut self, deadline: Duration) -> bool {
        let emptied = self.flush(deadline);
        self.tx = None;
        if emptied {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
        emptied
    }
}

fn drain(
    mut rx: tokio::sync::mpsc::Receiver<Vec<Notice>>,
    notifiers: Vec<(String, Notifier)>,
    routes: HashMap<String, Vec<String>>,
    retry: Retry,
    enrichment: Option<Enrichment>,
    stats: Arc<DispatchStats>,
    idle: Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(message = "alert notifier runtime failed to start", %error);
            return;
        }
    };
    rt.block_on(async move {
        // Notifiers whose last notification was given up: one attempt per
        // group until one gets through, so a dead receiver does not delay
        // every later group by a whole retry series.
        let mut down: std::collections::HashSet<String> = Default::default();
        while let Some(mut group) = rx.recv().await {
            let routed = |n: &Notice, name: &String| {
                routes.get(&n.alert.rule).is_some_and(|r| r.contains(name))
            };
            let addressed = group
                .iter()
                .any(|n| notifiers.iter().any(|(name, _)| routed(n, name)));
            if let (Some(e), true) = (&enrichment, addressed) {
                let alerts = group.iter().map(|n| n.alert.clone()).collect();
                // Far behind (a slow model, a replay's burst), or past
                // half of a flush's deadline: each group would wait for its
                // analysis in turn, so they go out without until the queue
                // drains — an analysis never costs a notification.
                if rx.len() >= ANALYSIS_BACKLOG || e.hurry.load(Ordering::Relaxed) {
                    e.skip(&stats, rx.len());
                } else if let Some(text) = e.explain(alerts, &stats).await {
                    for n in &mut group {
                        n.alert.analysis = Some(text.clone());
                    }
                }
            }
            for (name, notifier) in &notifiers {
                let alerts: Vec<AlertRecord> = group
                    .iter()
                    .filter(|n| routed(n, name))
                    .map(|n| n.alert.clone())
                    .collect();
                if alerts.is_empty() {
                    continue;
                }
                let mut delay = retry.first_delay;
                let attempts = if down.contains(name) {
                    1
                } else {
                    retry.attempts.max(1)
                };
                for attempt in 1..=attempts {
                    match notifier.send(&alerts).await {
                        Ok(()) => {
                            down.remove(name);
                            stats.sent.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("netspectra_alert_notifications_sent_total", "notifier" => name.clone()).increment(1);
                            break;
                        }
                        Err(error) if attempt < attempts => {
                            tracing::warn!(message = "alert notification failed; retrying", notifier = %name, attempt, %error);
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(30));
                        }
                        Err(error) => {
                            down.insert(name.clone());
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("netspectra_alert_notifications_failed_total", "notifier" => name.clone()).increment(1);
                            tracing::error!(message = "alert notification given up", notifier = %name, attempts = attempt, alerts = alerts.len(), %error);
                        }
                    }
                }
            }
            done(&idle);
        }
    });
}
