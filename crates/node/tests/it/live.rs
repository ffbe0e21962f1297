//! The live run role on the loopback interface: it counts exactly the
//! datagrams the test sends to a port of its own (the BPF filter keeps
//! everything else out), and stops on its shutdown. Needs root and the
//! libpcap runtime library (the test fails, never skips, without them).

use netspectra_capture::live::LiveOptions;
use netspectra_model::config::Config;
use netspectra_node::live::{LiveRun, LiveRunConfig};
use netspectra_node::Shutdown;
use std::net::UdpSocket;
use std::time::Duration;

#[test]
fn the_live_role_counts_what_was_sent_and_stops_on_shutdown() {
    netspectra_testkit::netns::require_root();
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = receiver.local_addr().unwrap().port();
    let run = LiveRun::start(LiveRunConfig {
        capture: LiveOptions {
            bpf: Some(format!("udp and dst port {port}")),
            timeout_ms: 10,
            ..LiveOptions::new("lo")
        },
        config: Config::default(),
        workers: 1,
        store: None,
        top: 0,
        duration: None,
        count: None,
        persist: None,
        serve: None,
        metrics: None,
    })
    .unwrap();
    assert!(run.describe().starts_with("capturing on lo"));
    let shutdown = Shutdown::new();
    let waiting = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || run.wait(&shutdown, &mut |_| {}))
    };
    std::thread::sleep(Duration::from_millis(300));
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sizes: Vec<usize> = (0..25).map(|i| 20 + 13 * i).collect();
    for &n in &sizes {
        sender.send_to(&vec![7u8; n], ("127.0.0.1", port)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    shutdown.trigger();
    let summary = waiting.join().unwrap().unwrap();
    assert!(summary.error.is_none());
    let report = &summary.report;
    assert_eq!(report.packets, sizes.len() as u64);
    // Loopback frames: a 14-byte Ethernet header, IPv4 (20) and UDP (8).
    let want_bytes: u64 = sizes.iter().map(|&n| n as u64 + 42).sum();
    assert_eq!(report.bytes, want_bytes);
    assert_eq!(report.engine.tasks[0].packets, sizes.len() as u64);
    assert_eq!(summary.capture_json()["stopped_by"], "signal");
}

#[test]
fn an_idle_links_window_is_stored_at_its_end_plus_grace_while_the_run_goes_on() {
    netspectra_testkit::netns::require_root();
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = receiver.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let mut config = Config::default();
    // One-second windows, the default 2 s grace.
    config.aggregator.snapshot_interval =
        Some(netspectra_model::config::DurationText(1_000_000_000));
    let run = LiveRun::start(LiveRunConfig {
        capture: LiveOptions {
            bpf: Some(format!("udp and dst port {port}")),
            timeout_ms: 10,
            ..LiveOptions::new("lo")
        },
        config,
        workers: 1,
        store: Some(format!("sqlite:{}", db.display())),
        top: 0,
        duration: None,
        count: None,
        persist: None,
        serve: None,
        metrics: None,
    })
    .unwrap();
    let shutdown = Shutdown::new();
    let waiting = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || run.wait(&shutdown, &mut |_| {}))
    };
    std::thread::sleep(Duration::from_millis(300));
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..10 {
        sender.send_to(&[1u8; 32], ("127.0.0.1", port)).unwrap();
    }
    let sent = std::time::Instant::now();
    // Then nothing: the window must still be stored, within 1 s + 2 s.
    let stored = || -> i64 {
        rusqlite::Connection::open(&db)
            .ok()
            .and_then(|c| {
                c.query_row(
                    "SELECT COALESCE(SUM(packets), 0) FROM exact_rows WHERE task = 'per_src_ip'",
                    [],
                    |r| r.get(0),
                )
                .ok()
            })
            .unwrap_or(0)
    };
    while stored() < 10 {
        assert!(
            sent.elapsed() < Duration::from_secs(8),
            "the idle window was not stored while the run went on"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!waiting.is_finished(), "stored before any stop");
    shutdown.trigger();
    waiting.join().unwrap().unwrap();
    assert_eq!(stored(), 10, "and counted once");
}
