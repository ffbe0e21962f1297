//! The compact per-packet record that decoding produces and tasks consume.

use crate::ip::IpBytes;
use serde::Serialize;
use std::collections::BTreeMap;

/// What the network layer of a frame turned out to be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum L3 {
    /// An IPv4 header was decoded; the record's addresses are valid.
    Ipv4,
    /// An IPv6 header was decoded; the record's addresses are valid.
    Ipv6,
    /// A well-formed frame that does not carry IP (ARP, LLDP, …).
    #[default]
    NonIp,
    /// The capture's link type is one we do not decode.
    UnsupportedLink,
    /// The frame is damaged; the reason says where.
    Malformed(Malformed),
}

impl L3 {
    /// Whether the record carries a usable IP flow (tasks count only these).
    #[inline]
    pub fn is_ip(self) -> bool {
        matches!(self, L3::Ipv4 | L3::Ipv6)
    }
}

/// Why a frame could not be decoded to an IP flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Malformed {
    /// Shorter than its link-layer header.
    TruncatedLink,
    /// A VLAN tag was cut short, or tags were nested deeper than we follow.
    BadVlan,
    /// The IP header is cut short by the frame's end.
    TruncatedIp,
    /// The IP version nibble does not match the link layer's claim.
    BadIpVersion,
    /// IPv4 header length below 20 bytes.
    BadIpHeaderLength,
    /// IPv6 extension header chain cut short or inconsistent.
    BadIpv6Extension,
}

impl Malformed {
    /// Stable snake_case name used in JSON output and the store.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::TruncatedLink => "truncated_link",
            Malformed::BadVlan => "bad_vlan",
            Malformed::TruncatedIp => "truncated_ip",
            Malformed::BadIpVersion => "bad_ip_version",
            Malformed::BadIpHeaderLength => "bad_ip_header_length",
            Malformed::BadIpv6Extension => "bad_ipv6_extension",
        }
    }
}

/// `vlan` of a frame that carries no 802.1Q tag: distinct from a
/// priority-tagged frame's VLAN 0, reported as no VLAN (JSON null, `-`).
/// VLAN ids are 12 bits, so this value never names a real VLAN.
pub const NO_VLAN: u16 = u16::MAX;

/// One decoded packet. `Copy`, fixed size, no heap: it travels through
/// channels and NATS batches by the million.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketRecord {
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Source address (IPv4-mapped for IPv4); zero unless `l3.is_ip()`.
    pub src_ip: IpBytes,
    /// Destination address (IPv4-mapped for IPv4); zero unless `l3.is_ip()`.
    pub dst_ip: IpBytes,
    /// Transport source port; 0 when the protocol has none or it was not captured.
    pub src_port: u16,
    /// Transport destination port; 0 when the protocol has none or it was not captured.
    pub dst_port: u16,
    /// Outer VLAN id; [`NO_VLAN`] when the frame is untagged (0 is a
    /// priority-tagged frame's VLAN 0).
    pub vlan: u16,
    /// IP protocol number (after IPv6 extension headers).
    pub protocol: u8,
    /// TCP flags byte (FIN=0x01 … CWR=0x80); 0 for non-TCP.
    pub tcp_flags: u8,
    /// Length of the frame on the wire — what `bytes` counts everywhere.
    pub wire_len: u32,
    /// Bytes actually captured (≤ `wire_len`).
    pub cap_len: u32,
    /// Network-layer outcome of decoding.
    pub l3: L3,
    /// A non-first IP fragment: carries no transport header, so no ports.
    pub fragment: bool,
    /// The transport header was cut short by the snap length: ports are still
    /// filled when their 4 bytes were captured, TCP flags when their byte was.
    pub l4_truncated: bool,
}

impl Default for PacketRecord {
    /// An empty, untagged record.
    fn default() -> Self {
        PacketRecord {
            ts_ns: 0,
            src_ip: [0; 16],
            dst_ip: [0; 16],
            src_port: 0,
            dst_port: 0,
            vlan: NO_VLAN,
            protocol: 0,
            tcp_flags: 0,
            wire_len: 0,
            cap_len: 0,
            l3: L3::default(),
            fragment: false,
            l4_truncated: false,
        }
    }
}

/// How many frames decoded to what. Kept per reader, merged at the end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DecodeCounters {
    /// Frames with an IPv4 flow.
    pub ipv4: u64,
    /// Frames with an IPv6 flow.
    pub ipv6: u64,
    /// Well-formed frames without IP (ARP, LLDP, …).
    pub non_ip: u64,
    /// Damaged frames (sum of `malformed_by_reason`).
    pub malformed: u64,
    /// Frames of a link type we do not decode.
    pub unsupported_link: u64,
    /// IP packets that were non-first fragments (counted, without ports).
    pub fragments: u64,
    /// IP packets whose transport header was cut by the snap length.
    pub l4_truncated: u64,
    /// Damaged frames by reason name.
    pub malformed_by_reason: BTreeMap<&'static str, u64>,
}

impl DecodeCounters {
    /// Accounts one decoded record.
    #[inline]
    pub fn count(&mut self, rec: &PacketRecord) {
        match rec.l3 {
            L3::Ipv4 => self.ipv4 += 1,
            L3::Ipv6 => self.ipv6 += 1,
            L3::NonIp => self.non_ip += 1,
            L3::UnsupportedLink => self.unsupported_link += 1,
            L3::Malformed(reason) => {
                self.malformed += 1;
                *self.malformed_by_reason.entry(reason.name()).or_default() += 1;
            }
        }
        self.fragments += u64::from(rec.fragment);
        self.l4_truncated += u64::from(rec.l4_truncated);
    }

    /// Adds another set of counters into this one.
    pub fn merge(&mut self, other: &DecodeCounters) {
        self.ipv4 += other.ipv4;
        self.ipv6 += other.ipv6;
        self.non_ip += other.non_ip;
        self.malformed += other.malformed;
        self.unsupported_link += other.unsupported_link;
        self.fragments += other.fragments;
        self.l4_truncated += other.l4_truncated;
        for (k, v) in &other.malformed_by_reason {
            *self.malformed_by_reason.entry(k).or_default() += v;
        }
    }
}

/// TCP flag bits as they appear in the TCP header's flags byte.
pub mod tcp_flags {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// PSH
    pub const PSH: u8 = 0x08;
    /// ACK
    pub const ACK: u8 = 0x10;
}
