//! `netspectra run --iface`: live capture in a network namespace, on a veth
//! pair the test creates, of traffic whose every datagram the test chose.
//! The expected counts come from what was sent, never from decoding.
//!
//! Needs root, iproute2 and python3 (the sender); the tests fail, never skip,
//! without them.

use netspectra_testkit::netns::VethPair;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Destination port of the test traffic; the capture filters on it so ARP,
/// neighbour discovery and ICMP errors never count.
const PORT: u16 = 40_000;
const FILTER: &str = "udp and dst port 40000";
/// Ethernet (14) + IPv4 (20) + UDP (8) around each payload.
const OVERHEAD: u64 = 42;

/// The datagrams sent: (source port index, payload length).
fn traffic() -> Vec<(usize, usize)> {
    (0..30).map(|i| (i % 3, 10 + 37 * i)).collect()
}

/// A running `netspectra run` inside a namespace, its stderr drained by a
/// thread (so it never blocks) and forwarded once capture has started.
struct Capture {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stderr_all: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Capture {
    fn start(pair: &VethPair, extra: &[&str]) -> Capture {
        let mut child = VethPair::command(&pair.ns_b, env!("CARGO_BIN_EXE_netspectra"))
            .args(["run", "--iface", &pair.if_b, "--bpf", FILTER])
            .args(["--format", "json", "--top", "0", "--workers", "2"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netspectra run");
        let (tx, rx) = mpsc::channel();
        let all = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = std::sync::Arc::clone(&all);
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
                let _ = tx.send(line);
            }
        });
        let mut cap = Capture {
            child,
            stderr: rx,
            stderr_all: all,
        };
        cap.wait_capturing();
        cap
    }

    /// Waits for the "capturing on" line: packets sent after it are seen.
    fn wait_capturing(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains("capturing on") => return,
                Ok(_) => {}
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "netspectra run did not start capturing: {}",
                        self.stderr_all.lock().unwrap()
                    );
                }
            }
        }
    }

    /// Waits for exit (killing it after `limit`), returns (exit code, JSON).
    fn finish(mut self, limit: Duration) -> (Option<i32>, Value) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "netspectra run did not stop within {limit:?}: {}",
                    self.stderr_all.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        // Let the stderr thread catch up before quoting it.
        std::thread::sleep(Duration::from_millis(50));
        let v = serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {out}\nexit {status:?}; stderr: {}",
                self.stderr_all.lock().unwrap()
            )
        });
        (status.code(), v)
    }
}

impl Drop for Capture {
    /// A failed assertion must not leave the capture running in the
    /// namespace (which then could not be deleted).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `traffic()` from namespace `ns_a` to `ip_b:PORT` with python3, one
/// socket per source port index; returns the source ports used.
fn send(pair: &VethPair) -> Vec<u16> {
    let sizes: Vec<String> = traffic()
        .iter()
        .map(|(s, n)| format!("({s},{n})"))
        .collect();
    let script = format!(
        "import socket\n\
         socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]\n\
         for s in socks: s.bind(('{src}', 0))\n\
         for i, n in [{list}]: socks[i].sendto(b'x' * n, ('{dst}', {PORT}))\n\
         print(' '.join(str(s.getsockname()[1]) for s in socks))\n",
        src = pair.ip_a,
        dst = pair.ip_b,
        list = sizes.join(","),
    );
    let out = VethPair::exec_in(&pair.ns_a, "python3", &["-c", &script]);
    assert!(
        out.status.success(),
        "the sender needs python3 (apt-get install python3): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

fn task<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("task {name} missing"))
}

/// Checks the report against what `send` sent, exactly.
fn assert_counts(report: &Value, pair: &VethPair, ports: &[u16]) {
    let sent = traffic();
    let k = sent.len() as u64;
    let bytes: u64 = sent.iter().map(|(_, n)| *n as u64 + OVERHEAD).sum();
    assert_eq!(report["packets"], k, "{report}");
    assert_eq!(report["bytes"], bytes);
    assert_eq!(report["decoded"]["ipv4"], k);
    assert_eq!(report["files"][0]["link_types"][0], "ETHERNET");
    let src = task(report, "per_src_ip");
    let rows = src["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{src}");
    assert_eq!(rows[0]["key"]["SrcIP"], pair.ip_a.to_string());
    assert_eq!(rows[0]["packets"], k);
    assert_eq!(rows[0]["bytes"], bytes);
    let dst = task(report, "per_dst_ip");
    assert_eq!(dst["rows"][0]["key"]["DstIP"], pair.ip_b.to_string());
    assert_eq!(dst["rows"][0]["packets"], k);
    // One flow per source socket, each with exactly its own datagrams.
    let flow = task(report, "per_flow");
    assert_eq!(flow["keys"], ports.len(), "{flow}");
    for row in flow["rows"].as_array().unwrap() {
        let port = row["key"]["SrcPort"].as_u64().unwrap();
        let i = ports.iter().position(|&p| u64::from(p) == port).unwrap();
        let mine: Vec<u64> = sent
            .iter()
            .filter(|(s, _)| *s == i)
            .map(|(_, n)| *n as u64 + OVERHEAD)
            .collect();
        assert_eq!(row["key"]["DstPort"], PORT);
        assert_eq!(row["key"]["Protocol"], 17);
        assert_eq!(row["packets"], mine.len());
        assert_eq!(row["bytes"], mine.iter().sum::<u64>());
    }
    let capture = &report["capture"];
    assert_eq!(capture["iface"], pair.if_b.as_str());
    assert_eq!(capture["dropped"], 0);
    assert!(capture["received"].as_u64().unwrap() >= k, "{capture}");
}

#[test]
fn run_counts_exactly_the_datagrams_sent_across_a_veth_and_stops_at_count() {
    let pair = VethPair::new();
    let dir = tempfile::tempdir().unwrap();
    let pcaps = dir.path().join("pcap");
    let k = traffic().len().to_string();
    let cap = Capture::start(
        &pair,
        &[
            "--no-store",
            "--count",
            &k,
            "--persist",
            pcaps.to_str().unwrap(),
        ],
    );
    let ports = send(&pair);
    let (code, report) = cap.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    assert_counts(&report, &pair, &ports);
    assert_eq!(report["capture"]["stopped_by"], "count");
    assert_eq!(report["store"], Value::Null);

    // The persisted pcap files hold exactly the captured packets: analyzing
    // them gives the same tasks.
    let persist = &report["capture"]["persist"];
    assert_eq!(persist["packets"], traffic().len(), "{persist}");
    assert_eq!(persist["dropped"], 0);
    let files: Vec<&str> = persist["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with(".pcap") && files[0].len() > "YYYYmmdd-HHMMSS.pcap".len());
    let (code, offline) = super::analyze_json(&[files[0], "--no-store", "--top", "0"]);
    assert_eq!(code, 0);
    assert_eq!(offline["packets"], report["packets"]);
    assert_eq!(offline["bytes"], report["bytes"]);
    assert_eq!(offline["files"][0]["link_types"][0], "ETHERNET");
    for name in ["per_src_ip", "per_dst_ip", "per_flow"] {
        assert_eq!(task(&offline, name), task(&report, name), "{name}");
    }
}

#[test]
fn sigterm_flushes_the_open_window_into_the_store_and_exits_0() {
    let pair = VethPair::new();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let url = format!("sqlite:{}", db.display());
    let cap = Capture::start(&pair, &["--store", &url, "--duration", "60"]);
    let ports = send(&pair);
    // No pause: the datagrams may still sit in the kernel's ring, in a block
    // not yet handed over; the stop must still count every one of them.
    let pid = cap.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let (code, report) = cap.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    assert_counts(&report, &pair, &ports);
    assert_eq!(report["capture"]["stopped_by"], "signal");
    // The run and its window reached the store.
    let run_id = report["store"]["run_id"].as_i64().unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (status, packets): (String, i64) = conn
        .query_row(
            "SELECT status, packets FROM runs WHERE run_id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, "complete");
    assert_eq!(packets as usize, traffic().len());
    let (p, b): (i64, i64) = conn
        .query_row(
            "SELECT SUM(packets), SUM(bytes) FROM exact_rows WHERE run_id = ?1 AND task = 'per_src_ip'",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(p as usize, traffic().len());
    assert_eq!(
        b as u64,
        traffic()
            .iter()
            .map(|(_, n)| *n as u64 + OVERHEAD)
            .sum::<u64>()
    );
}

#[test]
fn duration_stops_an_idle_capture_and_the_table_shows_the_kernel_counters() {
    let pair = VethPair::new();
    let started = Instant::now();
    let o = VethPair::command(&pair.ns_b, env!("CARGO_BIN_EXE_netspectra"))
        .args(["run", "--iface", &pair.if_b, "--bpf", FILTER])
        .args(["--no-store", "--duration", "0.5"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let out = String::from_utf8(o.stdout).unwrap();
    let line = format!(
        "capture on {}: 0 received, 0 dropped by the kernel, 0 by the interface; stopped by duration",
        pair.if_b
    );
    assert!(out.contains(&line), "{out}");
    assert!(out.starts_with("0 packets, 0 bytes"), "{out}");
}

#[test]
fn a_missing_interface_exits_1_naming_it_and_the_ones_that_exist() {
    let pair = VethPair::new();
    let o = VethPair::command(&pair.ns_b, env!("CARGO_BIN_EXE_netspectra"))
        .args(["run", "--iface", "nsnope0", "--no-store"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nsnope0") && err.contains("no such interface"),
        "{err}"
    );
    // Inside the namespace only its own interfaces exist.
    assert!(err.contains(&pair.if_b), "{err}");
    assert!(o.stdout.is_empty());
}

/// On loopback the kernel hands the capture each packet twice (sent and
/// received); the packets counted are the datagrams sent, and the table
/// explains the kernel's doubled `received`.
#[test]
fn on_loopback_the_table_explains_the_kernel_counting_each_packet_twice() {
    let pair = VethPair::new();
    let up = VethPair::exec_in(&pair.ns_b, "ip", &["link", "set", "lo", "up"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let mut child = VethPair::command(&pair.ns_b, env!("CARGO_BIN_EXE_netspectra"))
        .args([
            "run",
            "--iface",
            "lo",
            "--bpf",
            FILTER,
            "--no-store",
            "--duration",
            "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("capturing on") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no capture started");
    }
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for _ in range(10): s.sendto(b'x' * 20, ('127.0.0.1', {PORT}))\n"
    );
    let sent = VethPair::exec_in(&pair.ns_b, "python3", &["-c", &script]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{out}");
    assert!(
        out.starts_with("10 packets"),
        "each datagram counted once:\n{out}"
    );
    assert!(
        out.contains("20 received (on loopback the kernel counts each packet twice"),
        "{out}"
    );
}
