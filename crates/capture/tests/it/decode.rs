//! Frame decoding: one hand-built frame per link type, IP corner cases,
//! every `Malformed` reason, and a no-panic property over random bytes.

use netspectra_capture::decode::decode;
use netspectra_capture::link::LinkType;
use netspectra_model::ip::from_v4;
use netspectra_model::{Malformed, PacketRecord, L3};
use proptest::prelude::*;

const SRC4: [u8; 4] = [10, 0, 0, 1];
const DST4: [u8; 4] = [192, 168, 1, 2];
const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn tcp(sp: u16, dp: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sp.to_be_bytes());
    t[2..4].copy_from_slice(&dp.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t
}

fn udp(sp: u16, dp: u16) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sp.to_be_bytes());
    u[2..4].copy_from_slice(&dp.to_be_bytes());
    u[4..6].copy_from_slice(&8u16.to_be_bytes());
    u
}

/// IPv4 header (IHL 5) with `frag` as the flags+offset field.
fn ipv4(proto: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&SRC4);
    h[16..20].copy_from_slice(&DST4);
    h.extend_from_slice(payload);
    h
}

fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&SRC6);
    h[24..40].copy_from_slice(&DST6);
    h.extend_from_slice(payload);
    h
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xAA; 12];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Ethernet with VLAN tags `(tpid, vid)` outermost first.
fn eth_tagged(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xAA; 12];
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(0x2000 | vid).to_be_bytes()); // PCP 1
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn dec(link: LinkType, frame: &[u8]) -> PacketRecord {
    let mut rec = PacketRecord::default();
    decode(link, frame, &mut rec);
    rec
}

fn assert_v4_tcp(rec: &PacketRecord, flags: u8) {
    assert_eq!(rec.l3, L3::Ipv4, "{rec:?}");
    assert_eq!(rec.src_ip, from_v4(SRC4));
    assert_eq!(rec.dst_ip, from_v4(DST4));
    assert_eq!(rec.protocol, 6);
    assert_eq!((rec.src_port, rec.dst_port), (40000, 443));
    assert_eq!(rec.tcp_flags, flags);
    assert!(!rec.fragment && !rec.l4_truncated);
}

fn assert_v6_udp(rec: &PacketRecord) {
    assert_eq!(rec.l3, L3::Ipv6, "{rec:?}");
    assert_eq!(rec.src_ip, SRC6);
    assert_eq!(rec.dst_ip, DST6);
    assert_eq!(rec.protocol, 17);
    assert_eq!((rec.src_port, rec.dst_port), (5353, 53));
    assert_eq!(rec.tcp_flags, 0);
    assert!(!rec.fragment && !rec.l4_truncated);
}

#[test]
fn ethernet_ipv4_tcp_with_flags() {
    let f = eth(0x0800, &ipv4(6, 0x4000, &tcp(40000, 443, 0x12)));
    let rec = dec(LinkType::ETHERNET, &f);
    assert_v4_tcp(&rec, 0x12);
    assert_eq!(
        rec.vlan,
        netspectra_model::NO_VLAN,
        "untagged is no VLAN, not VLAN 0"
    );
    // A priority-tagged frame (802.1Q with VID 0) is VLAN 0.
    let tagged = eth_tagged(
        &[(0x8100, 0)],
        0x0800,
        &ipv4(6, 0x4000, &tcp(40000, 443, 0x12)),
    );
    assert_eq!(dec(LinkType::ETHERNET, &tagged).vlan, 0);
}

#[test]
fn ethernet_ipv6_udp() {
    assert_v6_udp(&dec(
        LinkType::ETHERNET,
        &eth(0x86DD, &ipv6(17, &udp(5353, 53))),
    ));
}

#[test]
fn vlan_8021q_and_qinq_take_the_outer_id() {
    let ip = ipv4(6, 0, &tcp(40000, 443, 0x02));
    let rec = dec(
        LinkType::ETHERNET,
        &eth_tagged(&[(0x8100, 100)], 0x0800, &ip),
    );
    assert_v4_tcp(&rec, 0x02);
    assert_eq!(rec.vlan, 100);
    for outer in [0x88A8, 0x9100] {
        let f = eth_tagged(
            &[(outer, 7), (0x8100, 200)],
            0x86DD,
            &ipv6(17, &udp(5353, 53)),
        );
        let rec = dec(LinkType::ETHERNET, &f);
        assert_v6_udp(&rec);
        assert_eq!(rec.vlan, 7, "outer tpid {outer:#x}");
    }
}

#[test]
fn vlan_depth_limit_and_cut_tag() {
    let ip = ipv4(17, 0, &udp(1, 2));
    let eight = vec![(0x8100, 5); 8];
    assert_eq!(
        dec(LinkType::ETHERNET, &eth_tagged(&eight, 0x0800, &ip)).l3,
        L3::Ipv4
    );
    let nine = vec![(0x8100, 5); 9];
    assert_eq!(
        dec(LinkType::ETHERNET, &eth_tagged(&nine, 0x0800, &ip)).l3,
        L3::Malformed(Malformed::BadVlan)
    );
    // Tag announced but only two bytes of it present.
    let mut cut = eth(0x8100, &[]);
    cut.extend_from_slice(&[0x00, 0x05]);
    assert_eq!(
        dec(LinkType::ETHERNET, &cut).l3,
        L3::Malformed(Malformed::BadVlan)
    );
}

#[test]
fn non_ip_ethernet() {
    let arp = eth(0x0806, &[0u8; 28]);
    let rec = dec(LinkType::ETHERNET, &arp);
    assert_eq!(rec.l3, L3::NonIp);
    assert_eq!(rec.src_ip, [0; 16]);
    // 802.3 length field followed by LLC.
    assert_eq!(
        dec(LinkType::ETHERNET, &eth(0x0026, &[0x42; 38])).l3,
        L3::NonIp
    );
    // VLAN-tagged ARP keeps its VLAN.
    let rec = dec(
        LinkType::ETHERNET,
        &eth_tagged(&[(0x8100, 9)], 0x0806, &[0; 28]),
    );
    assert_eq!((rec.l3, rec.vlan), (L3::NonIp, 9));
}

#[test]
fn null_accepts_both_byte_orders_and_loop_is_big_endian() {
    let ip4 = ipv4(6, 0, &tcp(40000, 443, 0x10));
    let ip6 = ipv6(17, &udp(5353, 53));
    for fam in [2u32.to_le_bytes(), 2u32.to_be_bytes()] {
        let mut f = fam.to_vec();
        f.extend_from_slice(&ip4);
        assert_v4_tcp(&dec(LinkType::NULL, &f), 0x10);
    }
    for v in [24u32, 28, 30] {
        for fam in [v.to_le_bytes(), v.to_be_bytes()] {
            let mut f = fam.to_vec();
            f.extend_from_slice(&ip6);
            assert_v6_udp(&dec(LinkType::NULL, &f));
        }
    }
    let mut f = 2u32.to_be_bytes().to_vec();
    f.extend_from_slice(&ip4);
    assert_v4_tcp(&dec(LinkType::LOOP, &f), 0x10);
    let mut f = 30u32.to_be_bytes().to_vec();
    f.extend_from_slice(&ip6);
    assert_v6_udp(&dec(LinkType::LOOP, &f));
    // LOOP does not accept little-endian families.
    let mut f = 2u32.to_le_bytes().to_vec();
    f.extend_from_slice(&ip4);
    assert_eq!(dec(LinkType::LOOP, &f).l3, L3::NonIp);
    // Unknown family (e.g. AF_APPLETALK 16) is not IP.
    let mut f = 16u32.to_le_bytes().to_vec();
    f.extend_from_slice(&ip4);
    assert_eq!(dec(LinkType::NULL, &f).l3, L3::NonIp);
    assert_eq!(
        dec(LinkType::NULL, &[2, 0]).l3,
        L3::Malformed(Malformed::TruncatedLink)
    );
}

#[test]
fn raw_ip_link_types() {
    let ip4 = ipv4(6, 0, &tcp(40000, 443, 0x01));
    let ip6 = ipv6(17, &udp(5353, 53));
    for lt in [LinkType::RAW, LinkType::RAW_12, LinkType::RAW_14] {
        assert_v4_tcp(&dec(lt, &ip4), 0x01);
        assert_v6_udp(&dec(lt, &ip6));
        assert_eq!(
            dec(lt, &[0x55; 40]).l3,
            L3::Malformed(Malformed::BadIpVersion)
        );
        assert_eq!(dec(lt, &[]).l3, L3::Malformed(Malformed::TruncatedIp));
    }
    assert_v4_tcp(&dec(LinkType::IPV4, &ip4), 0x01);
    assert_v6_udp(&dec(LinkType::IPV6, &ip6));
    assert_eq!(
        dec(LinkType::IPV4, &ip6).l3,
        L3::Malformed(Malformed::BadIpVersion)
    );
    assert_eq!(
        dec(LinkType::IPV6, &ip4).l3,
        L3::Malformed(Malformed::BadIpVersion)
    );
}

#[test]
fn linux_cooked_v1_and_v2() {
    let ip4 = ipv4(6, 0, &tcp(40000, 443, 0x18));
    let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0];
    sll.extend_from_slice(&0x0800u16.to_be_bytes());
    sll.extend_from_slice(&ip4);
    assert_v4_tcp(&dec(LinkType::LINUX_SLL, &sll), 0x18);

    // SLL with an 802.1Q tag after the header.
    let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0];
    sll.extend_from_slice(&0x8100u16.to_be_bytes());
    sll.extend_from_slice(&42u16.to_be_bytes());
    sll.extend_from_slice(&0x86DDu16.to_be_bytes());
    sll.extend_from_slice(&ipv6(17, &udp(5353, 53)));
    let rec = dec(LinkType::LINUX_SLL, &sll);
    assert_v6_udp(&rec);
    assert_eq!(rec.vlan, 42);

    let mut sll2 = 0x86DDu16.to_be_bytes().to_vec();
    sll2.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0]);
    assert_eq!(sll2.len(), 20);
    sll2.extend_from_slice(&ipv6(17, &udp(5353, 53)));
    assert_v6_udp(&dec(LinkType::LINUX_SLL2, &sll2));

    assert_eq!(
        dec(LinkType::LINUX_SLL, &[0; 15]).l3,
        L3::Malformed(Malformed::TruncatedLink)
    );
    assert_eq!(
        dec(LinkType::LINUX_SLL2, &[0x08, 0, 0, 0]).l3,
        L3::Malformed(Malformed::TruncatedLink)
    );
    // SLL carrying a non-IP protocol (e.g. 0x0004, 802.2 LLC).
    let mut llc = vec![0u8; 14];
    llc.extend_from_slice(&4u16.to_be_bytes());
    llc.extend_from_slice(&[0; 10]);
    assert_eq!(dec(LinkType::LINUX_SLL, &llc).l3, L3::NonIp);
}

#[test]
fn unsupported_link_type() {
    let f = eth(0x0800, &ipv4(6, 0, &tcp(1, 2, 0)));
    assert_eq!(dec(LinkType(105), &f).l3, L3::UnsupportedLink);
    assert_eq!(dec(LinkType(147), &[]).l3, L3::UnsupportedLink);
}

#[test]
fn ipv4_fragments() {
    // First fragment (MF set, offset 0): ports are parsed.
    let first = eth(0x0800, &ipv4(6, 0x2000, &tcp(40000, 443, 0x10)));
    let rec = dec(LinkType::ETHERNET, &first);
    assert_v4_tcp(&rec, 0x10);
    // Non-first fragment: no ports, flagged, still an IPv4 flow.
    let later = eth(0x0800, &ipv4(6, 0x00B9, &tcp(40000, 443, 0x10)));
    let rec = dec(LinkType::ETHERNET, &later);
    assert_eq!(rec.l3, L3::Ipv4);
    assert!(rec.fragment);
    assert_eq!(rec.protocol, 6);
    assert_eq!((rec.src_port, rec.dst_port, rec.tcp_flags), (0, 0, 0));
    assert!(!rec.l4_truncated);
}

#[test]
fn ipv4_options_are_skipped() {
    let mut ip = ipv4(17, 0, &[]);
    ip[0] = 0x46; // IHL 6: one 4-byte option
    ip.extend_from_slice(&[1, 1, 1, 0]);
    ip.extend_from_slice(&udp(5353, 53));
    let total = ip.len() as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let rec = dec(LinkType::RAW, &ip);
    assert_eq!(rec.l3, L3::Ipv4);
    assert_eq!((rec.src_port, rec.dst_port), (5353, 53));
}

fn ext(next: u8, len8: u8) -> Vec<u8> {
    let mut e = vec![0u8; (usize::from(len8) + 1) * 8];
    e[0] = next;
    e[1] = len8;
    e
}

fn frag_hdr(next: u8, offset8: u16, more: bool) -> Vec<u8> {
    let mut e = vec![0u8; 8];
    e[0] = next;
    e[2..4].copy_from_slice(&((offset8 << 3) | u16::from(more)).to_be_bytes());
    e[4..8].copy_from_slice(&0xDEADBEEFu32.to_be_bytes());
    e
}

#[test]
fn ipv6_extension_chain() {
    // Hop-by-hop → routing (24 bytes) → fragment (first) → UDP.
    let mut p = ext(43, 0);
    p.extend_from_slice(&ext(44, 2));
    p.extend_from_slice(&frag_hdr(17, 0, true));
    p.extend_from_slice(&udp(5353, 53));
    assert_v6_udp(&dec(LinkType::RAW, &ipv6(0, &p)));

    // Destination options + AH (len 4 → 24 bytes) → TCP.
    let mut p = ext(51, 0);
    let mut ah = vec![0u8; 24];
    ah[0] = 6;
    ah[1] = 4;
    p.extend_from_slice(&ah);
    p.extend_from_slice(&tcp(40000, 443, 0x11));
    let rec = dec(LinkType::RAW, &ipv6(60, &p));
    assert_eq!((rec.l3, rec.protocol, rec.tcp_flags), (L3::Ipv6, 6, 0x11));
    assert_eq!((rec.src_port, rec.dst_port), (40000, 443));

    // Non-first fragment: protocol from the fragment header, no ports.
    let mut p = ext(43, 0);
    p.extend_from_slice(&ext(44, 0));
    p.extend_from_slice(&frag_hdr(6, 185, false));
    p.extend_from_slice(&[0xAB; 32]);
    let rec = dec(LinkType::RAW, &ipv6(0, &p));
    assert_eq!(rec.l3, L3::Ipv6);
    assert!(rec.fragment);
    assert_eq!((rec.protocol, rec.src_port, rec.dst_port), (6, 0, 0));
    assert_eq!(rec.src_ip, SRC6);

    // No next header.
    let rec = dec(LinkType::RAW, &ipv6(59, &[]));
    assert_eq!(
        (rec.l3, rec.protocol, rec.l4_truncated),
        (L3::Ipv6, 59, false)
    );
}

#[test]
fn icmp_and_icmpv6_have_no_ports() {
    let rec = dec(LinkType::RAW, &ipv4(1, 0, &[8, 0, 0xF7, 0xFF, 0, 1, 0, 1]));
    assert_eq!((rec.l3, rec.protocol), (L3::Ipv4, 1));
    assert_eq!(
        (rec.src_port, rec.dst_port, rec.l4_truncated),
        (0, 0, false)
    );
    let rec = dec(LinkType::RAW, &ipv6(58, &[128, 0, 0, 0, 0, 1, 0, 1]));
    assert_eq!((rec.l3, rec.protocol), (L3::Ipv6, 58));
    assert_eq!(
        (rec.src_port, rec.dst_port, rec.l4_truncated),
        (0, 0, false)
    );
    let rec = dec(LinkType::RAW, &ipv4(1, 0, &[8, 0]));
    assert!(rec.l4_truncated);
}

#[test]
fn other_transports_get_ports() {
    for proto in [136u8, 132] {
        let mut seg = udp(7, 9);
        seg.extend_from_slice(&[0; 4]);
        let rec = dec(LinkType::RAW, &ipv4(proto, 0, &seg));
        assert_eq!((rec.protocol, rec.src_port, rec.dst_port), (proto, 7, 9));
        assert!(!rec.l4_truncated);
    }
    // GRE: no ports, tunnel not followed.
    let rec = dec(LinkType::RAW, &ipv4(47, 0, &[0, 0, 0x08, 0, 0x45, 0, 0, 0]));
    assert_eq!((rec.l3, rec.protocol, rec.src_port), (L3::Ipv4, 47, 0));
}

#[test]
fn l4_truncation() {
    // TCP cut to 10 bytes: ports kept, no flags, flagged truncated.
    let seg = &tcp(40000, 443, 0x02)[..10];
    let rec = dec(LinkType::ETHERNET, &eth(0x0800, &ipv4(6, 0, seg)));
    assert_eq!(rec.l3, L3::Ipv4);
    assert!(rec.l4_truncated);
    assert_eq!((rec.src_port, rec.dst_port, rec.tcp_flags), (40000, 443, 0));
    // TCP cut to 14 bytes: flags present, still truncated.
    let seg = &tcp(40000, 443, 0x02)[..14];
    let rec = dec(LinkType::ETHERNET, &eth(0x0800, &ipv4(6, 0, seg)));
    assert!(rec.l4_truncated);
    assert_eq!(rec.tcp_flags, 0x02);
    // Snap length cut inside the ports: no ports.
    let full = eth(0x0800, &ipv4(6, 0, &tcp(40000, 443, 0x02)));
    let rec = dec(LinkType::ETHERNET, &full[..34 + 3]);
    assert_eq!(rec.l3, L3::Ipv4);
    assert!(rec.l4_truncated);
    assert_eq!((rec.src_port, rec.dst_port), (0, 0));
    // UDP with 6 bytes (snap cut, IPv6).
    let full = ipv6(17, &udp(5353, 53));
    let rec = dec(LinkType::RAW, &full[..46]);
    assert_eq!((rec.l3, rec.l4_truncated), (L3::Ipv6, true));
    assert_eq!((rec.src_port, rec.dst_port), (5353, 53));
}

#[test]
fn every_malformed_reason() {
    use Malformed::*;
    let ip4 = ipv4(6, 0, &tcp(1, 2, 0));
    let e4 = eth(0x0800, &ip4);
    let cases: Vec<(LinkType, Vec<u8>, Malformed)> = vec![
        (LinkType::ETHERNET, vec![0; 13], TruncatedLink),
        (
            LinkType::ETHERNET,
            eth_tagged(&[(0x8100, 1); 9], 0x0800, &ip4),
            BadVlan,
        ),
        (LinkType::ETHERNET, e4[..14 + 19].to_vec(), TruncatedIp),
        (LinkType::ETHERNET, eth(0x0800, &[]), TruncatedIp),
        (
            LinkType::ETHERNET,
            eth(0x0800, &ipv6(17, &[])),
            BadIpVersion,
        ),
        (LinkType::ETHERNET, eth(0x86DD, &ip4), BadIpVersion),
        (
            LinkType::RAW,
            {
                let mut v = ip4.clone();
                v[0] = 0x44;
                v
            },
            BadIpHeaderLength,
        ),
        (
            LinkType::RAW,
            {
                let mut v = ip4.clone();
                v[0] = 0x4F; // 60-byte header, only 40 bytes present
                v
            },
            TruncatedIp,
        ),
        (
            LinkType::RAW,
            ipv6(17, &udp(1, 2))[..39].to_vec(),
            TruncatedIp,
        ),
        (
            LinkType::RAW,
            ipv6(0, &[17, 1, 0, 0, 0, 0, 0, 0]),
            BadIpv6Extension,
        ),
        (LinkType::RAW, ipv6(44, &[17, 0, 0]), BadIpv6Extension),
        (LinkType::RAW, ipv6(51, &[]), BadIpv6Extension),
    ];
    for (i, (lt, frame, why)) in cases.iter().enumerate() {
        let rec = dec(*lt, frame);
        assert_eq!(rec.l3, L3::Malformed(*why), "case {i}: {rec:?}");
        assert_eq!(
            rec.src_ip, [0; 16],
            "case {i}: malformed records carry no addresses"
        );
        assert_eq!(
            (rec.src_port, rec.dst_port, rec.protocol),
            (0, 0, 0),
            "case {i}"
        );
    }
}

#[test]
fn reused_record_is_fully_reset() {
    let mut rec = PacketRecord::default();
    decode(
        LinkType::ETHERNET,
        &eth_tagged(&[(0x8100, 3)], 0x0800, &ipv4(6, 0x0010, &tcp(1, 2, 0xFF))),
        &mut rec,
    );
    assert!(rec.fragment && rec.vlan == 3);
    rec.ts_ns = 123;
    rec.wire_len = 99;
    rec.cap_len = 98;
    decode(LinkType::ETHERNET, &eth(0x0806, &[0; 28]), &mut rec);
    let expect = PacketRecord {
        ts_ns: 123,
        wire_len: 99,
        cap_len: 98,
        ..PacketRecord::default()
    };
    assert_eq!(rec, expect);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_never_panics(
        frame in proptest::collection::vec(any::<u8>(), 0..200),
        lt in prop_oneof![
            Just(0u32), Just(1), Just(12), Just(14), Just(101), Just(108),
            Just(113), Just(228), Just(229), Just(276), any::<u32>(),
        ],
    ) {
        let mut rec = PacketRecord { ts_ns: 5, wire_len: 6, cap_len: 7, ..PacketRecord::default() };
        decode(LinkType(lt), &frame, &mut rec);
        prop_assert_eq!((rec.ts_ns, rec.wire_len, rec.cap_len), (5, 6, 7));
        if !rec.l3.is_ip() {
            prop_assert_eq!(rec.src_ip, [0u8; 16]);
            prop_assert_eq!(rec.src_port, 0);
        }
    }

    #[test]
    fn decode_never_panics_on_mutated_ethernet(
        tail in proptest::collection::vec(any::<u8>(), 0..120),
        et in prop_oneof![Just(0x0800u16), Just(0x86DD), Just(0x8100), Just(0x88A8)],
        cut in 0usize..200,
    ) {
        let mut f = eth(et, &tail);
        if et == 0x0800 && f.len() > 14 { f[14] = 0x40 | (f[14] & 0x0F); }
        if et == 0x86DD && f.len() > 14 { f[14] = 0x60; }
        f.truncate(cut);
        let mut rec = PacketRecord::default();
        decode(LinkType::ETHERNET, &f, &mut rec);
    }
}
