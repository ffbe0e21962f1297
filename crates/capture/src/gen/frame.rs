//! Hand-built Ethernet frames: optional 802.1Q / QinQ tags, IPv4 or IPv6,
//! TCP / UDP / ICMP echo, zero payload bytes, correct checksums.

use netspectra_model::ip::IpBytes;

/// Ethertype of IPv4.
pub(crate) const ETH_IPV4: u16 = 0x0800;
/// Ethertype of IPv6.
pub(crate) const ETH_IPV6: u16 = 0x86DD;
/// Ethertype of ARP.
pub(crate) const ETH_ARP: u16 = 0x0806;
/// Ethertype of an 802.1Q customer tag.
pub(crate) const ETH_8021Q: u16 = 0x8100;
/// Ethertype of an 802.1ad service tag (outer tag of QinQ).
pub(crate) const ETH_8021AD: u16 = 0x88A8;

/// IP protocol numbers used by the generator.
pub(crate) const PROTO_ICMP: u8 = 1;
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const PROTO_ICMPV6: u8 = 58;

/// Length of an ARP frame over Ethernet (no padding).
pub(crate) const ARP_FRAME_LEN: usize = 42;

/// Link-layer wrapping of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encap {
    /// Ethernet II, no tag.
    Plain,
    /// One 802.1Q tag with this VLAN id.
    Vlan(u16),
    /// An 802.1ad service tag (outer id) then an 802.1Q tag (inner id).
    QinQ(u16, u16),
}

impl Encap {
    /// Bytes of the Ethernet header including tags and the final ethertype.
    pub(crate) fn header_len(self) -> usize {
        match self {
            Encap::Plain => 14,
            Encap::Vlan(_) => 18,
            Encap::QinQ(..) => 22,
        }
    }
}

/// Transport layer of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum L4 {
    /// TCP with these flags, sequence and acknowledgement numbers.
    Tcp { flags: u8, seq: u32, ack: u32 },
    /// UDP.
    Udp,
    /// ICMP echo request (ICMPv6 echo request over IPv6).
    Echo { id: u16, seq: u16 },
}

impl L4 {
    /// Bytes of the transport header.
    pub(crate) fn header_len(self) -> usize {
        match self {
            L4::Tcp { .. } => 20,
            L4::Udp | L4::Echo { .. } => 8,
        }
    }

    /// The IP protocol number for the given family.
    pub(crate) fn protocol(self, v4: bool) -> u8 {
        match self {
            L4::Tcp { .. } => PROTO_TCP,
            L4::Udp => PROTO_UDP,
            L4::Echo { .. } if v4 => PROTO_ICMP,
            L4::Echo { .. } => PROTO_ICMPV6,
        }
    }
}

/// Everything needed to lay out one IP frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IpFrame {
    pub encap: Encap,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub v4: bool,
    pub src: IpBytes,
    pub dst: IpBytes,
    pub ip_id: u16,
    pub l4: L4,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: usize,
}

impl IpFrame {
    /// The frame's length on the wire, from the layout alone.
    pub(crate) fn wire_len(&self) -> usize {
        self.encap.header_len()
            + if self.v4 { 20 } else { 40 }
            + self.l4.header_len()
            + self.payload
    }
}

#[inline]
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// One's-complement sum of 16-bit big-endian words (odd tail padded).
fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a sum into the complemented 16-bit Internet checksum.
fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Writes the Ethernet header with tags; returns the offset after it.
fn ethernet(b: &mut [u8], dst: [u8; 6], src: [u8; 6], encap: Encap, ethertype: u16) -> usize {
    b[0..6].copy_from_slice(&dst);
    b[6..12].copy_from_slice(&src);
    match encap {
        Encap::Plain => {
            put16(b, 12, ethertype);
            14
        }
        Encap::Vlan(id) => {
            put16(b, 12, ETH_8021Q);
            put16(b, 14, id & 0x0fff);
            put16(b, 16, ethertype);
            18
        }
        Encap::QinQ(outer, inner) => {
            put16(b, 12, ETH_8021AD);
            put16(b, 14, outer & 0x0fff);
            put16(b, 16, ETH_8021Q);
            put16(b, 18, inner & 0x0fff);
            put16(b, 20, ethertype);
            22
        }
    }
}

/// Lays out `f` into `buf` (resized to exactly the frame) and returns its length.
pub(crate) fn build_ip(buf: &mut Vec<u8>, f: &IpFrame) -> usize {
    let len = f.wire_len();
    buf.clear();
    buf.resize(len, 0);
    let b = buf.as_mut_slice();
    let ethertype = if f.v4 { ETH_IPV4 } else { ETH_IPV6 };
    let ip = ethernet(b, f.dst_mac, f.src_mac, f.encap, ethertype);
    let proto = f.l4.protocol(f.v4);
    let l4_len = f.l4.header_len() + f.payload;
    let l4 = if f.v4 {
        let h = &mut b[ip..ip + 20];
        h[0] = 0x45;
        put16(h, 2, (20 + l4_len) as u16);
        put16(h, 4, f.ip_id);
        put16(h, 6, 0x4000); // DF, offset 0
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&f.src[12..16]);
        h[16..20].copy_from_slice(&f.dst[12..16]);
        let c = fold(sum16(h, 0));
        put16(h, 10, c);
        ip + 20
    } else {
        let h = &mut b[ip..ip + 40];
        put32(h, 0, 0x6000_0000);
        put16(h, 4, l4_len as u16);
        h[6] = proto;
        h[7] = 64;
        h[8..24].copy_from_slice(&f.src);
        h[24..40].copy_from_slice(&f.dst);
        ip + 40
    };
    // Pseudo-header sum for TCP, UDP and ICMPv6.
    let pseudo = if f.v4 {
        let s = sum16(&f.src[12..16], 0);
        sum16(&f.dst[12..16], s) + u64::from(proto) + l4_len as u64
    } else {
        let s = sum16(&f.src, 0);
        sum16(&f.dst, s) + u64::from(proto) + l4_len as u64
    };
    let seg = &mut b[l4..];
    let csum_at = match f.l4 {
        L4::Tcp { flags, seq, ack } => {
            put16(seg, 0, f.src_port);
            put16(seg, 2, f.dst_port);
            put32(seg, 4, seq);
            put32(seg, 8, ack);
            seg[12] = 5 << 4;
            seg[13] = flags;
            put16(seg, 14, 65_535);
            16
        }
        L4::Udp => {
            put16(seg, 0, f.src_port);
            put16(seg, 2, f.dst_port);
            put16(seg, 4, l4_len as u16);
            6
        }
        L4::Echo { id, seq } => {
            seg[0] = if f.v4 { 8 } else { 128 };
            put16(seg, 4, id);
            put16(seg, 6, seq);
            2
        }
    };
    let initial = match f.l4 {
        L4::Echo { .. } if f.v4 => 0,
        _ => pseudo,
    };
    let mut c = fold(sum16(seg, initial));
    if c == 0 && matches!(f.l4, L4::Udp) {
        c = 0xffff;
    }
    put16(seg, csum_at, c);
    len
}

/// Lays out an ARP request over plain Ethernet (42 bytes) and returns its length.
pub(crate) fn build_arp(
    buf: &mut Vec<u8>,
    src_mac: [u8; 6],
    sender: [u8; 4],
    target: [u8; 4],
) -> usize {
    buf.clear();
    buf.resize(ARP_FRAME_LEN, 0);
    let b = buf.as_mut_slice();
    let at = ethernet(b, [0xff; 6], src_mac, Encap::Plain, ETH_ARP);
    let a = &mut b[at..];
    put16(a, 0, 1); // hardware type Ethernet
    put16(a, 2, ETH_IPV4);
    a[4] = 6;
    a[5] = 4;
    put16(a, 6, 1); // request
    a[8..14].copy_from_slice(&src_mac);
    a[14..18].copy_from_slice(&sender);
    // target MAC unknown: zeros
    a[24..28].copy_from_slice(&target);
    ARP_FRAME_LEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use netspectra_model::ip::from_v4;

    fn frame(encap: Encap, v4: bool, l4: L4, payload: usize) -> IpFrame {
        let (src, dst) = if v4 {
            (from_v4([10, 0, 0, 1]), from_v4([10, 64, 0, 2]))
        } else {
            let mut s = [0u8; 16];
            s[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            let mut d = s;
            s[15] = 1;
            d[15] = 2;
            (s, d)
        };
        IpFrame {
            encap,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 1, 0, 0, 0, 1],
            v4,
            src,
            dst,
            ip_id: 0x1234,
            l4,
            src_port: 40_000,
            dst_port: 443,
            payload,
        }
    }

    /// Verifies a checksum by summing the covered bytes (checksum included).
    fn verifies(data: &[u8], initial: u64) -> bool {
        fold(sum16(data, initial)) == 0
    }

    #[test]
    fn ipv4_tcp_in_qinq_has_valid_checksums() {
        let mut buf = Vec::new();
        let f = frame(
            Encap::QinQ(100, 200),
            true,
            L4::Tcp {
                flags: 0x18,
                seq: 1,
                ack: 2,
            },
            33,
        );
        let n = build_ip(&mut buf, &f);
        assert_eq!(n, 22 + 20 + 20 + 33);
        assert_eq!(buf.len(), n);
        assert_eq!(&buf[12..14], &[0x88, 0xa8]);
        assert_eq!(&buf[16..18], &[0x81, 0x00]);
        assert_eq!(&buf[20..22], &[0x08, 0x00]);
        let ip = &buf[22..42];
        assert!(verifies(ip, 0));
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 20 + 20 + 33);
        let seg = &buf[42..];
        let pseudo = sum16(&ip[12..20], 0) + 6 + seg.len() as u64;
        assert!(verifies(seg, pseudo));
        assert_eq!(seg[13], 0x18);
    }

    #[test]
    fn ipv6_udp_and_icmp_have_valid_checksums() {
        let mut buf = Vec::new();
        for (l4, proto) in [
            (L4::Udp, PROTO_UDP),
            (L4::Echo { id: 7, seq: 9 }, PROTO_ICMPV6),
        ] {
            let n = build_ip(&mut buf, &frame(Encap::Vlan(5), false, l4, 11));
            assert_eq!(n, 18 + 40 + 8 + 11);
            let ip = &buf[18..58];
            assert_eq!(ip[6], proto);
            assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 8 + 11);
            let seg = &buf[58..];
            let pseudo = sum16(&ip[8..40], 0) + u64::from(proto) + seg.len() as u64;
            assert!(verifies(seg, pseudo));
        }
        let n = build_ip(
            &mut buf,
            &frame(Encap::Plain, true, L4::Echo { id: 1, seq: 2 }, 0),
        );
        assert_eq!(n, 14 + 20 + 8);
        assert_eq!(buf[34], 8);
        assert!(verifies(&buf[34..], 0));
    }

    #[test]
    fn arp_is_42_bytes() {
        let mut buf = Vec::new();
        assert_eq!(
            build_arp(&mut buf, [2, 0, 0, 0, 0, 1], [10, 0, 0, 1], [10, 0, 0, 2]),
            42
        );
        assert_eq!(buf.len(), 42);
        assert_eq!(&buf[12..14], &[0x08, 0x06]);
    }
}
