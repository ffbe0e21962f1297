//! Sketch tasks: the worker-side estimators, their merge at a period's end,
//! and the accuracy check against an exact shadow (`--verify`).
//!
//! Routing (see `input.rs`): Count-Min packets are sharded by the task's own
//! key and the workers' sketches summed at the period's end (the sketch is
//! linear, so the sum equals one sketch over the whole stream). Sketches that
//! cannot be merged — heavy-hitter buckets and SuperSpread — run on one
//! worker each, so distinct counts are never split and results do not depend
//! on the worker count.

use crate::table::{hash_key, FlowTable};
use crate::worker::Slot;
use netspectra_model::config::SketchAlgorithm;
use netspectra_model::task::{SketchParams, TaskSpec};
use netspectra_model::window::{Estimate, FlowCounters, SketchPeriod};
use netspectra_model::{FlowKey, Projection};
use netspectra_sketch::{
    CountMin, CountMinParams, HeavyBucket, HeavyBucketParams, SuperSpread, SuperSpreadParams,
};
use std::collections::{HashMap, HashSet};

/// The Count-Min lane counting packets.
const PACKETS: usize = 0;
/// The Count-Min lane counting bytes.
const BYTES: usize = 1;

/// The estimator state of one sketch task on one worker.
pub(crate) enum SketchState {
    /// Lane [`PACKETS`] counts packets, lane [`BYTES`] bytes.
    CountMin(Box<CountMin<FlowKey, 2>>),
    Hh(Box<HeavyBucket<FlowKey>>),
    Spread(Box<SuperSpread<FlowKey>>),
}

impl SketchState {
    fn new(algorithm: SketchAlgorithm, p: &SketchParams) -> SketchState {
        match algorithm {
            SketchAlgorithm::CountMin => {
                SketchState::CountMin(Box::new(CountMin::new(CountMinParams {
                    width: p.width,
                    depth: p.depth,
                    conservative: p.conservative,
                    top_k: p.top_k,
                    seed: p.seed,
                })))
            }
            SketchAlgorithm::Hh => SketchState::Hh(Box::new(HeavyBucket::new(HeavyBucketParams {
                width: p.width,
                depth: p.depth,
                seed: p.seed,
            }))),
            SketchAlgorithm::SuperSpread => {
                SketchState::Spread(Box::new(SuperSpread::new(SuperSpreadParams {
                    width: p.width,
                    depth: p.depth,
                    m: p.m,
                    size: p.size,
                    base: 0.5,
                    b: p.b,
                    threshold: p.count_threshold,
                    seed: p.seed,
                })))
            }
        }
    }

    fn memory_bytes(&self) -> usize {
        match self {
            SketchState::CountMin(cm) => cm.memory_bytes(),
            SketchState::Hh(h) => h.memory_bytes(),
            SketchState::Spread(s) => s.memory_bytes(),
        }
    }
}

/// What the exact shadow of a sketch task keeps (verify mode only).
pub(crate) enum Shadow {
    Volume(FlowTable),
    Distinct(HashSet<(FlowKey, u64)>),
}

/// A sketch task on one worker.
pub(crate) struct SketchTask {
    algorithm: SketchAlgorithm,
    params: SketchParams,
    key: Projection,
    element: Projection,
    /// `None` once the last period was handed over ([`Self::take`]).
    state: Option<SketchState>,
    shadow: Option<Shadow>,
    packets: u64,
    bytes: u64,
    /// The batch being counted, hashed (reused: no allocation).
    pending: Vec<Pending>,
}

/// How many packets ahead of the one being counted the sketches prefetch.
const PREFETCH_AHEAD: usize = 8;

/// A record reduced to what a sketch needs.
#[derive(Clone, Copy)]
struct Pending {
    key: FlowKey,
    hash: u64,
    elem: u64,
    ts_ns: u64,
    len: u32,
}

/// One worker's sketch task at the end of a period.
pub(crate) struct SketchPart {
    state: SketchState,
    shadow: Option<Shadow>,
    packets: u64,
    bytes: u64,
}

impl SketchTask {
    pub(crate) fn new(spec: &TaskSpec, algorithm: SketchAlgorithm, verify: bool) -> SketchTask {
        let params = spec.sketch.clone().expect("sketch task has parameters");
        SketchTask {
            algorithm,
            state: Some(SketchState::new(algorithm, &params)),
            shadow: verify.then(|| fresh_shadow(algorithm)),
            params,
            key: Projection::new(&spec.key),
            element: Projection::new(&spec.element),
            packets: 0,
            bytes: 0,
            pending: Vec::new(),
        }
    }

    /// Counts the records of a batch whose mask has bit `task` set, hashing
    /// them first so each sketch can prefetch a few packets ahead.
    pub(crate) fn update_batch(&mut self, batch: &[Slot], task: usize) {
        let state = self
            .state
            .as_mut()
            .expect("no packet after the last period");
        self.pending.clear();
        for s in batch.iter().filter(|s| s.mask >> task & 1 == 1) {
            let key = self.key.apply(&s.rec);
            let elem = if self.element.is_empty() {
                0
            } else {
                hash_key(&self.element.apply(&s.rec))
            };
            self.pending.push(Pending {
                key,
                hash: hash_key(&key),
                elem,
                ts_ns: s.rec.ts_ns,
                len: s.rec.wire_len,
            });
        }
        for i in 0..self.pending.len() {
            if let Some(ahead) = self.pending.get(i + PREFETCH_AHEAD) {
                match state {
                    SketchState::CountMin(cm) => cm.prefetch(ahead.hash),
                    SketchState::Hh(_) => {}
                    SketchState::Spread(ss) => ss.prefetch(ahead.hash, ahead.elem),
                }
            }
            let p = self.pending[i];
            let len = u64::from(p.len);
            self.packets += 1;
            self.bytes += len;
            match state {
                SketchState::CountMin(cm) => cm.insert_lanes(p.key, p.hash, [1, len]),
                SketchState::Hh(h) => h.insert(p.key, p.hash, len),
                SketchState::Spread(ss) => ss.insert(p.key, p.hash, p.elem),
            }
            match &mut self.shadow {
                None => {}
                Some(Shadow::Volume(t)) => {
                    t.add(&p.key, p.hash, &FlowCounters::one(p.ts_ns, p.len))
                }
                Some(Shadow::Distinct(set)) => {
                    set.insert((p.key, p.elem));
                }
            }
        }
    }

    /// Hands the period's state over and, when `next`, starts the next
    /// period afresh. After the last packet (`next` false) a fresh sketch
    /// would only cost its allocation and zeroing, tens of megabytes in the
    /// run's serial tail.
    pub(crate) fn take(&mut self, next: bool) -> SketchPart {
        let fresh = next.then(|| SketchState::new(self.algorithm, &self.params));
        SketchPart {
            state: std::mem::replace(&mut self.state, fresh).expect("a period is open"),
            shadow: self
                .shadow
                .as_mut()
                .map(|s| std::mem::replace(s, fresh_shadow(self.algorithm))),
            packets: std::mem::take(&mut self.packets),
            bytes: std::mem::take(&mut self.bytes),
        }
    }
}

fn fresh_shadow(algorithm: SketchAlgorithm) -> Shadow {
    match algorithm {
        SketchAlgorithm::SuperSpread => Shadow::Distinct(HashSet::new()),
        _ => Shadow::Volume(FlowTable::new()),
    }
}

/// Exact values of a period, from the shadow (verify mode only): kept
/// beside the [`SketchPeriod`] the sink sees, for the run's accuracy report.
pub(crate) struct Truth {
    packets: HashMap<FlowKey, u64>,
    bytes: HashMap<FlowKey, u64>,
    distinct: HashMap<FlowKey, u64>,
}

fn ranked(mut v: Vec<Estimate>, limit: usize) -> Vec<Estimate> {
    v.sort_unstable_by(|a, b| b.estimate.cmp(&a.estimate).then_with(|| a.key.cmp(&b.key)));
    v.truncate(limit);
    v
}

/// Merges the workers' parts of one period; with them, in verify mode, the
/// exact values of the period.
pub(crate) fn merge_period(
    spec: &TaskSpec,
    start_ns: u64,
    end_ns: u64,
    parts: Vec<SketchPart>,
) -> (SketchPeriod, Option<Truth>) {
    let p = spec.sketch.as_ref().expect("sketch task has parameters");
    let memory_bytes = parts.iter().map(|x| x.state.memory_bytes()).sum();
    let packets = parts.iter().map(|x| x.packets).sum();
    let bytes = parts.iter().map(|x| x.bytes).sum();
    let mut heavy_packets = Vec::new();
    let mut heavy_bytes = Vec::new();
    let mut spreaders = Vec::new();
    let mut shadows = Vec::new();
    let mut merged_cm: Option<Box<CountMin<FlowKey, 2>>> = None;
    for part in parts {
        shadows.extend(part.shadow);
        match part.state {
            SketchState::CountMin(cm) => match &mut merged_cm {
                None => merged_cm = Some(cm),
                Some(merged) => merged.merge(&cm),
            },
            SketchState::Hh(h) => {
                let (by_packets, by_bytes) = h.heavy_hitters(p.count_threshold, p.size_threshold);
                let bound_p = part.packets.div_ceil(p.width as u64);
                let bound_b = part.bytes.div_ceil(p.width as u64);
                heavy_packets.extend(by_packets.into_iter().map(|(key, estimate)| Estimate {
                    key,
                    estimate,
                    error_bound: bound_p,
                }));
                heavy_bytes.extend(by_bytes.into_iter().map(|(key, estimate)| Estimate {
                    key,
                    estimate,
                    error_bound: bound_b,
                }));
            }
            SketchState::Spread(ss) => {
                spreaders.extend(ss.super_spreaders(p.count_threshold).into_iter().map(
                    |(key, estimate)| Estimate {
                        key,
                        estimate,
                        error_bound: ss.error_bound(estimate),
                    },
                ));
            }
        }
    }
    if let Some(cm) = merged_cm {
        let list = |lane: usize, threshold: u64| -> Vec<Estimate> {
            let bound = cm.lane_error_bound(lane);
            cm.lane_top(lane)
                .into_iter()
                .filter(|&(_, e)| e >= threshold)
                .map(|(key, estimate)| Estimate {
                    key,
                    estimate,
                    error_bound: bound,
                })
                .collect()
        };
        heavy_packets = list(PACKETS, p.count_threshold);
        heavy_bytes = list(BYTES, p.size_threshold);
    }
    let period = SketchPeriod {
        start_ns,
        end_ns,
        heavy_packets: ranked(heavy_packets, p.report),
        heavy_bytes: ranked(heavy_bytes, p.report),
        spreaders: ranked(spreaders, usize::MAX),
        memory_bytes,
        packets,
        bytes,
        partial: false,
    };
    (period, (!shadows.is_empty()).then(|| truth_of(shadows)))
}

fn truth_of(shadows: Vec<Shadow>) -> Truth {
    let mut t = Truth {
        packets: HashMap::new(),
        bytes: HashMap::new(),
        distinct: HashMap::new(),
    };
    for s in shadows {
        match s {
            Shadow::Volume(table) => {
                for (k, c) in table.iter() {
                    *t.packets.entry(k).or_default() += c.packets;
                    *t.bytes.entry(k).or_default() += c.bytes;
                }
            }
            Shadow::Distinct(set) => {
                for (k, _) in set {
                    *t.distinct.entry(k).or_default() += 1;
                }
            }
        }
    }
    t
}

/// A sketch task's result over the whole run. Heavy-hitter estimates and
/// bounds add up over periods; a super-spreader's figure is its largest
/// per-period estimate (distinct counts of different periods do not add).
#[derive(Clone, Debug, Default)]
pub struct SketchReport {
    /// Heavy hitters by packets.
    pub heavy_packets: Vec<Estimate>,
    /// Heavy hitters by bytes.
    pub heavy_bytes: Vec<Estimate>,
    /// Super-spreaders.
    pub spreaders: Vec<Estimate>,
    /// Largest memory allocated in any period (all workers).
    pub memory_bytes: usize,
    /// Periods merged.
    pub periods: u64,
    /// Accuracy against the exact shadow, when verified.
    pub verify: Option<VerifyReport>,
}

/// How a detected set compares with the exact one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SetAccuracy {
    /// Which list (`packets`, `bytes`, `distinct`).
    pub measure: &'static str,
    /// Keys reported.
    pub reported: usize,
    /// Keys that should have been reported.
    pub expected: usize,
    /// Reported keys that are right / reported.
    pub precision: f64,
    /// Right keys found / expected.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Mean |estimate − truth| / truth over reported keys.
    pub avg_relative_error: f64,
    /// Expected keys that were not reported, largest first: (key, true value).
    pub worst_misses: Vec<(FlowKey, u64)>,
}

/// `--verify` results of one sketch task.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VerifyReport {
    /// One entry per reported list.
    pub sets: Vec<SetAccuracy>,
}

/// Accumulates a sketch task's periods into its run report.
pub(crate) struct SketchAccumulator {
    report: usize,
    count_threshold: u64,
    heavy_packets: HashMap<FlowKey, (u64, u64)>,
    heavy_bytes: HashMap<FlowKey, (u64, u64)>,
    spreaders: HashMap<FlowKey, (u64, u64)>,
    memory_bytes: usize,
    periods: u64,
    truth: Option<Truth>,
}

impl SketchAccumulator {
    pub(crate) fn new(spec: &TaskSpec) -> SketchAccumulator {
        let p = spec.sketch.as_ref().expect("sketch task has parameters");
        SketchAccumulator {
            report: p.report,
            count_threshold: p.count_threshold,
            heavy_packets: HashMap::new(),
            heavy_bytes: HashMap::new(),
            spreaders: HashMap::new(),
            memory_bytes: 0,
            periods: 0,
            truth: None,
        }
    }

    pub(crate) fn add(&mut self, period: &SketchPeriod, truth: Option<Truth>) {
        self.periods += 1;
        self.memory_bytes = self.memory_bytes.max(period.memory_bytes);
        for (into, list) in [
            (&mut self.heavy_packets, &period.heavy_packets),
            (&mut self.heavy_bytes, &period.heavy_bytes),
        ] {
            for e in list {
                let v = into.entry(e.key).or_default();
                v.0 += e.estimate;
                v.1 += e.error_bound;
            }
        }
        for e in &period.spreaders {
            let v = self.spreaders.entry(e.key).or_default();
            if e.estimate > v.0 {
                *v = (e.estimate, e.error_bound);
            }
        }
        if let Some(t) = truth {
            let acc = self.truth.get_or_insert_with(|| Truth {
                packets: HashMap::new(),
                bytes: HashMap::new(),
                distinct: HashMap::new(),
            });
            for (k, v) in t.packets {
                *acc.packets.entry(k).or_default() += v;
            }
            for (k, v) in t.bytes {
                *acc.bytes.entry(k).or_default() += v;
            }
            for (k, v) in t.distinct {
                let e = acc.distinct.entry(k).or_default();
                *e = (*e).max(v);
            }
        }
    }

    pub(crate) fn finish(self) -> SketchReport {
        let list = |m: HashMap<FlowKey, (u64, u64)>, limit: usize| {
            ranked(
                m.into_iter()
                    .map(|(key, (estimate, error_bound))| Estimate {
                        key,
                        estimate,
                        error_bound,
                    })
                    .collect(),
                limit,
            )
        };
        let heavy_packets = list(self.heavy_packets, self.report);
        let heavy_bytes = list(self.heavy_bytes, self.report);
        let spreaders = list(self.spreaders, usize::MAX);
        let verify = self.truth.map(|t| {
            let mut sets = Vec::new();
            if !t.packets.is_empty() || !heavy_packets.is_empty() {
                sets.push(accuracy(
                    "packets",
                    &heavy_packets,
                    &t.packets,
                    Expect::Top(heavy_packets.len().max(1)),
                ));
                sets.push(accuracy(
                    "bytes",
                    &heavy_bytes,
                    &t.bytes,
                    Expect::Top(heavy_bytes.len().max(1)),
                ));
            }
            if !t.distinct.is_empty() || !spreaders.is_empty() {
                sets.push(accuracy(
                    "distinct",
                    &spreaders,
                    &t.distinct,
                    Expect::AtLeast(self.count_threshold),
                ));
            }
            VerifyReport { sets }
        });
        SketchReport {
            heavy_packets,
            heavy_bytes,
            spreaders,
            memory_bytes: self.memory_bytes,
            periods: self.periods,
            verify,
        }
    }
}

/// Which keys should have been reported.
enum Expect {
    /// The n largest true values (heavy-hitter lists of fixed length).
    Top(usize),
    /// Every key whose true value reaches the threshold.
    AtLeast(u64),
}

fn accuracy(
    measure: &'static str,
    reported: &[Estimate],
    truth: &HashMap<FlowKey, u64>,
    expect: Expect,
) -> SetAccuracy {
    let mut exact: Vec<(FlowKey, u64)> = truth.iter().map(|(k, v)| (*k, *v)).collect();
    exact.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let expected: Vec<(FlowKey, u64)> = match expect {
        Expect::Top(n) => exact.into_iter().take(n).collect(),
        Expect::AtLeast(t) => exact.into_iter().take_while(|e| e.1 >= t).collect(),
    };
    let expected_keys: HashSet<FlowKey> = expected.iter().map(|e| e.0).collect();
    let reported_keys: HashSet<FlowKey> = reported.iter().map(|e| e.key).collect();
    let hits = reported_keys.intersection(&expected_keys).count() as f64;
    let precision = if reported.is_empty() {
        1.0
    } else {
        hits / reported.len() as f64
    };
    let recall = if expected.is_empty() {
        1.0
    } else {
        hits / expected.len() as f64
    };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    let errors: Vec<f64> = reported
        .iter()
        .filter_map(|e| {
            truth
                .get(&e.key)
                .map(|&t| (e.estimate as f64 - t as f64).abs() / t.max(1) as f64)
        })
        .collect();
    let avg_relative_error = if errors.is_empty() {
        0.0
    } else {
        errors.iter().sum::<f64>() / errors.len() as f64
    };
    SetAccuracy {
        measure,
        reported: reported.len(),
        expected: expected.len(),
        precision,
        recall,
        f1,
        avg_relative_error,
        worst_misses: expected
            .into_iter()
            .filter(|e| !reported_keys.contains(&e.0))
            .take(5)
            .collect(),
    }
}
