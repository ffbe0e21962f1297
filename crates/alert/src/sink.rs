//! In-process alerting (`analyze`, `run`): a [`WindowSink`] in front of the
//! store's sink that evaluates every rule on each window after it is
//! stored, records the transitions through the same sink, and queues the
//! notifications. Evaluation looks only at the rows of the rules' tasks;
//! sending happens on the dispatcher's thread.

use crate::notify::Outbox;
use crate::observe;
use crate::rule::{Rules, Source};
use crate::state::{Book, Notice};
use netspectra_model::alert::AlertRecord;
use netspectra_model::task::TaskSpec;
use netspectra_model::window::{SinkError, SketchPeriod, WindowResult, WindowSink};
use std::sync::{Arc, Mutex};

/// Every transition an in-process alerter found, in order (for reports and
/// tests; the store keeps them too).
pub type Transitions = Arc<Mutex<Vec<AlertRecord>>>;

/// The sink wrapper.
pub struct AlertingSink {
    inner: Box<dyn WindowSink>,
    rules: Rules,
    book: Book,
    outbox: Option<Outbox>,
    /// Notices of the evaluation time being gathered, sent when time moves on.
    group: (u64, Vec<Notice>),
    found: Transitions,
}

impl AlertingSink {
    /// Evaluates `rules` over what passes into `inner`, queuing notices to
    /// `outbox` (none: record only).
    pub fn new(inner: Box<dyn WindowSink>, rules: Rules, outbox: Option<Outbox>) -> AlertingSink {
        AlertingSink {
            inner,
            rules,
            book: Book::default(),
            outbox,
            group: (0, Vec::new()),
            found: Transitions::default(),
        }
    }

    /// A handle on the transitions found so far.
    pub fn transitions(&self) -> Transitions {
        self.found.clone()
    }

    fn take(&mut self, at: u64, notices: Vec<Notice>) -> Result<(), SinkError> {
        if notices.is_empty() {
            return Ok(());
        }
        let records: Vec<AlertRecord> = notices
            .iter()
            .filter(|n| !n.repeat)
            .map(|n| n.alert.clone())
            .collect();
        if !records.is_empty() {
            self.inner.alerts(&records)?;
            for r in &records {
                tracing::info!(message = "alert", alert = %r.summary());
            }
            self.found
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(records);
        }
        if at != self.group.0 {
            self.flush();
            self.group.0 = at;
        }
        self.group.1.extend(notices);
        Ok(())
    }

    fn flush(&mut self) {
        let group = std::mem::take(&mut self.group.1);
        if let Some(outbox) = &self.outbox {
            outbox.send(group);
        }
    }

    fn exact(&mut self, tasks: &[TaskSpec], window: &WindowResult<'_>) -> Result<(), SinkError> {
        let mut notices = Vec::new();
        for rule in self
            .rules
            .rules
            .iter()
            .filter(|r| r.source == Source::Exact)
        {
            if let Some(i) = tasks.iter().position(|t| t.name == rule.task) {
                let obs = observe::exact_window(rule, i, window);
                notices.extend(self.book.observe(rule, &obs));
            }
        }
        self.take(window.end_ns, notices)
    }
}

impl WindowSink for AlertingSink {
    fn window(&mut self, tasks: &[TaskSpec], window: &WindowResult<'_>) -> Result<(), SinkError> {
        self.inner.window(tasks, window)?;
        self.exact(tasks, window)
    }

    fn window_with_progress(
        &mut self,
        tasks: &[TaskSpec],
        window: &WindowResult<'_>,
        consumer: &str,
        progress: &str,
    ) -> Result<(), SinkError> {
        self.inner
            .window_with_progress(tasks, window, consumer, progress)?;
        self.exact(tasks, window)
    }

    fn sketch_period(&mut self, task: &TaskSpec, period: &SketchPeriod) -> Result<(), SinkError> {
        self.inner.sketch_period(task, period)?;
        let mut notices = Vec::new();
        for rule in self
            .rules
            .rules
            .iter()
            .filter(|r| r.source != Source::Exact && r.task == task.name)
        {
            let obs = observe::sketch_period(rule, &task.key, period);
            notices.extend(self.book.observe(rule, &obs));
        }
        self.take(period.end_ns, notices)
    }

    fn when_durable(&mut self, done: Box<dyn FnOnce() + Send>) -> Result<(), SinkError> {
        self.inner.when_durable(done)
    }

    fn alerts(&mut self, alerts: &[AlertRecord]) -> Result<(), SinkError> {
        self.inner.alerts(alerts)
    }
}

impl Drop for AlertingSink {
    /// The last evaluation's group goes out when the run ends.
    fn drop(&mut self) {
        self.flush();
    }
}
