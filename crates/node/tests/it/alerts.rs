//! Alerting end to end, in-process: a capture with planted heavy sources
//! and a scanner (`testkit::planted`), rules over it, notifications to a
//! real webhook receiver, transitions checked against the truth computed
//! from the packets written, and the backtest checked against what the
//! replay notified. Replicas and a killed leader: the cli crate's tests.

use netspectra_model::config::Config;
use netspectra_node::alerter::backtest;
use netspectra_node::offline::{Analysis, AnalysisConfig};
use netspectra_node::report::Report;
use netspectra_store::read::Reader;
use netspectra_store::StoreUrl;
use netspectra_testkit::planted::{self, from_bodies, seen, truth, write_pcap, Packet, T0, WINDOW};
use netspectra_testkit::webhook::WebhookReceiver;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;

pub(crate) fn config(hook: &str, extra: &[&str]) -> Config {
    Config::from_yaml(&planted::config_yaml(hook, extra), &|_| None).unwrap()
}

/// The planted capture analyzed into a fresh SQLite store with `config`:
/// the directory (kept alive), the packets, the store and the report.
pub(crate) fn analyze_planted(config: Config) -> (TempDir, Vec<Packet>, PathBuf, Report) {
    let dir = tempfile::tempdir().unwrap();
    let packets = planted::traffic();
    let pcap = dir.path().join("planted.pcap");
    write_pcap(&pcap, &packets).unwrap();
    let db = dir.path().join("alerts.db");
    let report = Analysis::run(
        AnalysisConfig {
            files: vec![pcap],
            config,
            workers: 0,
            store: Some(db.display().to_string()),
            verify: false,
            top: 5,
            append: false,
        },
        &mut |_| {},
    )
    .unwrap();
    (dir, packets, db, report)
}

#[test]
fn planted_sources_fire_and_resolve_as_the_truth_says_and_backtest_agrees() {
    let hook = WebhookReceiver::start();
    let (_dir, packets, db, report) = analyze_planted(config(&hook.url(), &[]));

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
    // Nothing listens there: every attempt is refused.
    let dead = format!("http://127.0.0.1:{}/hook", netspectra_testkit::free_port());
    let (_dir, packets, _db, report) = analyze_planted(config(&dead, &[]));
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
    let hook = WebhookReceiver::start();
    // Held 20 s before firing: only 10.9.0.1 (3 windows) qualifies; every
    // source with any packets for the whole capture, reminded every 30 s;
    // task-wide, more than 1 000 packets: windows 2–4 (1 850, 1 850, 1 700).
    let extra = [
        "{name: slow, task_name: per_src_ip, metric: bytes, operator: '>', threshold: 100000, for: 20s}",
        "{name: present, task_name: per_src_ip, metric: packets, operator: '>=', threshold: 5, repeat_interval: 30s, notifiers: [hook]}",
        "{name: busy, task_name: per_src_ip, metric: total_packets, operator: '>', threshold: 1000}",
    ];
    let (_dir, _packets, db, report) = analyze_planted(config(&hook.url(), &extra));
    let alerts = report.alerts.unwrap().alerts;
    let busy: Vec<_> = alerts.iter().filter(|a| a.rule == "busy").collect();
    assert_eq!(busy.len(), 2, "{busy:?}");
    assert_eq!(
        (busy[0].state.as_str(), busy[0].key.as_str()),
        ("firing", "{}")
    );
    assert_eq!(busy[0].starts_at_ns, T0 + 3 * WINDOW);
    assert_eq!(busy[1].ends_at_ns, Some(T0 + 6 * WINDOW));
    // The store's evaluation (task-wide totals included) agrees.
    let url = StoreUrl::parse(&db.display().to_string()).unwrap();
    let replayed = backtest(&config(&hook.url(), &extra), &url, 0, u64::MAX >> 1).unwrap();
    assert_eq!(seen(&replayed), seen(&alerts));
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
