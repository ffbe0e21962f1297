//! Link-layer types (the pcap `LINKTYPE_*` registry) and which ones we decode.
//!
//! A capture file states once per file (pcap) or per interface (pcapng) what
//! framing its packets carry; [`crate::decode::decode`] uses it to find where
//! the IP header starts.

use std::fmt;

/// A pcap/pcapng link type number (`LINKTYPE_*`), as written in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkType(pub u32);

impl LinkType {
    /// BSD loopback: a 4-byte address family in the capturing host's byte order.
    pub const NULL: LinkType = LinkType(0);
    /// Ethernet II / IEEE 802.3, the common case.
    pub const ETHERNET: LinkType = LinkType(1);
    /// Raw IP on some BSDs (DLT 12); treated as raw IP.
    pub const RAW_12: LinkType = LinkType(12);
    /// Raw IP on some BSDs (DLT 14); treated as raw IP.
    pub const RAW_14: LinkType = LinkType(14);
    /// Raw IP: the packet starts with an IPv4 or IPv6 header.
    pub const RAW: LinkType = LinkType(101);
    /// OpenBSD loopback: like [`LinkType::NULL`] but the family is big-endian.
    pub const LOOP: LinkType = LinkType(108);
    /// Linux "cooked" capture v1 (`any` interface), 16-byte header.
    pub const LINUX_SLL: LinkType = LinkType(113);
    /// Raw IPv4 only.
    pub const IPV4: LinkType = LinkType(228);
    /// Raw IPv6 only.
    pub const IPV6: LinkType = LinkType(229);
    /// Linux "cooked" capture v2, 20-byte header.
    pub const LINUX_SLL2: LinkType = LinkType(276);

    /// Human-readable name for reports (`ETHERNET`, `LINUX_SLL2`, else `LINKTYPE_<n>`).
    pub fn name(&self) -> String {
        let known = match *self {
            LinkType::NULL => "NULL",
            LinkType::ETHERNET => "ETHERNET",
            LinkType::RAW_12 => "RAW_12",
            LinkType::RAW_14 => "RAW_14",
            LinkType::RAW => "RAW",
            LinkType::LOOP => "LOOP",
            LinkType::LINUX_SLL => "LINUX_SLL",
            LinkType::IPV4 => "IPV4",
            LinkType::IPV6 => "IPV6",
            LinkType::LINUX_SLL2 => "LINUX_SLL2",
            LinkType(n) => return format!("LINKTYPE_{n}"),
        };
        known.to_string()
    }

    /// Whether [`crate::decode::decode`] can unwrap this link type down to IP.
    #[inline]
    pub fn is_supported(&self) -> bool {
        matches!(self.0, 0 | 1 | 12 | 14 | 101 | 108 | 113 | 228 | 229 | 276)
    }
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_and_unknown_types() {
        assert_eq!(LinkType::ETHERNET.name(), "ETHERNET");
        assert_eq!(LinkType::LINUX_SLL2.name(), "LINUX_SLL2");
        assert_eq!(LinkType(147).name(), "LINKTYPE_147");
        assert_eq!(LinkType::RAW.to_string(), "RAW");
    }

    #[test]
    fn supported_set() {
        for lt in [
            LinkType::NULL,
            LinkType::ETHERNET,
            LinkType::RAW_12,
            LinkType::RAW_14,
            LinkType::RAW,
            LinkType::LOOP,
            LinkType::LINUX_SLL,
            LinkType::IPV4,
            LinkType::IPV6,
            LinkType::LINUX_SLL2,
        ] {
            assert!(lt.is_supported(), "{lt}");
        }
        assert!(!LinkType(105).is_supported());
        assert!(!LinkType(147).is_supported());
    }
}
