//! Dimensions a task can key on, and the fixed-size key they project to.

use crate::ip::{self, IpBytes};
use crate::record::PacketRecord;
use serde_json::Value;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// One field of a flow key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// Source address.
    SrcIp,
    /// Destination address.
    DstIp,
    /// Transport source port.
    SrcPort,
    /// Transport destination port.
    DstPort,
    /// IP protocol number.
    Protocol,
    /// Outer VLAN id.
    Vlan,
    /// Source network: the source address truncated to its family's
    /// prefix length.
    SrcNet(NetPrefix),
    /// Destination network: the destination address truncated to its
    /// family's prefix length.
    DstNet(NetPrefix),
}

/// The prefix lengths of a `SrcNet`/`DstNet` dimension, one per address
/// family: `SrcNet/24/64` keys IPv4 sources by /24 and IPv6 ones by /64
/// (Akvorado's convention); `SrcNet/N` applies N to both (capped at 32 for
/// IPv4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetPrefix {
    /// IPv4 prefix length (0-32).
    pub v4: u8,
    /// IPv6 prefix length (0-128).
    pub v6: u8,
    /// Written as one length (`/N`), which is how it is shown again.
    single: bool,
}

impl NetPrefix {
    /// One length for both families (`/N`; IPv4 takes at most 32).
    pub const fn both(n: u8) -> NetPrefix {
        NetPrefix {
            v4: if n < 32 { n } else { 32 },
            v6: n,
            single: true,
        }
    }

    /// A length per family (`/V4/V6`).
    pub const fn per_family(v4: u8, v6: u8) -> NetPrefix {
        NetPrefix {
            v4,
            v6,
            single: false,
        }
    }

    /// The length that applies to `addr`'s family.
    #[inline]
    pub fn for_addr(&self, addr: &IpBytes) -> u8 {
        if ip::is_v4(addr) {
            self.v4
        } else {
            self.v6
        }
    }
}

impl fmt::Display for NetPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.single {
            write!(f, "{}", self.v6)
        } else {
            write!(f, "{}/{}", self.v4, self.v6)
        }
    }
}

/// The names accepted in configuration, for error messages.
pub const DIMENSION_NAMES: &str =
    "SrcIP, DstIP, SrcPort, DstPort, Protocol, VLAN, SrcNet/N, DstNet/N, SrcNet/V4/V6, DstNet/V4/V6";

/// A dimension name that is not one of [`DIMENSION_NAMES`].
#[derive(Debug, thiserror::Error)]
#[error("unknown dimension `{0}`; allowed: {DIMENSION_NAMES} (N = prefix length 0-128 for both families; V4 = IPv4 length 0-32, V6 = IPv6 length 0-128)")]
pub struct UnknownDimension(pub String);

impl FromStr for Dimension {
    type Err = UnknownDimension;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || UnknownDimension(s.to_string());
        let lower = s.to_ascii_lowercase();
        if let Some((name, lengths)) = lower.split_once('/') {
            let len = |t: &str, max: u8| -> Result<u8, UnknownDimension> {
                t.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(err)
            };
            let prefix = match lengths.split_once('/') {
                None => NetPrefix::both(len(lengths, 128)?),
                Some((v4, v6)) => NetPrefix::per_family(len(v4, 32)?, len(v6, 128)?),
            };
            return match name {
                "srcnet" => Ok(Dimension::SrcNet(prefix)),
                "dstnet" => Ok(Dimension::DstNet(prefix)),
                _ => Err(err()),
            };
        }
        Ok(match lower.as_str() {
            "srcip" => Dimension::SrcIp,
            "dstip" => Dimension::DstIp,
            "srcport" => Dimension::SrcPort,
            "dstport" => Dimension::DstPort,
            "protocol" | "proto" => Dimension::Protocol,
            "vlan" => Dimension::Vlan,
            _ => return Err(err()),
        })
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dimension::SrcIp => f.write_str("SrcIP"),
            Dimension::DstIp => f.write_str("DstIP"),
            Dimension::SrcPort => f.write_str("SrcPort"),
            Dimension::DstPort => f.write_str("DstPort"),
            Dimension::Protocol => f.write_str("Protocol"),
            Dimension::Vlan => f.write_str("VLAN"),
            Dimension::SrcNet(p) => write!(f, "SrcNet/{p}"),
            Dimension::DstNet(p) => write!(f, "DstNet/{p}"),
        }
    }
}

impl serde::Serialize for Dimension {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Dimension {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A packet projected onto a task's dimensions; fields outside the key are
/// zero. Fixed size and `Copy` so the hot path never allocates for a key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    /// Source address or network (IPv4-mapped), or zero.
    pub src_ip: IpBytes,
    /// Destination address or network (IPv4-mapped), or zero.
    pub dst_ip: IpBytes,
    /// Source port, or zero.
    pub src_port: u16,
    /// Destination port, or zero.
    pub dst_port: u16,
    /// VLAN id ([`crate::record::NO_VLAN`]: untagged), or zero when not
    /// in the key.
    pub vlan: u16,
    /// Protocol number, or zero.
    pub protocol: u8,
}

impl Hash for FlowKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.src_ip));
        state.write_u128(u128::from_ne_bytes(self.dst_ip));
        state.write_u64(
            u64::from(self.src_port)
                | u64::from(self.dst_port) << 16
                | u64::from(self.vlan) << 32
                | u64::from(self.protocol) << 48,
        );
    }
}

impl FlowKey {
    /// Keeps only the given dimensions of a record.
    #[inline]
    pub fn project(rec: &PacketRecord, dims: &[Dimension]) -> FlowKey {
        let mut k = FlowKey::default();
        for d in dims {
            match *d {
                Dimension::SrcIp => k.src_ip = rec.src_ip,
                Dimension::DstIp => k.dst_ip = rec.dst_ip,
                Dimension::SrcPort => k.src_port = rec.src_port,
                Dimension::DstPort => k.dst_port = rec.dst_port,
                Dimension::Protocol => k.protocol = rec.protocol,
                Dimension::Vlan => k.vlan = rec.vlan,
                Dimension::SrcNet(p) => k.src_ip = ip::mask(&rec.src_ip, p.for_addr(&rec.src_ip)),
                Dimension::DstNet(p) => k.dst_ip = ip::mask(&rec.dst_ip, p.for_addr(&rec.dst_ip)),
            }
        }
        k
    }

    /// The key as (dimension name, JSON value) pairs in the task's order:
    /// IPs as canonical text, networks as `addr/len`, numbers as numbers.
    pub fn render(&self, dims: &[Dimension]) -> Vec<(String, Value)> {
        dims.iter()
            .map(|d| {
                let v = match *d {
                    Dimension::SrcIp => Value::from(ip::to_string(&self.src_ip)),
                    Dimension::DstIp => Value::from(ip::to_string(&self.dst_ip)),
                    Dimension::SrcPort => Value::from(self.src_port),
                    Dimension::DstPort => Value::from(self.dst_port),
                    Dimension::Protocol => Value::from(self.protocol),
                    Dimension::Vlan if self.vlan == crate::record::NO_VLAN => Value::Null,
                    Dimension::Vlan => Value::from(self.vlan),
                    Dimension::SrcNet(p) => Value::from(net_text(&self.src_ip, p)),
                    Dimension::DstNet(p) => Value::from(net_text(&self.dst_ip, p)),
                };
                (d.to_string(), v)
            })
            .collect()
    }
}

/// A task's key dimensions compiled once into field masks, so that a
/// record is projected (several times per packet on the engine's hot path:
/// routing, each exact task, each sketch's key and element) with a few
/// ANDs instead of a loop over the dimensions. Network dimensions, whose
/// mask depends on each address's family, take [`FlowKey::project`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Projection {
    dims: Vec<Dimension>,
    src_ip: u128,
    dst_ip: u128,
    src_port: u16,
    dst_port: u16,
    vlan: u16,
    protocol: u8,
    /// A network dimension is in the key.
    nets: bool,
}

impl Projection {
    /// The projection onto `dims`.
    pub fn new(dims: &[Dimension]) -> Projection {
        let mut p = Projection {
            dims: dims.to_vec(),
            src_ip: 0,
            dst_ip: 0,
            src_port: 0,
            dst_port: 0,
            vlan: 0,
            protocol: 0,
            nets: false,
        };
        for d in dims {
            match d {
                Dimension::SrcIp => p.src_ip = u128::MAX,
                Dimension::DstIp => p.dst_ip = u128::MAX,
                Dimension::SrcPort => p.src_port = u16::MAX,
                Dimension::DstPort => p.dst_port = u16::MAX,
                Dimension::Protocol => p.protocol = u8::MAX,
                Dimension::Vlan => p.vlan = u16::MAX,
                Dimension::SrcNet(_) | Dimension::DstNet(_) => p.nets = true,
            }
        }
        p
    }

    /// The dimensions projected onto.
    pub fn dims(&self) -> &[Dimension] {
        &self.dims
    }

    /// Whether no dimension is kept (every record projects to the zero key).
    pub fn is_empty(&self) -> bool {
        self.dims.is_empty()
    }

    /// Whether every key of this projection is a function of `finer`'s
    /// key: `finer` keeps each field this one keeps, and neither truncates
    /// addresses to a network. Then rows keyed by `finer` summed by
    /// [`Self::narrow`] are the rows this projection would count (packets,
    /// bytes, first and last seen all merge associatively), so an engine
    /// can count a packet once for both.
    pub fn rolls_up(&self, finer: &Projection) -> bool {
        !self.nets
            && !finer.nets
            && self.src_ip & !finer.src_ip == 0
            && self.dst_ip & !finer.dst_ip == 0
            && self.src_port & !finer.src_port == 0
            && self.dst_port & !finer.dst_port == 0
            && self.vlan & !finer.vlan == 0
            && self.protocol & !finer.protocol == 0
    }

    /// A key of a finer projection (see [`Self::rolls_up`]) with the fields
    /// this one drops zeroed: the key of this projection for the same
    /// packet.
    #[inline]
    pub fn narrow(&self, key: &FlowKey) -> FlowKey {
        debug_assert!(!self.nets, "network dimensions do not roll up");
        let ip = |a: &IpBytes, m: u128| (u128::from_ne_bytes(*a) & m).to_ne_bytes();
        FlowKey {
            src_ip: ip(&key.src_ip, self.src_ip),
            dst_ip: ip(&key.dst_ip, self.dst_ip),
            src_port: key.src_port & self.src_port,
            dst_port: key.dst_port & self.dst_port,
            vlan: key.vlan & self.vlan,
            protocol: key.protocol & self.protocol,
        }
    }

    /// `rec` projected: the same key as [`FlowKey::project`].
    #[inline]
    pub fn apply(&self, rec: &PacketRecord) -> FlowKey {
        if self.nets {
            return FlowKey::project(rec, &self.dims);
        }
        self.narrow(&FlowKey {
            src_ip: rec.src_ip,
            dst_ip: rec.dst_ip,
            src_port: rec.src_port,
            dst_port: rec.dst_port,
            vlan: rec.vlan,
            protocol: rec.protocol,
        })
    }
}

fn net_text(addr: &IpBytes, prefix: NetPrefix) -> String {
    format!("{}/{}", ip::to_string(addr), prefix.for_addr(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys of several shapes: none, whole fields, and networks.
    fn sample_dims() -> Vec<Vec<Dimension>> {
        [
            "",
            "SrcIP",
            "SrcIP,DstIP,SrcPort,DstPort,Protocol",
            "DstPort,Vlan",
            "Protocol,SrcPort",
            "SrcNet/24,DstPort",
            "DstNet/64,Vlan,SrcIP",
        ]
        .iter()
        .map(|l| {
            l.split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.parse().unwrap())
                .collect()
        })
        .collect()
    }

    /// An IPv4-to-IPv6 and an IPv6-to-IPv4 record, with and without a VLAN.
    fn sample_recs() -> [PacketRecord; 2] {
        use crate::ip;
        let v6: IpBytes = "2001:db8::7:8"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        [
            PacketRecord {
                src_ip: ip::from_v4([10, 1, 2, 3]),
                dst_ip: v6,
                src_port: 40_000,
                dst_port: 443,
                protocol: 6,
                vlan: 12,
                ..Default::default()
            },
            PacketRecord {
                src_ip: v6,
                dst_ip: ip::from_v4([192, 168, 9, 9]),
                src_port: 53,
                dst_port: 0xffff,
                protocol: 17,
                vlan: crate::record::NO_VLAN,
                ..Default::default()
            },
        ]
    }

    #[test]
    fn a_projection_keeps_what_project_keeps() {
        for d in &sample_dims() {
            let p = Projection::new(d);
            for r in &sample_recs() {
                assert_eq!(p.apply(r), FlowKey::project(r, d), "{d:?}");
            }
        }
    }

    #[test]
    fn a_coarser_key_is_the_narrowed_finer_key() {
        let dims = sample_dims();
        let mut pairs = Vec::new();
        for (ci, coarse) in dims.iter().enumerate() {
            for (fi, fine) in dims.iter().enumerate() {
                let (c, f) = (Projection::new(coarse), Projection::new(fine));
                if !c.rolls_up(&f) {
                    continue;
                }
                pairs.push((ci, fi));
                for r in &sample_recs() {
                    assert_eq!(c.narrow(&f.apply(r)), c.apply(r), "{coarse:?} {fine:?}");
                }
            }
        }
        // Whole-field keys roll up themselves and any key holding their
        // fields (the empty key rolls up all of them); network keys none.
        let expected = [
            (0, 0),
            (0, 1),
            (0, 2),
            (0, 3),
            (0, 4),
            (1, 1),
            (1, 2),
            (2, 2),
            (3, 3),
            (4, 2),
            (4, 4),
        ];
        assert_eq!(pairs, expected);
    }

    #[test]
    fn parses_names_case_insensitively_and_renders_canonically() {
        for name in [
            "SrcIP",
            "DstIP",
            "SrcPort",
            "DstPort",
            "Protocol",
            "VLAN",
            "SrcNet/24",
            "DstNet/64",
            "SrcNet/24/64",
            "DstNet/0/48",
        ] {
            let d: Dimension = name.parse().unwrap();
            assert_eq!(d.to_string(), name);
        }
        assert_eq!("srcip".parse::<Dimension>().unwrap(), Dimension::SrcIp);
        let err = "SrcMac".parse::<Dimension>().unwrap_err().to_string();
        assert!(err.contains("SrcMac") && err.contains("DstPort"), "{err}");
        assert!("SrcNet/129".parse::<Dimension>().is_err());
        assert!("SrcNet/33/64".parse::<Dimension>().is_err());
        assert!("SrcNet/24/129".parse::<Dimension>().is_err());
        assert!("SrcNet/24/64/1".parse::<Dimension>().is_err());
    }

    #[test]
    fn a_network_key_takes_a_prefix_per_family() {
        let v4 = PacketRecord {
            src_ip: ip::from_v4([10, 1, 2, 3]),
            ..Default::default()
        };
        let mut v6 = v4;
        v6.src_ip = "2001:db8:1:2:3:4:5:6"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let dims: [Dimension; 1] = ["SrcNet/24/64".parse().unwrap()];
        let text = |r: &PacketRecord| FlowKey::project(r, &dims).render(&dims)[0].1.clone();
        assert_eq!(text(&v4), Value::from("10.1.2.0/24"));
        assert_eq!(text(&v6), Value::from("2001:db8:1:2::/64"));
        // One length for both: /64 leaves every IPv4 address its own key.
        let dims: [Dimension; 1] = ["SrcNet/64".parse().unwrap()];
        let text = |r: &PacketRecord| FlowKey::project(r, &dims).render(&dims)[0].1.clone();
        assert_eq!(text(&v4), Value::from("10.1.2.3/32"));
        assert_eq!(text(&v6), Value::from("2001:db8:1:2::/64"));
    }

    #[test]
    fn projection_keeps_only_key_fields() {
        let rec = PacketRecord {
            src_ip: ip::from_v4([10, 1, 2, 3]),
            dst_ip: ip::from_v4([10, 9, 9, 9]),
            src_port: 1,
            dst_port: 2,
            protocol: 6,
            ..Default::default()
        };
        let dims = [Dimension::SrcNet(NetPrefix::both(16)), Dimension::DstPort];
        let k = FlowKey::project(&rec, &dims);
        assert_eq!(k.dst_ip, [0; 16]);
        assert_eq!(k.src_port, 0);
        let r = k.render(&dims);
        assert_eq!(r[0], ("SrcNet/16".to_string(), Value::from("10.1.0.0/16")));
        assert_eq!(r[1], ("DstPort".to_string(), Value::from(2)));
    }
}
