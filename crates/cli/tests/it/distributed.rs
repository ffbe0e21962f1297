//! probe → NATS → engines → SQLite stores, against a real nats-server and
//! the generator's truth.

use netspectra_testkit::nats::NatsServer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netspectra"))
}

/// An engine process; killed if still running when dropped.
struct EngineProc {
    child: Child,
    /// Its stderr lines, with when they arrived.
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Drop for EngineProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EngineProc {
    /// Starts `netspectra engine` (one of two, SQLite store `db`) and
    /// returns once it has subscribed.
    fn start(url: &str, index: u32, db: &Path, extra: &[&str]) -> EngineProc {
        let store = format!("sqlite:{}", db.display());
        let mut cmd = bin();
        cmd.args(engine_args(url, index, 2, &store)).args(extra);
        EngineProc::spawn(cmd, index)
    }

    /// Spawns a prepared `netspectra engine` command and returns once it
    /// has subscribed; its stderr is forwarded with `[engine <label>]`.
    fn spawn(mut cmd: Command, label: u32) -> EngineProc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start engine");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&lines);
        std::thread::spawn(move || {
            let mut ready = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push((Instant::now(), line.clone()));
                if line.starts_with("netspectra engine ") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                eprintln!("[engine {label}] {line}");
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("engine subscribed within 20 s");
        EngineProc { child, lines }
    }

    /// Waits for the engine to exit on its own (`--idle-exit`); returns its summary.
    fn wait(mut self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "engine failed: {status}");
                break;
            }
            assert!(Instant::now() < deadline, "engine did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut out = String::new();
        std::io::Read::read_to_string(self.child.stdout.as_mut().unwrap(), &mut out).unwrap();
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("engine summary {out:?}: {e}"))
    }
}

/// The arguments of engine `index` of `engines` writing to `store`.
fn engine_args(url: &str, index: u32, engines: u32, store: &str) -> Vec<String> {
    [
        "engine",
        "--nats",
        url,
        "--engines",
        &engines.to_string(),
        "--engine-index",
        &index.to_string(),
        "--store",
        store,
        "--format",
        "json",
        "--workers",
        "1",
    ]
    .map(str::to_string)
    .to_vec()
}

fn probe(url: &str, file: &Path, extra: &[&str]) -> Command {
    let mut cmd = bin();
    cmd.args([
        "probe",
        "--file",
        file.to_str().unwrap(),
        "--nats",
        url,
        "--format",
        "json",
    ])
    .args(extra);
    cmd
}

fn ip_text(blob: &[u8]) -> String {
    let a: [u8; 16] = blob.try_into().expect("16-byte address");
    let v6 = Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(Ipv4Addr::from(v4.octets())).to_string(),
        None => v6.to_string(),
    }
}

/// A connection that sees `exact_rows` one SQL row per key (the store
/// keeps them in blocks: `netspectra_store::expand_exact_rows`).
fn open_db(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    netspectra_store::expand_exact_rows(&conn).unwrap();
    conn
}

/// Per-source (packets, bytes) over every run of one store.
fn per_source(db: &Path) -> BTreeMap<String, (u64, u64)> {
    let conn = open_db(db);
    let mut stmt = conn
        .prepare(
            "SELECT src_ip, SUM(packets), SUM(bytes) FROM exact_rows \
             WHERE task = 'per_src_ip' GROUP BY src_ip",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            ip_text(&r.get::<_, Vec<u8>>(0)?),
            (r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64),
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Distinct 5-tuples over every run of one store.
fn distinct_flows(db: &Path) -> u64 {
    open_db(db)
        .query_row(
            "SELECT COUNT(*) FROM (SELECT DISTINCT src_ip, dst_ip, src_port, dst_port, protocol \
             FROM exact_rows WHERE task = 'per_flow')",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as u64
}

fn rows_stored(db: &Path) -> u64 {
    if !db.exists() {
        return 0;
    }
    // Keys stored: each block of `exact_rows` says how many it holds.
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row(
        "SELECT COALESCE(SUM(row_count), 0) FROM exact_rows",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap_or(0) as u64
}

/// The stores together equal the truth exactly; with one store per
/// engine, each got work and no source (hence no distinct count keyed by
/// source) is split between them.
fn assert_stores_match_truth(dbs: &[PathBuf], truth: &Value) {
    let parts: Vec<_> = dbs.iter().map(|d| per_source(d)).collect();
    if let [a, b] = &parts[..] {
        for s in a.keys() {
            assert!(!b.contains_key(s), "source {s} was counted by both engines");
        }
        assert!(!a.is_empty() && !b.is_empty(), "both engines got work");
    }
    let merged: BTreeMap<_, _> = parts.into_iter().flatten().collect();
    let expect = truth["per_src"].as_object().unwrap();
    assert_eq!(merged.len(), expect.len(), "number of sources");
    for (src, (p, b)) in &merged {
        let t = &expect[src.as_str()];
        assert_eq!(Some(*p), t["packets"].as_u64(), "packets of {src}");
        assert_eq!(Some(*b), t["bytes"].as_u64(), "bytes of {src}");
    }
    let packets: u64 = merged.values().map(|v| v.0).sum();
    let bytes: u64 = merged.values().map(|v| v.1).sum();
    assert_eq!(Some(packets), truth["ip_packets"].as_u64());
    assert_eq!(Some(bytes), truth["ip_bytes"].as_u64());
    let flows: u64 = dbs.iter().map(|d| distinct_flows(d)).sum();
    assert_eq!(
        Some(flows),
        truth["distinct_flows"].as_u64(),
        "distinct flows"
    );
}

#[test]
fn core_nats_probe_to_two_engines_matches_the_truth_exactly() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let (file, truth) = crate::gen(dir.path(), "d.pcap", 60_000, 11, "pcap", &[]);
    let dbs = [dir.path().join("e0.db"), dir.path().join("e1.db")];
    let engines: Vec<_> = (0..2)
        .map(|i| EngineProc::start(&server.url(), i, &dbs[i as usize], &["--idle-exit", "4"]))
        .collect();
    let out = probe(&server.url(), &file, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "probe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["packets"], truth["packets"]);
    assert_eq!(summary["published"]["packets"], truth["ip_packets"]);
    let per_shard: u64 = summary["published"]["per_shard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(Some(per_shard), truth["ip_packets"].as_u64());
    let summaries: Vec<Value> = engines.into_iter().map(EngineProc::wait).collect();
    for s in &summaries {
        assert_eq!(s["nats"]["slow_consumer_events"], 0, "{s}");
        assert_eq!(s["duplicate_batches"], 0);
    }
    let consumed: u64 = summaries
        .iter()
        .map(|s| s["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(Some(consumed), truth["ip_packets"].as_u64());
    assert_stores_match_truth(&dbs, &truth);
    // Every row carries its engine's id.
    for (i, db) in dbs.iter().enumerate() {
        let ids: Vec<String> = open_db(db)
            .prepare("SELECT DISTINCT engine_id FROM exact_rows")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, [format!("engine-{i}")]);
    }
}

#[test]
fn jetstream_engine_killed_mid_stream_and_restarted_still_counts_exactly() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    // ~3 s of packet time, replayed at recorded speed; 100 ms windows so the
    // engine stores (and acks) many windows before it is killed.
    let (file, truth) = crate::gen(dir.path(), "j.pcap", 300_000, 12, "pcap", &[]);
    let cfg = dir.path().join("ns.yaml");
    std::fs::write(
        &cfg,
        "aggregator:\n  snapshot_interval: 100ms\n  period: 1s\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let dbs = [dir.path().join("e0.db"), dir.path().join("e1.db")];
    let args = [
        "--jetstream",
        "--ack-wait",
        "2",
        "--idle-exit",
        "6",
        "--config",
        cfg.as_str(),
    ];
    let e0 = EngineProc::start(&server.url(), 0, &dbs[0], &args);
    let e1 = EngineProc::start(&server.url(), 1, &dbs[1], &args);
    let started = Instant::now();
    let mut probe_child = probe(
        &server.url(),
        &file,
        &["--jetstream", "--realtime", "--config", cfg.as_str()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    // Kill engine 1 once it has stored windows, a second into the stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows_stored(&dbs[1]) == 0 || started.elapsed() < Duration::from_millis(1200) {
        assert!(Instant::now() < deadline, "engine 1 stored nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(e1); // SIGKILL: no flush, no acks for the open window
    let stored_before_kill = rows_stored(&dbs[1]);
    assert!(
        probe_child.try_wait().unwrap().is_none(),
        "the kill must happen mid-stream"
    );
    let e1 = EngineProc::start(&server.url(), 1, &dbs[1], &args);
    let status = probe_child.wait().unwrap();
    assert!(status.success(), "probe failed");
    let mut out = String::new();
    std::io::Read::read_to_string(probe_child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["published"]["packets"], truth["ip_packets"]);
    let s0 = e0.wait();
    let s1 = e1.wait();
    eprintln!("engine 0: {s0}\nengine 1 (restarted): {s1}");
    // The killed run left rows (committed windows); the restarted engine
    // did not start over: it got what was not acked.
    assert!(stored_before_kill > 0);
    let runs: Vec<(String, i64)> = open_db(&dbs[1])
        .prepare("SELECT status, packets FROM runs ORDER BY run_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].0, "running", "the killed run never finished");
    assert_eq!(runs[1].0, "complete");
    let engine1_truth: u64 = per_source(&dbs[1]).values().map(|v| v.0).sum();
    assert!(
        s1["packets"].as_u64().unwrap() < engine1_truth,
        "restart resumed rather than replayed everything"
    );
    assert_eq!(s0["acks"]["unacked"], 0);
    assert_eq!(
        s0["split_batches"], 0,
        "probe batches are aligned to the windows"
    );
    assert_eq!(s1["split_batches"], 0);
    assert_eq!(s1["acks"]["unacked"], 0);
    assert_stores_match_truth(&dbs, &truth);
}

#[test]
fn jetstream_engines_started_alike_survive_a_sigkill_and_count_exactly() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    // ~6 s of packet time replayed at its pace, 100 ms windows: traffic
    // goes on after the takeover (≤ 2 TTLs), so the split shows.
    let (file, truth) = crate::gen(dir.path(), "f.pcap", 600_000, 14, "pcap", &[]);
    let cfg = dir.path().join("ns.yaml");
    std::fs::write(
        &cfg,
        "aggregator:\n  snapshot_interval: 100ms\n  period: 1s\n",
    )
    .unwrap();
    let db = dir.path().join("fleet.db");
    let store = format!("sqlite:{}", db.display());
    let alike = || {
        let mut cmd = bin();
        cmd.env("NETSPECTRA_LOG", "info").args([
            "engine",
            "--nats",
            &server.url(),
            "--store",
            &store,
            "--jetstream",
            "--ack-wait",
            "2",
            "--member-ttl",
            "2",
            "--idle-exit",
            "8",
            "--config",
            cfg.to_str().unwrap(),
            "--format",
            "json",
            "--workers",
            "1",
        ]);
        cmd
    };
    let mut engines: Vec<EngineProc> = (0..3).map(|i| EngineProc::spawn(alike(), i)).collect();
    let started = Instant::now();
    let mut probe_child = probe(
        &server.url(),
        &file,
        &[
            "--jetstream",
            "--realtime",
            "--config",
            cfg.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    // Kill one once it consumes shards of its own (they move at period
    // ends) and windows are stored.
    let deadline = Instant::now() + Duration::from_secs(30);
    let consuming = |e: &EngineProc| {
        e.lines
            .lock()
            .unwrap()
            .iter()
            .any(|(_, l)| l.contains("consuming shards"))
    };
    while rows_stored(&db) == 0
        || started.elapsed() < Duration::from_millis(1500)
        || !consuming(&engines[1])
    {
        assert!(Instant::now() < deadline, "the victim never consumed");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let killed_at = Instant::now();
    drop(engines.remove(1)); // SIGKILL: no flush, no acks, no release
    assert!(
        probe_child.try_wait().unwrap().is_none(),
        "killed mid-stream"
    );
    assert!(probe_child.wait().unwrap().success(), "probe failed");
    let survivors: Vec<(Value, Vec<(Instant, String)>)> = engines
        .into_iter()
        .map(|e| {
            let lines = Arc::clone(&e.lines);
            let summary = e.wait();
            let lines = lines.lock().unwrap().clone();
            (summary, lines)
        })
        .collect();
    // Its shards were taken within two TTLs of the kill.
    let taken = survivors
        .iter()
        .flat_map(|(_, lines)| lines.iter())
        .filter(|(at, line)| *at > killed_at && line.contains("took shards"))
        .map(|(at, _)| at.duration_since(killed_at))
        .min()
        .expect("a survivor took the dead engine's shards");
    eprintln!("failover gap: {taken:?}");
    assert!(
        taken <= Duration::from_secs(4),
        "taken over after {taken:?}"
    );
    for (summary, _) in &survivors {
        assert_eq!(summary["acks"]["unacked"], 0, "{summary}");
    }
    // The dead engine's share of a period went to a survivor midway: the
    // survivor's sketch rows of that period are marked partial.
    let partial: i64 = open_db(&db)
        .query_row(
            "SELECT COUNT(*) FROM sketch_rows WHERE partial = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(partial > 0, "a failover marks the split period partial");
    assert_stores_match_truth(&[db], &truth);
}

#[test]
fn probe_and_engine_take_the_bus_layout_from_the_config() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let (file, truth) = crate::gen(dir.path(), "b.pcap", 20_000, 16, "pcap", &[]);
    let cfg = dir.path().join("ns.yaml");
    std::fs::write(
        &cfg,
        "bus:\n  prefix: cfgbus\n  shards: 4\n  jetstream: true\n  ack_wait: 3s\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let db = dir.path().join("b.db");
    let store = format!("sqlite:{}", db.display());
    let mut cmd = bin();
    cmd.args([
        "engine",
        "--nats",
        &server.url(),
        "--store",
        &store,
        "--config",
        cfg,
    ])
    .args(["--idle-exit", "4", "--format", "json", "--workers", "1"]);
    let engine = EngineProc::spawn(cmd, 0);
    let out = probe(&server.url(), &file, &["--config", cfg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let published: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(published["jetstream"], true, "{published}");
    assert_eq!(
        published["published"]["per_shard"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let summary = engine.wait();
    assert_eq!(summary["jetstream"], true, "{summary}");
    assert_eq!(
        summary["shards"],
        serde_json::json!([0, 1, 2, 3]),
        "{summary}"
    );
    assert_eq!(summary["packets"], truth["ip_packets"], "{summary}");
}

#[test]
fn core_nats_engines_count_what_a_sigkill_lost() {
    let server = NatsServer::start(true); // JetStream only for the engines' KV
    let dir = tempfile::tempdir().unwrap();
    // ~6 s of traffic: batches keep coming after the takeover, so the gap
    // in each probe sequence shows (a loss at the very end would not).
    let (file, truth) = crate::gen(dir.path(), "l.pcap", 600_000, 19, "pcap", &[]);
    let cfg = dir.path().join("ns.yaml");
    std::fs::write(
        &cfg,
        "aggregator:\n  snapshot_interval: 100ms\n  period: 1s\n",
    )
    .unwrap();
    let db = dir.path().join("core.db");
    let store = format!("sqlite:{}", db.display());
    let alike = || {
        let mut cmd = bin();
        cmd.env("NETSPECTRA_LOG", "info").args([
            "engine",
            "--nats",
            &server.url(),
            "--store",
            &store,
            "--member-ttl",
            "2",
            "--idle-exit",
            "6",
            "--config",
            cfg.to_str().unwrap(),
            "--format",
            "json",
            "--workers",
            "1",
        ]);
        cmd
    };
    let mut engines: Vec<EngineProc> = (0..3).map(|i| EngineProc::spawn(alike(), i)).collect();
    // Core NATS loses what nobody is subscribed to: let them settle first.
    std::thread::sleep(Duration::from_secs(3));
    let mut probe_child = probe(
        &server.url(),
        &file,
        &["--realtime", "--config", cfg.to_str().unwrap()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    drop(engines.remove(1)); // SIGKILL mid-replay
    assert!(probe_child.wait().unwrap().success());
    let summaries: Vec<Value> = engines.into_iter().map(EngineProc::wait).collect();
    let lost: u64 = summaries
        .iter()
        .map(|s| s["lost_batches"].as_u64().unwrap())
        .sum();
    let stored: u64 = per_source(&db).values().map(|v| v.0).sum();
    let want = truth["ip_packets"].as_u64().unwrap();
    eprintln!("stored {stored} of {want}; survivors counted {lost} lost batches");
    assert!(
        stored < want,
        "the kill lost the dead engine's open window at least"
    );
    assert!(lost > 0, "what the handover lost is counted: {summaries:?}");
}

/// Publishes Go2NetSpectra-style messages (one `PacketInfo` each) with the
/// plain NATS text protocol, as its Go probe does with `nc.Publish`.
fn publish_raw(port: u16, subject: &str, payloads: &[Vec<u8>]) {
    use std::io::Write;
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO"), "{line}");
    let mut w = std::io::BufWriter::new(s);
    w.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
        .unwrap();
    for p in payloads {
        write!(w, "PUB {subject} {}\r\n", p.len()).unwrap();
        w.write_all(p).unwrap();
        w.write_all(b"\r\n").unwrap();
    }
    w.write_all(b"PING\r\n").unwrap();
    w.flush().unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "PONG", "server accepted every message");
}

#[test]
fn engines_also_count_go2netspectra_packet_info_messages_once() {
    use netspectra_proto::go2netspectra::v1::PacketInfo;
    use netspectra_proto::Message as _;
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let dbs = [dir.path().join("g0.db"), dir.path().join("g1.db")];
    let interop = ["--interop-subject", "gons.packets.raw", "--idle-exit", "3"];
    let engines: Vec<_> = (0..2)
        .map(|i| EngineProc::start(&server.url(), i, &dbs[i as usize], &interop))
        .collect();
    // 2 000 packets from 40 IPv4 and 10 IPv6 sources; IPv4 as 4 bytes, as
    // gopacket hands them to the Go probe.
    let mut expect: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let payloads: Vec<Vec<u8>> = (0..2_000u64)
        .map(|i| {
            let src = (i % 50) as u8;
            let (src_ip, text) = if src < 40 {
                (vec![192, 0, 2, src], format!("192.0.2.{src}"))
            } else {
                let mut a = vec![0x20, 0x01, 0x0d, 0xb8];
                a.extend_from_slice(&[0; 11]);
                a.push(src);
                (a, format!("2001:db8::{src:x}"))
            };
            let dst_ip = if src < 40 {
                vec![198, 51, 100, 1]
            } else {
                let mut a = vec![0x20, 0x01, 0x0d, 0xb8, 0, 1];
                a.extend_from_slice(&[0; 10]);
                a
            };
            let len = 60 + i % 900;
            let e = expect.entry(text).or_default();
            e.0 += 1;
            e.1 += len;
            PacketInfo {
                timestamp: Some(netspectra_proto::Timestamp {
                    seconds: 1_767_225_600 + (i / 1000) as i64,
                    nanos: (i % 1000) as i32 * 1000,
                }),
                five_tuple: Some(netspectra_proto::go2netspectra::v1::FiveTuple {
                    src_ip: src_ip.into(),
                    dst_ip: dst_ip.into(),
                    src_port: 40_000 + (i % 7) as u32,
                    dst_port: 443,
                    protocol: 6,
                }),
                length: len,
            }
            .encode_to_vec()
        })
        .collect();
    publish_raw(server.port(), "gons.packets.raw", &payloads);
    let s: Vec<Value> = engines.into_iter().map(EngineProc::wait).collect();
    let counted: u64 = s
        .iter()
        .map(|s| s["interop_packets"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 2_000, "each message counted by exactly one engine");
    // Every engine saw every message and kept its own shards' share.
    assert_eq!(s[0]["interop_other_shards"], s[1]["interop_packets"]);
    assert_eq!(s[1]["interop_other_shards"], s[0]["interop_packets"]);
    let parts: Vec<_> = dbs.iter().map(|d| per_source(d)).collect();
    assert!(parts[0].keys().all(|k| !parts[1].contains_key(k)));
    let merged: BTreeMap<_, _> = parts.into_iter().flatten().collect();
    assert_eq!(merged, expect);
}

/// Runs `sql` on ClickHouse's HTTP interface (plain HTTP/1.0 over a std
/// socket) and returns the TabSeparated rows.
fn clickhouse_rows(port: u16, sql: &str) -> Vec<Vec<String>> {
    use std::io::{Read, Write};
    let body = format!("{sql} FORMAT TabSeparated");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, text) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(
        head.lines().next().is_some_and(|l| l.contains(" 200 ")),
        "ClickHouse refused `{sql}`: {response}"
    );
    text.lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Per source, `sum(packets), sum(bytes)` in ClickHouse equal the truth.
fn assert_clickhouse_matches_truth(port: u16, db: &str, truth: &Value) {
    let rows = clickhouse_rows(
        port,
        &format!(
            "SELECT hex(src_ip), sum(packets), sum(bytes) FROM {db}.exact_rows \
             WHERE task = 'per_src_ip' GROUP BY src_ip"
        ),
    );
    let expect = truth["per_src"].as_object().unwrap();
    let mut wrong = Vec::new();
    for r in &rows {
        let src = ip_from_hex(&r[0]);
        let t = &expect[src.as_str()];
        if r[1].parse::<u64>().ok() != t["packets"].as_u64()
            || r[2].parse::<u64>().ok() != t["bytes"].as_u64()
        {
            wrong.push((src, r[1].clone(), t["packets"].clone()));
        }
    }
    let total: u64 = rows.iter().map(|r| r[1].parse::<u64>().unwrap()).sum();
    assert_eq!(Some(total), truth["ip_packets"].as_u64(), "stored packets");
    assert_eq!(rows.len(), expect.len(), "number of sources");
    assert!(
        wrong.is_empty(),
        "{} sources wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

#[test]
fn a_clickhouse_writing_engine_sigkilled_five_times_mid_replay_still_counts_exactly() {
    let ch = netspectra_testkit::clickhouse::ClickHouseServer::start();
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    // ~6 s of traffic replayed at its pace, 100 ms windows.
    let (file, truth) = crate::gen(dir.path(), "k.pcap", 600_000, 15, "pcap", &[]);
    let cfg = dir.path().join("ns.yaml");
    std::fs::write(
        &cfg,
        "aggregator:\n  snapshot_interval: 100ms\n  period: 1s\n",
    )
    .unwrap();
    let engine = |label: u32| {
        let mut cmd = bin();
        cmd.current_dir(dir.path())
            .env("NETSPECTRA_LOG", "info")
            .args([
                "engine",
                "--nats",
                &server.url(),
                "--store",
                &ch.url(),
                "--jetstream",
                "--ack-wait",
                "2",
                "--member-ttl",
                "2",
                "--idle-exit",
                "8",
                "--config",
                cfg.to_str().unwrap(),
                "--format",
                "json",
                "--workers",
                "1",
            ]);
        EngineProc::spawn(cmd, label)
    };
    let mut current = engine(0);
    let mut probe_child = probe(
        &server.url(),
        &file,
        &[
            "--jetstream",
            "--realtime",
            "--config",
            cfg.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    // Five kills at pseudo-random points (fixed seed: reproducible).
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for label in 1..=5 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(400 + seed % 700));
        assert!(
            probe_child.try_wait().unwrap().is_none(),
            "kill {label} mid-replay"
        );
        drop(current); // SIGKILL: rows queued to the writer, acks not sent
        current = engine(label);
    }
    assert!(probe_child.wait().unwrap().success(), "probe failed");
    let last = current.wait();
    assert_eq!(last["acks"]["unacked"], 0, "{last}");
    assert_clickhouse_matches_truth(ch.http_port(), ch.database(), &truth);
}

#[test]
fn an_engine_started_while_clickhouse_is_down_spools_and_catches_up() {
    let mut ch = netspectra_testkit::clickhouse::ClickHouseServer::start();
    ch.stop();
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let (file, truth) = crate::gen(dir.path(), "d.pcap", 40_000, 17, "pcap", &[]);
    let mut cmd = bin();
    cmd.current_dir(dir.path())
        .args(engine_args(&server.url(), 0, 1, &ch.url()))
        .args(["--idle-exit", "8"]);
    let started = Instant::now();
    let engine = EngineProc::spawn(cmd, 0);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "started without ClickHouse"
    );
    let out = probe(&server.url(), &file, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(2));
    let spool = dir.path().join("netspectra-spool");
    assert!(
        walk_files(&spool) > 0,
        "windows spooled while ClickHouse is down"
    );
    ch.start_again();
    let summary = engine.wait();
    assert_eq!(summary["packets"], truth["ip_packets"], "{summary}");
    assert_clickhouse_matches_truth(ch.http_port(), ch.database(), &truth);
}

#[test]
fn clickhouse_stopped_for_ten_seconds_mid_replay_loses_and_repeats_nothing() {
    let mut ch = netspectra_testkit::clickhouse::ClickHouseServer::start();
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    // ~3 s of traffic at its pace, 100 ms windows.
    let (file, truth) = crate::gen(dir.path(), "o.pcap", 300_000, 18, "pcap", &[]);
    let cfg = dir.path().join("ns.yaml");
    std::fs::write(
        &cfg,
        "aggregator:\n  snapshot_interval: 100ms\n  period: 1s\n",
    )
    .unwrap();
    let mut cmd = bin();
    cmd.current_dir(dir.path()).args([
        "engine",
        "--nats",
        &server.url(),
        "--store",
        &ch.url(),
        "--jetstream",
        "--ack-wait",
        "3",
        "--idle-exit",
        "15",
        "--config",
        cfg.to_str().unwrap(),
        "--format",
        "json",
        "--workers",
        "1",
    ]);
    let engine = EngineProc::spawn(cmd, 0);
    let mut probe_child = probe(
        &server.url(),
        &file,
        &[
            "--jetstream",
            "--realtime",
            "--config",
            cfg.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    ch.stop();
    std::thread::sleep(Duration::from_secs(10));
    ch.start_again();
    assert!(probe_child.wait().unwrap().success(), "probe failed");
    let summary = engine.wait();
    assert_eq!(summary["acks"]["unacked"], 0, "{summary}");
    assert_clickhouse_matches_truth(ch.http_port(), ch.database(), &truth);
}

/// Files under `dir`, recursively (0 if it does not exist).
fn walk_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    walk_files(&p)
                } else {
                    1
                }
            })
            .sum()
    })
}

/// `hex(FixedString(16))` back to canonical IP text.
fn ip_from_hex(hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    ip_text(&bytes)
}

/// A 5-tuple as text: `src dst sport dport proto`.
type FlowText = (String, String, u64, u64, u64);

#[test]
fn probe_to_two_engines_to_one_clickhouse_matches_the_truth_exactly() {
    let ch = netspectra_testkit::clickhouse::ClickHouseServer::start();
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let (file, truth) = crate::gen(dir.path(), "c.pcap", 60_000, 13, "pcap", &[]);
    // The single offline run the distributed one must equal, flow by flow.
    let (code, offline) =
        crate::analyze_json(&[file.to_str().unwrap(), "--no-store", "--top", "0"]);
    assert_eq!(code, 0);
    let engines: Vec<_> = (0..2u32)
        .map(|i| {
            // Each engine its own working directory: the ClickHouse spool
            // defaults to ./netspectra-spool/<database>, one writer each.
            let cwd = dir.path().join(format!("engine-{i}"));
            std::fs::create_dir(&cwd).unwrap();
            let mut cmd = bin();
            cmd.current_dir(&cwd)
                .args(engine_args(&server.url(), i, 2, &ch.url()))
                .args(["--idle-exit", "4"]);
            EngineProc::spawn(cmd, i)
        })
        .collect();
    let out = probe(&server.url(), &file, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "probe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["published"]["packets"], truth["ip_packets"]);
    let summaries: Vec<Value> = engines.into_iter().map(EngineProc::wait).collect();
    for s in &summaries {
        assert_eq!(s["nats"]["slow_consumer_events"], 0, "{s}");
        assert_eq!(s["store"], ch.url());
    }
    let db = ch.database();
    let port = ch.http_port();

    // Per source: summed over both engines, equal to the truth; each source
    // in exactly one engine's rows.
    let rows = clickhouse_rows(
        port,
        &format!(
            "SELECT hex(src_ip), uniqExact(engine_id), any(engine_id), sum(packets), sum(bytes) \
             FROM {db}.exact_rows WHERE task = 'per_src_ip' GROUP BY src_ip"
        ),
    );
    let expect = truth["per_src"].as_object().unwrap();
    assert_eq!(rows.len(), expect.len(), "number of sources");
    let mut sources_per_engine: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        let src = ip_from_hex(&r[0]);
        assert_eq!(r[1], "1", "source {src} was counted by both engines");
        *sources_per_engine.entry(r[2].clone()).or_default() += 1;
        let t = &expect[src.as_str()];
        assert_eq!(
            r[3].parse::<u64>().ok(),
            t["packets"].as_u64(),
            "packets of {src}"
        );
        assert_eq!(
            r[4].parse::<u64>().ok(),
            t["bytes"].as_u64(),
            "bytes of {src}"
        );
    }
    assert_eq!(
        sources_per_engine.keys().collect::<Vec<_>>(),
        ["engine-0", "engine-1"],
        "both engines got work, and every row carries its engine's id"
    );

    // Per flow: every 5-tuple's totals equal the offline run's, each flow
    // in one engine only, and the number of flows is the truth's.
    let rows = clickhouse_rows(
        port,
        &format!(
            "SELECT hex(src_ip), hex(dst_ip), src_port, dst_port, protocol, \
             uniqExact(engine_id), sum(packets), sum(bytes) FROM {db}.exact_rows \
             WHERE task = 'per_flow' GROUP BY src_ip, dst_ip, src_port, dst_port, protocol"
        ),
    );
    let mut stored: BTreeMap<FlowText, (u64, u64)> = BTreeMap::new();
    for r in &rows {
        let key = (
            ip_from_hex(&r[0]),
            ip_from_hex(&r[1]),
            r[2].parse().unwrap(),
            r[3].parse().unwrap(),
            r[4].parse().unwrap(),
        );
        assert_eq!(r[5], "1", "flow {key:?} was counted by both engines");
        stored.insert(key, (r[6].parse().unwrap(), r[7].parse().unwrap()));
    }
    assert_eq!(
        Some(stored.len() as u64),
        truth["distinct_flows"].as_u64(),
        "distinct flows"
    );
    let flows = crate::task(&offline, "per_flow")["rows"]
        .as_array()
        .unwrap();
    let reference: BTreeMap<FlowText, (u64, u64)> = flows
        .iter()
        .map(|r| {
            let k = &r["key"];
            (
                (
                    k["SrcIP"].as_str().unwrap().to_string(),
                    k["DstIP"].as_str().unwrap().to_string(),
                    k["SrcPort"].as_u64().unwrap(),
                    k["DstPort"].as_u64().unwrap(),
                    k["Protocol"].as_u64().unwrap(),
                ),
                (r["packets"].as_u64().unwrap(), r["bytes"].as_u64().unwrap()),
            )
        })
        .collect();
    assert!(
        stored == reference,
        "per-flow totals differ from the offline run"
    );
    let (p, b) = stored.values().fold((0, 0), |(p, b), v| (p + v.0, b + v.1));
    assert_eq!(Some(p), truth["ip_packets"].as_u64());
    assert_eq!(Some(b), truth["ip_bytes"].as_u64());

    // Both runs finished, one per engine, with what each consumed.
    let runs = clickhouse_rows(
        port,
        &format!("SELECT engine_id, status, packets FROM {db}.runs FINAL ORDER BY engine_id"),
    );
    assert_eq!(runs.len(), 2, "{runs:?}");
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r[0], format!("engine-{i}"));
        assert_eq!(r[1], "complete");
        assert_eq!(
            Some(r[2].parse::<u64>().unwrap()),
            summaries[i]["packets"].as_u64()
        );
    }
}

/// Destination port of the live test's datagrams (the probe filters on it).
const LIVE_PORT: u16 = 40_001;
/// Ethernet (14) + IPv4 (20) + UDP (8) around each payload.
const UDP_OVERHEAD: u64 = 42;

/// Whether process `pid` holds a packet socket (`/proc/PID/net/packet`
/// lists those of its namespace, which holds no other capture).
fn has_packet_socket(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/net/packet")).is_ok_and(|t| t.lines().count() > 1)
}

#[test]
fn probe_iface_on_a_veth_to_an_engine_counts_exactly_the_datagrams_sent() {
    use netspectra_testkit::netns::VethPair;
    // Declared first, dropped last: the processes below live in its namespaces.
    let pair = VethPair::new();
    // Server, engine and probe all in the capture namespace: its loopback
    // is its own, the host's is out of reach.
    let server = NatsServer::start_in_netns(&pair.ns_b, false);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let store = format!("sqlite:{}", db.display());
    let mut cmd = VethPair::command(&pair.ns_b, env!("CARGO_BIN_EXE_netspectra"));
    cmd.args(engine_args(&server.url(), 0, 1, &store))
        .args(["--idle-exit", "8"]);
    let engine = EngineProc::spawn(cmd, 0);
    let filter = format!("udp and dst port {LIVE_PORT}");
    let mut probe = VethPair::command(&pair.ns_b, env!("CARGO_BIN_EXE_netspectra"))
        .args(["probe", "--iface", &pair.if_b, "--bpf", &filter])
        .args(["--nats", &server.url(), "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !has_packet_socket(probe.id()) {
        assert!(
            probe.try_wait().unwrap().is_none(),
            "probe exited before capturing"
        );
        assert!(Instant::now() < deadline, "probe did not open its capture");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The socket exists; the filter is set right after it.
    std::thread::sleep(Duration::from_millis(500));

    // K datagrams from three sockets (three flows), lengths chosen here.
    let sent: Vec<(usize, u64)> = (0..40).map(|i| (i % 3, 5 + 31 * i as u64)).collect();
    let list: Vec<String> = sent.iter().map(|(s, n)| format!("({s},{n})")).collect();
    let script = format!(
        "import socket\n\
         socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]\n\
         for s in socks: s.bind(('{src}', 0))\n\
         for i, n in [{list}]: socks[i].sendto(b'x' * n, ('{dst}', {LIVE_PORT}))\n\
         print(' '.join(str(s.getsockname()[1]) for s in socks))\n",
        src = pair.ip_a,
        dst = pair.ip_b,
        list = list.join(","),
    );
    let out = VethPair::exec_in(&pair.ns_a, "python3", &["-c", &script]);
    assert!(
        out.status.success(),
        "the sender needs python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ports: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    // Well past the capture's 100 ms buffer timeout, then stop the probe.
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-TERM", &probe.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = probe.wait().unwrap();
    assert!(status.success(), "probe failed: {status}");
    let mut text = String::new();
    std::io::Read::read_to_string(probe.stdout.as_mut().unwrap(), &mut text).unwrap();
    let summary: Value = serde_json::from_str(text.trim()).unwrap();
    let k = sent.len() as u64;
    let bytes: u64 = sent.iter().map(|(_, n)| n + UDP_OVERHEAD).sum();
    assert_eq!(summary["packets"], k, "{summary}");
    assert_eq!(summary["bytes"], bytes);
    assert_eq!(summary["published"]["packets"], k);
    assert_eq!(summary["kernel"]["dropped"], 0, "{summary}");
    let s = engine.wait();
    assert_eq!(s["packets"], k, "{s}");
    assert_eq!(s["bytes"], bytes);

    // The store holds exactly what was sent: one source, three flows.
    let per_src = per_source(&db);
    assert_eq!(
        per_src,
        BTreeMap::from([(pair.ip_a.to_string(), (k, bytes))]),
        "per_src_ip"
    );
    let conn = open_db(&db);
    let mut stmt = conn
        .prepare(
            "SELECT src_port, dst_port, protocol, SUM(packets), SUM(bytes) FROM exact_rows \
             WHERE task = 'per_flow' GROUP BY src_port, dst_port, protocol",
        )
        .unwrap();
    let flows: Vec<(u64, u64, u64, u64, u64)> = stmt
        .query_map([], |r| {
            let n = |i| r.get::<_, i64>(i).map(|v| v as u64);
            Ok((n(0)?, n(1)?, n(2)?, n(3)?, n(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(flows.len(), ports.len(), "{flows:?}");
    for (sport, dport, proto, p, b) in flows {
        let i = ports.iter().position(|&x| x == sport).unwrap();
        let mine: Vec<u64> = sent
            .iter()
            .filter(|(s, _)| *s == i)
            .map(|(_, n)| n + UDP_OVERHEAD)
            .collect();
        assert_eq!((dport, proto), (u64::from(LIVE_PORT), 17));
        assert_eq!(p, mine.len() as u64, "packets of flow from port {sport}");
        assert_eq!(
            b,
            mine.iter().sum::<u64>(),
            "bytes of flow from port {sport}"
        );
    }
    let ids: Vec<String> = conn
        .prepare("SELECT DISTINCT engine_id FROM exact_rows")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids, ["engine-0"]);
}
