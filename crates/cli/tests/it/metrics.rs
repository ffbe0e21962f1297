//! `--metrics ADDR`: `/healthz`, `/readyz` and `/metrics` of the long-running
//! roles, scraped with a plain HTTP/1.1 GET while they run. Traffic is UDP
//! datagrams sent over the loopback by the test (counts it controls),
//! captured with a filter on their destination port so nothing else counts.
//!
//! Needs root (live capture on `lo`) and nats-server; the tests fail, never
//! skip, without them.

use netspectra_testkit::free_port;
use netspectra_testkit::nats::NatsServer;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One request on its own connection: (status, body).
fn http(addr: &str, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    assert_eq!(length, body.len(), "Content-Length matches the body");
    Ok((status, body.to_string()))
}

fn get(addr: &str, path: &str) -> (u16, String) {
    http(addr, "GET", path).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// The sum of a metric's samples over its label sets (None: not listed).
fn metric(body: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if rest.starts_with('{') {
            rest.rsplit_once(' ').map(|(_, v)| v)
        } else {
            rest.strip_prefix(' ')
        };
        if let Some(v) = value.and_then(|v| v.trim().parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Polls `path` until `ok(status, body)` holds; panics after `secs`.
fn wait_for(
    addr: &str,
    path: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(u16, &str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok((status, body)) = http(addr, "GET", path) {
            if ok(status, &body) {
                return body;
            }
            last = Some((status, body));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {secs} s on http://{addr}{path}; last answer {last:?}");
}

/// A UDP receiver on loopback and `n` datagrams sent to it: (port, bytes on
/// the wire as the capture sees them: loopback's Ethernet header + IPv4 + UDP).
fn receiver() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("UDP receiver")
}

fn send(to: &UdpSocket, n: usize, payload: usize) {
    let port = to.local_addr().unwrap().port();
    let tx = UdpSocket::bind("127.0.0.1:0").expect("UDP sender");
    for _ in 0..n {
        tx.send_to(&vec![0x5a; payload], ("127.0.0.1", port))
            .expect("send a datagram");
    }
}

/// Sends SIGTERM (the graceful stop) and waits for the output.
fn terminate(child: Child) -> Output {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait_with_output().expect("wait for netspectra")
}

#[test]
fn run_on_loopback_serves_health_readiness_and_metrics() {
    let rx = receiver();
    let udp_port = rx.local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{}", free_port());
    let filter = format!("udp and dst port {udp_port}");
    let child = super::bin()
        .args(["run", "--iface", "lo", "--bpf", &filter, "--duration", "4"])
        .args(["--no-store", "--format", "json", "--metrics", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start netspectra run");

    wait_for(&addr, "/readyz", 10, "run ready", |s, b| {
        s == 200 && b == "ready\n"
    });
    assert_eq!(get(&addr, "/healthz"), (200, "ok\n".to_string()));
    const N: usize = 50;
    const PAYLOAD: usize = 100;
    send(&rx, N, PAYLOAD);
    let body = wait_for(&addr, "/metrics", 5, "packets counted", |s, b| {
        s == 200 && metric(b, "netspectra_capture_packets_total").unwrap_or(0.0) >= N as f64
    });
    let wire = (N * (PAYLOAD + 8 + 20 + 14)) as f64;
    assert!(
        metric(&body, "netspectra_capture_bytes_total").unwrap() >= wire,
        "{body}"
    );
    assert!(metric(&body, "netspectra_engine_packets_total").unwrap() >= N as f64);
    assert_eq!(
        metric(&body, "netspectra_capture_kernel_dropped_total"),
        Some(0.0),
        "{body}"
    );
    assert!(metric(&body, "netspectra_capture_if_dropped_total").is_some());
    assert!(body.contains("# TYPE netspectra_capture_packets_total counter"));
    // The responder: other paths and methods.
    assert_eq!(get(&addr, "/nope").0, 404);
    assert_eq!(get(&addr, "/metrics?x=1").0, 200);
    assert_eq!(http(&addr, "POST", "/metrics").unwrap().0, 405);

    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["packets"], N as u64, "exactly the datagrams sent");
    // The endpoint goes with the process.
    assert!(TcpStream::connect(&addr).is_err());
}

#[test]
fn probe_and_engine_serve_metrics_against_nats() {
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
    let engine = super::bin()
        .args(["engine", "--nats", &server.url(), "--store", &db])
        .args(["--config", config.to_str().unwrap(), "--workers", "1"])
        .args(["--format", "json", "--metrics", &engine_addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start netspectra engine");
    wait_for(&engine_addr, "/readyz", 10, "engine ready", |s, _| s == 200);

    let rx = receiver();
    let filter = format!("udp and dst port {}", rx.local_addr().unwrap().port());
    let probe_addr = format!("127.0.0.1:{}", free_port());
    let probe = super::bin()
        .args([
            "probe",
            "--iface",
            "lo",
            "--bpf",
            &filter,
            "--duration",
            "5",
        ])
        .args([
            "--nats",
            &server.url(),
            "--config",
            config.to_str().unwrap(),
        ])
        .args(["--format", "json", "--metrics", &probe_addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start netspectra probe");
    wait_for(&probe_addr, "/readyz", 10, "probe ready", |s, _| s == 200);
    assert_eq!(get(&probe_addr, "/healthz").0, 200);
    // Connected to NATS does not mean the capture is open yet.
    std::thread::sleep(Duration::from_millis(500));

    // Two bursts in different 1 s windows: the second one makes the engine
    // write the first window.
    const N: usize = 40;
    send(&rx, N, 64);
    let body = wait_for(&probe_addr, "/metrics", 5, "probe counted", |_, b| {
        metric(b, "netspectra_capture_packets_total").unwrap_or(0.0) >= N as f64
            && metric(b, "netspectra_probe_packets_total").unwrap_or(0.0) >= N as f64
    });
    assert!(metric(&body, "netspectra_probe_batches_total").unwrap() >= 1.0);
    assert_eq!(metric(&body, "netspectra_nats_connected"), Some(1.0));
    assert!(metric(&body, "netspectra_capture_kernel_dropped_total").is_some());
    std::thread::sleep(Duration::from_millis(1200));
    send(&rx, N, 64);

    let body = wait_for(&engine_addr, "/metrics", 10, "engine counted", |_, b| {
        metric(b, "netspectra_engine_packets_total").unwrap_or(0.0) >= (2 * N) as f64
            && metric(b, "netspectra_engine_windows_total").unwrap_or(0.0) >= 1.0
    });
    assert!(metric(&body, "netspectra_engine_batches_total").unwrap() >= 2.0);
    assert_eq!(
        metric(&body, "netspectra_engine_duplicate_batches_total"),
        Some(0.0)
    );
    let lag = metric(&body, "netspectra_engine_lag_seconds").expect("lag gauge");
    assert!((0.0..30.0).contains(&lag), "lag {lag}");
    assert_eq!(metric(&body, "netspectra_nats_connected"), Some(1.0));
    assert_eq!(
        metric(&body, "netspectra_nats_slow_consumer_events_total"),
        Some(0.0)
    );
    assert!(
        metric(&body, "netspectra_store_write_seconds_count").unwrap() >= 1.0,
        "{body}"
    );
    assert!(body.contains("netspectra_store_write_seconds_bucket{store=\"sqlite\",le=\"0.01\"}"));
    assert!(metric(&body, "netspectra_store_windows_total").unwrap() >= 1.0);

    let p = probe.wait_with_output().unwrap();
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let pv: serde_json::Value = serde_json::from_slice(&p.stdout).unwrap();
    assert_eq!(pv["packets"], (2 * N) as u64);
    let e = terminate(engine);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let ev: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(ev["packets"], (2 * N) as u64);
}

#[test]
fn the_engine_is_not_ready_while_nats_is_gone() {
    let server = NatsServer::start(true);
    let url = server.url();
    let addr = format!("127.0.0.1:{}", free_port());
    let engine = super::bin()
        .args(["engine", "--nats", &url, "--no-store", "--metrics", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start netspectra engine");
    wait_for(&addr, "/readyz", 10, "engine ready", |s, b| {
        s == 200 && b == "ready\n"
    });
    drop(server); // stops nats-server
    let body = wait_for(&addr, "/readyz", 10, "engine not ready", |s, _| s == 503);
    assert_eq!(body, format!("not ready: not connected to NATS at {url}\n"));
    assert_eq!(get(&addr, "/healthz").0, 200, "alive all the same");
    let m = get(&addr, "/metrics").1;
    assert_eq!(metric(&m, "netspectra_nats_connected"), Some(0.0), "{m}");
    assert!(metric(&m, "netspectra_nats_disconnects_total").unwrap() >= 1.0);
    let _ = terminate(engine);
}

#[test]
fn a_metrics_address_in_use_is_an_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for role in [
        &["run", "--iface", "lo", "--no-store", "--duration", "1"][..],
        &["probe", "--iface", "lo", "--nats", "nats://127.0.0.1:1"][..],
        &["engine", "--no-store", "--nats", "nats://127.0.0.1:1"][..],
    ] {
        let out = super::bin()
            .args(role)
            .args(["--metrics", &addr])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{role:?}: {err}");
        assert!(
            err.contains(&format!("cannot serve metrics on {addr}")) && err.contains("in use"),
            "{role:?}: {err}"
        );
    }
    let out = super::bin()
        .args(["engine", "--no-store", "--metrics", "no-port"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a host:port address"));
}

#[test]
fn the_engine_reports_the_clickhouse_spool_and_insert_latency() {
    let mut ch = netspectra_testkit::clickhouse::ClickHouseServer::start();
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let (file, truth) = super::gen(dir.path(), "s.pcap", 20_000, 5, "pcap", &[]);
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "aggregator:\n  snapshot_interval: 100ms\n  period: 1s\n",
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let engine = super::bin()
        .current_dir(dir.path()) // the spool goes under ./netspectra-spool
        .args(["engine", "--nats", &server.url(), "--store", &ch.url()])
        .args(["--config", config.to_str().unwrap(), "--workers", "1"])
        .args(["--format", "json", "--metrics", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start netspectra engine");
    wait_for(&addr, "/readyz", 15, "engine ready", |s, _| s == 200);
    let body = get(&addr, "/metrics").1;
    assert_eq!(
        metric(&body, "netspectra_store_spool_batches"),
        Some(0.0),
        "{body}"
    );

    ch.stop();
    let out = super::bin()
        .args(["probe", "--file", file.to_str().unwrap()])
        .args([
            "--nats",
            &server.url(),
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = wait_for(&addr, "/metrics", 30, "rows spooled", |_, b| {
        metric(b, "netspectra_store_spool_batches").unwrap_or(0.0) >= 1.0
    });
    assert!(metric(&body, "netspectra_store_spool_rows").unwrap() >= 1.0);
    assert_eq!(
        metric(&body, "netspectra_engine_packets_total"),
        truth["ip_packets"].as_f64()
    );

    ch.start_again();
    let body = wait_for(&addr, "/metrics", 60, "spool replayed", |_, b| {
        metric(b, "netspectra_store_spool_batches") == Some(0.0)
    });
    assert_eq!(metric(&body, "netspectra_store_spool_rows"), Some(0.0));
    assert!(body.contains("netspectra_store_write_seconds_count{store=\"clickhouse\"}"));
    assert!(metric(&body, "netspectra_store_inserted_rows_total").unwrap() >= 1.0);
    let e = terminate(engine);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
}

#[test]
fn slow_clients_cannot_hold_the_metrics_endpoint() {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = super::bin()
        .args([
            "run",
            "--iface",
            "lo",
            "--bpf",
            "udp and dst port 9",
            "--duration",
            "15",
        ])
        .args(["--no-store", "--metrics", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start netspectra run");
    wait_for(&addr, "/readyz", 10, "run ready", |s, _| s == 200);
    // More clients than the old responder had slots, each trickling its
    // request head one byte at a time (each read well within any
    // per-read timeout): they must neither lock others out nor stay.
    let started = Instant::now();
    let trickling: Vec<_> = (0..24)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || -> Duration {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(12) {
                    if s.write_all(b"X").is_err() {
                        return t.elapsed();
                    }
                    let mut buf = [0u8; 256];
                    match s.read(&mut buf) {
                        Ok(0) => return t.elapsed(), // closed by the server
                        Ok(_) => return t.elapsed(), // an error answer, then close
                        Err(_) => {}
                    }
                    std::thread::sleep(Duration::from_millis(400));
                }
                t.elapsed()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // A scraper is answered at once all the same.
    let t = Instant::now();
    let (status, body) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("netspectra_capture_packets_total"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    for t in trickling {
        let held = t.join().unwrap();
        assert!(
            held < Duration::from_secs(9),
            "a trickling client kept its connection {held:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(12));
    assert_eq!(get(&addr, "/healthz"), (200, "ok\n".to_string()));
    let _ = terminate(child);
}
