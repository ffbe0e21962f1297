//! Engine integration tests: worker-count independence, windows, plans.

use netspectra_engine::{
    Engine, EngineOutput, EnginePlan, FlowCounters, NullSink, SinkError, SketchPeriod, TaskSpec,
    WindowResult, WindowSink,
};
use netspectra_model::config::Config;
use netspectra_model::{ip, Dimension, FlowKey, PacketRecord, L3};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A small deterministic generator (splitmix64), independent of the engine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn records(n: usize, seed: u64, ts_step: u64) -> Vec<PacketRecord> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let r = rng.next();
            let v6 = r.is_multiple_of(10);
            let src = (r >> 8) % 300;
            let dst = (r >> 20) % 50;
            let addr = |x: u64, hi: u8| {
                if v6 {
                    let mut b = [0u8; 16];
                    b[0] = 0x20;
                    b[1] = 0x01;
                    b[14] = hi;
                    b[15] = x as u8;
                    b
                } else {
                    ip::from_v4([10, hi, (x >> 8) as u8, x as u8])
                }
            };
            PacketRecord {
                ts_ns: 1_000_000_000 + i as u64 * ts_step,
                src_ip: addr(src, 1),
                dst_ip: addr(dst, 2),
                src_port: 1024 + ((r >> 32) % 4) as u16,
                dst_port: [80, 443, 53][((r >> 40) % 3) as usize],
                protocol: if (r >> 44).is_multiple_of(2) { 6 } else { 17 },
                wire_len: 60 + ((r >> 48) % 1400) as u32,
                l3: if v6 { L3::Ipv6 } else { L3::Ipv4 },
                ..Default::default()
            }
        })
        .collect()
}

fn plan(workers: usize, window: &str) -> EnginePlan {
    let cfg = Config::from_yaml(
        &format!("aggregator: {{ types: [exact], period: {window}, snapshot_interval: {window} }}"),
        &|_| None,
    )
    .unwrap();
    EnginePlan::from_config(&cfg, workers).unwrap()
}

fn run(recs: &[PacketRecord], plan: EnginePlan, sink: Box<dyn WindowSink>) -> EngineOutput {
    let mut input = Engine::start(plan, sink).unwrap();
    for r in recs {
        input.push(r);
    }
    input.finish().unwrap()
}

/// A task's rows: packets, bytes, first and last seen per key.
type Rows = BTreeMap<FlowKey, (u64, u64, u64, u64)>;

/// Truth for one task, computed with a BTreeMap, no engine code.
fn truth(recs: &[PacketRecord], dims: &[Dimension]) -> Rows {
    let mut m = BTreeMap::new();
    for r in recs.iter().filter(|r| r.l3.is_ip()) {
        let e = m
            .entry(FlowKey::project(r, dims))
            .or_insert((0, 0, u64::MAX, 0));
        e.0 += 1;
        e.1 += u64::from(r.wire_len);
        e.2 = e.2.min(r.ts_ns);
        e.3 = e.3.max(r.ts_ns);
    }
    m
}

#[test]
fn results_match_truth_and_are_identical_for_any_worker_count() {
    let recs = records(50_000, 7, 1_000);
    let mut baseline = run(&recs, plan(1, "60s"), Box::new(NullSink));
    for t in &mut baseline.tasks {
        t.top(0);
        let expect = truth(&recs, &t.key);
        let got: BTreeMap<_, _> = t
            .rows
            .iter()
            .map(|(k, c)| (*k, (c.packets, c.bytes, c.first_seen, c.last_seen)))
            .collect();
        assert_eq!(got, expect, "task {}", t.name);
    }
    for (workers, inline) in [(2, false), (3, false), (8, false), (1, true), (2, true)] {
        let mut plan = plan(workers, "60s");
        plan.inline_worker = inline;
        let mut out = run(&recs, plan, Box::new(NullSink));
        for (a, b) in baseline.tasks.iter().zip(&mut out.tasks) {
            b.top(0);
            assert_eq!(a.rows, b.rows, "task {} with {workers} workers", a.name);
        }
    }
}

type Collected = Arc<Mutex<Vec<(u64, u64, String, FlowKey, FlowCounters)>>>;

struct CollectSink(Collected);
impl WindowSink for CollectSink {
    fn window(&mut self, tasks: &[TaskSpec], w: &WindowResult) -> Result<(), SinkError> {
        let mut out = self.0.lock().unwrap();
        for (i, t) in tasks.iter().enumerate() {
            for (k, c) in w.rows(i) {
                out.push((w.start_ns, w.end_ns, t.name.clone(), k, c));
            }
        }
        Ok(())
    }
}

#[test]
fn windows_follow_packet_time_and_sum_to_totals() {
    // 10 µs apart × 50k packets = 0.5 s of traffic cut into 100 ms windows.
    let recs = records(50_000, 11, 10_000);
    let rows: Collected = Arc::default();
    let out = run(&recs, plan(3, "100ms"), Box::new(CollectSink(rows.clone())));
    assert_eq!(
        out.windows, 5,
        "0.5 s of packets in 100 ms windows, last one partial"
    );
    let rows = rows.lock().unwrap();
    let mut summed: BTreeMap<(String, FlowKey), (u64, u64)> = BTreeMap::new();
    for (start, end, task, key, c) in rows.iter() {
        assert_eq!(end - start, 100_000_000);
        assert!(
            c.first_seen >= *start && c.last_seen < *end,
            "row outside its window"
        );
        let e = summed.entry((task.clone(), *key)).or_default();
        e.0 += c.packets;
        e.1 += c.bytes;
    }
    for t in &out.tasks {
        for (k, c) in &t.rows {
            assert_eq!(summed[&(t.name.clone(), *k)], (c.packets, c.bytes));
        }
    }
    let total: u64 = recs.iter().map(|r| u64::from(r.wire_len)).sum();
    assert_eq!(out.tasks[0].bytes, total);
}

/// A task whose key is a function of another's is rolled up from that
/// task's rows when a window ends instead of counting packets: its rows in
/// every window must be the ones counting gives.
#[test]
fn rolled_up_tasks_give_in_every_window_the_rows_counting_gives() {
    let cfg = Config::from_yaml(
        r#"
aggregator:
  types: [exact]
  period: 100ms
  snapshot_interval: 100ms
  exact:
    tasks:
      - {name: by_port, key: [DstPort]}
      - {name: flow, key: [SrcIP, DstIP, SrcPort, DstPort, Protocol]}
      - {name: pair, key: [SrcIP, DstIP]}
      - {name: src, key: [SrcIP]}
      - {name: src_again, key: [SrcIP]}
      - {name: src_net, key: [SrcNet/24]}
      - {name: vlan_port, key: [Vlan, DstPort]}
"#,
        &|_| None,
    )
    .unwrap();
    let plan = EnginePlan::from_config(&cfg, 3).unwrap();
    // From the counting task with the fewest dimensions; of two tasks with
    // one key the first counts; network keys always count.
    assert_eq!(
        plan.rollup_sources(),
        [Some(6), None, Some(1), Some(1), Some(1), None, None]
    );
    let mut recs = records(50_000, 13, 10_000);
    for (i, r) in recs.iter_mut().enumerate() {
        r.vlan = [10, 20, netspectra_model::NO_VLAN][i % 3];
    }
    let rows: Collected = Arc::default();
    let out = run(&recs, plan, Box::new(CollectSink(rows.clone())));
    assert_eq!(out.windows, 5);
    let mut got: BTreeMap<(u64, u64, String), Rows> = BTreeMap::new();
    for (start, end, task, key, c) in rows.lock().unwrap().iter() {
        let window = got.entry((*start, *end, task.clone())).or_default();
        let row = (c.packets, c.bytes, c.first_seen, c.last_seen);
        assert!(window.insert(*key, row).is_none(), "{task}: a key twice");
    }
    assert_eq!(got.len(), 5 * 7, "every task has rows in every window");
    for ((start, end, task), rows) in &got {
        let in_window: Vec<_> = recs
            .iter()
            .filter(|r| (*start..*end).contains(&r.ts_ns))
            .copied()
            .collect();
        let dims = &out.tasks.iter().find(|t| t.name == *task).unwrap().key;
        assert_eq!(*rows, truth(&in_window, dims), "{task} in window {start}");
    }
}

#[test]
fn an_idle_window_closes_at_its_end_plus_grace_without_a_later_packet() {
    // 100 ms windows, default 2 s grace; packets in the first 50 ms only.
    let recs = records(50, 7, 1_000_000);
    let rows: Collected = Arc::default();
    let mut input = Engine::start(plan(2, "100ms"), Box::new(CollectSink(rows.clone()))).unwrap();
    for r in &recs {
        input.push(r);
    }
    let start = recs[0].ts_ns - recs[0].ts_ns % 100_000_000;
    let end = start + 100_000_000;
    assert!(!input.tick(end), "not before the grace has passed");
    assert!(!input.tick(end + 1_999_999_999));
    assert_eq!(input.window_index(), 0);
    assert!(input.tick(end + 2_000_000_000), "closed at end + grace");
    assert_eq!(input.window_index(), 1, "the window was flushed");
    // A later packet lands in a later window; the closed one stays as stored.
    let mut late = recs[0];
    late.ts_ns = end + 3_000_000_000;
    input.push(&late);
    let out = input.finish().unwrap();
    assert_eq!(out.tasks[0].packets, 51);
    let rows = rows.lock().unwrap();
    let first: u64 = rows
        .iter()
        .filter(|r| r.0 == start && r.2 == out.tasks[0].name)
        .map(|r| r.4.packets)
        .sum();
    assert_eq!(first, 50, "the first window holds the 50 early packets");
}

#[test]
fn out_of_order_packets_are_counted_in_the_open_window() {
    let mut recs = records(1_000, 3, 1_000_000);
    recs[500].ts_ns = 1; // far in the past
    let out = run(&recs, plan(2, "100ms"), Box::new(NullSink));
    assert_eq!(out.late_packets, 1);
    assert_eq!(out.tasks[0].packets, 1_000);
}

#[test]
fn non_ip_records_are_not_counted_by_tasks() {
    let mut recs = records(100, 5, 1);
    recs[0].l3 = L3::NonIp;
    let out = run(&recs, plan(1, "60s"), Box::new(NullSink));
    assert_eq!(out.packets, 99);
    assert_eq!(out.tasks[0].packets, 99);
}

#[test]
fn plans_reject_what_cannot_run() {
    let cfg = Config::from_yaml(
        "aggregator: { types: [sketch], sketch: { tasks: [] } }",
        &|_| None,
    )
    .unwrap();
    assert!(EnginePlan::from_config(&cfg, 1).is_err());
    let cfg = Config::from_yaml(
        "aggregator: { types: [exact], exact: { tasks: [] } }",
        &|_| None,
    )
    .unwrap();
    let err = EnginePlan::from_config(&cfg, 1).unwrap_err().to_string();
    assert!(err.contains("no task"), "{err}");
}

type Periods = Arc<Mutex<Vec<(String, SketchPeriod)>>>;

/// Keeps the sketch periods handed to the sink.
struct PeriodSink(Periods);
impl WindowSink for PeriodSink {
    fn window(&mut self, _: &[TaskSpec], _: &WindowResult) -> Result<(), SinkError> {
        Ok(())
    }

    fn sketch_period(&mut self, task: &TaskSpec, period: &SketchPeriod) -> Result<(), SinkError> {
        self.0
            .lock()
            .unwrap()
            .push((task.name.clone(), period.clone()));
        Ok(())
    }
}

#[test]
fn sketch_periods_reach_the_sink_and_verify_compares_them_with_the_truth() {
    let cfg = Config::from_yaml(
        "aggregator:
  types: [sketch]
  period: 100ms
  snapshot_interval: 100ms
  sketch:
    tasks:
      - { name: hh, algorithm: countmin, key: [SrcIP], report: 10 }
      - { name: spread, algorithm: superspread, key: [SrcIP], element_key: [DstIP], threshold: 5 }
",
        &|_| None,
    )
    .unwrap();
    let mut plan = EnginePlan::from_config(&cfg, 2).unwrap();
    plan.verify = true;
    // 10 µs apart × 50k packets = 0.5 s: five 100 ms periods.
    let recs = records(50_000, 13, 10_000);
    let periods: Periods = Arc::default();
    let out = run(&recs, plan, Box::new(PeriodSink(periods.clone())));
    let periods = periods.lock().unwrap();
    assert_eq!(periods.len(), 2 * 5, "each task, each period");
    for (name, p) in periods.iter() {
        assert_eq!(p.end_ns - p.start_ns, 100_000_000, "{name}");
        if name == "hh" {
            assert_eq!(p.heavy_packets.len(), 10);
            assert!(p.spreaders.is_empty());
        } else {
            assert!(!p.spreaders.is_empty() && p.heavy_packets.is_empty());
        }
    }
    let packets: u64 = periods
        .iter()
        .filter(|(name, _)| name == "hh")
        .map(|(_, p)| p.packets)
        .sum();
    assert_eq!(packets, out.tasks[0].packets);
    // The exact shadow went beside the periods, into the run's report.
    for t in &out.tasks {
        let report = t.sketch.as_ref().expect("sketch report");
        assert_eq!(report.periods, 5);
        let verify = report.verify.as_ref().expect("verified");
        assert!(!verify.sets.is_empty(), "{}", t.name);
        // Near-uniform sources: accuracy is not the point, the truth is.
        for set in &verify.sets {
            assert!(set.expected > 0 && set.reported > 0, "{}: {set:?}", t.name);
        }
        let measures: Vec<&str> = verify.sets.iter().map(|s| s.measure).collect();
        let want: &[&str] = if t.name == "hh" {
            &["packets", "bytes"]
        } else {
            &["distinct"]
        };
        assert_eq!(measures, want);
    }
}

#[test]
fn the_window_index_numbers_windows_as_they_are_flushed() {
    let mut plan = EnginePlan::from_config(&Config::default(), 1).unwrap();
    plan.window_ns = 10;
    plan.period_ns = 30;
    let mut input = netspectra_engine::Engine::start(plan, Box::new(NullSink)).unwrap();
    let mut idx = Vec::new();
    // 5,7 in [0,10); 3 in it too; 12 → [10,20); 29 → [20,30); 31 → [30,40);
    // 95 → [90,100); 94 same; 40 is late (counted in the open window). A
    // non-IP record never moves the index.
    for ts in [5, 7, 3, 12, 29, 31, 95, 94, 40] {
        input.push(&PacketRecord {
            l3: L3::Ipv4,
            ts_ns: ts,
            wire_len: 1,
            ..Default::default()
        });
        input.push(&PacketRecord {
            ts_ns: 1_000,
            ..Default::default()
        });
        idx.push(input.window_index());
    }
    assert_eq!(idx, [0, 0, 0, 1, 2, 3, 4, 4, 4]);
    // One window per index step, plus the open one flushed at the end.
    assert_eq!(input.finish().unwrap().windows, 5);
}

/// Keeps every window row and sketch period handed to the sink.
struct EverythingSink(Collected, Periods);
impl WindowSink for EverythingSink {
    fn window(&mut self, tasks: &[TaskSpec], w: &WindowResult) -> Result<(), SinkError> {
        CollectSink(self.0.clone()).window(tasks, w)
    }

    fn sketch_period(&mut self, task: &TaskSpec, period: &SketchPeriod) -> Result<(), SinkError> {
        PeriodSink(self.1.clone()).sketch_period(task, period)
    }
}

/// What the sink saw and the run totals, in an order that does not depend
/// on which worker counted what.
type Seen = (
    Vec<(u64, u64, String, FlowKey, FlowCounters)>,
    Vec<(String, SketchPeriod)>,
    Vec<(String, u64, u64, Vec<(FlowKey, FlowCounters)>)>,
);

fn everything(recs: &[PacketRecord], workers: usize, inline: bool) -> Seen {
    let cfg = Config::from_yaml(
        "aggregator: { period: 100ms, snapshot_interval: 100ms }",
        &|_| None,
    )
    .unwrap();
    let mut plan = EnginePlan::from_config(&cfg, workers).unwrap();
    plan.inline_worker = inline;
    let (rows, periods): (Collected, Periods) = Default::default();
    let mut out = run(
        recs,
        plan,
        Box::new(EverythingSink(rows.clone(), periods.clone())),
    );
    let mut rows = std::mem::take(&mut *rows.lock().unwrap());
    rows.sort_by(|a, b| (a.0, &a.2, a.3).cmp(&(b.0, &b.2, b.3)));
    let periods = std::mem::take(&mut *periods.lock().unwrap());
    let totals = out
        .tasks
        .iter_mut()
        .map(|t| {
            t.top(0);
            (t.name.clone(), t.packets, t.bytes, t.rows.clone())
        })
        .collect();
    (rows, periods, totals)
}

#[test]
fn the_default_tasks_give_the_same_windows_periods_and_totals_for_any_worker_layout() {
    // 20 µs apart × 30k packets = 0.6 s: six windows and sketch periods,
    // so run totals gather keys over several windows.
    let recs = records(30_000, 17, 20_000);
    let baseline = everything(&recs, 1, false);
    assert_eq!(baseline.1.len(), 2 * 6, "two sketch tasks, six periods");
    assert!(baseline.0.len() > 1_000, "windows have rows");
    for t in &baseline.2 {
        if !t.3.is_empty() {
            assert_eq!(t.1, recs.len() as u64, "{}", t.0);
        }
    }
    // The reader as worker 0 (`analyze`), or beside the workers (live).
    for (workers, inline) in [(1, true), (2, true), (3, true), (2, false), (3, false)] {
        let seen = everything(&recs, workers, inline);
        let what = format!("{workers} workers, inline {inline}");
        assert!(seen.0 == baseline.0, "{what}: window rows differ");
        assert!(seen.2 == baseline.2, "{what}: run totals differ");
        assert_eq!(seen.1.len(), baseline.1.len(), "{what}");
        for ((name, got), (_, want)) in seen.1.iter().zip(&baseline.1) {
            if name == "per_src_ip_hh" {
                // Count-Min with conservative update is summed across
                // workers: an upper bound like one sketch's, not the same
                // one. The volume it saw is the same.
                let volume = |p: &SketchPeriod| (p.start_ns, p.end_ns, p.packets, p.bytes);
                assert_eq!(volume(got), volume(want), "{what}: {name}");
            } else {
                assert!(got == want, "{what}: {name} periods differ");
            }
        }
    }
}

#[test]
fn totals_keep_the_top_rows_they_are_asked_for_and_count_every_key() {
    let recs = records(30_000, 19, 1_000);
    let mut all = run(&recs, plan(2, "60s"), Box::new(NullSink));
    for n in [1, 7, 250, 1_000_000] {
        let mut plan = plan(2, "60s");
        plan.inline_worker = true;
        plan.top_rows = n;
        let mut kept = run(&recs, plan, Box::new(NullSink));
        for (a, b) in all.tasks.iter_mut().zip(&mut kept.tasks) {
            assert_eq!(b.keys, a.rows.len(), "{}: keys", a.name);
            assert_eq!(b.rows.len(), n.min(a.rows.len()), "{}: rows", a.name);
            assert_eq!((b.packets, b.bytes), (a.packets, a.bytes), "{}", a.name);
            let want = a.top(n).to_vec();
            assert_eq!(b.top(n), &want[..], "{}: top {n}", a.name);
        }
    }
}
