//! The query API end to end: `analyze` stores a generated capture, `api`
//! (or `analyze --serve`, `run --serve`) serves it, `query` asks. Answers
//! are checked against `analyze --format json` of the same capture.
//!
//! The `run --serve` test needs root (live capture on `lo`); it fails,
//! never skips, without it.

use netspectra_testkit::free_port;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A spawned server, killed when dropped (a failed assertion never leaves
/// one running).
pub(crate) struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
}

impl Server {
    /// Starts `netspectra ARGS --http 127.0.0.1:<free port> --grpc off`.
    pub(crate) fn start(args: &[&str]) -> Server {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = super::bin()
            .args(args)
            .args(["--http", &addr, "--grpc", "off"])
            .env_remove("NETSPECTRA_API_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netspectra");
        Server {
            child: Some(child),
            base: format!("http://{addr}"),
        }
    }

    /// Polls `path` until it answers 200; panics (with the server's
    /// stderr) if it exits or takes longer than 60 s.
    pub(crate) fn wait_for(&mut self, path: &str) -> String {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let url = format!("{}{path}", self.base);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let out = self.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "server exited ({status}) before {url} answered: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            match client.get(&url).send() {
                Ok(r) if r.status().is_success() => return r.text().unwrap(),
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{url} did not answer within 60 s; last: {last}");
    }

    /// SIGTERM (the graceful stop), then the exit status and output.
    fn terminate(mut self) -> Output {
        let child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `netspectra query ARGS --api BASE`, the environment's token and URL left out.
fn query(base: &str, args: &[&str]) -> Output {
    super::bin()
        .arg("query")
        .args(args)
        .args(["--api", base])
        .env_remove("NETSPECTRA_API_TOKEN")
        .env_remove("NETSPECTRA_API")
        .output()
        .expect("run netspectra query")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A generated capture analyzed into a SQLite store: (capture, store URL,
/// the `analyze --format json --top 0` report).
fn stored(dir: &Path) -> (PathBuf, String, Value) {
    let (file, _) = super::gen(dir, "q.pcap", 4_000, 11, "pcap", &[]);
    let url = format!("sqlite:{}", dir.join("ns.db").display());
    let (code, report) =
        super::analyze_json(&[file.to_str().unwrap(), "--store", &url, "--top", "0"]);
    assert_eq!(code, 0);
    (file, url, report)
}

/// Rows as key (its JSON text) → (packets, bytes).
fn by_key(rows: &Value) -> BTreeMap<String, (u64, u64)> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].to_string(),
                (r["packets"].as_u64().unwrap(), r["bytes"].as_u64().unwrap()),
            )
        })
        .collect()
}

#[test]
fn query_answers_match_analyze_and_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (_, url, report) = stored(dir.path());
    let mut api = Server::start(&["api", "--store", &url]);
    api.wait_for("/healthz");
    let base = api.base.clone();

    for task in ["per_src_ip", "per_flow"] {
        let o = query(
            &base,
            &[
                "top", "--task", task, "--limit", "0", "--by", "bytes", "--format", "json",
            ],
        );
        assert!(o.status.success(), "query top: {}", stderr(&o));
        let body = stdout(&o);
        assert_eq!(body.matches('\n').count(), 1, "one line: {body}");
        let answer: Value = serde_json::from_str(&body).expect("the body is JSON");
        assert_eq!(answer["truncated"], false);
        let expect = super::task(&report, task);
        assert_eq!(
            by_key(&answer["rows"]),
            by_key(&expect["rows"]),
            "top {task} rows equal analyze's"
        );
        // Ranked by bytes, as asked.
        let bytes: Vec<u64> = answer["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["bytes"].as_u64().unwrap())
            .collect();
        assert!(bytes.windows(2).all(|w| w[0] >= w[1]));
    }

    // The default limit is 20 rows, and the answer says more matched.
    let o = query(&base, &["top", "--task", "per_flow", "--format", "json"]);
    let answer: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(answer["rows"].as_array().unwrap().len(), 20);
    assert_eq!(answer["truncated"], true);

    // Tasks: every task analyze reported.
    let o = query(&base, &["tasks"]);
    assert!(o.status.success(), "query tasks: {}", stderr(&o));
    let table = stdout(&o);
    for t in report["tasks"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        assert!(table.contains(name), "{name} missing from\n{table}");
    }
    let o = query(&base, &["tasks", "--format", "json"]);
    let answer: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        answer["task_names"].as_array().unwrap().len(),
        report["tasks"].as_array().unwrap().len()
    );

    // The table shows key dimensions first, then the numbers.
    let o = query(&base, &["top", "--task", "per_src_ip", "--limit", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(&header[..3], ["SrcIP", "packets", "bytes"], "{table}");
    let top_src = super::task(&report, "per_src_ip")["rows"][0]["key"]["SrcIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(table.contains(&top_src), "{table}");

    // Every other operation answers in table form.
    for args in [
        vec!["aggregate"],
        vec!["aggregate", "--task", "per_flow", "--src-ip", "10.0.0.0/8"],
        vec!["trace", "--task", "per_src_ip", "--src-ip", &top_src],
        vec!["heavy-hitters", "--task", "per_src_ip_hh", "--by", "bytes"],
        vec!["super-spreaders", "--task", "per_src_ip_spread"],
        vec!["timeseries", "--task", "per_dst_ip"],
        vec!["runs"],
    ] {
        let o = query(&base, &args);
        assert!(o.status.success(), "query {args:?}: {}", stderr(&o));
        assert!(!o.stdout.is_empty(), "query {args:?} printed nothing");
    }

    // A bad parameter: refused (4xx), exit 2, the parameter named.
    let o = query(
        &base,
        &["top", "--task", "per_src_ip", "--src-ip", "10.0.0.300"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: ") && err.contains("src_ip"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    let o = query(&base, &["top", "--task", "no_such_task"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no_such_task"), "{}", stderr(&o));

    // Stopped by SIGTERM: a graceful stop, exit 0.
    let out = api.terminate();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_token_is_required_when_the_server_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_, url, _) = stored(dir.path());
    let mut api = Server::start(&["api", "--store", &url, "--token", "s3cret"]);
    api.wait_for("/healthz");
    let o = query(&api.base, &["tasks"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("token"), "{}", stderr(&o));
    let o = query(&api.base, &["tasks", "--token", "wrong"]);
    assert_eq!(o.status.code(), Some(2));
    let o = query(&api.base, &["tasks", "--token", "s3cret"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("per_src_ip"));
    let o = super::bin()
        .args(["query", "tasks", "--api", &api.base])
        .env("NETSPECTRA_API_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "token from the environment: {}",
        stderr(&o)
    );
}

#[test]
fn analyze_serve_answers_after_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = super::gen(dir.path(), "s.pcap", 2_000, 12, "pcap", &[]);
    let url = format!("sqlite:{}", dir.path().join("serve.db").display());
    let mut api = Server::start(&[
        "analyze",
        file.to_str().unwrap(),
        "--store",
        &url,
        "--format",
        "json",
        "--serve",
    ]);
    let ready = api.wait_for("/readyz");
    assert!(ready.contains("ready"), "{ready}");
    let o = query(
        &api.base,
        &["aggregate", "--task", "per_src_ip", "--format", "json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let answer: Value = serde_json::from_slice(&o.stdout).unwrap();
    let out = api.terminate();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the report on stdout");
    let per_src = super::task(&report, "per_src_ip");
    assert_eq!(answer["summaries"][0]["total_packets"], per_src["packets"]);
    assert_eq!(answer["summaries"][0]["total_bytes"], per_src["bytes"]);
}

#[test]
fn run_serve_answers_while_capturing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("live.db").display());
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let filter = format!("udp and dst port {}", udp.local_addr().unwrap().port());
    let mut api = Server::start(&[
        "run", "--iface", "lo", "--bpf", &filter, "--store", &url, "--serve",
    ]);
    api.wait_for("/readyz");
    let o = query(&api.base, &["runs", "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let answer: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(answer["rows"][0]["status"], "running", "{answer}");
    let out = api.terminate();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn usage_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    // No store at the path.
    let missing = format!("sqlite:{}", dir.path().join("missing.db").display());
    let o = super::run(&[
        "api",
        "--store",
        &missing,
        "--http",
        "127.0.0.1:0",
        "--grpc",
        "off",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no NetSpectra store"), "{}", stderr(&o));
    assert!(
        !dir.path().join("missing.db").exists(),
        "a reader creates nothing"
    );
    // A bad listen address.
    let o = super::run(&["api", "--store", &missing, "--http", "nowhere"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--http `nowhere`"), "{}", stderr(&o));
    // Nothing listening: the URL is named.
    let base = format!("http://127.0.0.1:{}", free_port());
    let o = query(&base, &["tasks"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("cannot reach") && err.contains(&base), "{err}");
    // No TLS in this build.
    let o = query("https://127.0.0.1:1", &["tasks"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no TLS"), "{}", stderr(&o));
    // --serve needs a store.
    let (file, _) = super::gen(dir.path(), "u.pcap", 100, 13, "pcap", &[]);
    let o = super::run(&["analyze", file.to_str().unwrap(), "--no-store", "--serve"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--serve"), "{}", stderr(&o));
}

/// This machine's address on its default route (not loopback), if any.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?; // TEST-NET-1: nothing is sent
    Some(s.local_addr().ok()?.ip()).filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

#[test]
fn api_without_a_token_is_not_reachable_from_the_network_unless_insecure_no_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = super::gen(dir.path(), "s.pcap", 500, 3, "pcap", &[]);
    let db = dir.path().join("ns.db");
    let url = format!("sqlite:{}", db.display());
    let o = super::run(&["analyze", file.to_str().unwrap(), "--store", &url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let port = free_port();
    let every = format!("0.0.0.0:{port}");
    // Refused, before serving anything: `api` and `analyze --serve` alike.
    for args in [
        vec![
            "api",
            "--store",
            url.as_str(),
            "--http",
            every.as_str(),
            "--grpc",
            "off",
        ],
        vec![
            "api",
            "--store",
            url.as_str(),
            "--http",
            "off",
            "--grpc",
            every.as_str(),
        ],
        vec![
            "analyze",
            file.to_str().unwrap(),
            "--store",
            url.as_str(),
            "--serve",
            "--http",
            every.as_str(),
            "--grpc",
            "off",
        ],
    ] {
        let o = super::bin()
            .args(&args)
            .env_remove("NETSPECTRA_API_TOKEN")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--insecure-no-auth") && stderr(&o).contains("without a token"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // Asked for explicitly, it serves every interface.
    let Some(ip) = non_loopback_ip() else {
        panic!("this test needs a non-loopback address (a default route)");
    };
    let mut child = super::bin()
        .args([
            "api",
            "--store",
            &url,
            "--http",
            &every,
            "--grpc",
            "off",
            "--insecure-no-auth",
        ])
        .env_remove("NETSPECTRA_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let remote = format!("http://{ip}:{port}/api/v1/tasks");
    let deadline = Instant::now() + Duration::from_secs(30);
    let reached = loop {
        match client.get(&remote).send() {
            Ok(r) => break r.status().as_u16(),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("{remote}: {e}"),
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait().unwrap();
    assert_eq!(reached, 200);
    assert!(out.success());
    // (The default listen addresses without a token are loopback ones:
    // `netspectra_node::api` tests them.)
}

/// The README's first steps on the bundled capture, as a new user runs
/// them: analyzing twice replaces the run (answers are not doubled),
/// `--append` keeps both and `--run latest` picks one; `--since 1h` over a
/// capture of the past says what it read and what the store holds, and
/// `--of latest` counts back from the newest stored packet; a trace with
/// no match is an empty answer (exit 0), not a refusal.
#[test]
fn the_first_hour_rerun_replaces_and_queries_say_their_scope() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo.pcapng");
    let demo = demo.to_str().unwrap();
    let url = format!("sqlite:{}", dir.path().join("ns.db").display());
    let (code, first) = super::analyze_json(&[demo, "--store", &url]);
    assert_eq!(code, 0);
    let ip_packets = super::task(&first, "per_src_ip")["packets"]
        .as_u64()
        .unwrap();
    assert_eq!(first["store"]["replaced"], serde_json::json!([]));
    // The same command again: the first run is replaced, and the table says so.
    let o = super::run(&["analyze", demo, "--store", &url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(
        table.contains("replaced run 1 of the same input") && table.contains("--append"),
        "{table}"
    );
    assert!(table.contains("1 window of 60 s"), "{table}");

    let mut api = Server::start(&["api", "--store", &url]);
    api.wait_for("/healthz");
    let base = api.base.clone();
    let sum = |args: &[&str]| -> u64 {
        let mut all = vec![
            "top",
            "--task",
            "per_src_ip",
            "--limit",
            "0",
            "--format",
            "json",
        ];
        all.extend_from_slice(args);
        let o = query(&base, &all);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let answer: Value = serde_json::from_slice(&o.stdout).unwrap();
        answer["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["packets"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        sum(&[]),
        ip_packets,
        "a re-analysis does not double the answers"
    );

    // --append keeps both runs: all of them add up, --run picks one.
    let (code, third) = super::analyze_json(&[demo, "--store", &url, "--append"]);
    assert_eq!(code, 0);
    assert_eq!(third["store"]["replaced"], serde_json::json!([]));
    let third_id = third["store"]["run_id"].as_i64().unwrap().to_string();
    assert_eq!(sum(&[]), 2 * ip_packets);
    assert_eq!(sum(&["--run", "all"]), 2 * ip_packets);
    assert_eq!(sum(&["--run", "latest"]), ip_packets);
    assert_eq!(sum(&["--run", &third_id]), ip_packets);
    assert_eq!(sum(&["--run", "1"]), 0, "run 1 was replaced");
    // `windows` counts windows, not rows: the one-window demo stored twice
    // is still one window, for top and trace.
    let o = query(
        &base,
        &[
            "top",
            "--task",
            "per_src_ip",
            "--limit",
            "0",
            "--format",
            "json",
        ],
    );
    let answer: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = answer["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["windows"] == 1), "{answer}");
    let src = rows[0]["key"]["SrcIP"].as_str().unwrap().to_string();
    let o = query(
        &base,
        &[
            "trace",
            "--task",
            "per_src_ip",
            "--src-ip",
            &src,
            "--format",
            "json",
        ],
    );
    let answer: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(answer["lifecycle"]["windows"], 1, "{answer}");
    assert_eq!(
        answer["lifecycle"]["total_packets"], rows[0]["packets"],
        "{answer}"
    );

    // The table names its scope.
    let o = query(&base, &["top", "--task", "per_src_ip", "--limit", "3"]);
    let table = stdout(&o);
    assert!(
        table.contains("scope: all runs") && table.contains("every stored window"),
        "{table}"
    );

    // --since counts back from the clock: the 2026-01-01 capture is not in
    // the last hour. The answer says so and names what is stored.
    let o = query(
        &base,
        &[
            "top",
            "--task",
            "per_src_ip",
            "--since",
            "1h",
            "--limit",
            "10",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(table.starts_with("no rows match\n"), "{table}");
    assert!(table.contains("windows of the last 1h"), "{table}");
    assert!(
        table.contains("stored: packets from 2026-01-01T00:00:00") && table.contains("--of latest"),
        "{table}"
    );
    // --of latest counts back from the newest stored packet.
    assert_eq!(
        sum(&["--since", "1h", "--of", "latest", "--run", "latest"]),
        ip_packets
    );
    let o = query(
        &base,
        &[
            "top",
            "--task",
            "per_src_ip",
            "--since",
            "1h",
            "--of",
            "latest",
            "--limit",
            "3",
        ],
    );
    let table = stdout(&o);
    assert!(
        table.contains("the 1h up to the newest stored packet"),
        "{table}"
    );

    // A trace that matches nothing: exit 0, "no rows match"; a bad request: 2.
    let o = query(
        &base,
        &["trace", "--task", "per_flow", "--src-ip", "192.0.2.77"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("no rows match\n"), "{}", stdout(&o));
    let o = query(
        &base,
        &[
            "top",
            "--task",
            "per_src_ip",
            "--since",
            "1h",
            "--of",
            "latest",
            "--src-port",
            "99999",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = query(&base, &["trace", "--task", "per_flow"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
