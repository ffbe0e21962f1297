//! Alerting end to end: a capture with planted heavy sources and a scanner,
//! rules over it, notifications to a real webhook receiver, transitions
//! checked against truth computed here from the packets written, and the
//! backtest checked against what the replay notified.

use netspectra_capture::writer::PcapWriter;
use netspectra_model::alert::AlertRecord;
use netspectra_model::config::Config;
use netspectra_node::alerter::{backtest, Alerter, AlerterConfig};
use netspectra_node::offline::{Analysis, AnalysisConfig};
use netspectra_node::Shutdown;
use netspectra_store::read::Reader;
use netspectra_store::StoreUrl;
use netspectra_testkit::webhook::WebhookReceiver;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

const S: u64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600 * S;
const WINDOW: u64 = 10 * S;
const WINDOWS: u64 = 8;
/// Bytes above which a source is a big talker in a window.
const BIG: u64 = 100_000;
/// Distinct destinations above which a source is a scanner in a period.
const SCAN: u64 = 1_000;

/// One packet: time, source, destination, bytes on the wire.
type Packet = (u64, [u8; 4], [u8; 4], u32);

/// Background of 40 small sources in every window, big talker 10.9.0.1 in
/// windows 1–3, big talker 10.9.0.2 in window 5 only, scanner 10.8.0.1
/// (1 500 destinations) in windows 2–4.
fn traffic() -> Vec<Packet> {
    let mut out = Vec::new();
    for w in 0..WINDOWS {
        let base = T0 + w * WINDOW;
        let t = |i: u64| base + i * 1_000_000;
        let mut i = 0;
        for src in 0..40u8 {
            for k in 0..5u8 {
                out.push((t(i), [10, 0, 0, src], [192, 168, 0, k], 200));
                i += 1;
            }
        }
        if (1..=3).contains(&w) {
            for k in 0..150 {
                out.push((t(i), [10, 9, 0, 1], [192, 168, 1, (k % 7) as u8], 1_000));
                i += 1;
            }
        }
        if w == 5 {
            for k in 0..120 {
                out.push((t(i), [10, 9, 0, 2], [192, 168, 1, (k % 3) as u8], 1_200));
                i += 1;
            }
        }
        if (2..=4).contains(&w) {
            for d in 0..1_500u32 {
                let dst = [172, 16, (d >> 8) as u8, d as u8];
                out.push((t(i), [10, 8, 0, 1], dst, 64));
                i += 1;
            }
        }
    }
    out.sort_by_key(|p| p.0);
    out
}

/// Ethernet + IPv4 + UDP, headers only (the wire length says the rest).
fn frame(src: [u8; 4], dst: [u8; 4], wire: u32) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (wire - 14) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&53u16.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// Writes `packets` as a pcap at `path`.
fn write_pcap(path: &Path, packets: &[Packet]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::new(std::io::BufWriter::new(file), 1, 65535, true).unwrap();
    for &(t, s, d, len) in packets {
        w.write_packet(t, len, &frame(s, d, len)).unwrap();
    }
    w.finish().unwrap();
}

/// Rules: big talker by bytes (per source), scanner by distinct
/// destinations, both to the webhook at `hook`.
fn config(hook: &str, extra_rules: &[&str]) -> Config {
    let mut lines = vec![
        "aggregator:".to_string(),
        "  period: 10s".into(),
        "  snapshot_interval: 10s".into(),
        "  num_workers: 2".into(),
        "alerter:".into(),
        "  enabled: true".into(),
        "  check_interval: 1s".into(),
        "  rules:".into(),
        format!("    - {{name: big_talker, task_name: per_src_ip, metric: bytes, operator: '>', threshold: {BIG}}}"),
        format!("    - {{name: scanner, task_name: per_src_ip_spread, metric: super_spreader_spread, operator: '>', threshold: {SCAN}, severity: critical}}"),
    ];
    lines.extend(extra_rules.iter().map(|r| format!("    - {r}")));
    lines.push("  notifiers:".into());
    lines.push(format!(
        "    - {{name: hook, type: webhook, url: '{hook}'}}"
    ));
    Config::from_yaml(&(lines.join("\n") + "\n"), &|_| None).unwrap()
}

/// What the rules must find, from the packets: (state, rule, source,
/// evaluation time) for every transition, in time order.
fn truth(packets: &[Packet]) -> Vec<(String, String, String, u64)> {
    let mut bytes: BTreeMap<(u64, [u8; 4]), u64> = BTreeMap::new();
    let mut dsts: BTreeMap<(u64, [u8; 4]), HashSet<[u8; 4]>> = BTreeMap::new();
    for &(t, s, d, len) in packets {
        let w = (t - T0) / WINDOW;
        *bytes.entry((w, s)).or_default() += u64::from(len);
        dsts.entry((w, s)).or_default().insert(d);
    }
    let mut holds: Vec<(&str, u64, [u8; 4])> = Vec::new();
    for (&(w, s), &b) in &bytes {
        if b > BIG {
            holds.push(("big_talker", w, s));
        }
    }
    for ((w, s), d) in &dsts {
        if d.len() as u64 > SCAN {
            holds.push(("scanner", *w, *s));
        }
    }
    let mut out = Vec::new();
    for rule in ["big_talker", "scanner"] {
        let keys: BTreeSet<[u8; 4]> = holds.iter().filter(|h| h.0 == rule).map(|h| h.2).collect();
        for key in keys {
            let mut firing = false;
            for w in 0..WINDOWS {
                let on = holds.contains(&(rule, w, key));
                let end = T0 + (w + 1) * WINDOW;
                let ip = format!("{}.{}.{}.{}", key[0], key[1], key[2], key[3]);
                if on && !firing {
                    out.push(("firing".to_string(), rule.to_string(), ip, end));
                } else if !on && firing {
                    out.push(("resolved".to_string(), rule.to_string(), ip, end));
                }
                firing = on;
            }
        }
    }
    out.sort_by(|a, b| (a.3, &a.1, &a.2).cmp(&(b.3, &b.1, &b.2)));
    out
}

/// The same view of found transitions.
fn seen(alerts: &[AlertRecord]) -> Vec<(String, String, String, u64)> {
    let mut out: Vec<_> = alerts
        .iter()
        .map(|a| {
            let key: serde_json::Value = serde_json::from_str(&a.key).unwrap();
            (
                a.state.clone(),
                a.rule.clone(),
                key["SrcIP"].as_str().unwrap_or_default().to_string(),
                a.ends_at_ns.unwrap_or(a.starts_at_ns),
            )
        })
        .collect();
    out.sort_by(|a, b| (a.3, &a.1, &a.2).cmp(&(b.3, &b.1, &b.2)));
    out
}

/// Transitions from webhook bodies (each `{"alerts": [...]}`).
fn from_bodies(bodies: &[String]) -> Vec<AlertRecord> {
    bodies
        .iter()
        .flat_map(|b| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            v["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(AlertRecord::from_json)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn analyze(files: Vec<PathBuf>, config: Config, store: &Path) -> netspectra_node::report::Report {
    Analysis::run(
        AnalysisConfig {
            files,
            config,
            workers: 0,
            store: Some(store.display().to_string()),
            verify: false,
            top: 5,
            append: false,
        },
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn planted_sources_fire_and_resolve_as_the_truth_says_and_backtest_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let packets = traffic();
    let pcap = dir.path().join("planted.pcap");
    write_pcap(&pcap, &packets);
    let hook = WebhookReceiver::start();
    let db = dir.path().join("alerts.db");
    let report = analyze(vec![pcap], config(&hook.url(), &[]), &db);

    let want = truth(&packets);
    assert_eq!(want.len(), 6, "the plan: 3 keys fire and resolve: {want:?}");
    let outcome = report.alerts.expect("alerting enabled");
    assert_eq!(seen(&outcome.alerts), want);
    assert_eq!((outcome.sent, outcome.failed), (outcome.sent, 0));

    // Every transition was notified exactly once, grouped per evaluation.
    let bodies = hook.wait_for(1, Duration::from_secs(10));
    assert_eq!(seen(&from_bodies(&bodies)), want);
    let groups = bodies.len();
    let times: BTreeSet<u64> = want.iter().map(|w| w.3).collect();
    assert_eq!(groups, times.len(), "one webhook call per evaluation time");

    // Stored, and a backtest over the store finds the same transitions.
    let url = StoreUrl::parse(&db.display().to_string()).unwrap();
    let replayed = backtest(&config(&hook.url(), &[]), &url, 0, u64::MAX >> 1).unwrap();
    assert_eq!(seen(&replayed), want);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored = rt
        .block_on(
            Reader::open(&url)
                .unwrap()
                .alerts(&netspectra_model::alert::AlertFilter {
                    limit: 100,
                    ..Default::default()
                }),
        )
        .unwrap();
    assert_eq!(seen(&stored), want);
    assert_eq!(hook.bodies().len(), groups, "the backtest sent nothing");
}

#[test]
fn a_dead_notifier_is_counted_and_counting_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let packets = traffic();
    let pcap = dir.path().join("planted.pcap");
    write_pcap(&pcap, &packets);
    // Nothing listens there: every attempt is refused.
    let dead = format!("http://127.0.0.1:{}/hook", netspectra_testkit::free_port());
    let db = dir.path().join("alerts.db");
    let report = analyze(vec![pcap], config(&dead, &[]), &db);
    let src_bytes: u64 = packets.iter().map(|p| u64::from(p.3)).sum();
    let per_src = report
        .engine
        .tasks
        .iter()
        .find(|t| t.name == "per_src_ip")
        .unwrap();
    assert_eq!(
        (per_src.packets, per_src.bytes),
        (packets.len() as u64, src_bytes)
    );
    let outcome = report.alerts.unwrap();
    assert_eq!(seen(&outcome.alerts), truth(&packets), "recorded anyway");
    assert_eq!(outcome.sent, 0);
    assert!(outcome.failed >= 1, "{outcome:?}");
}

#[test]
fn for_delays_firing_and_repeat_interval_reminds() {
    let dir = tempfile::tempdir().unwrap();
    let packets = traffic();
    let pcap = dir.path().join("planted.pcap");
    write_pcap(&pcap, &packets);
    let hook = WebhookReceiver::start();
    let db = dir.path().join("alerts.db");
    // Held 20 s before firing: only 10.9.0.1 (3 windows) qualifies; every
    // source with any packets for the whole capture, reminded every 30 s.
    let extra = [
        "{name: slow, task_name: per_src_ip, metric: bytes, operator: '>', threshold: 100000, for: 20s}",
        "{name: present, task_name: per_src_ip, metric: packets, operator: '>=', threshold: 5, repeat_interval: 30s, notifiers: [hook]}",
    ];
    let report = analyze(vec![pcap], config(&hook.url(), &extra), &db);
    let alerts = report.alerts.unwrap().alerts;
    let slow: Vec<_> = alerts.iter().filter(|a| a.rule == "slow").collect();
    assert_eq!(slow.len(), 2, "{slow:?}");
    assert_eq!(slow[0].state, "firing");
    assert_eq!(
        slow[0].starts_at_ns,
        T0 + 4 * WINDOW,
        "windows 1, 2 held; fires at the end of 3"
    );
    assert_eq!(slow[1].ends_at_ns, Some(T0 + 5 * WINDOW));
    // `present`: source 10.0.0.7 has 5 packets in every window: one firing,
    // never resolved; reminders at +30 s and +60 s are sent but not stored.
    let key7 = r#"{"SrcIP":"10.0.0.7"}"#;
    let stored: Vec<_> = alerts
        .iter()
        .filter(|a| a.rule == "present" && a.key == key7)
        .collect();
    assert_eq!(stored.len(), 1);
    let bodies = hook.wait_for(1, Duration::from_secs(10));
    let sent: Vec<u64> = from_bodies(&bodies)
        .iter()
        .filter(|a| a.rule == "present" && a.key == key7)
        .map(|a| a.window_start_ns)
        .collect();
    assert_eq!(sent, vec![T0, T0 + 3 * WINDOW, T0 + 6 * WINDOW]);
}

#[test]
fn two_alerters_on_nats_notify_every_transition_once_across_a_leader_kill() {
    let nats = netspectra_testkit::nats::NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let packets = traffic();
    let hook = WebhookReceiver::start();
    let db = dir.path().join("alerts.db");
    let cfg = config(&hook.url(), &[]);
    // The store grows in three parts, as a live run would write it.
    let part = |from: u64, to: u64, name: &str| {
        let path = dir.path().join(name);
        let chunk: Vec<Packet> = packets
            .iter()
            .copied()
            .filter(|p| (T0 + from * WINDOW..T0 + to * WINDOW).contains(&p.0))
            .collect();
        write_pcap(&path, &chunk);
        path
    };
    let mut no_alerting = cfg.clone();
    no_alerting.alerter.enabled = false;
    analyze(vec![part(0, 1, "a.pcap")], no_alerting.clone(), &db);
    let url = StoreUrl::parse(&db.display().to_string()).unwrap();
    let start = |id: &str| {
        let stop = Shutdown::new();
        let cfg = AlerterConfig {
            config: cfg.clone(),
            store: url.clone(),
            nats: Some(netspectra_bus::BusConfig::new(nats.url())),
            id: id.to_string(),
            lease_ttl: Duration::from_secs(2),
            retry: Default::default(),
            metrics: None,
        };
        let s = stop.clone();
        (
            stop,
            std::thread::spawn(move || Alerter::run(cfg, &s).unwrap()),
        )
    };
    let (stop_a, a) = start("a");
    // a leads once it has saved its state.
    let saved = || {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("SELECT count(*) FROM alert_state", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
            > 0
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !saved() {
        assert!(std::time::Instant::now() < deadline, "a never evaluated");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (stop_b, b) = start("b");
    analyze(vec![part(1, 4, "b.pcap")], no_alerting.clone(), &db);
    // Windows 1–3 closed → big talker and scanner fired.
    hook.wait_for(2, Duration::from_secs(20));
    // "Kill" the leader: it stops without releasing its lease (a crash).
    stop_a.trigger();
    let a_summary = a.join().unwrap();
    analyze(vec![part(4, WINDOWS, "c.pcap")], no_alerting, &db);
    let want = truth(&packets);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = seen(&from_bodies(&hook.bodies()));
        if got.len() >= want.len() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_b.trigger();
    let b_summary = b.join().unwrap();
    let got = seen(&from_bodies(&hook.bodies()));
    assert_eq!(got, want, "every transition exactly once");
    assert!(a_summary.passes > 0 && b_summary.passes > 0);
    assert!(!b_summary.outcome.alerts.is_empty(), "b took over");
}
