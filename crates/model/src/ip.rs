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

/// An address range given as `addr` or `addr/len`: the inclusive bounds of
/// every address it covers, in the 16-byte form (so a store compares bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// Lowest address covered (the network address).
    pub first: IpBytes,
    /// Highest address covered.
    pub last: IpBytes,
}

/// Text that is neither an address nor `address/prefix-length`.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid IP address or CIDR `{0}`: use e.g. `10.0.0.1`, `10.0.0.0/8` or `2001:db8::/32`")]
pub struct BadCidr(pub String);

impl std::str::FromStr for Cidr {
    type Err = BadCidr;

    /// A bare address covers itself; the prefix length counts within the
    /// address's family (`/0`–`/32` for IPv4, `/0`–`/128` for IPv6).
    fn from_str(text: &str) -> Result<Cidr, BadCidr> {
        let err = || BadCidr(text.to_string());
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| err())?)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(err());
        }
        let first = mask(&from_std(addr), prefix);
        let host_bits = u32::from(max - prefix);
        let host = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let last = (u128::from_be_bytes(first) | host).to_be_bytes();
        Ok(Cidr { first, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_cover_their_family_only() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(to_string(&c.first), "10.0.0.0");
        assert_eq!(to_string(&c.last), "10.255.255.255");
        let one: Cidr = "192.168.1.1".parse().unwrap();
        assert_eq!(one.first, one.last);
        let all4: Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(to_string(&all4.last), "255.255.255.255");
        assert!(is_v4(&all4.last));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert_eq!(
            to_string(&v6.last),
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        let all6: Cidr = "::/0".parse().unwrap();
        assert_eq!(all6.last, [0xff; 16]);
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "::/129",
            "x",
            "10.0.0.1/",
            "1.2.3.4/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

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
