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
    /// Source network: the source address truncated to this prefix length.
    SrcNet(u8),
    /// Destination network: the destination address truncated to this prefix length.
    DstNet(u8),
}

/// The names accepted in configuration, for error messages.
pub const DIMENSION_NAMES: &str =
    "SrcIP, DstIP, SrcPort, DstPort, Protocol, VLAN, SrcNet/N, DstNet/N";

/// A dimension name that is not one of [`DIMENSION_NAMES`].
#[derive(Debug, thiserror::Error)]
#[error("unknown dimension `{0}`; allowed: {DIMENSION_NAMES} (N = prefix length 0-128)")]
pub struct UnknownDimension(pub String);

impl FromStr for Dimension {
    type Err = UnknownDimension;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || UnknownDimension(s.to_string());
        let lower = s.to_ascii_lowercase();
        if let Some((name, prefix)) = lower.split_once('/') {
            let prefix: u8 = prefix.parse().map_err(|_| err())?;
            if prefix > 128 {
                return Err(err());
            }
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
    /// VLAN id, or zero.
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
    /// The full 5-tuple of a record (used to shard packets to workers).
    #[inline]
    pub fn five_tuple(rec: &PacketRecord) -> FlowKey {
        FlowKey {
            src_ip: rec.src_ip,
            dst_ip: rec.dst_ip,
            src_port: rec.src_port,
            dst_port: rec.dst_port,
            vlan: 0,
            protocol: rec.protocol,
        }
    }

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
                Dimension::SrcNet(p) => k.src_ip = ip::mask(&rec.src_ip, p),
                Dimension::DstNet(p) => k.dst_ip = ip::mask(&rec.dst_ip, p),
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
                    Dimension::Vlan => Value::from(self.vlan),
                    Dimension::SrcNet(p) => Value::from(net_text(&self.src_ip, p)),
                    Dimension::DstNet(p) => Value::from(net_text(&self.dst_ip, p)),
                };
                (d.to_string(), v)
            })
            .collect()
    }
}

fn net_text(addr: &IpBytes, prefix: u8) -> String {
    let len = if ip::is_v4(addr) {
        prefix.min(32)
    } else {
        prefix
    };
    format!("{}/{}", ip::to_string(addr), len)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            let d: Dimension = name.parse().unwrap();
            assert_eq!(d.to_string(), name);
        }
        assert_eq!("srcip".parse::<Dimension>().unwrap(), Dimension::SrcIp);
        let err = "SrcMac".parse::<Dimension>().unwrap_err().to_string();
        assert!(err.contains("SrcMac") && err.contains("DstPort"), "{err}");
        assert!("SrcNet/129".parse::<Dimension>().is_err());
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
        let dims = [Dimension::SrcNet(16), Dimension::DstPort];
        let k = FlowKey::project(&rec, &dims);
        assert_eq!(k.dst_ip, [0; 16]);
        assert_eq!(k.src_port, 0);
        let r = k.render(&dims);
        assert_eq!(r[0], ("SrcNet/16".to_string(), Value::from("10.1.0.0/16")));
        assert_eq!(r[1], ("DstPort".to_string(), Value::from(2)));
    }
}
