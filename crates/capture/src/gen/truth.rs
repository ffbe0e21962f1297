//! The generator's ground truth and the tally that builds it from the
//! generator's own choices (never from the frames it wrote).

use super::GenFormat;
use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Packets and bytes attributed to one source address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SrcStats {
    /// IP packets sent by the source.
    pub packets: u64,
    /// Sum of their wire lengths.
    pub bytes: u64,
}

/// A source and how many distinct destination addresses it sent to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SrcDistinct {
    /// Canonical text of the source address.
    pub src: String,
    /// Number of distinct destination addresses.
    pub distinct_dst: u64,
    /// Planted super-spreaders: whether `analyze` with the default tasks
    /// reports it (its distinct count reaches the default SuperSpread
    /// threshold, [`netspectra_model::task::DEFAULT_SPREAD_THRESHOLD`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_by_default: Option<bool>,
}

/// What a generated capture contains, computed while generating it.
///
/// All counts cover the whole file. Addresses are canonical text
/// ([`netspectra_model::ip::to_string`]: dotted quad, RFC 5952 for IPv6).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Truth {
    /// Frames written (IP and ARP).
    pub packets: u64,
    /// Sum of the wire lengths of all frames.
    pub bytes: u64,
    /// Frames carrying IPv4 or IPv6.
    pub ip_packets: u64,
    /// Sum of the wire lengths of the IP frames.
    pub ip_bytes: u64,
    /// Frames without IP (ARP).
    pub non_ip_packets: u64,
    /// IPv4 frames.
    pub ipv4_packets: u64,
    /// IPv6 frames.
    pub ipv6_packets: u64,
    /// Frames with at least one VLAN tag (802.1Q or QinQ); every tagged
    /// frame has a non-zero outer VLAN id.
    pub vlan_packets: u64,
    /// Frames with two tags (802.1ad outer, 802.1Q inner); a subset of `vlan_packets`.
    pub qinq_packets: u64,
    /// TCP packets.
    pub tcp_packets: u64,
    /// UDP packets.
    pub udp_packets: u64,
    /// ICMP and ICMPv6 packets.
    pub icmp_packets: u64,
    /// Every source that sent at least one IP packet, keyed by address text.
    pub per_src: BTreeMap<String, SrcStats>,
    /// Distinct (src, dst, sport, dport, protocol) tuples among IP packets
    /// (ports are 0 for ICMP).
    pub distinct_flows: u64,
    /// The 20 sources with the most distinct destinations, most first
    /// (ties by address text).
    pub distinct_dst_per_src_top: Vec<SrcDistinct>,
    /// The planted heavy hitters, heaviest first.
    pub heavy_hitters: Vec<String>,
    /// The planted super-spreaders with their exact distinct destination counts.
    pub super_spreaders: Vec<SrcDistinct>,
    /// The seed the capture was generated from.
    pub seed: u64,
    /// The file format written.
    pub format: GenFormat,
    /// Timestamp of the first frame, ns since the Unix epoch.
    pub first_ts_ns: u64,
    /// Timestamp of the last frame, ns since the Unix epoch.
    pub last_ts_ns: u64,
}

/// A fast hasher for already-packed `u64` keys (splitmix finalizer).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = super::rng::mix64(self.0 ^ u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = super::rng::mix64(self.0 ^ v);
    }
}

type KeySet = HashSet<u64, BuildHasherDefault<KeyHasher>>;

/// Running counts, indexed by the generator's source and destination indices.
pub(crate) struct Tally {
    pub packets: u64,
    pub bytes: u64,
    pub ip_packets: u64,
    pub ip_bytes: u64,
    pub non_ip: u64,
    pub v4: u64,
    pub v6: u64,
    pub vlan: u64,
    pub qinq: u64,
    pub tcp: u64,
    pub udp: u64,
    pub icmp: u64,
    src_packets: Vec<u64>,
    src_bytes: Vec<u64>,
    src_distinct_dst: Vec<u32>,
    flows: KeySet,
    pairs: KeySet,
}

/// The parts of one IP packet the truth depends on. `flow_code` must be
/// injective in (client port, server port, protocol) for a given source and
/// destination.
pub(crate) struct IpFacts {
    pub src: u32,
    pub dst: u32,
    pub flow_code: u16,
    pub wire_len: u64,
    pub v4: bool,
    pub tagged: bool,
    pub qinq: bool,
    pub protocol: u8,
}

impl Tally {
    pub(crate) fn new(sources: usize) -> Tally {
        Tally {
            packets: 0,
            bytes: 0,
            ip_packets: 0,
            ip_bytes: 0,
            non_ip: 0,
            v4: 0,
            v6: 0,
            vlan: 0,
            qinq: 0,
            tcp: 0,
            udp: 0,
            icmp: 0,
            src_packets: vec![0; sources],
            src_bytes: vec![0; sources],
            src_distinct_dst: vec![0; sources],
            flows: KeySet::default(),
            pairs: KeySet::default(),
        }
    }

    /// Accounts a non-IP frame.
    pub(crate) fn non_ip(&mut self, wire_len: u64) {
        self.packets += 1;
        self.bytes += wire_len;
        self.non_ip += 1;
    }

    /// Accounts an IP frame. Source and destination indices must be below 2^24.
    pub(crate) fn ip(&mut self, f: &IpFacts) {
        debug_assert!(f.src < 1 << 24 && f.dst < 1 << 24);
        self.packets += 1;
        self.bytes += f.wire_len;
        self.ip_packets += 1;
        self.ip_bytes += f.wire_len;
        if f.v4 {
            self.v4 += 1;
        } else {
            self.v6 += 1;
        }
        self.vlan += u64::from(f.tagged);
        self.qinq += u64::from(f.qinq);
        match f.protocol {
            super::frame::PROTO_TCP => self.tcp += 1,
            super::frame::PROTO_UDP => self.udp += 1,
            _ => self.icmp += 1,
        }
        let s = f.src as usize;
        self.src_packets[s] += 1;
        self.src_bytes[s] += f.wire_len;
        let pair = u64::from(f.src) << 32 | u64::from(f.dst);
        if self.pairs.insert(pair) {
            self.src_distinct_dst[s] += 1;
        }
        self.flows
            .insert(u64::from(f.src) << 40 | u64::from(f.dst) << 16 | u64::from(f.flow_code));
    }

    /// Distinct destinations of a source so far.
    pub(crate) fn distinct_dst(&self, src: u32) -> u64 {
        u64::from(self.src_distinct_dst[src as usize])
    }

    /// Distinct 5-tuples so far.
    pub(crate) fn distinct_flows(&self) -> u64 {
        self.flows.len() as u64
    }

    /// Per-source statistics (active sources only) and the top-20 list by
    /// distinct destinations; `name` renders a source index.
    pub(crate) fn per_src(
        &self,
        name: impl Fn(u32) -> String,
    ) -> (BTreeMap<String, SrcStats>, Vec<SrcDistinct>) {
        let mut per_src = BTreeMap::new();
        let mut spread = Vec::new();
        for (i, &packets) in self.src_packets.iter().enumerate() {
            if packets == 0 {
                continue;
            }
            let text = name(i as u32);
            spread.push(SrcDistinct {
                reported_by_default: None,
                src: text.clone(),
                distinct_dst: u64::from(self.src_distinct_dst[i]),
            });
            per_src.insert(
                text,
                SrcStats {
                    packets,
                    bytes: self.src_bytes[i],
                },
            );
        }
        spread.sort_by(|a, b| {
            b.distinct_dst
                .cmp(&a.distinct_dst)
                .then_with(|| a.src.cmp(&b.src))
        });
        spread.truncate(20);
        (per_src, spread)
    }
}
