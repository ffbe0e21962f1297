//! `deploy/prometheus/` with Debian's `prometheus` and `promtool`: the
//! scrape config and the pipeline alert rules pass `promtool check`, the
//! rules' unit tests pass `promtool test rules`, and a real Prometheus,
//! given the shipped config with its targets pointed at a running `engine`
//! and `probe` on loopback, scrapes every target up and sees
//! `netspectra_engine_packets_total` rise while traffic flows.
//!
//! Needs root (live capture on `lo`), nats-server and prometheus; fails,
//! never skips, without them.

use netspectra_testkit::free_port;
use netspectra_testkit::nats::NatsServer;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy())
        .output()
        .expect("promtool runs (apt-get install prometheus; scripts/test.sh does)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

fn rule_files() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(deploy().join("rules"))
        .unwrap()
        .map(|e| format!("rules/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    v.sort();
    v
}

#[test]
fn promtool_checks_the_config_and_rules_and_their_unit_tests_pass() {
    let out = promtool(&["check", "config", "prometheus.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let rules = rule_files();
    assert!(!rules.is_empty());
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(String::as_str));
    let out = promtool(&args);
    assert!(out.contains("9 rules found"), "{out}");
    let mut tests: Vec<String> = std::fs::read_dir(deploy().join("tests"))
        .unwrap()
        .map(|e| format!("tests/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    tests.sort();
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let out = promtool(&args);
    assert!(out.contains("SUCCESS") && !out.contains("FAILED"), "{out}");
    // Every alert of the rules has a unit test.
    let rules_text = std::fs::read_to_string(deploy().join("rules/netspectra.yml")).unwrap();
    let tested: String = tests
        .iter()
        .map(|t| std::fs::read_to_string(deploy().join(t)).unwrap())
        .collect();
    for line in rules_text.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tested.contains(&format!(
                    "alertname: {name}\n        exp_alerts:\n          -"
                )),
                "alert {name} has no firing unit test"
            );
        }
    }
}

/// GET on its own connection; the body (Prometheus answers with a length).
fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Polls until `ok` returns Some; panics after `secs` with the last answer.
fn wait<T>(secs: u64, what: &str, mut ok: impl FnMut() -> (Option<T>, String)) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (v, seen) = ok();
        if let Some(v) = v {
            return v;
        }
        last = seen;
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what}: not within {secs} s; last: {last}");
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query's answer (status 200 or not).
fn query(prom: &str, expr: &str) -> Value {
    let (_, body) = get(prom, &format!("/api/v1/query?query={}", encode(expr))).unwrap();
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// An instant query's single value (None: no sample yet).
fn query_value(prom: &str, expr: &str) -> (Option<f64>, String) {
    let q = encode(expr);
    match get(prom, &format!("/api/v1/query?query={q}")) {
        Ok((200, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let value = v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok());
            (value, body)
        }
        Ok((s, body)) => (None, format!("{s} {body}")),
        Err(e) => (None, e.to_string()),
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_engine_and_probe() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "aggregator:\n  snapshot_interval: 1s\n  period: 60s\n",
    )
    .unwrap();
    let db = format!("sqlite:{}", dir.path().join("engine.db").display());
    let engine_addr = format!("127.0.0.1:{}", free_port());
    let _engine = Killed(
        super::bin()
            .args(["engine", "--nats", &server.url(), "--store", &db])
            .args(["--config", config.to_str().unwrap(), "--workers", "1"])
            .args(["--metrics", &engine_addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start netspectra engine"),
    );
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    let filter = format!("udp and dst port {port}");
    let probe_addr = format!("127.0.0.1:{}", free_port());
    let _probe = Killed(
        super::bin()
            .args(["probe", "--iface", "lo", "--bpf", &filter])
            .args(["--nats", &server.url(), "--config"])
            .arg(&config)
            .args(["--metrics", &probe_addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start netspectra probe"),
    );

    // The shipped config, its targets pointed at the processes above
    // (Prometheus's own job dropped), scraping every second. JSON is YAML, so Prometheus reads the rewrite as written.
    let text = std::fs::read_to_string(deploy().join("prometheus.yml")).unwrap();
    let mut cfg: Value = serde_saphyr::from_str(&text).expect("prometheus.yml is YAML");
    cfg["global"]["scrape_interval"] = "1s".into();
    cfg["global"]["evaluation_interval"] = "1s".into();
    cfg["rule_files"] = serde_json::json!([deploy().join("rules/*.yml")]);
    let jobs = cfg["scrape_configs"].as_array_mut().unwrap();
    jobs.retain(|j| j["job_name"] != "prometheus");
    let mut wanted = Vec::new();
    for job in jobs.iter_mut() {
        let target = match job["job_name"].as_str().unwrap() {
            "netspectra-engine" => &engine_addr,
            "netspectra-probe" => &probe_addr,
            other => panic!("a job the test does not know: {other}"),
        };
        job["static_configs"][0]["targets"] = serde_json::json!([target]);
        wanted.push(job["job_name"].as_str().unwrap().to_string());
    }
    assert_eq!(wanted, ["netspectra-engine", "netspectra-probe"]);
    let cfg_path = dir.path().join("prometheus.yml");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let prom = format!("127.0.0.1:{}", free_port());
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (apt-get install prometheus)"),
    );

    // Traffic: a datagram burst every 200 ms until the test ends.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let deadline = Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                for _ in 0..20 {
                    let _ = tx.send_to(&[0x5a; 64], ("127.0.0.1", port));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    // Every target up.
    wait(40, "every target up", || {
        let Ok((200, body)) = get(&prom, "/api/v1/targets") else {
            return (None, "prometheus not answering".into());
        };
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let targets = v["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let up: Vec<&str> = targets
            .iter()
            .filter(|t| t["health"] == "up")
            .filter_map(|t| t["labels"]["job"].as_str())
            .collect();
        let all = targets.len() == wanted.len() && wanted.iter().all(|j| up.contains(&j.as_str()));
        (all.then_some(()), body)
    });
    let up = wait(20, "up summed", || {
        let (v, body) = query_value(&prom, r#"sum(up{job=~"netspectra-.*"})"#);
        (v.filter(|&v| v == 2.0), body)
    });
    assert_eq!(up, 2.0);

    // The engine's packet counter, as scraped, rises.
    let first = wait(40, "engine packets scraped", || {
        let (v, body) = query_value(&prom, "sum(netspectra_engine_packets_total)");
        (v.filter(|&v| v > 0.0), body)
    });
    let later = wait(40, "engine packets rising", || {
        let (v, body) = query_value(&prom, "sum(netspectra_engine_packets_total)");
        (v.filter(|&v| v > first), body)
    });
    assert!(later > first);
    let probe_packets = wait(20, "probe packets scraped", || {
        let (v, body) = query_value(&prom, "sum(netspectra_probe_packets_total)");
        (v.filter(|&v| v > 0.0), body)
    });
    assert!(probe_packets > 0.0);
    // The Grafana pipeline dashboard's queries: each is valid PromQL, and
    // answers series whenever the metrics it reads are exported here (the
    // spool and ClickHouse ones are not: this engine writes SQLite).
    let (_, names) = get(&prom, "/api/v1/label/__name__/values").unwrap();
    let names: Value = serde_json::from_str(&names).unwrap();
    let names: Vec<&str> = names["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let dash = deploy().join("../grafana/dashboards/netspectra-pipeline.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(dash).unwrap()).unwrap();
    let mut answered = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "10s");
            let answer = query(&prom, &expr);
            assert_eq!(answer["status"], "success", "{expr}: {answer}");
            let read: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("netspectra_") || *w == "up")
                .collect();
            assert!(!read.is_empty(), "{expr} reads no metric");
            let exported = read.iter().all(|m| names.contains(m));
            if exported {
                // A rate needs two samples in its range: a series first
                // exported a moment ago has one, so ask again for a while.
                wait(20, &format!("{expr} answers series"), || {
                    let answer = query(&prom, &expr);
                    let series = answer["data"]["result"].as_array().map_or(0, Vec::len);
                    ((series > 0).then_some(()), answer.to_string())
                });
                answered += 1;
            }
        }
    }
    assert!(answered >= 8, "{answered} pipeline queries answered");

    // The rules are loaded, and none of the pipeline alerts fires here.
    let (_, rules) = get(&prom, "/api/v1/rules").unwrap();
    assert!(rules.contains("NetSpectraEngineLag"), "{rules}");
    let (firing, body) = query_value(&prom, r#"count(ALERTS{alertstate="firing"})"#);
    assert_eq!(firing, None, "no pipeline alert fires: {body}");

    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
}
