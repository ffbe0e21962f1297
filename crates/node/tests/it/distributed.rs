//! The probe and engine roles over a real nats-server on loopback: the
//! engine applies exactly the IP packets the probe replayed, and both stop
//! on their shutdown.

use netspectra_bus::{BatchLimits, BusConfig, ConsumerConfig};
use netspectra_model::config::{Config, DurationText};
use netspectra_node::engine::{static_shards, EngineConfig, EngineRole};
use netspectra_node::probe::{default_align_ns, Probe, ProbeConfig, ProbeInput};
use netspectra_node::Shutdown;
use netspectra_testkit::nats::NatsServer;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn a_probe_replay_reaches_the_engine_exactly() {
    let nats = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let (path, truth) = crate::capture(dir.path(), 30_000, 11);
    let db = dir.path().join("engine.db");
    // It stops by itself once nothing arrived for a few seconds.
    let engine =
        EngineRole::start(engine_config(&nats, &db, Some(Duration::from_secs(4)))).unwrap();
    assert!(engine.describe().contains("consuming shards"));
    let engine_thread = std::thread::spawn(move || engine.wait(&Shutdown::new()));

    let probe = Probe::start(ProbeConfig {
        input: ProbeInput::Files {
            paths: vec![path],
            realtime: false,
        },
        bus: BusConfig {
            name: "probe test".into(),
            ..BusConfig::new(nats.url())
        },
        probe_id: "probe-test".into(),
        limits: BatchLimits {
            align_ns: default_align_ns(&Config::default()),
            ..BatchLimits::default()
        },
        metrics: None,
    })
    .unwrap();
    let summary = probe.wait(&Shutdown::new()).unwrap();
    assert!(!summary.damaged());
    let published = summary.json();
    assert_eq!(published["packets"].as_u64(), Some(truth.packets));
    assert_eq!(
        published["published"]["packets"].as_u64(),
        Some(truth.ip_packets)
    );

    let engine_summary = engine_thread.join().unwrap().unwrap().json();
    assert_eq!(
        engine_summary["packets"].as_u64(),
        Some(truth.ip_packets),
        "{engine_summary}"
    );
    assert_eq!(stored(&db), truth.ip_packets);
}

#[test]
fn the_last_window_is_stored_at_its_end_plus_grace_while_the_engine_runs() {
    let nats = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let (path, truth) = crate::capture(dir.path(), 5_000, 12);
    let db = dir.path().join("engine.db");
    let mut config = engine_config(&nats, &db, None);
    // One-second windows: stored within 1 s + the 2 s default grace.
    config.config.aggregator.snapshot_interval = Some(DurationText(1_000_000_000));
    let engine = EngineRole::start(config).unwrap();
    let shutdown = Shutdown::new();
    let waiting = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || engine.wait(&shutdown))
    };
    let probe = Probe::start(ProbeConfig {
        input: ProbeInput::Files {
            paths: vec![path],
            realtime: false,
        },
        bus: BusConfig::new(nats.url()),
        probe_id: "probe-idle".into(),
        limits: BatchLimits::default(),
        metrics: None,
    })
    .unwrap();
    probe.wait(&Shutdown::new()).unwrap();
    let replayed = Instant::now();
    // No packet follows the replay; the default grace is 2 s.
    while stored(&db) < truth.ip_packets {
        assert!(
            replayed.elapsed() < Duration::from_secs(10),
            "the idle window was not stored: {} of {}",
            stored(&db),
            truth.ip_packets
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!waiting.is_finished(), "stored while the engine still runs");
    shutdown.trigger();
    waiting.join().unwrap().unwrap();
    assert_eq!(stored(&db), truth.ip_packets, "nothing counted twice");
}

#[test]
fn an_engine_stops_on_its_shutdown_and_closes_its_run() {
    let nats = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("engine.db");
    let engine = EngineRole::start(engine_config(&nats, &db, None)).unwrap();
    let shutdown = Shutdown::new();
    let started = Instant::now();
    let waiting = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || engine.wait(&shutdown))
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "it runs until told to stop");
    shutdown.trigger();
    let summary = waiting.join().unwrap().unwrap().json();
    assert_eq!(summary["packets"].as_u64(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5));
    let c = rusqlite::Connection::open(&db).unwrap();
    let status: String = c
        .query_row("SELECT status FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "complete");
}

fn engine_config(nats: &NatsServer, db: &Path, idle_exit: Option<Duration>) -> EngineConfig {
    let bus = BusConfig {
        name: "engine test".into(),
        ..BusConfig::new(nats.url())
    };
    EngineConfig {
        config: Config::default(),
        workers: 1,
        consumer: ConsumerConfig {
            shards: static_shards(0, 1, bus.shards).unwrap(),
            bus,
            interop_subject: None,
            ack_wait: Duration::from_secs(30),
            queue: 256,
        },
        elastic: None,
        engine_id: "engine-test".into(),
        store: Some(format!("sqlite:{}", db.display())),
        idle_exit,
        metrics: None,
    }
}

/// Packets the store holds for `per_src_ip`.
fn stored(db: &Path) -> u64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT COALESCE(SUM(packets), 0) FROM exact_rows WHERE task = 'per_src_ip'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap() as u64
}

fn jetstream_engine(nats: &NatsServer, db: &Path) -> EngineConfig {
    let mut cfg = engine_config(nats, db, Some(Duration::from_secs(6)));
    cfg.consumer.bus.jetstream = true;
    cfg.consumer.ack_wait = Duration::from_secs(2);
    cfg
}

#[test]
fn a_probe_started_before_nats_publishes_everything_once_nats_is_up() {
    let mut nats = NatsServer::reserve(true);
    let dir = tempfile::tempdir().unwrap();
    let (path, truth) = crate::capture(dir.path(), 30_000, 13);
    let db = dir.path().join("engine.db");
    let probe = crate::replay(nats.url(), path, true, false, &Config::default());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!probe.is_finished(), "the probe waits for NATS");
    nats.start_again();
    let engine = EngineRole::start(jetstream_engine(&nats, &db)).unwrap();
    let summary = probe.join().unwrap();
    assert_eq!(summary["published"]["dropped_batches"], 0, "{summary}");
    assert_eq!(
        summary["published"]["packets"].as_u64(),
        Some(truth.ip_packets)
    );
    assert!(summary["published"]["retries"].as_u64().unwrap() > 0);
    engine.wait(&Shutdown::new()).unwrap();
    assert_eq!(stored(&db), truth.ip_packets);
}

#[test]
fn nats_restarted_mid_replay_loses_and_repeats_nothing() {
    let mut nats = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    // About 3 s of traffic at its own pace.
    let (path, truth) = crate::capture(dir.path(), 300_000, 14);
    let db = dir.path().join("engine.db");
    let engine = EngineRole::start(jetstream_engine(&nats, &db)).unwrap();
    let engine = std::thread::spawn(move || engine.wait(&Shutdown::new()));
    let probe = crate::replay(nats.url(), path, true, true, &Config::default());
    std::thread::sleep(Duration::from_millis(1200));
    nats.stop();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!probe.is_finished(), "restarted mid-replay");
    nats.start_again();
    let summary = probe.join().unwrap();
    assert_eq!(summary["published"]["dropped_batches"], 0, "{summary}");
    let engine = engine.join().unwrap().unwrap().json();
    assert_eq!(engine["acks"]["unacked"], 0, "{engine}");
    assert_eq!(
        stored(&db),
        truth.ip_packets,
        "probe {summary}\nengine {engine}"
    );
}
