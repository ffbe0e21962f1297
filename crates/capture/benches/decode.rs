//! Hot-path costs: decoding one frame, and reading one record from a pcap.
//!
//! Run with `cargo bench -p netspectra-capture --bench decode`.

use divan::black_box;
use netspectra_capture::decode::decode;
use netspectra_capture::link::LinkType;
use netspectra_capture::reader::CaptureReader;
use netspectra_model::PacketRecord;

fn main() {
    divan::main();
}

/// A 74-byte Ethernet / IPv4 / TCP SYN frame.
fn eth_ipv4_tcp() -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[192, 168, 1, 2]);
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&443u16.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x02;
    f
}

/// An 802.1Q-tagged Ethernet / IPv6 / UDP frame.
fn vlan_ipv6_udp() -> Vec<u8> {
    let mut f = vec![0u8; 18 + 40 + 8 + 32];
    f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    f[14..16].copy_from_slice(&100u16.to_be_bytes());
    f[16..18].copy_from_slice(&0x86DDu16.to_be_bytes());
    let ip = &mut f[18..58];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 17;
    ip[7] = 64;
    ip[8] = 0x20;
    ip[23] = 1;
    ip[24] = 0x20;
    ip[39] = 2;
    f[58..60].copy_from_slice(&5353u16.to_be_bytes());
    f[60..62].copy_from_slice(&53u16.to_be_bytes());
    f
}

#[divan::bench]
fn decode_eth_ipv4_tcp(bencher: divan::Bencher) {
    let frame = eth_ipv4_tcp();
    let mut rec = PacketRecord::default();
    bencher.bench_local(|| {
        decode(
            black_box(LinkType::ETHERNET),
            black_box(&frame[..]),
            &mut rec,
        );
        black_box(&rec);
    });
}

#[divan::bench]
fn decode_vlan_ipv6_udp(bencher: divan::Bencher) {
    let frame = vlan_ipv6_udp();
    let mut rec = PacketRecord::default();
    bencher.bench_local(|| {
        decode(
            black_box(LinkType::ETHERNET),
            black_box(&frame[..]),
            &mut rec,
        );
        black_box(&rec);
    });
}

const PCAP_PACKETS: usize = 100_000;

/// An in-memory little-endian µs pcap of `PCAP_PACKETS` mixed-size frames.
fn pcap_file() -> Vec<u8> {
    let frames = [eth_ipv4_tcp(), vlan_ipv6_udp(), vec![0x5A; 1514]];
    let mut out = Vec::with_capacity(24 + PCAP_PACKETS * 600);
    for v in [0xA1B2_C3D4u32, 0x0004_0002, 0, 0, 65535, 1] {
        out.extend(v.to_le_bytes());
    }
    for i in 0..PCAP_PACKETS {
        let f = &frames[i % frames.len()];
        let len = f.len() as u32;
        for v in [i as u32, (i % 1_000_000) as u32, len, len] {
            out.extend(v.to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    out
}

/// Reads the whole in-memory pcap; divan reports time per record.
#[divan::bench(sample_count = 20)]
fn read_pcap_records(bencher: divan::Bencher) {
    let file = pcap_file();
    bencher
        .counter(divan::counter::ItemsCount::new(PCAP_PACKETS))
        .bench_local(|| {
            let mut r = CaptureReader::new(black_box(&file[..]), "bench.pcap").unwrap();
            let mut bytes = 0usize;
            while let Some(p) = r.next_packet().unwrap() {
                bytes += p.data.len();
            }
            black_box(bytes)
        });
}

/// Reads and decodes every record: the full per-packet input cost.
#[divan::bench(sample_count = 20)]
fn read_and_decode_pcap(bencher: divan::Bencher) {
    let file = pcap_file();
    bencher
        .counter(divan::counter::ItemsCount::new(PCAP_PACKETS))
        .bench_local(|| {
            let mut r = CaptureReader::new(black_box(&file[..]), "bench.pcap").unwrap();
            let mut rec = PacketRecord::default();
            let mut ports = 0u64;
            while let Some(p) = r.next_packet().unwrap() {
                rec.ts_ns = p.ts_ns;
                rec.wire_len = p.wire_len;
                rec.cap_len = p.data.len() as u32;
                decode(p.link_type, p.data, &mut rec);
                ports += u64::from(rec.src_port);
            }
            black_box(ports)
        });
}
