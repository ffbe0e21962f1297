//! One captured frame to a [`PacketRecord`]: link layer, outer IP header, ports.
//!
//! The decoder runs once per packet on the hot path, so it never allocates,
//! never panics on hostile input (every access is a bounds-checked `get`) and
//! touches only the few header bytes a flow key needs. Only the outermost IP
//! header defines the flow; tunnels are not unwrapped.

use crate::link::LinkType;
use netspectra_model::ip::from_v4;
use netspectra_model::{Malformed, PacketRecord, L3};

/// How many stacked VLAN tags we follow before calling the frame damaged.
pub const MAX_VLAN_TAGS: usize = 8;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const PROTO_NO_NEXT: u8 = 59;
const PROTO_SCTP: u8 = 132;
const PROTO_UDPLITE: u8 = 136;

/// Decodes `frame` (captured with link type `link`) into `rec`.
///
/// Every field except `ts_ns`, `wire_len` and `cap_len` (which the caller
/// owns) is reset first, so one record can be reused for a whole capture.
/// The outcome is in `rec.l3`; damaged frames yield [`L3::Malformed`].
#[inline]
pub fn decode(link: LinkType, frame: &[u8], rec: &mut PacketRecord) {
    *rec = PacketRecord {
        ts_ns: rec.ts_ns,
        wire_len: rec.wire_len,
        cap_len: rec.cap_len,
        ..PacketRecord::default()
    };
    rec.l3 = match link {
        LinkType::ETHERNET => ethernet(frame, rec),
        LinkType::NULL => null(frame, rec, false),
        LinkType::LOOP => null(frame, rec, true),
        LinkType::RAW | LinkType::RAW_12 | LinkType::RAW_14 => raw(frame, rec),
        LinkType::IPV4 => match frame.first() {
            Some(b) if b >> 4 != 4 => L3::Malformed(Malformed::BadIpVersion),
            _ => ipv4(frame, rec),
        },
        LinkType::IPV6 => match frame.first() {
            Some(b) if b >> 4 != 6 => L3::Malformed(Malformed::BadIpVersion),
            _ => ipv6(frame, rec),
        },
        LinkType::LINUX_SLL => match be16(frame, 14) {
            Some(proto) => ethertype(frame, 16, proto, rec),
            None => L3::Malformed(Malformed::TruncatedLink),
        },
        LinkType::LINUX_SLL2 => match (be16(frame, 0), frame.len() >= 20) {
            (Some(proto), true) => ethertype(frame, 20, proto, rec),
            _ => L3::Malformed(Malformed::TruncatedLink),
        },
        _ => L3::UnsupportedLink,
    };
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    match b.get(at..at + 2) {
        Some(&[hi, lo]) => Some(u16::from_be_bytes([hi, lo])),
        _ => None,
    }
}

#[inline(always)]
fn rest(b: &[u8], from: usize) -> &[u8] {
    b.get(from..).unwrap_or(&[])
}

#[inline]
fn ethernet(frame: &[u8], rec: &mut PacketRecord) -> L3 {
    match (be16(frame, 12), frame.len() >= 14) {
        (Some(et), true) => ethertype(frame, 14, et, rec),
        _ => L3::Malformed(Malformed::TruncatedLink),
    }
}

/// Follows VLAN tags from `off` (where the payload of `et` starts) to IP.
#[inline]
fn ethertype(frame: &[u8], mut off: usize, mut et: u16, rec: &mut PacketRecord) -> L3 {
    let mut tags = 0;
    while matches!(et, 0x8100 | 0x88A8 | 0x9100) {
        if tags == MAX_VLAN_TAGS {
            return L3::Malformed(Malformed::BadVlan);
        }
        let (Some(tci), Some(inner)) = (be16(frame, off), be16(frame, off + 2)) else {
            return L3::Malformed(Malformed::BadVlan);
        };
        if tags == 0 {
            rec.vlan = tci & 0x0FFF;
        }
        et = inner;
        off += 4;
        tags += 1;
    }
    match et {
        ETHERTYPE_IPV4 => ipv4(rest(frame, off), rec),
        ETHERTYPE_IPV6 => ipv6(rest(frame, off), rec),
        _ => L3::NonIp,
    }
}

/// BSD NULL (host byte order, either accepted) and LOOP (big-endian) framing.
#[inline]
fn null(frame: &[u8], rec: &mut PacketRecord, big_endian_only: bool) -> L3 {
    let Some(&[a, b, c, d]) = frame.get(..4) else {
        return L3::Malformed(Malformed::TruncatedLink);
    };
    let be = u32::from_be_bytes([a, b, c, d]);
    let le = u32::from_le_bytes([a, b, c, d]);
    let family = |v: u32| match v {
        2 => Some(4u8),
        24 | 28 | 30 => Some(6u8),
        _ => None,
    };
    let fam = if big_endian_only {
        family(be)
    } else {
        family(le).or(family(be))
    };
    match fam {
        Some(4) => ipv4(&frame[4..], rec),
        Some(_) => ipv6(&frame[4..], rec),
        None => L3::NonIp,
    }
}

#[inline]
fn raw(frame: &[u8], rec: &mut PacketRecord) -> L3 {
    match frame.first().map(|b| b >> 4) {
        None => L3::Malformed(Malformed::TruncatedIp),
        Some(4) => ipv4(frame, rec),
        Some(6) => ipv6(frame, rec),
        Some(_) => L3::Malformed(Malformed::BadIpVersion),
    }
}

#[inline]
fn ipv4(ip: &[u8], rec: &mut PacketRecord) -> L3 {
    let Some(&vihl) = ip.first() else {
        return L3::Malformed(Malformed::TruncatedIp);
    };
    if vihl >> 4 != 4 {
        return L3::Malformed(Malformed::BadIpVersion);
    }
    let ihl = usize::from(vihl & 0x0F) * 4;
    if ihl < 20 {
        return L3::Malformed(Malformed::BadIpHeaderLength);
    }
    let Some(hdr) = ip.get(..ihl) else {
        return L3::Malformed(Malformed::TruncatedIp);
    };
    let total_len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    let frag_off = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1FFF;
    rec.protocol = hdr[9];
    rec.src_ip = from_v4([hdr[12], hdr[13], hdr[14], hdr[15]]);
    rec.dst_ip = from_v4([hdr[16], hdr[17], hdr[18], hdr[19]]);
    if frag_off != 0 {
        rec.fragment = true;
        return L3::Ipv4;
    }
    // Ethernet pads short packets: bound the payload by the IP total length
    // when it is plausible (TSO captures may write 0 there).
    let end = if total_len >= ihl {
        total_len.min(ip.len())
    } else {
        ip.len()
    };
    transport(rec.protocol, ip.get(ihl..end).unwrap_or(&[]), rec);
    L3::Ipv4
}

#[inline]
fn ipv6(ip: &[u8], rec: &mut PacketRecord) -> L3 {
    let Some(&v) = ip.first() else {
        return L3::Malformed(Malformed::TruncatedIp);
    };
    if v >> 4 != 6 {
        return L3::Malformed(Malformed::BadIpVersion);
    }
    let Some(hdr) = ip.get(..40) else {
        return L3::Malformed(Malformed::TruncatedIp);
    };
    let payload_len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
    let mut next = hdr[6];
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&hdr[8..24]);
    dst.copy_from_slice(&hdr[24..40]);
    // Payload length 0 means a jumbogram (or a TSO capture): use the frame.
    let end = if payload_len == 0 {
        ip.len()
    } else {
        (40 + payload_len).min(ip.len())
    };
    let ip = &ip[..end];
    let mut off = 40;
    loop {
        let len = match next {
            0 | 43 | 60 => ip.get(off + 1).map(|&l| (usize::from(l) + 1) * 8),
            51 => ip.get(off + 1).map(|&l| (usize::from(l) + 2) * 4),
            44 => Some(8),
            _ => break,
        };
        let Some(ext) = len.and_then(|len| ip.get(off..off + len)) else {
            return L3::Malformed(Malformed::BadIpv6Extension);
        };
        let this = next;
        next = ext[0];
        off += ext.len();
        if this == 44 && u16::from_be_bytes([ext[2], ext[3]]) & 0xFFF8 != 0 {
            rec.src_ip = src;
            rec.dst_ip = dst;
            rec.protocol = next;
            rec.fragment = true;
            return L3::Ipv6;
        }
    }
    rec.src_ip = src;
    rec.dst_ip = dst;
    rec.protocol = next;
    if next != PROTO_NO_NEXT {
        transport(next, rest(ip, off), rec);
    }
    L3::Ipv6
}

/// Ports and TCP flags from the transport header, flagging a cut header.
#[inline]
fn transport(proto: u8, seg: &[u8], rec: &mut PacketRecord) {
    let fixed = match proto {
        PROTO_TCP => 20,
        PROTO_UDP | PROTO_UDPLITE => 8,
        PROTO_SCTP => 12,
        PROTO_ICMP | PROTO_ICMPV6 => {
            rec.l4_truncated = seg.len() < 4;
            return;
        }
        _ => return,
    };
    rec.l4_truncated = seg.len() < fixed;
    if let (Some(sp), Some(dp)) = (be16(seg, 0), be16(seg, 2)) {
        rec.src_port = sp;
        rec.dst_port = dp;
    }
    if proto == PROTO_TCP {
        if let Some(&flags) = seg.get(13) {
            rec.tcp_flags = flags;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_keeps_caller_fields() {
        let mut rec = PacketRecord {
            ts_ns: 7,
            wire_len: 60,
            cap_len: 60,
            src_port: 99,
            vlan: 5,
            fragment: true,
            ..PacketRecord::default()
        };
        decode(LinkType(9999), &[], &mut rec);
        assert_eq!(rec.l3, L3::UnsupportedLink);
        assert_eq!((rec.ts_ns, rec.wire_len, rec.cap_len), (7, 60, 60));
        assert_eq!(
            (rec.src_port, rec.vlan, rec.fragment),
            (0, netspectra_model::NO_VLAN, false)
        );
    }

    #[test]
    fn ethernet_padding_is_not_read_as_ports() {
        // 14 eth + 20 IPv4 (total_len 20, proto UDP) + 26 bytes of padding.
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&20u16.to_be_bytes());
        f[14 + 9] = 17;
        f[34..38].copy_from_slice(&[1, 2, 3, 4]);
        let mut rec = PacketRecord::default();
        decode(LinkType::ETHERNET, &f, &mut rec);
        assert_eq!(rec.l3, L3::Ipv4);
        assert_eq!((rec.src_port, rec.dst_port), (0, 0));
        assert!(rec.l4_truncated);
    }
}
