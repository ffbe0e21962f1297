//! The seam to the AI analyst for notifications. The analyst lives in
//! crates that depend on the query API (which this crate must not), so the
//! dispatcher only knows this small trait; the node wires the analyst's
//! `analyse_alerts` to it.

use super::DispatchStats;
use netspectra_model::alert::AlertRecord;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// What an [`Analysis`] returns: the Markdown text, or why there is none.
pub type AnalysisFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Explains one notification's alerts (their structured records; the
/// implementation adds what context it wants). Must not block the thread
/// it is polled on: the timeout can only cut a future that yields.
pub trait Analysis: Send + Sync + 'static {
    /// Starts the analysis of `alerts`; Markdown on success.
    fn analyse(&self, alerts: Vec<AlertRecord>) -> AnalysisFuture;
}

/// Any `Fn(Vec<AlertRecord>) -> AnalysisFuture` is an analysis, so an
/// adapter can be a closure.
impl<F> Analysis for F
where
    F: Fn(Vec<AlertRecord>) -> AnalysisFuture + Send + Sync + 'static,
{
    fn analyse(&self, alerts: Vec<AlertRecord>) -> AnalysisFuture {
        self(alerts)
    }
}

/// An analysis and how long one group may wait for it
/// (`alerter.ai_analysis.timeout`).
#[derive(Clone)]
pub struct Enrichment {
    /// Who explains.
    pub analysis: Arc<dyn Analysis>,
    /// Longest wait per group; then the group goes out without analysis.
    pub timeout: Duration,
    /// Set by the dispatcher in the second half of a flush.
    pub(super) hurry: Arc<std::sync::atomic::AtomicBool>,
}

impl Enrichment {
    /// An enrichment by `analysis`, waiting at most `timeout` per group.
    pub fn new(analysis: Arc<dyn Analysis>, timeout: Duration) -> Enrichment {
        Enrichment {
            analysis,
            timeout,
            hurry: Arc::default(),
        }
    }

    /// Counts a group sent without analysis because `waiting` groups are
    /// queued behind it.
    pub(super) fn skip(&self, stats: &DispatchStats, waiting: usize) {
        stats.analysis_failed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("netspectra_alert_analysis_failed_total", "reason" => "backlog")
            .increment(1);
        tracing::warn!(
            message = "alert notifications queued behind: sending without analysis",
            waiting
        );
    }

    /// The analysis of `alerts`, or None (logged and counted) when it
    /// failed, was empty, panicked or took longer than the timeout.
    pub(super) async fn explain(
        &self,
        alerts: Vec<AlertRecord>,
        stats: &DispatchStats,
    ) -> Option<String> {
        let count = alerts.len();
        // Spawned, so that a panicking analysis costs its answer, not the
        // notifier thread; aborted when the time is up.
        let task = tokio::spawn(self.analysis.analyse(alerts));
        let abort = task.abort_handle();
        let (reason, error) = match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(Ok(text))) if !text.trim().is_empty() => {
                stats.analysed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("netspectra_alert_analysis_total").increment(1);
                return Some(text);
            }
            Ok(Ok(Ok(_))) => ("error", "the analysis is empty".to_string()),
            Ok(Ok(Err(error))) => ("error", error),
            Ok(Err(join)) => ("error", format!("the analysis failed: {join}")),
            Err(_) => {
                abort.abort();
                (
                    "timeout",
                    format!(
                        "no analysis within {:?} (alerter.ai_analysis.timeout)",
                        self.timeout
                    ),
                )
            }
        };
        stats.analysis_failed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("netspectra_alert_analysis_failed_total", "reason" => reason)
            .increment(1);
        tracing::warn!(
            message = "alert analysis failed; sending the notification without it",
            reason,
            alerts = count,
            %error
        );
        None
    }
}
