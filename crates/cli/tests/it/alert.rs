//! `netspectra alert` as processes: two replicas on a real NATS server, the
//! leader killed with SIGKILL while the store grows, every transition
//! notified exactly once; `alert backtest --format json` and `query alerts`
//! over what was stored.

use crate::bin;
use netspectra_testkit::nats::NatsServer;
use netspectra_testkit::planted::{self, WINDOWS};
use netspectra_testkit::webhook::WebhookReceiver;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Analyzes `packets` into the SQLite store `db` (alerting off).
fn analyze(dir: &Path, name: &str, packets: &[planted::Packet], config: &Path, db: &Path) {
    let pcap = dir.join(name);
    planted::write_pcap(&pcap, packets).unwrap();
    let out = bin()
        .args(["analyze", pcap.to_str().unwrap(), "--store"])
        .arg(db)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn alert(id: &str, config: &Path, db: &Path, nats: &str, log: &Path, metrics: &str) -> Child {
    bin()
        .args(["alert", "--config"])
        .arg(config)
        .arg("--store")
        .arg(db)
        .args([
            "--nats",
            nats,
            "--id",
            id,
            "--lease-ttl",
            "2",
            "--metrics",
            metrics,
        ])
        .env("NETSPECTRA_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_alert_replicas_notify_every_transition_once_when_the_leader_is_killed() {
    let nats = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let hook = WebhookReceiver::start();
    let yaml = planted::config_yaml(&hook.url(), &[]);
    let alert_cfg = dir.path().join("alert.yaml");
    std::fs::write(&alert_cfg, &yaml).unwrap();
    let analyze_cfg = dir.path().join("analyze.yaml");
    std::fs::write(
        &analyze_cfg,
        yaml.replace("enabled: true", "enabled: false"),
    )
    .unwrap();
    let db = dir.path().join("ns.db");
    let packets = planted::traffic();

    analyze(
        dir.path(),
        "a.pcap",
        &planted::windows(&packets, 0, 1),
        &analyze_cfg,
        &db,
    );
    let a_metrics = format!("127.0.0.1:{}", netspectra_testkit::free_port());
    let mut a = alert(
        "a",
        &alert_cfg,
        &db,
        &nats.url(),
        &dir.path().join("a.log"),
        &a_metrics,
    );
    let state_saved = || {
        rusqlite::Connection::open(&db)
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM alert_state", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .is_ok_and(|n| n > 0)
    };
    wait_until(
        "a leads and saved its state",
        Duration::from_secs(30),
        state_saved,
    );
    let status = |path: &str| {
        reqwest::blocking::get(format!("http://{a_metrics}{path}"))
            .map_or(0, |r| r.status().as_u16())
    };
    wait_until("a is ready", Duration::from_secs(10), || {
        status("/readyz") == 200
    });
    assert_eq!(status("/healthz"), 200);
    let b_metrics = format!("127.0.0.1:{}", netspectra_testkit::free_port());
    let mut b = alert(
        "b",
        &alert_cfg,
        &db,
        &nats.url(),
        &dir.path().join("b.log"),
        &b_metrics,
    );

    // Windows 1–3 land: the big talker and the scanner fire (two
    // evaluations, two calls).
    analyze(
        dir.path(),
        "b.pcap",
        &planted::windows(&packets, 1, 4),
        &analyze_cfg,
        &db,
    );
    wait_until("a notified the firings", Duration::from_secs(30), || {
        hook.bodies().len() >= 2
    });
    a.kill().unwrap();
    a.wait().unwrap();

    // The rest lands after the leader died: b takes over within the lease.
    analyze(
        dir.path(),
        "c.pcap",
        &planted::windows(&packets, 4, WINDOWS),
        &analyze_cfg,
        &db,
    );
    let want = planted::truth(&packets);
    wait_until("b notified the rest", Duration::from_secs(40), || {
        planted::seen(&planted::from_bodies(&hook.bodies())).len() >= want.len()
    });
    std::thread::sleep(Duration::from_secs(2)); // nothing more may come
    let _ = b.kill();
    b.wait().unwrap();
    assert_eq!(
        planted::seen(&planted::from_bodies(&hook.bodies())),
        want,
        "every transition exactly once; b's log:\n{}",
        std::fs::read_to_string(dir.path().join("b.log")).unwrap_or_default()
    );
    let b_log = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    assert!(b_log.contains("leadership taken"), "{b_log}");

    // The stored history, replayed: the same transitions, sending nothing.
    let out = bin()
        .args(["alert", "backtest", "--format", "json", "--config"])
        .arg(&alert_cfg)
        .arg("--store")
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8(out.stdout).unwrap();
    assert!(json.starts_with("{\"alerts\":["), "{json}");
    assert_eq!(planted::seen(&planted::from_bodies(&[json])), want);
    let calls = hook.bodies().len();
    let table = bin()
        .args(["alert", "backtest", "--config"])
        .arg(&alert_cfg)
        .arg("--store")
        .arg(&db)
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.lines().any(|l| l.contains("resolved")
            && l.contains("scanner")
            && l.contains("SrcIP=10.8.0.1")),
        "{table}"
    );
    assert_eq!(hook.bodies().len(), calls, "a backtest sends nothing");
}
