//! A stand-in for the engine, which the store does not depend on. A store
//! sees the same contract from it: windows in packet-time order, each with
//! every task's rows as deltas, and after a window that ends a period each
//! sketch task's period. Here everything is exact (estimates are true
//! values with a zero error bound), computed on the calling thread, and a
//! period is one window (the defaults: 60 s each).

use netspectra_model::config::Config;
use netspectra_model::task::{configured_tasks, TaskKind, TaskSpec};
use netspectra_model::time::window_start;
use netspectra_model::window::{
    Estimate, FlowCounters, SinkError, SketchPeriod, WindowResult, WindowSink,
};
use netspectra_model::{FlowKey, PacketRecord};
use std::collections::{HashMap, HashSet};

/// The default tasks and window length.
#[derive(Clone)]
pub struct Plan {
    pub tasks: Vec<TaskSpec>,
    pub window_ns: u64,
}

impl Plan {
    pub fn default_tasks() -> Plan {
        let cfg = Config::default();
        assert_eq!(
            cfg.window_ns(),
            cfg.aggregator.period.0,
            "a period is a window"
        );
        Plan {
            tasks: configured_tasks(&cfg),
            window_ns: cfg.window_ns(),
        }
    }
}

/// What a run produced.
pub struct Totals {
    pub windows: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// Counts records into windows and hands them to a sink, like the engine.
pub struct Drive {
    plan: Plan,
    sink: Box<dyn WindowSink>,
    /// Start of the open window.
    open: Option<u64>,
    /// Per task, the open window's counters by key.
    counts: Vec<HashMap<FlowKey, FlowCounters>>,
    /// Per task with element dimensions, the distinct elements by key.
    distinct: Vec<HashMap<FlowKey, HashSet<FlowKey>>>,
    totals: Totals,
    /// The first sink error: later windows are not written.
    error: Option<SinkError>,
}

impl Drive {
    pub fn start(plan: &Plan, sink: Box<dyn WindowSink>) -> Drive {
        let n = plan.tasks.len();
        Drive {
            plan: plan.clone(),
            sink,
            open: None,
            counts: vec![HashMap::new(); n],
            distinct: vec![HashMap::new(); n],
            totals: Totals {
                windows: 0,
                packets: 0,
                bytes: 0,
            },
            error: None,
        }
    }

    /// Counts one record; a record of a later window first flushes the open
    /// one (an earlier one is counted in the open window).
    pub fn push(&mut self, rec: &PacketRecord) {
        let start = window_start(rec.ts_ns, self.plan.window_ns);
        match self.open {
            Some(open) if start > open => {
                self.flush();
                self.open = Some(start);
            }
            Some(_) => {}
            None => self.open = Some(start),
        }
        self.totals.packets += 1;
        self.totals.bytes += u64::from(rec.wire_len);
        for (i, task) in self.plan.tasks.iter().enumerate() {
            let key = FlowKey::project(rec, &task.key);
            self.counts[i]
                .entry(key)
                .and_modify(|c| c.add(rec.ts_ns, rec.wire_len))
                .or_insert_with(|| FlowCounters::one(rec.ts_ns, rec.wire_len));
            if !task.element.is_empty() {
                self.distinct[i]
                    .entry(key)
                    .or_default()
                    .insert(FlowKey::project(rec, &task.element));
            }
        }
    }

    /// Flushes the open window and, as the engine does after a run's last
    /// window, asks the sink to make it durable; the totals, or the first
    /// sink error.
    pub fn finish(mut self) -> Result<Totals, SinkError> {
        self.flush();
        if self.error.is_none() {
            self.error = self.sink.when_durable(Box::new(|| {})).err();
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.totals),
        }
    }

    fn flush(&mut self) {
        let Some(start_ns) = self.open.take() else {
            return;
        };
        let end_ns = start_ns + self.plan.window_ns;
        self.totals.windows += 1;
        let n = self.plan.tasks.len();
        let counts = std::mem::replace(&mut self.counts, vec![HashMap::new(); n]);
        let distinct = std::mem::replace(&mut self.distinct, vec![HashMap::new(); n]);
        let rows: Vec<Vec<(FlowKey, FlowCounters)>> = self
            .plan
            .tasks
            .iter()
            .zip(&counts)
            .map(|(task, c)| match task.kind {
                TaskKind::Exact => c.iter().map(|(k, c)| (*k, *c)).collect(),
                TaskKind::Sketch(_) => Vec::new(),
            })
            .collect();
        if self.error.is_none() {
            let window = WindowResult::new(start_ns, end_ns, &rows);
            self.error = self.sink.window(&self.plan.tasks, &window).err();
        }
        for (i, task) in self.plan.tasks.iter().enumerate() {
            let Some(p) = &task.sketch else {
                continue;
            };
            let list = |value: &dyn Fn(&FlowCounters) -> u64, threshold: u64, limit: usize| {
                let mut v: Vec<Estimate> = counts[i]
                    .iter()
                    .map(|(key, c)| Estimate {
                        key: *key,
                        estimate: value(c),
                        error_bound: 0,
                    })
                    .filter(|e| e.estimate >= threshold)
                    .collect();
                v.sort_unstable_by(|a, b| b.estimate.cmp(&a.estimate).then(a.key.cmp(&b.key)));
                v.truncate(limit);
                v
            };
            let spread = !task.element.is_empty();
            let mut spreaders: Vec<Estimate> = distinct[i]
                .iter()
                .map(|(key, elements)| Estimate {
                    key: *key,
                    estimate: elements.len() as u64,
                    error_bound: 0,
                })
                .filter(|e| e.estimate >= p.count_threshold)
                .collect();
            spreaders.sort_unstable_by_key(|e| (std::cmp::Reverse(e.estimate), e.key));
            let period = SketchPeriod {
                start_ns,
                end_ns,
                heavy_packets: if spread {
                    Vec::new()
                } else {
                    list(&|c| c.packets, p.count_threshold, p.report)
                },
                heavy_bytes: if spread {
                    Vec::new()
                } else {
                    list(&|c| c.bytes, p.size_threshold, p.report)
                },
                spreaders,
                memory_bytes: 0,
                packets: counts[i].values().map(|c| c.packets).sum(),
                bytes: counts[i].values().map(|c| c.bytes).sum(),
                partial: false,
            };
            if self.error.is_none() {
                self.error = self.sink.sketch_period(task, &period).err();
            }
        }
    }
}
