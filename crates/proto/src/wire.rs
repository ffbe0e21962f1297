//! The hot-path codec: `PacketBatch` bytes straight from and into
//! [`PacketRecord`]s.
//!
//! The encoder writes exactly what prost writes for the same
//! [`crate::netspectra::v1::Packet`] (fields in number order, proto3
//! defaults omitted), so the two are interchangeable; the batch header
//! (fields 1–3) is appended after the packets, which protobuf allows, so a
//! batch grows in one buffer with no copy when it is sealed. The decoder
//! accepts any field order, skips unknown fields, and merges repeated
//! sub-messages as protobuf specifies.

use netspectra_model::{ip, PacketRecord, L3, NO_VLAN};

const NS_PER_SEC: u64 = 1_000_000_000;

/// Why bytes could not be read as a batch or packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message ends inside a field.
    #[error("message truncated")]
    Truncated,
    /// A varint longer than 10 bytes.
    #[error("invalid varint")]
    BadVarint,
    /// A wire type protobuf does not define, or groups (unsupported).
    #[error("unsupported wire type {0}")]
    BadWireType(u8),
    /// A known field with the wrong wire type.
    #[error("field {0} has the wrong wire type")]
    WrongType(u32),
    /// An address that is neither 4 nor 16 bytes.
    #[error("address of {0} bytes (expected 4 or 16)")]
    BadAddress(usize),
    /// A packet without source or destination address.
    #[error("packet without addresses")]
    MissingAddress,
    /// A number too large for its field (a port above 65535, …).
    #[error("field {0} out of range")]
    OutOfRange(&'static str),
    /// `probe_id` is not UTF-8.
    #[error("probe_id is not UTF-8")]
    BadUtf8,
}

// ---------------------------------------------------------------- encoding

#[inline]
fn varint_len(v: u64) -> usize {
    // 1 byte per started 7 bits; 0 takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Size of a varint field (`tag` is the encoded key's length) or 0 when the
/// value is the proto3 default.
#[inline]
/// Bytes of field 18 (`vlan`, tag 2 bytes): present for every tagged
/// frame, VLAN 0 included; absent for an untagged one.
fn vlan_len(vlan: u16) -> usize {
    if vlan == NO_VLAN {
        0
    } else {
        2 + varint_len(u64::from(vlan))
    }
}

fn varint_field_len(tag_len: usize, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        tag_len + varint_len(v)
    }
}

#[inline]
fn put_varint_field(out: &mut Vec<u8>, key: u64, v: u64) {
    if v != 0 {
        put_varint(out, key);
        put_varint(out, v);
    }
}

const fn key(field: u32, wire_type: u8) -> u64 {
    ((field as u64) << 3) | wire_type as u64
}

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// The address as it goes on the wire: 4 bytes for IPv4 (what Go2NetSpectra
/// sends), 16 for IPv6.
#[inline]
fn wire_addr(rec: &PacketRecord, a: &ip::IpBytes) -> usize {
    if rec.l3 == L3::Ipv4 && ip::is_v4(a) {
        12
    } else {
        0
    }
}

/// Appends one packet as field 4 of a `PacketBatch` (key, length, body).
/// Only IP records carry a flow; others should not be published.
pub fn encode_packet(rec: &PacketRecord, out: &mut Vec<u8>) {
    let secs = rec.ts_ns / NS_PER_SEC;
    let nanos = rec.ts_ns % NS_PER_SEC;
    let ts_len = varint_field_len(1, secs) + varint_field_len(1, nanos);
    let (s_off, d_off) = (wire_addr(rec, &rec.src_ip), wire_addr(rec, &rec.dst_ip));
    let (s_len, d_len) = (16 - s_off, 16 - d_off);
    let ft_len = 2
        + s_len
        + 2
        + d_len
        + varint_field_len(1, u64::from(rec.src_port))
        + varint_field_len(1, u64::from(rec.dst_port))
        + varint_field_len(1, u64::from(rec.protocol));
    let version: u64 = match rec.l3 {
        L3::Ipv4 => 4,
        L3::Ipv6 => 6,
        _ => 0,
    };
    let body = 1
        + varint_len(ts_len as u64)
        + ts_len
        + 1
        + varint_len(ft_len as u64)
        + ft_len
        + varint_field_len(1, u64::from(rec.wire_len))
        + varint_field_len(2, u64::from(rec.cap_len))
        + varint_field_len(2, u64::from(rec.tcp_flags))
        + vlan_len(rec.vlan)
        + varint_field_len(2, version)
        + varint_field_len(2, u64::from(rec.fragment))
        + varint_field_len(2, u64::from(rec.l4_truncated));
    out.reserve(body + 4);
    put_varint(out, key(4, LEN));
    put_varint(out, body as u64);
    // 1: timestamp
    put_varint(out, key(1, LEN));
    put_varint(out, ts_len as u64);
    put_varint_field(out, key(1, VARINT), secs);
    put_varint_field(out, key(2, VARINT), nanos);
    // 2: five_tuple
    put_varint(out, key(2, LEN));
    put_varint(out, ft_len as u64);
    out.push(key(1, LEN) as u8);
    out.push(s_len as u8);
    out.extend_from_slice(&rec.src_ip[s_off..]);
    out.push(key(2, LEN) as u8);
    out.push(d_len as u8);
    out.extend_from_slice(&rec.dst_ip[d_off..]);
    put_varint_field(out, key(3, VARINT), u64::from(rec.src_port));
    put_varint_field(out, key(4, VARINT), u64::from(rec.dst_port));
    put_varint_field(out, key(5, VARINT), u64::from(rec.protocol));
    // 3: length
    put_varint_field(out, key(3, VARINT), u64::from(rec.wire_len));
    // 16..: NetSpectra extensions
    put_varint_field(out, key(16, VARINT), u64::from(rec.cap_len));
    put_varint_field(out, key(17, VARINT), u64::from(rec.tcp_flags));
    if rec.vlan != NO_VLAN {
        // Present even when 0 (a priority-tagged frame); absent = untagged.
        put_varint(out, key(18, VARINT));
        put_varint(out, u64::from(rec.vlan));
    }
    put_varint_field(out, key(19, VARINT), version);
    put_varint_field(out, key(20, VARINT), u64::from(rec.fragment));
    put_varint_field(out, key(21, VARINT), u64::from(rec.l4_truncated));
}

/// Appends the batch header (fields 1–3). Written after the packets: a
/// batch is built in one buffer and sealed by this call.
pub fn encode_batch_header(probe_id: &str, shard: u32, seq: u64, out: &mut Vec<u8>) {
    if !probe_id.is_empty() {
        put_varint(out, key(1, LEN));
        put_varint(out, probe_id.len() as u64);
        out.extend_from_slice(probe_id.as_bytes());
    }
    put_varint_field(out, key(2, VARINT), u64::from(shard));
    put_varint_field(out, key(3, VARINT), seq);
}

// ---------------------------------------------------------------- decoding

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    #[inline]
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or(WireError::Truncated)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(WireError::BadVarint)
    }

    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
        let end = self.pos.checked_add(len).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// Reads a field key: (field number, wire type).
    #[inline]
    fn key(&mut self) -> Result<(u32, u8), WireError> {
        let k = self.varint()?;
        Ok(((k >> 3) as u32, (k & 7) as u8))
    }

    fn skip(&mut self, wire_type: u8) -> Result<(), WireError> {
        let n = match wire_type {
            VARINT => {
                self.varint()?;
                0
            }
            I64 => 8,
            LEN => {
                self.bytes()?;
                0
            }
            I32 => 4,
            other => return Err(WireError::BadWireType(other)),
        };
        if self.pos + n > self.buf.len() {
            return Err(WireError::Truncated);
        }
        self.pos += n;
        Ok(())
    }
}

#[inline]
fn expect(field: u32, got: u8, want: u8) -> Result<(), WireError> {
    if got == want {
        Ok(())
    } else {
        Err(WireError::WrongType(field))
    }
}

/// The header of a decoded batch (borrowed from the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader<'a> {
    /// Publishing probe.
    pub probe_id: &'a str,
    /// Shard the batch belongs to.
    pub shard: u32,
    /// Sequence number per (probe, shard).
    pub seq: u64,
    /// Packets in the batch.
    pub packets: usize,
}

/// Reads only the header of a batch (skips the packets without decoding
/// them): enough to decide whether it was already applied.
pub fn decode_batch_header(buf: &[u8]) -> Result<BatchHeader<'_>, WireError> {
    walk_batch(buf, |_| Ok(()))
}

/// Decodes a whole batch: appends its packets to `out` (not cleared) and
/// returns the header. On error `out` may hold part of the batch.
pub fn decode_batch<'a>(
    buf: &'a [u8],
    out: &mut Vec<PacketRecord>,
) -> Result<BatchHeader<'a>, WireError> {
    walk_batch(buf, |packet| {
        out.push(decode_packet(packet)?);
        Ok(())
    })
}

/// Reads a batch's fields, handing each encoded packet to `on_packet`.
fn walk_batch<'a>(
    buf: &'a [u8],
    mut on_packet: impl FnMut(&'a [u8]) -> Result<(), WireError>,
) -> Result<BatchHeader<'a>, WireError> {
    let mut r = Reader::new(buf);
    let mut h = BatchHeader {
        probe_id: "",
        shard: 0,
        seq: 0,
        packets: 0,
    };
    while !r.done() {
        let (field, wt) = r.key()?;
        match field {
            1 => {
                expect(1, wt, LEN)?;
                h.probe_id = std::str::from_utf8(r.bytes()?).map_err(|_| WireError::BadUtf8)?;
            }
            2 => {
                expect(2, wt, VARINT)?;
                h.shard = r.varint()? as u32;
            }
            3 => {
                expect(3, wt, VARINT)?;
                h.seq = r.varint()?;
            }
            4 => {
                expect(4, wt, LEN)?;
                on_packet(r.bytes()?)?;
                h.packets += 1;
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(h)
}

/// Decodes one `Packet` — or one Go2NetSpectra `PacketInfo`, which is the
/// same message without NetSpectra's fields.
pub fn decode_packet(buf: &[u8]) -> Result<PacketRecord, WireError> {
    let mut r = Reader::new(buf);
    let mut rec = PacketRecord::default();
    let (mut secs, mut nanos) = (0i64, 0i64);
    let (mut src, mut dst): (&[u8], &[u8]) = (&[], &[]);
    let mut version = 0u64;
    while !r.done() {
        let (field, wt) = r.key()?;
        match field {
            1 => {
                expect(1, wt, LEN)?;
                let mut t = Reader::new(r.bytes()?);
                while !t.done() {
                    match t.key()? {
                        (1, VARINT) => secs = t.varint()? as i64,
                        (2, VARINT) => nanos = i64::from(t.varint()? as i32),
                        (_, wt) => t.skip(wt)?,
                    }
                }
            }
            2 => {
                expect(2, wt, LEN)?;
                let mut t = Reader::new(r.bytes()?);
                while !t.done() {
                    match t.key()? {
                        (1, LEN) => src = t.bytes()?,
                        (2, LEN) => dst = t.bytes()?,
                        (3, VARINT) => rec.src_port = port(t.varint()?, "src_port")?,
                        (4, VARINT) => rec.dst_port = port(t.varint()?, "dst_port")?,
                        (5, VARINT) => {
                            rec.protocol = u8::try_from(t.varint()? as u32)
                                .map_err(|_| WireError::OutOfRange("protocol"))?
                        }
                        (_, wt) => t.skip(wt)?,
                    }
                }
            }
            3 => {
                expect(3, wt, VARINT)?;
                rec.wire_len =
                    u32::try_from(r.varint()?).map_err(|_| WireError::OutOfRange("length"))?;
            }
            16 => {
                expect(16, wt, VARINT)?;
                rec.cap_len = r.varint()? as u32;
            }
            17 => {
                expect(17, wt, VARINT)?;
                rec.tcp_flags = r.varint()? as u32 as u8;
            }
            18 => {
                expect(18, wt, VARINT)?;
                rec.vlan = r.varint()? as u32 as u16;
            }
            19 => {
                expect(19, wt, VARINT)?;
                version = u64::from(r.varint()? as u32);
            }
            20 => {
                expect(20, wt, VARINT)?;
                rec.fragment = r.varint()? != 0;
            }
            21 => {
                expect(21, wt, VARINT)?;
                rec.l4_truncated = r.varint()? != 0;
            }
            _ => r.skip(wt)?,
        }
    }
    if src.is_empty() || dst.is_empty() {
        return Err(WireError::MissingAddress);
    }
    rec.src_ip = normalise(src)?;
    rec.dst_ip = normalise(dst)?;
    rec.l3 = match version {
        4 => L3::Ipv4,
        6 => L3::Ipv6,
        _ if ip::is_v4(&rec.src_ip) => L3::Ipv4,
        _ => L3::Ipv6,
    };
    rec.ts_ns = timestamp_ns(secs, nanos);
    Ok(rec)
}

#[inline]
fn port(v: u64, name: &'static str) -> Result<u16, WireError> {
    u16::try_from(v).map_err(|_| WireError::OutOfRange(name))
}

/// 4 bytes → IPv4-mapped; 16 bytes as they are.
#[inline]
pub fn normalise(a: &[u8]) -> Result<ip::IpBytes, WireError> {
    match a.len() {
        4 => Ok(ip::from_v4([a[0], a[1], a[2], a[3]])),
        16 => {
            let mut out = [0u8; 16];
            out.copy_from_slice(a);
            Ok(out)
        }
        n => Err(WireError::BadAddress(n)),
    }
}

/// Nanoseconds since the epoch from a protobuf `Timestamp`; times before
/// 1970 become 0 and times past 2554 saturate.
#[inline]
pub fn timestamp_ns(secs: i64, nanos: i64) -> u64 {
    let ns = i128::from(secs) * i128::from(NS_PER_SEC) + i128::from(nanos);
    ns.clamp(0, i128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        for (v, n) in [
            (0u64, 1),
            (1, 1),
            (127, 1),
            (128, 2),
            (16383, 2),
            (16384, 3),
        ] {
            assert_eq!(varint_len(v), n, "{v}");
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), n);
            assert_eq!(Reader::new(&b).varint().unwrap(), v);
        }
        assert_eq!(varint_len(u64::MAX), 10);
    }

    #[test]
    fn truncated_and_bad_input_are_errors_not_panics() {
        let rec = PacketRecord {
            l3: L3::Ipv6,
            src_ip: [1; 16],
            dst_ip: [2; 16],
            ts_ns: 5,
            wire_len: 100,
            ..Default::default()
        };
        let mut buf = Vec::new();
        encode_packet(&rec, &mut buf);
        encode_batch_header("p", 1, 2, &mut buf);
        for cut in 0..buf.len() {
            let mut out = Vec::new();
            let _ = decode_batch(&buf[..cut], &mut out);
        }
        let mut out = Vec::new();
        assert_eq!(
            decode_batch(&[0x4b], &mut out),
            Err(WireError::BadWireType(3))
        );
    }
}
