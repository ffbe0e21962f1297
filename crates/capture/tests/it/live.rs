//! Live capture errors: what an operator sees for a missing libpcap, a
//! missing interface or a bad filter. (Capturing real traffic is tested
//! through the binary, in a network namespace: `crates/cli/tests/it/run.rs`.)

use netspectra_capture::live::{interfaces, libpcap_available, LiveCapture, LiveOptions};
use netspectra_capture::reader::CaptureError;
use netspectra_testkit::netns::require_root;
use std::process::Command;

/// Set in the environment of a test re-executed by [`in_own_process`].
const CHILD: &str = "NETSPECTRA_CAPTURE_TEST_CHILD";

/// libpcap is loaded once per process, so a test of how loading fails needs
/// a process of its own: in the test process this re-executes the test
/// binary to run only `test` (of this module), with `env` set, checks that
/// it ran and passed, and returns true (the caller returns); in that child
/// it returns false and the caller runs its body.
fn in_own_process(test: &str, env: &[(&str, &str)]) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return false;
    }
    // "it::live" → "live::<test>", the name libtest filters on.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let name = format!("{module}::{test}");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed in its own process ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

fn open_err(opts: &LiveOptions) -> String {
    match LiveCapture::open(opts) {
        Ok(_) => panic!("opening {:?} should fail", opts),
        Err(e) => {
            assert!(matches!(e, CaptureError::Live { .. }), "{e:?}");
            e.to_string()
        }
    }
}

#[test]
fn without_libpcap_opening_says_which_package_to_install() {
    let path = "/nonexistent/libpcap.so";
    if in_own_process(
        "without_libpcap_opening_says_which_package_to_install",
        &[("NETSPECTRA_LIBPCAP", path)],
    ) {
        return;
    }
    // No root needed: loading fails before any interface is touched.
    let msg = open_err(&LiveOptions::new("lo"));
    assert!(msg.contains("live capture on lo"), "{msg}");
    assert!(msg.contains("libpcap is not installed"), "{msg}");
    assert!(msg.contains("apt-get install libpcap"), "{msg}");
    assert!(msg.contains("dnf install libpcap"), "{msg}");
    assert!(
        msg.contains(path) && msg.contains("NETSPECTRA_LIBPCAP"),
        "{msg}"
    );
    // Every entry point says the same, and keeps saying it.
    for e in [interfaces().unwrap_err(), libpcap_available().unwrap_err()] {
        assert!(matches!(e, CaptureError::Live { .. }), "{e:?}");
        assert!(e.to_string().contains("apt-get install libpcap"), "{e}");
    }
    assert_eq!(open_err(&LiveOptions::new("lo")), msg);
}

#[test]
fn a_library_that_is_not_libpcap_is_refused_by_name() {
    if in_own_process(
        "a_library_that_is_not_libpcap_is_refused_by_name",
        &[("NETSPECTRA_LIBPCAP", "libc.so.6")],
    ) {
        return;
    }
    let msg = open_err(&LiveOptions::new("lo"));
    assert!(msg.contains("libc.so.6 lacks pcap_create"), "{msg}");
    assert!(msg.contains("apt-get install libpcap"), "{msg}");
}

#[test]
fn a_missing_interface_is_named_with_the_ones_that_exist() {
    require_root();
    libpcap_available().unwrap();
    let msg = open_err(&LiveOptions::new("nsnope0"));
    assert!(msg.contains("nsnope0"), "{msg}");
    assert!(msg.contains("no such interface"), "{msg}");
    // The list of available interfaces includes loopback.
    assert!(msg.contains("available:") && msg.contains("lo"), "{msg}");
    assert!(interfaces().unwrap().iter().any(|i| i == "lo"));
}

#[test]
fn a_bad_filter_quotes_libpcap() {
    require_root();
    let msg = open_err(&LiveOptions {
        bpf: Some("udp and port nonsense-port".into()),
        ..LiveOptions::new("lo")
    });
    assert!(
        msg.contains("bad BPF filter `udp and port nonsense-port`"),
        "{msg}"
    );
    // libpcap's own words follow the quoted expression.
    assert!(msg.to_lowercase().contains("nonsense-port"), "{msg}");
    let tail = msg.split("`: ").nth(1).unwrap_or_default();
    assert!(
        !tail.trim().is_empty(),
        "libpcap's message is missing: {msg}"
    );
}

#[test]
fn loopback_opens_with_its_link_type_and_times_out_when_idle() {
    require_root();
    // A filter nothing matches: the read must time out (Ok(None)) promptly.
    let mut cap = LiveCapture::open(&LiveOptions {
        bpf: Some("udp and dst port 9 and src port 9".into()),
        timeout_ms: 50,
        ..LiveOptions::new("lo")
    })
    .unwrap();
    assert_eq!(cap.iface(), "lo");
    assert_eq!(
        cap.link_type(),
        netspectra_capture::link::LinkType::ETHERNET
    );
    let started = std::time::Instant::now();
    assert!(cap.next_packet().unwrap().is_none());
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let stats = cap.stats().unwrap();
    assert_eq!(stats.dropped, 0);
}

#[test]
fn loopback_traffic_is_captured_with_wire_lengths_and_nanosecond_times() {
    require_root();
    use netspectra_capture::decode::decode;
    use netspectra_model::PacketRecord;
    use std::net::UdpSocket;
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    let mut cap = LiveCapture::open(&LiveOptions {
        bpf: Some(format!("udp and dst port {port}")),
        ..LiveOptions::new("lo")
    })
    .unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sizes = [1usize, 100, 1000, 1400];
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for &n in &sizes {
        tx.send_to(&vec![7u8; n], ("127.0.0.1", port)).unwrap();
    }
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut rec = PacketRecord::default();
    while seen.len() < sizes.len() && std::time::Instant::now() < deadline {
        if let Some(p) = cap.next_packet().unwrap() {
            assert!(p.ts_ns >= before - 1_000_000, "{} < {before}", p.ts_ns);
            decode(p.link_type, p.data, &mut rec);
            assert_eq!(rec.dst_port, port);
            seen.push(p.wire_len as usize);
        }
    }
    let expect: Vec<usize> = sizes.iter().map(|n| n + 42).collect();
    assert_eq!(seen, expect, "UDP payload + 8 + 20 + 14 per datagram");
    assert!(cap.stats().unwrap().received >= sizes.len() as u64);
}
