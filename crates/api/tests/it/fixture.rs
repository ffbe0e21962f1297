//! Known data: a generated capture, decoded, analyzed by two engines (split
//! by source, as the bus shards) into a store; and its exact truth, tallied
//! here straight from the decoded packets.

use netspectra_capture::decode::decode;
use netspectra_capture::gen::{generate, GenFormat, GenOptions};
use netspectra_capture::reader::CaptureReader;
use netspectra_engine::{Engine, EnginePlan};
use netspectra_model::config::Config;
use netspectra_model::{ip, PacketRecord};
use netspectra_store::Store;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// Exact windows of 100 ms; one sketch period covers the whole capture.
pub const WINDOW_NS: u64 = 100_000_000;
const PERIOD_NS: u64 = 3_600_000_000_000;

/// Sums for one key (or one window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    pub packets: u64,
    pub bytes: u64,
    pub first: u64,
    pub last: u64,
}

impl Sums {
    fn add(&mut self, r: &PacketRecord) {
        if self.packets == 0 || r.ts_ns < self.first {
            self.first = r.ts_ns;
        }
        self.last = self.last.max(r.ts_ns);
        self.packets += 1;
        self.bytes += u64::from(r.wire_len);
    }
}

/// The 5-tuple in the store's key order.
pub type Flow = ([u8; 16], [u8; 16], u16, u16, u8);

#[derive(Clone)]
pub struct Data {
    /// IP packets (what exact tasks count).
    pub records: Vec<PacketRecord>,
}

fn window(ts: u64) -> u64 {
    ts - ts % WINDOW_NS
}

impl Data {
    fn from_capture(packets: u64, spreaders: Vec<u32>) -> Data {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pcap");
        let opts = GenOptions {
            packets,
            seed: 7,
            format: GenFormat::Pcap,
            spreaders,
        };
        generate(&path, &opts).unwrap();
        let mut reader = CaptureReader::open(&path).unwrap();
        let mut records = Vec::new();
        while let Some(p) = reader.next_packet().unwrap() {
            let mut rec = PacketRecord {
                ts_ns: p.ts_ns,
                wire_len: p.wire_len,
                cap_len: p.data.len() as u32,
                ..Default::default()
            };
            decode(p.link_type, p.data, &mut rec);
            if rec.l3.is_ip() {
                records.push(rec);
            }
        }
        Data { records }
    }

    /// 40 000 packets over ~0.4 s: several windows, thousands of keys.
    pub fn generate() -> Data {
        Data::from_capture(40_000, vec![300])
    }

    /// A few thousand packets, for tests that only need some rows.
    pub fn small() -> Data {
        Data::from_capture(3_000, Vec::new())
    }

    /// Which of the two engines gets a record (by source, as the bus shards).
    fn engine_of(r: &PacketRecord) -> usize {
        usize::from(r.src_ip[15] % 2)
    }

    /// Runs the default tasks in two engines (`e0`, `e1`), one run each.
    /// Alert transitions over this capture's windows: big talker
    /// 10.0.0.1 fired and resolved, scanner 10.0.0.2 still firing.
    pub fn alerts(&self) -> Vec<netspectra_model::alert::AlertRecord> {
        let t0 = self.t0() - self.t0() % WINDOW_NS;
        let alert = |rule: &str, ip: &str, state: &str, w: u64, starts: u64, ends: Option<u64>| {
            netspectra_model::alert::AlertRecord {
                rule: rule.into(),
                task: "per_src_ip".into(),
                key: format!(r#"{{"SrcIP":"{ip}"}}"#),
                metric: "bytes".into(),
                value: 2e6,
                operator: ">".into(),
                threshold: 1e6,
                severity: "warning".into(),
                state: state.into(),
                window_start_ns: t0 + w * WINDOW_NS,
                starts_at_ns: t0 + starts * WINDOW_NS,
                ends_at_ns: ends.map(|e| t0 + e * WINDOW_NS),
                analysis: None,
            }
        };
        vec![
            alert("big_talker", "10.0.0.1", "firing", 0, 1, None),
            alert("big_talker", "10.0.0.1", "resolved", 1, 1, Some(3)),
            alert("scanner", "10.0.0.2", "firing", 1, 2, None),
        ]
    }

    pub fn write(&self, store: &mut dyn Store) {
        self.write_with(store, |_| {});
    }

    /// As [`Data::write`], each plan first changed by `change`.
    pub fn write_with(&self, store: &mut dyn Store, change: impl Fn(&mut EnginePlan)) {
        self.write_runs(store, change, true);
    }

    /// As [`Data::write`], but the runs stay `running` (a live run's
    /// windows); their ids, to finish later.
    pub fn write_open(&self, store: &mut dyn Store) -> Vec<i64> {
        self.write_runs(store, |_| {}, false)
    }

    fn write_runs(
        &self,
        store: &mut dyn Store,
        change: impl Fn(&mut EnginePlan),
        finish: bool,
    ) -> Vec<i64> {
        let mut runs = Vec::new();
        for engine in 0..2 {
            let mut plan = EnginePlan::from_config(&Config::default(), 2).unwrap();
            change(&mut plan);
            plan.window_ns = WINDOW_NS;
            plan.period_ns = PERIOD_NS;
            for task in &mut plan.tasks {
                if let Some(sketch) = task
                    .sketch
                    .as_mut()
                    .filter(|_| task.name.ends_with("_spread"))
                {
                    // Report the planted spreaders of a small capture.
                    sketch.count_threshold = 100;
                }
            }
            let id = format!("e{engine}");
            let run = store
                .begin_run(
                    &id,
                    "api test",
                    &json!(["gen"]),
                    &plan.tasks,
                    plan.window_ns,
                )
                .unwrap();
            let mut input = Engine::start(plan, store.sink(run, &id).unwrap()).unwrap();
            for r in self.records.iter().filter(|r| Data::engine_of(r) == engine) {
                input.push(r);
            }
            let out = input.finish().unwrap();
            runs.push(run);
            if !finish {
                continue;
            }
            // Decode counters as a run records them (every record is IP).
            let decoded = json!({"ip": out.packets, "malformed": 0});
            store
                .finish_run(
                    run,
                    "complete",
                    &json!(["gen"]),
                    out.packets,
                    out.tasks[0].bytes,
                    &decoded,
                )
                .unwrap();
        }
        runs
    }

    /// First window start; ranges in the tests are offsets from it.
    pub fn t0(&self) -> u64 {
        window(self.records.iter().map(|r| r.ts_ns).min().unwrap())
    }

    /// Records whose window starts in `[from, to)`.
    pub fn in_range(&self, from: u64, to: u64) -> impl Iterator<Item = &PacketRecord> {
        self.records
            .iter()
            .filter(move |r| (from..to).contains(&window(r.ts_ns)))
    }

    /// Per source address (16-byte form: the store's key order).
    pub fn by_source<'a>(recs: impl Iterator<Item = &'a PacketRecord>) -> BTreeMap<[u8; 16], Sums> {
        let mut m: BTreeMap<[u8; 16], Sums> = BTreeMap::new();
        for r in recs {
            m.entry(r.src_ip).or_default().add(r);
        }
        m
    }

    pub fn by_flow<'a>(recs: impl Iterator<Item = &'a PacketRecord>) -> BTreeMap<Flow, Sums> {
        let mut m: BTreeMap<Flow, Sums> = BTreeMap::new();
        for r in recs {
            let k = (r.src_ip, r.dst_ip, r.src_port, r.dst_port, r.protocol);
            m.entry(k).or_default().add(r);
        }
        m
    }

    /// Per window: sums and distinct sources.
    pub fn series<'a>(
        recs: impl Iterator<Item = &'a PacketRecord>,
    ) -> BTreeMap<u64, (Sums, BTreeSet<String>)> {
        let mut m: BTreeMap<u64, (Sums, BTreeSet<String>)> = BTreeMap::new();
        for r in recs {
            let e = m.entry(window(r.ts_ns)).or_default();
            e.0.add(r);
            e.1.insert(ip::to_string(&r.src_ip));
        }
        m
    }

    /// Distinct destinations per source.
    pub fn spread(&self) -> BTreeMap<String, usize> {
        let mut m: BTreeMap<String, BTreeSet<[u8; 16]>> = BTreeMap::new();
        for r in &self.records {
            m.entry(ip::to_string(&r.src_ip))
                .or_default()
                .insert(r.dst_ip);
        }
        m.into_iter().map(|(k, v)| (k, v.len())).collect()
    }
}
