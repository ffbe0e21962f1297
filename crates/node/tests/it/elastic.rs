//! Engines started alike share the shards on their own (membership and
//! shard leases in NATS KV), over a real nats-server: every source's
//! stored totals equal the generator's truth, whether the engines settle
//! first (core NATS) or join and leave during the replay (JetStream).

use netspectra_bus::cluster;
use netspectra_bus::{BusConfig, ConsumerConfig};
use netspectra_capture::gen::Truth;
use netspectra_model::config::{Config, DurationText};
use netspectra_node::engine::{
    ClusterView, EngineConfig, EngineRole, EngineSummary, RunningEngine,
};
use netspectra_node::{NodeError, Shutdown};
use netspectra_testkit::nats::NatsServer;
use std::collections::BTreeMap;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(2);

/// Quarter-second windows in one-second periods: shards move at window
/// ends, so moves happen several times during a replay of a few seconds.
fn config() -> Config {
    let mut c = Config::default();
    c.aggregator.snapshot_interval = Some(DurationText(250_000_000));
    c.aggregator.period = DurationText(1_000_000_000);
    c
}

fn engine(
    nats: &NatsServer,
    db: &Path,
    id: &str,
    jetstream: bool,
) -> Result<RunningEngine, NodeError> {
    engine_idle(nats, db, id, jetstream, Duration::from_secs(6))
}

/// [`engine`], stopping after `idle` without a message.
fn engine_idle(
    nats: &NatsServer,
    db: &Path,
    id: &str,
    jetstream: bool,
    idle: Duration,
) -> Result<RunningEngine, NodeError> {
    let bus = BusConfig {
        name: format!("engine {id}"),
        jetstream,
        ..BusConfig::new(nats.url())
    };
    EngineRole::start(EngineConfig {
        config: config(),
        workers: 1,
        consumer: ConsumerConfig {
            shards: Vec::new(),
            bus,
            interop_subject: None,
            ack_wait: Duration::from_secs(3),
            queue: 256,
        },
        elastic: Some(TTL),
        engine_id: id.into(),
        store: Some(format!("sqlite:{}", db.display())),
        idle_exit: Some(idle),
        metrics: None,
    })
}

type Running = (
    ClusterView,
    Shutdown,
    JoinHandle<Result<EngineSummary, NodeError>>,
);

fn spawn(engine: RunningEngine) -> Running {
    let view = engine.cluster();
    let stop = Shutdown::new();
    let s = stop.clone();
    (view, stop, std::thread::spawn(move || engine.wait(&s)))
}

/// Waits until every engine consumes exactly the shards rendezvous hashing
/// gives it among all of `engines` (id, view).
fn settle(engines: &[(&str, &ClusterView)], shards: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ids: Vec<String> = engines.iter().map(|e| e.0.to_string()).collect();
    ids.sort();
    while !engines
        .iter()
        .all(|(id, v)| v.members() == ids && v.shards() == cluster::assigned(&ids, id, shards))
    {
        assert!(
            Instant::now() < deadline,
            "engines did not settle: {:?}",
            engines
                .iter()
                .map(|(id, v)| (id, v.members(), v.shards()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Packets and bytes per source address, summed over every run and engine.
fn stored_per_src(db: &Path) -> BTreeMap<String, (u64, u64)> {
    let c = rusqlite::Connection::open(db).unwrap();
    // One SQL row per key (the store keeps them in blocks).
    netspectra_store::expand_exact_rows(&c).unwrap();
    let mut stmt = c
        .prepare(
            "SELECT src_ip, SUM(packets), SUM(bytes) FROM exact_rows \
             WHERE task = 'per_src_ip' GROUP BY src_ip",
        )
        .unwrap();
    stmt.query_map([], |r| {
        let ip: Vec<u8> = r.get(0)?;
        let ip: [u8; 16] = ip.try_into().expect("16-byte address");
        Ok((
            netspectra_model::ip::to_string(&ip),
            (r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64),
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn assert_exact(db: &Path, truth: &Truth) {
    let stored = stored_per_src(db);
    let want: BTreeMap<String, (u64, u64)> = truth
        .per_src
        .iter()
        .map(|(k, v)| (k.clone(), (v.packets, v.bytes)))
        .collect();
    let total: u64 = stored.values().map(|v| v.0).sum();
    assert_eq!(total, truth.ip_packets, "stored packets against the truth");
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, v)| stored.get(*k) != Some(v))
        .take(5)
        .map(|(k, v)| (k, v, stored.get(k)))
        .collect();
    assert!(wrong.is_empty(), "sources stored wrong: {wrong:?}");
}

#[test]
fn three_engines_started_alike_split_the_shards_and_count_each_packet_once() {
    let nats = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let (path, truth) = crate::capture(dir.path(), 40_000, 21);
    let db = dir.path().join("store.db");
    let ids = ["e-a", "e-b", "e-c"];
    let engines: Vec<Running> = ids
        .iter()
        .map(|id| spawn(engine(&nats, &db, id, false).unwrap()))
        .collect();
    let views: Vec<(&str, &ClusterView)> = ids
        .iter()
        .copied()
        .zip(engines.iter().map(|e| &e.0))
        .collect();
    settle(&views, netspectra_bus::DEFAULT_SHARDS);
    // A second engine with a live engine's id is refused, naming the id.
    let err = engine(&nats, &db, "e-b", false).err().expect("id in use");
    assert!(err.to_string().contains("'e-b' is in use"), "{err}");

    crate::replay(nats.url(), path, false, false, &config())
        .join()
        .unwrap();
    let mut packets = Vec::new();
    let mut summaries = Vec::new();
    for (_, _, h) in engines {
        let s = h.join().unwrap().unwrap().json();
        assert_eq!(s["lost_batches"], 0, "settled engines lose nothing: {s}");
        packets.push(s["packets"].as_u64().unwrap());
        summaries.push(s.to_string());
    }
    // The engines' whole summaries in the messages: this once failed in a
    // loaded CI run (sum off, no batch counted lost) and passed on every
    // rerun; they say whether NATS reported a slow consumer.
    assert!(
        packets.iter().all(|&p| p > 0),
        "each engine had work: {packets:?}\n{summaries:#?}"
    );
    assert_eq!(
        packets.iter().sum::<u64>(),
        truth.ip_packets,
        "{packets:?}\n{summaries:#?}"
    );
    assert_exact(&db, &truth);
    // Settled before the first packet: no period was split.
    let c = rusqlite::Connection::open(&db).unwrap();
    let partial: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM sketch_rows WHERE partial = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(partial, 0);
}

#[test]
fn leases_lost_while_nats_is_gone_are_taken_again_and_each_consumed_once() {
    let mut nats = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let (path, truth) = crate::capture(dir.path(), 40_000, 23);
    let db = dir.path().join("store.db");
    // Idle long enough to outlast the outage; it stops on its own once
    // the replay is consumed.
    let idle = Duration::from_secs(20);
    let (view, _, h) = spawn(engine_idle(&nats, &db, "l-a", true, idle).unwrap());
    let shards = netspectra_bus::DEFAULT_SHARDS;
    settle(&[("l-a", &view)], shards);
    // Down for several TTLs: the leases expire, and heartbeats fail while
    // they are found lost.
    nats.stop();
    std::thread::sleep(4 * TTL);
    // The restarted server has forgotten the lease bucket (memory storage).
    nats.start_again();
    // Once the leases are found lost (at the first renewal), each shard
    // is taken and consumed once again: a lost lease that was not stopped
    // would be taken and subscribed a second time, and a bucket not
    // created again would leave every shard without a consumer.
    std::thread::sleep(2 * TTL);
    settle(&[("l-a", &view)], shards);
    let summary = crate::replay(nats.url(), path, true, true, &config())
        .join()
        .unwrap();
    assert_eq!(summary["published"]["dropped_batches"], 0, "{summary}");
    let s = h.join().unwrap().unwrap().json();
    assert_eq!(s["acks"]["unacked"].as_u64(), Some(0), "{s}");
    assert_eq!(s["packets"].as_u64(), Some(truth.ip_packets), "{s}");
    assert_exact(&db, &truth);
}

#[test]
fn jetstream_engines_joining_and_leaving_mid_replay_lose_and_repeat_nothing() {
    let nats = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    // About 3 s of traffic, replayed at its pace.
    let (path, truth) = crate::capture(dir.path(), 300_000, 22);
    let db = dir.path().join("store.db");
    // No waiting for anyone: the stream keeps what is not consumed yet.
    // Moves wait for period ends: a loaded machine may need a while, and an
    // engine that got nothing yet must not leave on its idle timer.
    let idle = Duration::from_secs(12);
    let first: Vec<Running> = ["j-a", "j-b", "j-c"]
        .iter()
        .map(|id| spawn(engine_idle(&nats, &db, id, true, idle).unwrap()))
        .collect();
    let probe = crate::replay(nats.url(), path, true, true, &config());
    std::thread::sleep(Duration::from_millis(700));
    // A fourth joins mid-replay, and one of the first three stops.
    let fourth = spawn(engine_idle(&nats, &db, "j-d", true, idle).unwrap());
    // ...once it has taken its share.
    let deadline = Instant::now() + Duration::from_secs(20);
    while first[1].0.shards().is_empty() {
        assert!(Instant::now() < deadline, "j-b never got a shard");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    first[1].1.trigger();
    probe.join().unwrap();
    let mut applied = Vec::new();
    for (_, _, h) in first.into_iter().chain([fourth]) {
        let s = h.join().unwrap().unwrap().json();
        assert_eq!(s["acks"]["unacked"].as_u64(), Some(0), "{s}");
        applied.push(s["packets"].as_u64().unwrap());
    }
    eprintln!("applied per engine: {applied:?}");
    assert!(
        applied.iter().all(|&p| p > 0),
        "every engine had work: {applied:?}"
    );
    assert_exact(&db, &truth);
    // (Which periods are partial depends on when j-b left: the SIGKILL test
    // of the binary checks that a failover marks them.)
}

#[test]
fn without_jetstream_on_the_server_an_elastic_engine_says_how_to_fix_it() {
    let nats = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let err = engine(&nats, &dir.path().join("s.db"), "e-x", false)
        .err()
        .expect("no KV without JetStream");
    let text = err.to_string();
    assert!(
        text.contains("-js") && text.contains("--engines N --engine-index I"),
        "{text}"
    );
}

#[test]
fn one_engine_of_the_cluster_applies_the_retention() {
    use netspectra_node::offline::{Analysis, AnalysisConfig};
    let nats = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    // Rows of the generator's capture are from 2026-01-01: older than 1 h.
    let (path, _) = crate::capture(dir.path(), 5_000, 23);
    let db = dir.path().join("store.db");
    let report = Analysis::run(
        AnalysisConfig {
            files: vec![path],
            config: Config::default(),
            workers: 1,
            store: Some(format!("sqlite:{}", db.display())),
            verify: false,
            top: 0,
            append: false,
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(report.packets > 0);
    let rows = || -> i64 {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM exact_rows", [], |r| r.get(0))
            .unwrap()
    };
    assert!(rows() > 0);
    let with_retention = |id: &str| {
        let bus = BusConfig::new(nats.url());
        let mut config = config();
        config.store.retention = Some(DurationText(3600 * 1_000_000_000));
        EngineRole::start(EngineConfig {
            config,
            workers: 1,
            consumer: ConsumerConfig {
                shards: Vec::new(),
                bus,
                interop_subject: None,
                ack_wait: Duration::from_secs(3),
                queue: 16,
            },
            elastic: Some(TTL),
            engine_id: id.into(),
            store: Some(format!("sqlite:{}", db.display())),
            idle_exit: None,
            metrics: None,
        })
        .unwrap()
    };
    let engines: Vec<Running> = ["r-a", "r-b"]
        .iter()
        .map(|id| spawn(with_retention(id)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    while rows() > 0 {
        assert!(
            Instant::now() < deadline,
            "expired rows still there: {}",
            rows()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (_, stop, h) in engines {
        stop.trigger();
        h.join().unwrap().unwrap();
    }
}

#[test]
fn a_jetstream_engine_joining_mid_replay_takes_shards_at_period_ends_splitting_no_sketch() {
    let nats = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    // About 6 s of traffic at its pace, 1 s periods. The handover (the
    // join seen at a heartbeat, the first engine stopping at a period end,
    // that window stored, the lease given back and taken) must be done
    // before the last period starts, or the first engine keeps every shard
    // to the end. With 3 s of traffic it once was not, in a loaded CI run.
    let (path, truth) = crate::capture(dir.path(), 600_000, 24);
    let db = dir.path().join("store.db");
    let first = spawn(engine(&nats, &db, "p-a", true).unwrap());
    let probe = crate::replay(nats.url(), path, true, true, &config());
    std::thread::sleep(Duration::from_millis(800));
    let second = spawn(engine(&nats, &db, "p-b", true).unwrap());
    probe.join().unwrap();
    let mut applied = Vec::new();
    let mut summaries = Vec::new();
    for (_, _, h) in [first, second] {
        let s = h.join().unwrap().unwrap().json();
        assert_eq!(s["acks"]["unacked"].as_u64(), Some(0), "{s}");
        applied.push(s["packets"].as_u64().unwrap());
        summaries.push(s.to_string());
    }
    assert!(
        applied.iter().all(|&p| p > 0),
        "both had work: {applied:?}\n{summaries:#?}"
    );
    assert_exact(&db, &truth);
    let c = rusqlite::Connection::open(&db).unwrap();
    let count = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(
        count("SELECT COUNT(*) FROM sketch_rows WHERE partial = 1"),
        0,
        "shards moved at period ends: every period whole in one engine"
    );
}
