//! `netspectra bench`: exact accounting vs. the sketches on one trace, measured.
//!
//! Reproduces the shape of Go2NetSpectra's comparison table (insert, query,
//! memory; exact vs. sketch) on a generated trace or a capture file:
//!
//! 1. The trace is decoded once into memory (IP records only).
//! 2. Micro-measurements run single-threaded over the in-memory records:
//!    each loop is timed as a whole with [`Instant`], 5 times, and the
//!    median is reported in ns per operation. Exact tables start empty in
//!    every run (their growth is part of the cost); sketches are allocated
//!    once and reset between runs (fixed memory, steady state). Sketch keys
//!    are hashed with seeded XXH3 over a 40-byte image of the key, inside
//!    the timed loop.
//! 3. The engine runs the default tasks end to end with 1 and N workers,
//!    3 runs each, median.

use crate::error::{Context, NodeError};
use crate::report::thousands;
use netspectra_capture::decode::decode;
use netspectra_capture::gen::{generate, truth_path, GenOptions};
use netspectra_capture::reader::CaptureReader;
use netspectra_engine::{Engine, EnginePlan, ExactTable, FlowCounters, NullSink};
use netspectra_model::config::Config;
use netspectra_model::{Dimension, FlowKey, PacketRecord};
use netspectra_sketch::hash::hash_bytes;
use netspectra_sketch::{
    CountMin, CountMinParams, HeavyBucket, HeavyBucketParams, SuperSpread, SuperSpreadParams,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to measure on.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Frames to generate for the trace (ignored with `file`).
    pub packets: u64,
    /// Seed of the generated trace.
    pub seed: u64,
    /// Workers of the multi-worker engine run (0: one per core).
    pub workers: usize,
    /// Measure on this capture instead of a generated trace.
    pub file: Option<PathBuf>,
}

/// Runs of each micro-measurement (median reported).
const MICRO_RUNS: usize = 5;
/// Runs of each end-to-end engine measurement (median reported).
const ENGINE_RUNS: usize = 3;
/// Seed of the sketch key hash.
const KEY_SEED: u64 = 0x6b65_795f_7365_6564;
/// Seed of the SuperSpread element hash.
const ELEM_SEED: u64 = 0x656c_656d_5f73_6565;
/// Fixed seed of the query-side exact map (foldhash, like the engine).
const MAP_SEED: u64 = 0x6e65_7473_7065_6374;
const SRC: &[Dimension] = &[Dimension::SrcIp];
const FIVE_TUPLE: &[Dimension] = &[
    Dimension::SrcIp,
    Dimension::DstIp,
    Dimension::SrcPort,
    Dimension::DstPort,
    Dimension::Protocol,
];

/// The decoded trace.
struct Trace {
    records: Vec<PacketRecord>,
    /// Human-readable origin ("generated, seed 1" or "file PATH").
    source: String,
}

/// Median ns per operation of every micro-measurement.
struct Micro {
    exact_insert_ns: f64,
    exact_flow_insert_ns: f64,
    countmin_insert_ns: f64,
    heavy_insert_ns: f64,
    superspread_insert_ns: f64,
    exact_query_ns: f64,
    countmin_query_ns: f64,
    heavy_query_ns: f64,
    superspread_query_ns: f64,
}

/// Bytes held by each structure after the whole trace.
struct Memory {
    exact_bytes_estimated: u64,
    exact_flow_bytes_estimated: u64,
    countmin_bytes: u64,
    heavy_bytes: u64,
    superspread_bytes: u64,
}

/// One engine configuration's runs.
struct EngineRuns {
    workers: usize,
    /// Names of the tasks the default configuration runs.
    tasks: Vec<String>,
    mpps: Vec<f64>,
    mpps_median: f64,
}

/// Everything the report shows.
pub struct BenchResults {
    packets: u64,
    sources: u64,
    flows: u64,
    source: String,
    micro: Micro,
    memory: Memory,
    engine: Vec<EngineRuns>,
    cores: usize,
    cpu: Option<String>,
}

/// Runs the measurements; `say` hears what is being measured.
pub fn run(cfg: &BenchConfig, say: &dyn Fn(&str)) -> Result<BenchResults, NodeError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = if cfg.workers == 0 { cores } else { cfg.workers };

    let trace = load_trace(cfg, say)?;
    let recs = &trace.records;
    if recs.is_empty() {
        return Err(NodeError::invalid(
            "the trace has no IP packets: nothing to measure",
        ));
    }
    say(&format!(
        "trace: {} IP packets ({})",
        thousands(recs.len() as u64),
        trace.source
    ));

    let (micro, memory, sources, flows) = micro(recs, say);
    let engine = engine_runs(recs, workers, say)?;

    Ok(BenchResults {
        packets: recs.len() as u64,
        sources,
        flows,
        source: trace.source,
        micro,
        memory,
        engine,
        cores,
        cpu: cpu_model(),
    })
}

/// Removes a generated capture (and its truth file) when dropped, also on error.
struct TempCapture(PathBuf);

impl Drop for TempCapture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(truth_path(&self.0));
    }
}

fn load_trace(args: &BenchConfig, say: &dyn Fn(&str)) -> Result<Trace, NodeError> {
    if let Some(path) = &args.file {
        say(&format!("reading {}", path.display()));
        let records = read_records(path)?;
        return Ok(Trace {
            records,
            source: format!("file {}", path.display()),
        });
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = TempCapture(std::env::temp_dir().join(format!(
        "netspectra-bench-{}-{nanos}.pcap",
        std::process::id()
    )));
    say(&format!(
        "generating {} packets (seed {}) into {}",
        thousands(args.packets),
        args.seed,
        tmp.0.display()
    ));
    let opts = GenOptions {
        packets: args.packets,
        seed: args.seed,
        ..GenOptions::default()
    };
    generate(&tmp.0, &opts).context(format!("generating {}", tmp.0.display()))?;
    say("reading the generated trace");
    let records = read_records(&tmp.0)?;
    Ok(Trace {
        records,
        source: format!("generated, seed {}", args.seed),
    })
}

/// Decodes a whole capture into memory, keeping IP records only.
fn read_records(path: &Path) -> Result<Vec<PacketRecord>, NodeError> {
    // Capture errors name the file and their cause already: shown once, as is.
    let mut reader = CaptureReader::open(path)?;
    let mut records = Vec::new();
    let mut rec = PacketRecord::default();
    while let Some(p) = reader.next_packet()? {
        decode(p.link_type, p.data, &mut rec);
        if !rec.l3.is_ip() {
            continue;
        }
        rec.ts_ns = p.ts_ns;
        rec.wire_len = p.wire_len;
        rec.cap_len = p.data.len() as u32;
        records.push(rec);
    }
    Ok(records)
}

/// Seeded XXH3 of the key's 40-byte image (addresses, ports, VLAN, protocol).
#[inline]
fn key_hash(k: &FlowKey) -> u64 {
    let mut b = [0u8; 40];
    b[..16].copy_from_slice(&k.src_ip);
    b[16..32].copy_from_slice(&k.dst_ip);
    b[32..34].copy_from_slice(&k.src_port.to_le_bytes());
    b[34..36].copy_from_slice(&k.dst_port.to_le_bytes());
    b[36..38].copy_from_slice(&k.vlan.to_le_bytes());
    b[38] = k.protocol;
    hash_bytes(&b, KEY_SEED)
}

/// Runs `f` (which times one loop) `runs` times; median ns per operation.
fn median_ns(runs: usize, ops: usize, mut f: impl FnMut() -> Duration) -> f64 {
    let mut ns: Vec<f64> = (0..runs)
        .map(|_| f().as_secs_f64() * 1e9 / ops.max(1) as f64)
        .collect();
    median(&mut ns)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Bytes of the engine's flow table holding `keys` keys: power-of-two slots
/// (at least 64) at load ≤ 0.7, each slot = 8-byte hash + key + counters.
fn exact_table_bytes(keys: u64) -> u64 {
    let slot = 8 + std::mem::size_of::<FlowKey>() + std::mem::size_of::<FlowCounters>();
    let mut cap: u64 = 64;
    while keys * 10 > cap * 7 {
        cap *= 2;
    }
    cap * slot as u64
}

/// The single-threaded micro-measurements; also returns the distinct
/// source and 5-tuple counts.
fn micro(recs: &[PacketRecord], say: &dyn Fn(&str)) -> (Micro, Memory, u64, u64) {
    let n = recs.len();

    say("exact insert, key SrcIP");
    let mut sources = 0;
    let exact_insert_ns = median_ns(MICRO_RUNS, n, || {
        let mut t = ExactTable::new(SRC.to_vec());
        let start = Instant::now();
        for r in recs {
            t.update(black_box(r));
        }
        let e = start.elapsed();
        sources = black_box(&t).len();
        e
    });

    say("exact insert, key 5-tuple");
    let mut flows = 0;
    let exact_flow_insert_ns = median_ns(MICRO_RUNS, n, || {
        let mut t = ExactTable::new(FIVE_TUPLE.to_vec());
        let start = Instant::now();
        for r in recs {
            t.update(black_box(r));
        }
        let e = start.elapsed();
        flows = black_box(&t).len();
        e
    });

    say("Count-Min insert");
    let mut cm = CountMin::<FlowKey>::new(CountMinParams::default());
    let countmin_insert_ns = median_ns(MICRO_RUNS, n, || {
        cm.reset();
        let start = Instant::now();
        for r in recs {
            let k = FlowKey::project(black_box(r), SRC);
            cm.insert(k, key_hash(&k), 1);
        }
        let e = start.elapsed();
        black_box(cm.total());
        e
    });

    say("HeavyBucket insert");
    let mut heavy = HeavyBucket::<FlowKey>::new(HeavyBucketParams::default());
    let heavy_insert_ns = median_ns(MICRO_RUNS, n, || {
        heavy.reset();
        let start = Instant::now();
        for r in recs {
            let r = black_box(r);
            let k = FlowKey::project(r, SRC);
            heavy.insert(k, key_hash(&k), u64::from(r.wire_len));
        }
        let e = start.elapsed();
        black_box(&heavy);
        e
    });

    say("SuperSpread insert (key SrcIP, element DstIP)");
    let mut ss = SuperSpread::<FlowKey>::new(SuperSpreadParams::default());
    let superspread_insert_ns = median_ns(MICRO_RUNS, n, || {
        ss.reset();
        let start = Instant::now();
        for r in recs {
            let r = black_box(r);
            let k = FlowKey::project(r, SRC);
            ss.insert(k, key_hash(&k), hash_bytes(&r.dst_ip, ELEM_SEED));
        }
        let e = start.elapsed();
        black_box(&ss);
        e
    });

    // Queries: every distinct source once, in first-seen order. ExactTable
    // has no lookup, so the exact side is a std HashMap with foldhash (the
    // engine's hasher) holding per-source packet counts.
    say("queries over every distinct source");
    let mut map: HashMap<FlowKey, u64, foldhash::fast::FixedState> =
        HashMap::with_hasher(foldhash::fast::FixedState::with_seed(MAP_SEED));
    let mut keys = Vec::new();
    for r in recs {
        let k = FlowKey::project(r, SRC);
        *map.entry(k).or_insert_with(|| {
            keys.push(k);
            0
        }) += 1;
    }
    let q = keys.len();
    let exact_query_ns = median_ns(MICRO_RUNS, q, || {
        let start = Instant::now();
        let mut sum = 0u64;
        for k in &keys {
            sum += map.get(black_box(k)).copied().unwrap_or(0);
        }
        let e = start.elapsed();
        black_box(sum);
        e
    });
    let countmin_query_ns = median_ns(MICRO_RUNS, q, || {
        let start = Instant::now();
        let mut sum = 0u64;
        for k in &keys {
            sum = sum.wrapping_add(cm.estimate(key_hash(black_box(k))));
        }
        let e = start.elapsed();
        black_box(sum);
        e
    });
    let heavy_query_ns = median_ns(MICRO_RUNS, q, || {
        let start = Instant::now();
        let mut sum = 0u64;
        for k in &keys {
            let k = black_box(k);
            let (p, b) = heavy.query(key_hash(k), *k);
            sum = sum.wrapping_add(p).wrapping_add(b);
        }
        let e = start.elapsed();
        black_box(sum);
        e
    });
    let superspread_query_ns = median_ns(MICRO_RUNS, q, || {
        let start = Instant::now();
        let mut sum = 0u64;
        for k in &keys {
            let k = black_box(k);
            sum = sum.wrapping_add(ss.query(*k, key_hash(k)));
        }
        let e = start.elapsed();
        black_box(sum);
        e
    });

    let micro = Micro {
        exact_insert_ns,
        exact_flow_insert_ns,
        countmin_insert_ns,
        heavy_insert_ns,
        superspread_insert_ns,
        exact_query_ns,
        countmin_query_ns,
        heavy_query_ns,
        superspread_query_ns,
    };
    let memory = Memory {
        exact_bytes_estimated: exact_table_bytes(sources as u64),
        exact_flow_bytes_estimated: exact_table_bytes(flows as u64),
        countmin_bytes: cm.memory_bytes() as u64,
        heavy_bytes: heavy.memory_bytes() as u64,
        superspread_bytes: ss.memory_bytes() as u64,
    };
    (micro, memory, sources as u64, flows as u64)
}

/// End-to-end engine runs (default tasks, no store) for 1 and `workers` workers.
fn engine_runs(
    recs: &[PacketRecord],
    workers: usize,
    say: &dyn Fn(&str),
) -> Result<Vec<EngineRuns>, NodeError> {
    let mut counts = vec![1];
    if workers != 1 {
        counts.push(workers);
    }
    let mut out = Vec::new();
    for w in counts {
        say(&format!(
            "engine, default tasks, {w} worker{}",
            if w == 1 { "" } else { "s" }
        ));
        let mut mpps = Vec::with_capacity(ENGINE_RUNS);
        let mut tasks = Vec::new();
        for _ in 0..ENGINE_RUNS {
            let plan = EnginePlan::from_config(&Config::default(), w)?;
            tasks = plan.tasks.iter().map(|t| t.name.clone()).collect();
            let start = Instant::now();
            let mut input = Engine::start(plan, Box::new(NullSink))?;
            for r in recs {
                input.push(r);
            }
            let output = input.finish().context("engine failed")?;
            let secs = start.elapsed().as_secs_f64();
            if output.packets != recs.len() as u64 {
                return Err(NodeError::invalid(format!(
                    "engine counted {} packets of {}",
                    output.packets,
                    recs.len()
                )));
            }
            mpps.push(recs.len() as f64 / secs.max(1e-9) / 1e6);
        }
        let mut sorted = mpps.clone();
        out.push(EngineRuns {
            workers: w,
            tasks,
            mpps_median: median(&mut sorted),
            mpps,
        });
    }
    Ok(out)
}

/// `model name` of the first processor in /proc/cpuinfo, if readable.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

impl BenchResults {
    /// The report `bench --format json` prints.
    pub fn json(&self) -> Value {
        to_json(self)
    }

    /// The table `bench` prints by default.
    pub fn table(&self) -> String {
        to_table(self)
    }
}

fn to_json(r: &BenchResults) -> Value {
    let m = &r.micro;
    let mem = &r.memory;
    json!({
        "trace": {
            "packets": r.packets,
            "sources": r.sources,
            "flows": r.flows,
            "source": r.source,
        },
        "micro": {
            "exact_insert_ns": m.exact_insert_ns,
            "exact_flow_insert_ns": m.exact_flow_insert_ns,
            "countmin_insert_ns": m.countmin_insert_ns,
            "heavy_insert_ns": m.heavy_insert_ns,
            "superspread_insert_ns": m.superspread_insert_ns,
            "exact_query_ns": m.exact_query_ns,
            "countmin_query_ns": m.countmin_query_ns,
            "heavy_query_ns": m.heavy_query_ns,
            "superspread_query_ns": m.superspread_query_ns,
        },
        "memory": {
            "exact_bytes_estimated": mem.exact_bytes_estimated,
            "exact_flow_bytes_estimated": mem.exact_flow_bytes_estimated,
            "countmin_bytes": mem.countmin_bytes,
            "heavy_bytes": mem.heavy_bytes,
            "superspread_bytes": mem.superspread_bytes,
        },
        "engine": r.engine.iter().map(|e| json!({
            "workers": e.workers,
            "tasks": e.tasks,
            "mpps_median": e.mpps_median,
            "runs": e.mpps,
        })).collect::<Vec<_>>(),
        "machine": {
            "cores": r.cores,
            "cpu": r.cpu,
        },
    })
}

fn to_table(r: &BenchResults) -> String {
    let m = &r.micro;
    let mem = &r.memory;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "trace: {} IP packets ({}), {} sources, {} flows",
        thousands(r.packets),
        r.source,
        thousands(r.sources),
        thousands(r.flows)
    );
    let _ = writeln!(
        s,
        "single thread, key SrcIP, median of {MICRO_RUNS} runs; speedup = exact / Count-Min"
    );
    let _ = writeln!(
        s,
        "{:<22} {:>14} {:>12} {:>12} {:>12} {:>8}",
        "operation", "exact", "Count-Min", "HeavyBucket", "SuperSpread", "speedup"
    );
    let row = |s: &mut String, name: &str, e: f64, c: f64, h: f64, ss: f64| {
        let _ = writeln!(
            s,
            "{:<22} {:>14.1} {:>12.1} {:>12.1} {:>12.1} {:>7.2}x",
            name,
            e,
            c,
            h,
            ss,
            e / c
        );
    };
    row(
        &mut s,
        "insert (ns/packet)",
        m.exact_insert_ns,
        m.countmin_insert_ns,
        m.heavy_insert_ns,
        m.superspread_insert_ns,
    );
    row(
        &mut s,
        "query (ns/key)",
        m.exact_query_ns,
        m.countmin_query_ns,
        m.heavy_query_ns,
        m.superspread_query_ns,
    );
    let _ = writeln!(
        s,
        "{:<22} {:>14} {:>12} {:>12} {:>12}",
        "memory",
        format!("{} (est.)", mb(mem.exact_bytes_estimated)),
        mb(mem.countmin_bytes),
        mb(mem.heavy_bytes),
        mb(mem.superspread_bytes)
    );
    let _ = writeln!(
        s,
        "exact, 5-tuple key: insert {:.1} ns/packet, {} flows, {} (est.)",
        m.exact_flow_insert_ns,
        thousands(r.flows),
        mb(mem.exact_flow_bytes_estimated)
    );
    let _ = writeln!(
        s,
        "notes: exact insert = ExactTable::update from an empty table (growth included, no batch prefetch);\n       \
         exact query = std HashMap<FlowKey, u64> + foldhash lookup (ExactTable has no lookup);\n       \
         sketch insert/query include seeded XXH3 of the 40-byte key; sketches reset, not reallocated, between runs;\n       \
         exact memory estimated from the flow-table layout: power-of-two slots at load <= 0.7 x {} bytes;\n       \
         sketch memory = memory_bytes() (actual allocation)",
        8 + std::mem::size_of::<FlowKey>() + std::mem::size_of::<FlowCounters>()
    );
    let tasks = r
        .engine
        .first()
        .map(|e| e.tasks.join(", "))
        .unwrap_or_default();
    let mut engine =
        format!("engine, default tasks ({tasks}), no store, median of {ENGINE_RUNS}:\n ");
    for (i, e) in r.engine.iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        let _ = write!(
            engine,
            "{sep}{} worker{} {:.2} Mpps",
            e.workers,
            if e.workers == 1 { "" } else { "s" },
            e.mpps_median
        );
    }
    if let [one, .., many] = r.engine.as_slice() {
        let _ = write!(engine, " ({:.2}x)", many.mpps_median / one.mpps_median);
    }
    let _ = writeln!(s, "{engine}");
    let _ = writeln!(
        s,
        "machine: {} cores, {}",
        r.cores,
        r.cpu.as_deref().unwrap_or("unknown CPU")
    );
    s
}

/// Bytes in decimal megabytes (kilobytes below 0.1 MB), one decimal.
fn mb(bytes: u64) -> String {
    if bytes < 100_000 {
        format!("{:.1} KB", bytes as f64 / 1e3)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn table_estimate_follows_load_factor() {
        let slot =
            (8 + std::mem::size_of::<FlowKey>() + std::mem::size_of::<FlowCounters>()) as u64;
        assert_eq!(exact_table_bytes(0), 64 * slot);
        assert_eq!(exact_table_bytes(44), 64 * slot);
        assert_eq!(exact_table_bytes(45), 128 * slot);
    }
}
