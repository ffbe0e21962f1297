//! Evaluating rules over windows read back from a store: the standalone
//! alerter (`netspectra alert`), and `alert backtest`.
//!
//! A window counts as closed once every engine that stored a window near it
//! has moved past it (each engine's newest stored window end is its
//! watermark), or once the newest watermark is `grace` beyond it: an engine
//! that died, or that saw no traffic, holds nothing up for longer.
//!
//! The arithmetic is [`crate::observe`]'s, so a backtest over a store
//! finds the transitions an in-process alerter found while writing it.

use crate::observe::{exact_value, key_json};
use crate::rule::{Metric, Operator, Rule, Rules, Source};
use crate::state::{Book, Notice, Observation};
use netspectra_store::read::{Filter, Measure, Reader, RunSelect, Scope, SketchMeasure, TimeRange};
use netspectra_store::StoreError;

/// Windows per rule read in one pass at most (a pass that falls behind
/// catches up over the next ones).
pub const MAX_WINDOWS_PER_PASS: usize = 10_000;

/// Instances one rule may have in one window at most; beyond, the
/// largest are kept and a warning says so.
pub const MAX_INSTANCES: usize = 10_000;

/// Which windows a pass evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Windows starting before this are skipped (backtest `--from`).
    pub from_ns: u64,
    /// Only windows ending at or before this (closed; backtest `--to`).
    pub through_ns: u64,
    /// A first pass without saved state: evaluate only each rule's newest
    /// closed window, instead of notifying the whole history.
    pub latest_only: bool,
}

/// The end of the newest window every recently active engine has stored
/// (see the module documentation), or None when nothing is stored.
pub async fn closed_through(
    reader: &Reader,
    since_ns: u64,
    grace_ns: u64,
) -> Result<Option<u64>, StoreError> {
    let marks = reader.watermarks(since_ns).await?;
    let Some(&newest) = marks.iter().max() else {
        return Ok(None);
    };
    let floor = newest.saturating_sub(grace_ns);
    Ok(marks.into_iter().filter(|&m| m >= floor).min())
}

/// Evaluates every rule on its windows in `span` after the rule's cursor
/// in `book`; returns the notices, grouped by evaluation time (window end),
/// oldest first.
pub async fn evaluate(
    reader: &Reader,
    rules: &Rules,
    book: &mut Book,
    span: Span,
) -> Result<Vec<(u64, Vec<Notice>)>, StoreError> {
    let mut observed: Vec<(u64, usize, Observation)> = Vec::new();
    for (i, rule) in rules.rules.iter().enumerate() {
        let cursor = book.cursors.get(&rule.name).copied().unwrap_or(0);
        let from = cursor.max(span.from_ns);
        let step = match rule.source {
            Source::Exact => rules.window_ns,
            _ => rules.period_ns,
        };
        let stored = stored_windows(reader, rule, from, span.through_ns).await?;
        let mut windows = with_gaps(stored, cursor, span.through_ns, step, rules.period_ns);
        if span.latest_only {
            windows = windows.split_off(windows.len().saturating_sub(1));
        }
        for w in windows {
            let obs = observe(reader, rule, w).await?;
            observed.push((w.end, i, obs));
        }
    }
    observed.sort_by_key(|(end, i, _)| (*end, *i));
    let mut groups: Vec<(u64, Vec<Notice>)> = Vec::new();
    for (end, i, obs) in observed {
        let notices = book.observe(&rules.rules[i], &obs);
        if notices.is_empty() {
            continue;
        }
        match groups.last_mut() {
            Some((at, group)) if *at == end => group.extend(notices),
            _ => groups.push((end, notices)),
        }
    }
    Ok(groups)
}

/// A window (or sketch period) a rule is evaluated on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    start: u64,
    end: u64,
    /// Split between engines: estimates may be low.
    partial: bool,
    /// A stored exact window's task-wide packets, bytes and keys, as the
    /// listing read them (None: a sketch period, or a window filled in).
    totals: Option<(u64, u64, u64)>,
}

impl Window {
    fn empty(start: u64, end: u64) -> Window {
        Window {
            start,
            end,
            partial: false,
            totals: None,
        }
    }
}

/// `stored` windows with the windows missing between them (and up to
/// `through`) filled in as empty: a window without rows had no traffic
/// for the task, and must still resolve what no longer holds. Windows are
/// `step` long, aligned, and cut at period ends (`period`); filling starts
/// at the cursor, or at the first stored window when there is none.
fn with_gaps(
    stored: Vec<Window>,
    cursor: u64,
    through: u64,
    step: u64,
    period: u64,
) -> Vec<Window> {
    let Some(mut t) = (if cursor > 0 {
        Some(cursor)
    } else {
        stored.first().map(|w| w.start)
    }) else {
        return stored;
    };
    let mut out = Vec::with_capacity(stored.len());
    let mut next = stored.into_iter().peekable();
    while out.len() < MAX_WINDOWS_PER_PASS {
        match next.peek() {
            Some(&w) if w.start <= t => {
                next.next();
                if w.start == t || w.end > t {
                    out.push(w);
                    t = t.max(w.end);
                }
            }
            _ => {
                let end = (t - t % step + step).min(t - t % period + period);
                if end > through {
                    break;
                }
                out.push(Window::empty(t, end));
                t = end;
            }
        }
    }
    out
}

fn scope<'a>(rule: &'a Rule, range: TimeRange, filter: &'a Filter) -> Scope<'a> {
    Scope {
        task: &rule.task,
        key: &rule.task_key,
        range,
        filter,
        // Every run: live runs cover different times and add up; an
        // analysis that replaced an earlier one is never read.
        run: RunSelect::All,
    }
}

fn after(from: u64) -> TimeRange {
    TimeRange {
        from_ns: from,
        to_ns: i64::MAX as u64,
    }
}

/// A rule's stored windows (exact) or periods (sketch) from `from`, closed
/// by `through`.
async fn stored_windows(
    reader: &Reader,
    rule: &Rule,
    from: u64,
    through: u64,
) -> Result<Vec<Window>, StoreError> {
    let filter = Filter::default();
    let s = scope(rule, after(from), &filter);
    let found: Vec<Window> = match rule.source {
        Source::Exact => reader
            .exact_series(&s, MAX_WINDOWS_PER_PASS)
            .await?
            .into_iter()
            .map(|p| Window {
                start: p.window_start,
                end: p.window_end,
                partial: false,
                totals: Some((p.packets, p.bytes, p.keys)),
            })
            .collect(),
        _ => reader
            .sketch_periods(&s, MAX_WINDOWS_PER_PASS)
            .await?
            .into_iter()
            .map(|(start, end, partial)| Window {
                partial,
                ..Window::empty(start, end)
            })
            .collect(),
    };
    Ok(found.into_iter().filter(|w| w.end <= through).collect())
}

/// The instances of `rule` holding in window `w`.
async fn observe(reader: &Reader, rule: &Rule, w: Window) -> Result<Observation, StoreError> {
    let Window {
        start,
        end,
        partial,
        totals,
    } = w;
    let filter = Filter::default();
    let one = TimeRange {
        from_ns: start,
        to_ns: start + 1,
    };
    let s = scope(rule, one, &filter);
    let len = end - start;
    let mut holding: Vec<(String, f64)> = Vec::new();
    match rule.source {
        Source::Exact if rule.metric.per_key() => {
            let by = match rule.metric {
                Metric::Packets | Metric::PacketsPerSecond => Measure::Packets,
                _ => Measure::Bytes,
            };
            let (lo, hi) = candidates(rule, len);
            let rows = reader
                .exact_in_range(&s, by, lo, hi, MAX_INSTANCES + 1)
                .await?;
            warn_if_capped(rule, rows.len(), start);
            for r in rows.iter().take(MAX_INSTANCES) {
                let v = exact_value(rule.metric, r.packets, r.bytes, 1, len);
                if rule.operator.holds(v, rule.threshold) {
                    holding.push((key_json(&r.key, &rule.key), v));
                }
            }
        }
        Source::Exact => {
            // Task-wide: the totals the window listing already read.
            if let Some((packets, bytes, keys)) = totals {
                let v = exact_value(rule.metric, packets, bytes, keys, len);
                if rule.operator.holds(v, rule.threshold) {
                    holding.push(("{}".to_string(), v));
                }
            }
        }
        Source::HeavyHitters | Source::SuperSpreaders => {
            let measure = match (rule.source, rule.metric) {
                (Source::SuperSpreaders, _) => SketchMeasure::Distinct,
                (_, Metric::Bytes) => SketchMeasure::Bytes,
                _ => SketchMeasure::Packets,
            };
            let rows = reader.sketch_top(&s, measure, MAX_INSTANCES + 1).await?;
            warn_if_capped(rule, rows.len(), start);
            for e in rows.iter().take(MAX_INSTANCES) {
                let v = e.estimate as f64;
                if rule.operator.holds(v, rule.threshold) {
                    holding.push((key_json(&e.key, &rule.key), v));
                }
            }
        }
    }
    holding.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Observation {
        window_start: start,
        window_end: end,
        holding,
        partial,
    })
}

fn warn_if_capped(rule: &Rule, found: usize, start: u64) {
    if found > MAX_INSTANCES {
        tracing::warn!(
            message = "alert rule matches more keys than one window may hold; the largest are evaluated",
            rule = %rule.name,
            limit = MAX_INSTANCES,
            window_start = %netspectra_model::alert::rfc3339(start),
        );
    }
}

/// Bounds on a key's stored packets (or bytes) that surely include every
/// key the rule's exact condition holds for (one unit of slack each side
/// for rounding); the condition itself is checked on each candidate.
fn candidates(rule: &Rule, window_ns: u64) -> (Option<u64>, Option<u64>) {
    let secs = window_ns.max(1) as f64 / 1e9;
    let scale = match rule.metric {
        Metric::PacketsPerSecond => 1.0 / secs,
        Metric::BitsPerSecond => 8.0 / secs,
        _ => 1.0,
    };
    let raw = rule.threshold / scale;
    let clamp = |v: f64| -> u64 {
        if v <= 0.0 {
            0
        } else if v >= u64::MAX as f64 {
            u64::MAX
        } else {
            v as u64
        }
    };
    let lo = (raw.floor() - 1.0 > 0.0).then(|| clamp(raw.floor() - 1.0));
    let hi = if raw + 1.0 < 0.0 {
        Some(0)
    } else {
        Some(clamp(raw.ceil() + 1.0))
    };
    match rule.operator {
        Operator::Gt | Operator::Ge => (lo, None),
        Operator::Lt | Operator::Le => (None, hi),
        Operator::Eq => (lo, hi),
        Operator::Ne => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{Severity, Source};

    fn rule(metric: Metric, op: Operator, threshold: f64) -> Rule {
        Rule {
            name: "r".into(),
            task: "t".into(),
            key: vec![],
            task_key: vec![],
            source: Source::Exact,
            metric,
            operator: op,
            threshold,
            for_ns: 0,
            repeat_ns: 0,
            severity: Severity::Warning,
            notifiers: vec![],
        }
    }

    #[test]
    fn missing_windows_are_filled_in_as_empty() {
        // Windows as (start, end, partial), in and out.
        let gaps = |stored: &[(u64, u64, bool)], cursor, through, step, period| {
            let stored = stored
                .iter()
                .map(|&(start, end, partial)| Window {
                    partial,
                    ..Window::empty(start, end)
                })
                .collect();
            with_gaps(stored, cursor, through, step, period)
                .into_iter()
                .map(|w| (w.start, w.end, w.partial))
                .collect::<Vec<_>>()
        };
        let stored = [(20, 30, false), (50, 60, true)];
        assert_eq!(
            gaps(&stored, 0, 80, 10, 40),
            vec![
                (20, 30, false),
                (30, 40, false),
                (40, 50, false),
                (50, 60, true),
                (60, 70, false),
                (70, 80, false)
            ]
        );
        assert_eq!(
            gaps(&stored, 40, 60, 10, 40),
            vec![(40, 50, false), (50, 60, true)]
        );
        assert_eq!(gaps(&[], 0, 80, 10, 40), vec![]);
        // Windows cut at a period end.
        assert_eq!(gaps(&[], 30, 50, 20, 40), vec![(30, 40, false)]);
    }

    #[test]
    fn candidate_bounds_include_every_key_the_condition_holds_for() {
        let ten_s = 10_000_000_000;
        for (metric, op, t) in [
            (Metric::Bytes, Operator::Gt, 500.0),
            (Metric::Bytes, Operator::Ge, 500.5),
            (Metric::BitsPerSecond, Operator::Gt, 1000.0),
            (Metric::PacketsPerSecond, Operator::Le, 3.3),
            (Metric::Packets, Operator::Eq, 7.0),
            (Metric::Packets, Operator::Lt, 0.5),
        ] {
            let r = rule(metric, op, t);
            let (lo, hi) = candidates(&r, ten_s);
            for raw in 0u64..20_000 {
                let v = exact_value(metric, raw, raw, 1, ten_s);
                if op.holds(v, t) {
                    assert!(
                        lo.is_none_or(|lo| raw >= lo),
                        "{metric:?} {op:?} {t}: {raw} < {lo:?}"
                    );
                    assert!(
                        hi.is_none_or(|hi| raw <= hi),
                        "{metric:?} {op:?} {t}: {raw} > {hi:?}"
                    );
                }
            }
        }
    }
}
