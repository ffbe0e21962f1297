//! The alert state machine: each (rule, key) instance moves inactive →
//! pending → firing → resolved, one closed window at a time, in packet time,
//! so a replay of a capture and the live run that captured it give the same
//! alerts.
//!
//! A window is observed as the instances whose condition holds in it
//! ([`Observation`]); an instance missing from it no longer holds — except
//! in a partial window (a sketch period split by a shard move, whose
//! estimates may be low), which never resolves anything.
//!
//! The whole [`Book`] serializes to JSON, so a standalone alerter keeps it in
//! the store and a new leader goes on where the old one stopped.

use crate::rule::Rule;
use netspectra_model::alert::AlertRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one closed window says about one rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// Window (or sketch period) start, ns.
    pub window_start: u64,
    /// Its end, ns: the moment the alerter evaluates it.
    pub window_end: u64,
    /// Instances whose condition holds: key JSON (`{}` for task-wide rules)
    /// and the measured value, in key order.
    pub holding: Vec<(String, f64)>,
    /// Estimates may be low (the period was split between engines): absence
    /// proves nothing, so nothing resolves.
    pub partial: bool,
}

/// Where an instance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The condition holds, not yet for `for`.
    Pending,
    /// Notified as firing.
    Firing,
}

/// One live instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Pending or firing.
    pub phase: Phase,
    /// Start of the first window of the current run of holding windows.
    pub since_ns: u64,
    /// When it started firing (0 while pending).
    pub starts_at_ns: u64,
    /// When a firing notification last went out (for `repeat_interval`).
    pub notified_ns: u64,
    /// Latest value.
    pub value: f64,
    /// Start of the latest holding window.
    pub window_start_ns: u64,
}

/// A notification the evaluation asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    /// The alert as stored and sent.
    pub alert: AlertRecord,
    /// A reminder that the instance still fires (`repeat_interval`), not a
    /// transition: sent, but not stored again.
    pub repeat: bool,
}

/// Every rule's instances and how far each rule has been evaluated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Book {
    /// Per rule: end of the last window evaluated, ns.
    pub cursors: BTreeMap<String, u64>,
    /// Per rule, per key JSON: the pending and firing instances.
    pub instances: BTreeMap<String, BTreeMap<String, Instance>>,
}

impl Book {
    /// Evaluates one closed window of `rule`; returns the notifications it
    /// causes. A window at or before the rule's cursor was already
    /// evaluated and changes nothing, so a pass may safely overlap the last.
    pub fn observe(&mut self, rule: &Rule, obs: &Observation) -> Vec<Notice> {
        let cursor = self.cursors.entry(rule.name.clone()).or_insert(0);
        if obs.window_end <= *cursor {
            return Vec::new();
        }
        *cursor = obs.window_end;
        let live = self.instances.entry(rule.name.clone()).or_default();
        let mut out = Vec::new();
        let at = obs.window_end;
        for (key, value) in &obs.holding {
            let inst = live.entry(key.clone()).or_insert(Instance {
                phase: Phase::Pending,
                since_ns: obs.window_start,
                starts_at_ns: 0,
                notified_ns: 0,
                value: *value,
                window_start_ns: obs.window_start,
            });
            inst.value = *value;
            inst.window_start_ns = obs.window_start;
            match inst.phase {
                Phase::Pending if obs.window_start.saturating_sub(inst.since_ns) >= rule.for_ns => {
                    inst.phase = Phase::Firing;
                    inst.starts_at_ns = at;
                    inst.notified_ns = at;
                    out.push(Notice {
                        alert: record(rule, key, inst, "firing", None),
                        repeat: false,
                    });
                }
                Phase::Firing if rule.repeat_ns > 0 && at - inst.notified_ns >= rule.repeat_ns => {
                    inst.notified_ns = at;
                    out.push(Notice {
                        alert: record(rule, key, inst, "firing", None),
                        repeat: true,
                    });
                }
                _ => {}
            }
        }
        if !obs.partial {
            let holding: std::collections::HashSet<&str> =
                obs.holding.iter().map(|(k, _)| k.as_str()).collect();
            live.retain(|key, inst| {
                if holding.contains(key.as_str()) {
                    return true;
                }
                if inst.phase == Phase::Firing {
                    out.push(Notice {
                        alert: record(rule, key, inst, "resolved", Some(at)),
                        repeat: false,
                    });
                }
                false
            });
        }
        out
    }

    /// Forgets rules that are no longer configured (their instances can
    /// never resolve otherwise).
    pub fn keep_only(&mut self, rules: &[Rule]) {
        let known = |name: &String| rules.iter().any(|r| &r.name == name);
        self.cursors.retain(|name, _| known(name));
        self.instances.retain(|name, _| known(name));
    }

    /// The firing instances, as alerts (for status output).
    pub fn firing(&self, rules: &[Rule]) -> Vec<AlertRecord> {
        let mut out = Vec::new();
        for rule in rules {
            for (key, inst) in self.instances.get(&rule.name).into_iter().flatten() {
                if inst.phase == Phase::Firing {
                    out.push(record(rule, key, inst, "firing", None));
                }
            }
        }
        out
    }
}

fn record(rule: &Rule, key: &str, inst: &Instance, state: &str, ends: Option<u64>) -> AlertRecord {
    AlertRecord {
        rule: rule.name.clone(),
        task: rule.task.clone(),
        key: key.to_string(),
        metric: rule.metric.name().to_string(),
        value: inst.value,
        operator: rule.operator.symbol().to_string(),
        threshold: rule.threshold,
        severity: rule.severity.name().to_string(),
        state: state.to_string(),
        window_start_ns: inst.window_start_ns,
        starts_at_ns: inst.starts_at_ns,
        ends_at_ns: ends,
        analysis: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{Metric, Operator, Severity, Source};

    const S: u64 = 1_000_000_000;

    fn rule(for_s: u64, repeat_s: u64) -> Rule {
        Rule {
            name: "r".into(),
            task: "t".into(),
            key: vec![],
            task_key: vec![],
            source: Source::Exact,
            metric: Metric::Bytes,
            operator: Operator::Gt,
            threshold: 10.0,
            for_ns: for_s * S,
            repeat_ns: repeat_s * S,
            severity: Severity::Warning,
            notifiers: vec![],
        }
    }

    fn window(i: u64, holding: &[(&str, f64)]) -> Observation {
        Observation {
            window_start: i * 10 * S,
            window_end: (i + 1) * 10 * S,
            holding: holding.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            partial: false,
        }
    }

    /// (window index, state, key) of every notice over a sequence of windows.
    fn run(rule: &Rule, windows: &[&[(&str, f64)]]) -> Vec<(u64, String, String, bool)> {
        let mut book = Book::default();
        let mut out = Vec::new();
        for (i, h) in windows.iter().enumerate() {
            for n in book.observe(rule, &window(i as u64, h)) {
                out.push((i as u64, n.alert.state, n.alert.key, n.repeat));
            }
        }
        out
    }

    #[test]
    fn one_message_when_it_starts_one_when_it_ends() {
        let a = [("a", 20.0)];
        let got = run(&rule(0, 0), &[&[], &a, &a, &a, &[], &[]]);
        assert_eq!(
            got,
            vec![
                (1, "firing".into(), "a".into(), false),
                (4, "resolved".into(), "a".into(), false)
            ]
        );
    }

    #[test]
    fn for_waits_and_a_short_blip_never_fires() {
        let a = [("a", 20.0)];
        // for 20 s with 10 s windows: fires on the third holding window.
        let got = run(&rule(20, 0), &[&a, &a, &[], &a, &a, &a, &[]]);
        assert_eq!(
            got,
            vec![
                (5, "firing".into(), "a".into(), false),
                (6, "resolved".into(), "a".into(), false)
            ]
        );
    }

    #[test]
    fn repeat_interval_reminds_while_firing() {
        let a = [("a", 20.0)];
        let got = run(&rule(0, 25), &[&a, &a, &a, &a, &a, &a]);
        let repeats: Vec<u64> = got.iter().filter(|g| g.3).map(|g| g.0).collect();
        assert_eq!(got[0].0, 0);
        assert_eq!(repeats, vec![3]);
    }

    #[test]
    fn a_partial_window_resolves_nothing_and_replays_change_nothing() {
        let r = rule(0, 0);
        let mut book = Book::default();
        assert_eq!(book.observe(&r, &window(0, &[("a", 20.0)])).len(), 1);
        let mut partial = window(1, &[]);
        partial.partial = true;
        assert!(book.observe(&r, &partial).is_empty());
        assert!(
            book.observe(&r, &window(1, &[])).is_empty(),
            "already evaluated"
        );
        let n = book.observe(&r, &window(2, &[]));
        assert_eq!(n[0].alert.state, "resolved");
        assert_eq!(n[0].alert.ends_at_ns, Some(30 * S));
        assert_eq!(n[0].alert.starts_at_ns, 10 * S);
        let json = serde_json::to_string(&book).unwrap();
        assert_eq!(serde_json::from_str::<Book>(&json).unwrap(), book);
    }
}
