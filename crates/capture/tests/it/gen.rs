//! The synthetic traffic generator: determinism, file structure, truth consistency.

use netspectra_capture::gen::{generate, truth_path, GenFormat, GenOptions, Truth};
use std::path::Path;

fn opts(packets: u64, seed: u64, format: GenFormat) -> GenOptions {
    GenOptions {
        packets,
        seed,
        format,
        spreaders: Vec::new(),
    }
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// What a structural walk of a capture found.
#[derive(Debug, Default)]
struct Walk {
    records: u64,
    orig_bytes: u64,
    first_ts: u64,
    last_ts: u64,
    monotonic: bool,
    per_iface: [u64; 2],
}

impl Walk {
    fn packet(&mut self, ts: u64, orig: u32, incl: u32) {
        assert_eq!(orig, incl, "frames are written in full");
        if self.records == 0 {
            self.first_ts = ts;
            self.monotonic = true;
        }
        self.monotonic &= ts >= self.last_ts;
        self.last_ts = ts;
        self.records += 1;
        self.orig_bytes += u64::from(orig);
    }
}

/// Walks a little-endian nanosecond pcap file.
fn walk_pcap(b: &[u8]) -> Walk {
    assert_eq!(u32le(b, 0), 0xa1b2_3c4d, "nanosecond magic");
    assert_eq!((u16le(b, 4), u16le(b, 6)), (2, 4));
    assert_eq!(u32le(b, 16), 65_535);
    assert_eq!(u32le(b, 20), 1, "Ethernet");
    let mut w = Walk::default();
    let mut at = 24;
    while at < b.len() {
        let ts = u64::from(u32le(b, at)) * 1_000_000_000 + u64::from(u32le(b, at + 4));
        let incl = u32le(b, at + 8);
        let orig = u32le(b, at + 12);
        w.packet(ts, orig, incl);
        at += 16 + incl as usize;
    }
    assert_eq!(at, b.len(), "last record ends at the end of the file");
    w
}

/// Walks a little-endian pcapng file: SHB, IDBs (checking if_tsresol = 9), EPBs.
fn walk_pcapng(b: &[u8]) -> Walk {
    let mut w = Walk::default();
    let mut at = 0;
    let mut ifaces = 0;
    while at < b.len() {
        let kind = u32le(b, at);
        let len = u32le(b, at + 4) as usize;
        assert_eq!(len % 4, 0, "block length is a multiple of 4");
        assert_eq!(u32le(b, at + len - 4), len as u32, "trailing length");
        let body = &b[at + 8..at + len - 4];
        match kind {
            0x0A0D_0D0A => {
                assert_eq!(at, 0);
                assert_eq!(u32le(body, 0), 0x1A2B_3C4D);
                assert_eq!((u16le(body, 4), u16le(body, 6)), (1, 0));
            }
            1 => {
                assert_eq!(u16le(body, 0), 1, "Ethernet");
                // Options: if_tsresol (9) = 9, then end of options.
                assert_eq!((u16le(body, 8), u16le(body, 10), body[12]), (9, 1, 9));
                assert_eq!(u32le(body, 16), 0);
                ifaces += 1;
            }
            6 => {
                let iface = u32le(body, 0);
                assert!(iface < ifaces);
                w.per_iface[iface as usize] += 1;
                let ts = u64::from(u32le(body, 4)) << 32 | u64::from(u32le(body, 8));
                let incl = u32le(body, 12);
                let orig = u32le(body, 16);
                assert_eq!(body.len(), 20 + (incl as usize).div_ceil(4) * 4);
                w.packet(ts, orig, incl);
            }
            other => panic!("unexpected block type {other:#x}"),
        }
        at += len;
    }
    assert_eq!(at, b.len());
    assert_eq!(ifaces, 2);
    w
}

fn check_walk(w: &Walk, t: &Truth) {
    assert_eq!(w.records, t.packets);
    assert_eq!(w.orig_bytes, t.bytes);
    assert!(w.monotonic, "timestamps never go back");
    assert_eq!(w.first_ts, t.first_ts_ns);
    assert_eq!(w.last_ts, t.last_ts_ns);
}

fn top3(t: &Truth, key: impl Fn(&netspectra_capture::gen::SrcStats) -> u64) -> Vec<String> {
    let mut v: Vec<(&String, u64)> = t.per_src.iter().map(|(k, s)| (k, key(s))).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.iter().take(3).map(|(k, _)| k.to_string()).collect()
}

fn check_truth(t: &Truth, packets: u64) {
    assert_eq!(t.packets, packets);
    assert_eq!(t.ip_packets + t.non_ip_packets, t.packets);
    assert_eq!(t.ipv4_packets + t.ipv6_packets, t.ip_packets);
    assert_eq!(t.tcp_packets + t.udp_packets + t.icmp_packets, t.ip_packets);
    assert!(t.qinq_packets <= t.vlan_packets);
    let sum_pkts: u64 = t.per_src.values().map(|s| s.packets).sum();
    let sum_bytes: u64 = t.per_src.values().map(|s| s.bytes).sum();
    assert_eq!(sum_pkts, t.ip_packets);
    assert_eq!(sum_bytes, t.ip_bytes);
    assert_eq!(
        t.bytes - t.ip_bytes,
        42 * t.non_ip_packets,
        "ARP frames are 42 bytes"
    );
    assert!(t.distinct_flows <= t.ip_packets);

    let p = packets as f64;
    let share = |n: u64| n as f64 / p;
    assert!(
        (0.002..0.01).contains(&share(t.non_ip_packets)),
        "ARP {}",
        t.non_ip_packets
    );
    assert!(
        (0.05..0.15).contains(&share(t.ipv6_packets)),
        "IPv6 {}",
        t.ipv6_packets
    );
    assert!(
        (0.12..0.18).contains(&share(t.vlan_packets)),
        "VLAN {}",
        t.vlan_packets
    );
    assert!(
        (0.03..0.07).contains(&share(t.qinq_packets)),
        "QinQ {}",
        t.qinq_packets
    );
    assert!(
        (0.70..0.90).contains(&share(t.tcp_packets)),
        "TCP {}",
        t.tcp_packets
    );

    let heavy = ["10.255.0.1", "10.255.0.2", "10.255.0.3"];
    assert_eq!(t.heavy_hitters, heavy);
    assert_eq!(top3(t, |s| s.packets), heavy, "top sources by packets");
    assert_eq!(top3(t, |s| s.bytes), heavy, "top sources by bytes");
    for (h, want) in heavy.iter().zip([0.05, 0.03, 0.02]) {
        let got = share(t.per_src[*h].packets);
        assert!((want * 0.8..want * 1.2).contains(&got), "{h}: {got}");
    }

    let d = (packets / 100).clamp(50, 20_000);
    assert_eq!(t.super_spreaders[0].src, "10.254.0.1");
    assert_eq!(t.super_spreaders[0].distinct_dst, d);
    let ss = &t.per_src["10.254.0.1"];
    assert_eq!(ss.packets, d + d / 4);
    assert_eq!(t.distinct_dst_per_src_top.len(), 20);
    assert_eq!(t.distinct_dst_per_src_top[0].src, "10.254.0.1");
    assert!(t
        .distinct_dst_per_src_top
        .windows(2)
        .all(|w| w[0].distinct_dst >= w[1].distinct_dst));
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.pcap");
    let b = dir.path().join("b.pcap");
    let c = dir.path().join("c.pcap");
    let ta = generate(&a, &opts(20_000, 7, GenFormat::Pcap)).unwrap();
    let tb = generate(&b, &opts(20_000, 7, GenFormat::Pcap)).unwrap();
    let tc = generate(&c, &opts(20_000, 8, GenFormat::Pcap)).unwrap();
    assert_eq!(read(&a), read(&b));
    assert_ne!(read(&a), read(&c));
    assert_eq!(ta, tb);
    assert_ne!(ta, tc);
    assert_eq!(read(&truth_path(&a)), read(&truth_path(&b)));

    let na = dir.path().join("a.pcapng");
    let nb = dir.path().join("b.pcapng");
    generate(&na, &opts(5_000, 7, GenFormat::PcapNg)).unwrap();
    generate(&nb, &opts(5_000, 7, GenFormat::PcapNg)).unwrap();
    assert_eq!(read(&na), read(&nb));
}

#[test]
fn pcap_structure_and_truth_agree() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.pcap");
    let n = 200_000;
    let truth = generate(&out, &opts(n, 1, GenFormat::Pcap)).unwrap();
    let w = walk_pcap(&read(&out));
    check_walk(&w, &truth);
    check_truth(&truth, n);
    // About 10 µs per packet.
    let span = truth.last_ts_ns - truth.first_ts_ns;
    assert!((1_800_000_000..2_200_000_000).contains(&span), "{span}");
    assert_eq!(truth.first_ts_ns, 1_767_225_600_000_000_000);
    // The truth file round-trips.
    let back = Truth::read(&truth_path(&out)).unwrap();
    assert_eq!(back, truth);
    assert_eq!(back.format, GenFormat::Pcap);
}

#[test]
fn pcapng_structure_and_truth_agree() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.pcapng");
    let n = 50_000;
    let truth = generate(&out, &opts(n, 3, GenFormat::PcapNg)).unwrap();
    let w = walk_pcapng(&read(&out));
    check_walk(&w, &truth);
    check_truth(&truth, n);
    assert!(w.per_iface.iter().all(|&k| k > n / 4), "{:?}", w.per_iface);
    let text = std::fs::read_to_string(truth_path(&out)).unwrap();
    assert!(text.contains("\"format\": \"pcapng\""));
}

#[test]
fn extra_spreaders_are_planted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.pcap");
    let o = GenOptions {
        packets: 100_000,
        seed: 5,
        format: GenFormat::Pcap,
        spreaders: vec![1_000, 300, 77],
    };
    let truth = generate(&out, &o).unwrap();
    let got: Vec<(&str, u64)> = truth
        .super_spreaders
        .iter()
        .map(|s| (s.src.as_str(), s.distinct_dst))
        .collect();
    assert_eq!(
        got,
        [
            ("10.254.0.1", 1_000),
            ("10.254.0.2", 1_000),
            ("10.254.0.3", 300),
            ("10.254.0.4", 77)
        ]
    );
    let top: Vec<&str> = truth.distinct_dst_per_src_top[..4]
        .iter()
        .map(|s| s.src.as_str())
        .collect();
    // The two 1000-destination spreaders tie and sort by address text.
    assert_eq!(&top[..2], ["10.254.0.1", "10.254.0.2"]);
    assert_eq!(truth.per_src["10.254.0.4"].packets, 77 + 19);
    check_walk(&walk_pcap(&read(&out)), &truth);
}

#[test]
fn tiny_and_invalid_requests() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.pcap");
    for n in [0, 1, 10, 150] {
        let t = generate(&out, &opts(n, 1, GenFormat::Pcap)).unwrap();
        assert_eq!(t.packets, n);
        assert_eq!(walk_pcap(&read(&out)).records, n);
    }
    let bad = GenOptions {
        packets: 1_000,
        spreaders: vec![900],
        ..GenOptions::default()
    };
    assert!(generate(&out, &bad).is_err());
    assert!("pcapng".parse::<GenFormat>().is_ok());
    assert!("erf".parse::<GenFormat>().is_err());
}
