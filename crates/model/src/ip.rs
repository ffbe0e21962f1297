//! IP addresses as 16 bytes, IPv4 stored IPv4-mapped (`::ffff:a.b.c.d`).
//!
//! One fixed-size representation keeps flow keys `Copy`, hashable without
//! branching on the family, and sortable as bytes, which is what range and
//! CIDR queries on a store need.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address in its 16-byte form.
pub type IpBytes = [u8; 16];

const V4_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// The IPv4-mapped form of an IPv4 address.
#[inline]
pub fn from_v4(a: [u8; 4]) -> IpBytes {
    let mut out = [0u8; 16];
    out[..12].copy_from_slice(&V4_PREFIX);
    out[12..].copy_from_slice(&a);
    out
}

/// Whether the address is IPv4 (stored IPv4-mapped).
#[inline]
pub fn is_v4(ip: &IpBytes) -> bool {
    ip[..12] == V4_PREFIX
}

/// The standard-library address, IPv4 for mapped addresses.
pub fn to_std(ip: &IpBytes) -> IpAddr {
    if is_v4(ip) {
        IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*ip))
    }
}

/// The 16-byte form of a standard-library address.
pub fn from_std(ip: IpAddr) -> IpBytes {
    match ip {
        IpAddr::V4(v4) => from_v4(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Canonical text: dotted quad for IPv4, RFC 5952 for IPv6.
pub fn to_string(ip: &IpBytes) -> String {
    to_std(ip).to_string()
}

/// Keeps the first `prefix` bits of the address, counted within its own
/// family (so `/24` of an IPv4 address is a /24, not a /120 of the mapped form).
pub fn mask(ip: &IpBytes, prefix: u8) -> IpBytes {
    let bits = if is_v4(ip) {
        96 + u32::from(prefix.min(32))
    } else {
        u32::from(prefix.min(128))
    };
    let mut out = *ip;
    for (i, b) in out.iter_mut().enumerate() {
        let start = i as u32 * 8;
        if start >= bits {
            *b = 0;
        } else if start + 8 > bits {
            *b &= 0xffu8 << (8 - (bits - start));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_families_canonically() {
        assert_eq!(to_string(&from_v4([192, 168, 1, 1])), "192.168.1.1");
        let v6: Ipv6Addr = "2001:db8:0:0:0:0:0:1".parse().unwrap();
        assert_eq!(to_string(&v6.octets()), "2001:db8::1");
    }

    #[test]
    fn masks_within_the_family() {
        assert_eq!(to_string(&mask(&from_v4([10, 1, 2, 3]), 24)), "10.1.2.0");
        assert_eq!(to_string(&mask(&from_v4([10, 1, 2, 3]), 0)), "0.0.0.0");
        let v6: Ipv6Addr = "2001:db8:abcd:1234::1".parse().unwrap();
        assert_eq!(to_string(&mask(&v6.octets(), 36)), "2001:db8:a000::");
    }
}
