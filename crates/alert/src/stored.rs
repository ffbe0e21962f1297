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
        let (stored, step) = match rule.source {
            Source::Exact => (
                exact_windows(reader, rule, from, span).await?,
                rules.window_ns,
            ),
            _ => (
                sketch_windows(reader, rule, from, span).await?,
                rules.period_ns,
            ),
        };
        let mut windows = with_gaps(stored, cursor, span.through_ns, step, rules.period_ns);
        if span.latest_only {
            windows = windows.split_off(windows.len().saturating_sub(1));
        }
        for (start, end, partial) in windows {
            let obs = observe(reader, rule, start, end, partial).await?;
            observed.push((end, i, obs));
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

/// `stored` windows with the windows missing between them (and up to
/// `through`) filled in as empty: a window without rows had no traffic
/// for the task, and must still resolve what no longer holds. Windows are
/// `step` long, aligned, and cut at period ends (`period`); filling starts
/// at the cursor, or at the first stored window when there is none.
fn with_gaps(
    stored: Vec<(u64, u64, bool)>,
    cursor: u64,
    through: u64,
    step: u64,
    period: u64,
) -> Vec<(u64, u64, bool)> {
    let Some(mut t) = (if cursor > 0 {
        Some(cursor)
    } else {
        stored.first().map(|w| w.0)
    }) else {
        return stored;
    };
    let mut out = Vec::with_capacity(stored.len());
    let mut next = stored.into_iter().peekable();
    while out.len() < MAX_WINDOWS_PER_PASS {
        match next.peek() {
            Some(&(start, end, partial)) if start <= t => {
                next.next();
                if start == t || end > t {
                    out.push((start, end, partial));
                    t = t.max(end);
                }
            }
            _ => {
                let end = (t - t % step + step).min(t - t % period + period);
                if end > through {
                    break;
                }
                out.push((t, end, false));
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

/// `(start, end, partial)` of a rule's closed exact windows from `from`.
async fn exact_windows(
    reader: &Reader,
    rule: &Rule,
    from: u64,
    span: Span,
) -> Result<Vec<(u64, u64, bool)>, StoreError> {
    let filter = Filter::default();
    let points = reader
        .exact_series(&scope(rule, after(from), &filter), MAX_WINDOWS_PER_PASS)
        .await?;
    Ok(points
        .into_iter()
        .filter(|p| p.window_end <= span.through_ns)
        .map(|p| (p.window_start, p.window_end, false))
        .collect())
}

/// `(start, end, partial)` of a rule's closed sketch periods from `from`.
async fn sketch_windows(
    reader: &Reader,
    rule: &Rule,
    from: u64,
    span: Span,
) -> Result<Vec<(u64, u64, bool)>, StoreError> {
    let filter = Filter::default();
    let periods = reader
        .sketch_periods(&scope(rule, after(from), &filter), MAX_WINDOWS_PER_PASS)
        .await?;
    Ok(periods
        .into_iter()
        .filter(|&(_, end, _)| end <= span.through_ns)
        .collect())
}

/// The instances of `rule` holding in the window `[start, end)`.
async fn observe(
    reader: &Reader,
    rule: &Rule,
    start: u64,
    end: u64,
    partial: bool,
) -> Result<Observation, StoreError> {
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
            let point = reader.exact_series(&s, 1).await?;
            if let Some(p) = point.first() {
                let v = exact_value(rule.metric, p.packets, p.bytes, p.keys, len);
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
        let stored = vec![(20, 30, false), (50, 60, true)];
        assert_eq!(
            with_gaps(stored.clone(), 0, 80, 10, 40),
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
            with_gaps(stored, 40, 60, 10, 40),
            vec![(40, 50, false), (50, 60, true)]
        );
        assert_eq!(with_gaps(vec![], 0, 80, 10, 40), vec![]);
        // Windows cut at a period end.
        assert_eq!(with_gaps(vec![], 30, 50, 20, 40), vec![(30, 40, false)]);
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
