//! Conversions between the generated messages and [`PacketRecord`].
//!
//! On the wire IPv4 addresses are 4 bytes (Go2NetSpectra's form) and IPv6
//! 16; on receipt both become the 16-byte form NetSpectra keys on (IPv4
//! mapped into IPv6).

use crate::go2netspectra::v1::{FiveTuple, PacketInfo};
use crate::netspectra::v1::Packet;
use crate::wire::{normalise, timestamp_ns};
use crate::WireError;
use bytes::Bytes;
use netspectra_model::{ip, PacketRecord, L3, NO_VLAN};

/// Why a message cannot become a record.
pub type ConvertError = WireError;

fn addr_bytes(rec: &PacketRecord, a: &ip::IpBytes) -> Bytes {
    if rec.l3 == L3::Ipv4 && ip::is_v4(a) {
        Bytes::copy_from_slice(&a[12..])
    } else {
        Bytes::copy_from_slice(a)
    }
}

fn timestamp(ts_ns: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ts_ns / 1_000_000_000) as i64,
        nanos: (ts_ns % 1_000_000_000) as i32,
    }
}

impl From<&PacketRecord> for Packet {
    fn from(rec: &PacketRecord) -> Packet {
        Packet {
            timestamp: Some(timestamp(rec.ts_ns)),
            five_tuple: Some(FiveTuple {
                src_ip: addr_bytes(rec, &rec.src_ip),
                dst_ip: addr_bytes(rec, &rec.dst_ip),
                src_port: u32::from(rec.src_port),
                dst_port: u32::from(rec.dst_port),
                protocol: u32::from(rec.protocol),
            }),
            length: u64::from(rec.wire_len),
            cap_len: rec.cap_len,
            tcp_flags: u32::from(rec.tcp_flags),
            vlan: (rec.vlan != NO_VLAN).then_some(u32::from(rec.vlan)),
            ip_version: match rec.l3 {
                L3::Ipv4 => 4,
                L3::Ipv6 => 6,
                _ => 0,
            },
            fragment: rec.fragment,
            l4_truncated: rec.l4_truncated,
        }
    }
}

impl From<&PacketRecord> for PacketInfo {
    /// What a Go2NetSpectra probe would have sent for this packet.
    fn from(rec: &PacketRecord) -> PacketInfo {
        let p = Packet::from(rec);
        PacketInfo {
            timestamp: p.timestamp,
            five_tuple: p.five_tuple,
            length: p.length,
        }
    }
}

fn common(
    ts: Option<&prost_types::Timestamp>,
    ft: Option<&FiveTuple>,
    length: u64,
    version: u32,
) -> Result<PacketRecord, ConvertError> {
    let ft = ft.ok_or(WireError::MissingAddress)?;
    if ft.src_ip.is_empty() || ft.dst_ip.is_empty() {
        return Err(WireError::MissingAddress);
    }
    let src_ip = normalise(&ft.src_ip)?;
    let dst_ip = normalise(&ft.dst_ip)?;
    let port = |v: u32, name| u16::try_from(v).map_err(|_| WireError::OutOfRange(name));
    Ok(PacketRecord {
        ts_ns: ts.map_or(0, |t| timestamp_ns(t.seconds, i64::from(t.nanos))),
        src_ip,
        dst_ip,
        src_port: port(ft.src_port, "src_port")?,
        dst_port: port(ft.dst_port, "dst_port")?,
        protocol: u8::try_from(ft.protocol).map_err(|_| WireError::OutOfRange("protocol"))?,
        wire_len: u32::try_from(length).map_err(|_| WireError::OutOfRange("length"))?,
        l3: match version {
            4 => L3::Ipv4,
            6 => L3::Ipv6,
            _ if ip::is_v4(&src_ip) => L3::Ipv4,
            _ => L3::Ipv6,
        },
        ..Default::default()
    })
}

impl TryFrom<&Packet> for PacketRecord {
    type Error = ConvertError;

    fn try_from(p: &Packet) -> Result<PacketRecord, ConvertError> {
        let mut rec = common(
            p.timestamp.as_ref(),
            p.five_tuple.as_ref(),
            p.length,
            p.ip_version,
        )?;
        rec.cap_len = p.cap_len;
        rec.tcp_flags = p.tcp_flags as u8;
        rec.vlan = p.vlan.map_or(NO_VLAN, |v| v as u16);
        rec.fragment = p.fragment;
        rec.l4_truncated = p.l4_truncated;
        Ok(rec)
    }
}

impl TryFrom<&PacketInfo> for PacketRecord {
    type Error = ConvertError;

    /// A Go2NetSpectra packet: no captured length, flags or VLAN (left 0);
    /// the family comes from the address length.
    fn try_from(p: &PacketInfo) -> Result<PacketRecord, ConvertError> {
        common(p.timestamp.as_ref(), p.five_tuple.as_ref(), p.length, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netspectra::v1::PacketBatch;
    use crate::wire;
    use proptest::prelude::*;
    use prost::Message;

    fn v4(ts: u64) -> PacketRecord {
        PacketRecord {
            l3: L3::Ipv4,
            ts_ns: ts,
            src_ip: ip::from_v4([192, 168, 1, 10]),
            dst_ip: ip::from_v4([8, 8, 8, 8]),
            src_port: 51000,
            dst_port: 53,
            protocol: 17,
            wire_len: 74,
            cap_len: 74,
            ..Default::default()
        }
    }

    fn arb_record() -> impl Strategy<Value = PacketRecord> {
        (
            any::<bool>(),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u64>(),
            (any::<u16>(), any::<u16>(), any::<u8>(), any::<u8>()),
            (
                any::<u32>(),
                any::<u32>(),
                // Untagged (no field 18) and every VLAN id, 0 included.
                prop_oneof![Just(NO_VLAN), 0u16..4096],
                any::<bool>(),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(is_v4, s, d, ts, (sp, dp, proto, flags), (wl, cl, vlan, frag, trunc))| {
                    let (src_ip, dst_ip, l3) = if is_v4 {
                        (
                            ip::from_v4([s[0], s[1], s[2], s[3]]),
                            ip::from_v4([d[0], d[1], d[2], d[3]]),
                            L3::Ipv4,
                        )
                    } else {
                        (s, d, L3::Ipv6)
                    };
                    PacketRecord {
                        ts_ns: ts,
                        src_ip,
                        dst_ip,
                        src_port: sp,
                        dst_port: dp,
                        vlan,
                        protocol: proto,
                        tcp_flags: flags,
                        wire_len: wl,
                        cap_len: cl,
                        l3,
                        fragment: frag,
                        l4_truncated: trunc,
                    }
                },
            )
    }

    #[test]
    fn ipv4_goes_on_the_wire_as_4_bytes_and_comes_back_mapped() {
        let rec = v4(1_767_225_600_123_456_789);
        let p = Packet::from(&rec);
        let ft = p.five_tuple.as_ref().unwrap();
        assert_eq!(&ft.src_ip[..], &[192, 168, 1, 10]);
        assert_eq!(p.timestamp.unwrap().nanos, 123_456_789);
        assert_eq!(PacketRecord::try_from(&p).unwrap(), rec);
    }

    #[test]
    fn go2netspectra_packet_info_reads_as_a_record() {
        let info = PacketInfo {
            timestamp: Some(prost_types::Timestamp {
                seconds: 10,
                nanos: 5,
            }),
            five_tuple: Some(FiveTuple {
                src_ip: Bytes::from_static(&[10, 0, 0, 1]),
                dst_ip: Bytes::from(vec![0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                src_port: 1234,
                dst_port: 80,
                protocol: 6,
            }),
            length: 1500,
        };
        let rec = PacketRecord::try_from(&info).unwrap();
        assert_eq!(rec.ts_ns, 10_000_000_005);
        assert_eq!(rec.src_ip, ip::from_v4([10, 0, 0, 1]));
        assert_eq!(rec.l3, L3::Ipv4);
        assert_eq!(rec.wire_len, 1500);
        // The fast decoder reads the same bytes the same way.
        assert_eq!(wire::decode_packet(&info.encode_to_vec()).unwrap(), rec);
        // A NetSpectra Packet is a valid PacketInfo (same field numbers).
        let p = Packet::from(&v4(7));
        let as_info = PacketInfo::decode(&p.encode_to_vec()[..]).unwrap();
        assert_eq!(as_info.length, 74);
        assert_eq!(PacketRecord::try_from(&as_info).unwrap().src_port, 51000);
    }

    #[test]
    fn bad_addresses_are_rejected() {
        let mut p = Packet::from(&v4(1));
        p.five_tuple.as_mut().unwrap().src_ip = Bytes::from_static(&[1, 2, 3]);
        assert_eq!(PacketRecord::try_from(&p), Err(WireError::BadAddress(3)));
        assert_eq!(
            wire::decode_packet(&p.encode_to_vec()),
            Err(WireError::BadAddress(3))
        );
        p.five_tuple = None;
        assert_eq!(PacketRecord::try_from(&p), Err(WireError::MissingAddress));
    }

    proptest! {
        #[test]
        fn fast_codec_writes_exactly_what_prost_writes(recs in prop::collection::vec(arb_record(), 0..20),
                                                      shard in any::<u32>(), seq in any::<u64>(),
                                                      id in "[a-z0-9.-]{0,12}") {
            let mut fast = Vec::new();
            for r in &recs {
                let start = fast.len();
                wire::encode_packet(r, &mut fast);
                // Packet by packet: same bytes as prost (key 4 + length + body).
                let p = Packet::from(r);
                let mut want = vec![0x22];
                prost::encoding::encode_varint(p.encoded_len() as u64, &mut want);
                p.encode(&mut want).unwrap();
                prop_assert_eq!(&fast[start..], &want[..]);
                prop_assert_eq!(&PacketRecord::try_from(&p).unwrap(), r);
            }
            wire::encode_batch_header(&id, shard, seq, &mut fast);
            // prost reads the fast batch (header after the packets) …
            let batch = PacketBatch::decode(&fast[..]).unwrap();
            prop_assert_eq!(&batch.probe_id, &id);
            prop_assert_eq!((batch.shard, batch.seq), (shard, seq));
            let back: Vec<PacketRecord> = batch.packets.iter().map(|p| PacketRecord::try_from(p).unwrap()).collect();
            prop_assert_eq!(&back, &recs);
            // … and the fast decoder reads prost's batch (header first).
            let mut out = Vec::new();
            let prost_bytes = batch.encode_to_vec();
            let h = wire::decode_batch(&prost_bytes, &mut out).unwrap();
            prop_assert_eq!((h.probe_id, h.shard, h.seq, h.packets), (id.as_str(), shard, seq, recs.len()));
            prop_assert_eq!(&out, &recs);
            let h2 = wire::decode_batch_header(&fast).unwrap();
            prop_assert_eq!(h2, h);
        }
    }
}
