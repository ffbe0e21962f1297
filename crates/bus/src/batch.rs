//! Per-shard batching on the probe: packets are encoded straight into the
//! open batch of their shard, which is sealed when it is full (packets or
//! bytes), old (its first packet waited `max_delay`), or when a packet's
//! timestamp crosses a multiple of `align` (packet time).
//!
//! Alignment is what makes JetStream redelivery exact: an engine cuts its
//! windows at multiples of its window length, so when that length is a
//! multiple of `align` every batch lies inside one engine window, and is
//! either entirely in a stored window (acked) or entirely not (redelivered
//! and counted once by the successor). A batch straddling a cut would be
//! half stored and then redelivered whole.

use crate::shard_of;
use bytes::Bytes;
use netspectra_model::PacketRecord;
use netspectra_proto::wire;
use std::time::{Duration, Instant};

/// Upper bound of one encoded packet inside a batch (key, length and the
/// largest body: IPv6 addresses, every field at its widest).
pub const MAX_PACKET_WIRE: usize = 96;

/// When a batch is sealed.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Packets per batch.
    pub max_packets: usize,
    /// Encoded bytes per batch (a NATS message; the server's default
    /// `max_payload` is 1 MiB).
    pub max_bytes: usize,
    /// A batch leaves at most this long after its first packet arrived
    /// (when the caller polls [`Batcher::expired`] often enough).
    pub max_delay: Duration,
    /// Batches never span a multiple of this in packet time (0: no
    /// alignment). Engines' window lengths must be multiples of it.
    pub align_ns: u64,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_packets: 1024,
            max_bytes: 512 * 1024,
            max_delay: Duration::from_millis(100),
            align_ns: DEFAULT_ALIGN_NS,
        }
    }
}

/// Default batch alignment: 100 ms of packet time, which divides every
/// window length of whole tenths of a second.
pub const DEFAULT_ALIGN_NS: u64 = 100_000_000;

/// A batch ready to publish.
#[derive(Clone, Debug)]
pub struct SealedBatch {
    /// Its shard (and subject).
    pub shard: u32,
    /// Its sequence number in (probe, shard).
    pub seq: u64,
    /// Packets it holds.
    pub packets: u32,
    /// The encoded `PacketBatch`.
    pub payload: Bytes,
}

struct Open {
    buf: Vec<u8>,
    packets: usize,
    since: Option<Instant>,
    /// The aligned slot `[start, end)` of packet time this batch is in.
    slot: (u64, u64),
}

/// Builds batches for every shard of one probe. Not thread-safe: one
/// producer (the capture loop) owns it.
pub struct Batcher {
    probe_id: String,
    shards: u32,
    limits: BatchLimits,
    open: Vec<Open>,
    next_seq: Vec<u64>,
    header_max: usize,
}

impl Batcher {
    /// A batcher for `shards` shards. `seq_base` is the first sequence
    /// number of every shard; a probe passes its start time in
    /// microseconds, so a restarted probe keeps its sequence increasing.
    pub fn new(probe_id: &str, shards: u32, limits: BatchLimits, seq_base: u64) -> Batcher {
        let shards = shards.max(1);
        // Key + length + id, shard and seq at their widest.
        let header_max = 1 + 2 + probe_id.len() + 1 + 5 + 1 + 10;
        let limits = BatchLimits {
            max_packets: limits.max_packets.max(2),
            max_bytes: limits.max_bytes.max(4 * MAX_PACKET_WIRE + header_max),
            ..limits
        };
        Batcher {
            probe_id: probe_id.to_owned(),
            shards,
            limits,
            open: (0..shards)
                .map(|_| Open {
                    buf: Vec::new(),
                    packets: 0,
                    since: None,
                    slot: (0, 0),
                })
                .collect(),
            next_seq: vec![seq_base; shards as usize],
            header_max,
        }
    }

    /// Adds an IP record (others are ignored and return `None`); returns
    /// the batch it filled, if any.
    #[inline]
    pub fn push(&mut self, rec: &PacketRecord) -> Option<SealedBatch> {
        if !rec.l3.is_ip() {
            return None;
        }
        let shard = shard_of(rec, self.shards);
        let mut sealed = None;
        let align = self.limits.align_ns;
        if align > 0 {
            let (start, end) = self.open[shard as usize].slot;
            if rec.ts_ns < start || rec.ts_ns >= end {
                if self.open[shard as usize].packets > 0 {
                    sealed = Some(self.seal(shard));
                }
                let start = rec.ts_ns - rec.ts_ns % align;
                self.open[shard as usize].slot = (start, start.saturating_add(align));
            }
        }
        let open = &mut self.open[shard as usize];
        if open.packets == 0 {
            open.since = Some(Instant::now());
            if open.buf.capacity() == 0 {
                let cap = (self.limits.max_packets * 64).min(self.limits.max_bytes);
                open.buf.reserve(cap);
            }
        }
        wire::encode_packet(rec, &mut open.buf);
        open.packets += 1;
        let full = open.packets >= self.limits.max_packets
            || open.buf.len() + MAX_PACKET_WIRE + self.header_max > self.limits.max_bytes;
        // After an alignment cut the open batch holds one packet, which
        // the limits (at least 2 packets and 4 packets' bytes) never call full.
        match sealed {
            Some(s) => Some(s),
            None => full.then(|| self.seal(shard)),
        }
    }

    fn seal(&mut self, shard: u32) -> SealedBatch {
        let i = shard as usize;
        let seq = self.next_seq[i];
        self.next_seq[i] += 1;
        let open = &mut self.open[i];
        wire::encode_batch_header(&self.probe_id, shard, seq, &mut open.buf);
        let cap = open.buf.capacity();
        let buf = std::mem::replace(&mut open.buf, Vec::with_capacity(cap));
        let packets = open.packets as u32;
        open.packets = 0;
        open.since = None;
        SealedBatch {
            shard,
            seq,
            packets,
            payload: Bytes::from(buf),
        }
    }

    /// Seals every batch whose first packet arrived `max_delay` or more
    /// before `now`.
    pub fn expired(&mut self, now: Instant, out: &mut Vec<SealedBatch>) {
        for shard in 0..self.shards {
            let due = self.open[shard as usize]
                .since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.limits.max_delay);
            if due {
                out.push(self.seal(shard));
            }
        }
    }

    /// When the oldest open batch is due, if any is open.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open
            .iter()
            .filter_map(|o| o.since)
            .min()
            .map(|t| t + self.limits.max_delay)
    }

    /// Seals every open batch (end of input).
    pub fn flush(&mut self, out: &mut Vec<SealedBatch>) {
        for shard in 0..self.shards {
            if self.open[shard as usize].packets > 0 {
                out.push(self.seal(shard));
            }
        }
    }

    /// Shards this batcher spreads over.
    pub fn shards(&self) -> u32 {
        self.shards
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netspectra_model::{ip, L3};

    fn rec(src: u32, ts: u64) -> PacketRecord {
        PacketRecord {
            l3: L3::Ipv4,
            ts_ns: ts,
            src_ip: ip::from_v4(src.to_be_bytes()),
            dst_ip: ip::from_v4([10, 9, 8, 7]),
            src_port: 1000,
            dst_port: 80,
            protocol: 6,
            wire_len: 100,
            cap_len: 100,
            ..Default::default()
        }
    }

    fn decode(b: &SealedBatch) -> Vec<PacketRecord> {
        let mut out = Vec::new();
        let h = wire::decode_batch(&b.payload, &mut out).unwrap();
        assert_eq!(
            (h.shard, h.seq, h.packets),
            (b.shard, b.seq, b.packets as usize)
        );
        assert_eq!(h.probe_id, "p1");
        out
    }

    #[test]
    fn seals_by_count_in_order_with_increasing_seq() {
        let limits = BatchLimits {
            max_packets: 10,
            ..Default::default()
        };
        let mut b = Batcher::new("p1", 1, limits, 500);
        let mut sealed = Vec::new();
        for i in 0..35 {
            sealed.extend(b.push(&rec(7, i)));
        }
        assert_eq!(sealed.len(), 3);
        assert_eq!(
            sealed.iter().map(|s| s.seq).collect::<Vec<_>>(),
            [500, 501, 502]
        );
        b.flush(&mut sealed);
        assert_eq!(sealed.len(), 4);
        assert_eq!(sealed[3].packets, 5);
        let all: Vec<u64> = sealed.iter().flat_map(decode).map(|r| r.ts_ns).collect();
        assert_eq!(all, (0..35).collect::<Vec<_>>());
    }

    #[test]
    fn seals_by_bytes_and_never_exceeds_the_limit() {
        let limits = BatchLimits {
            max_packets: 1_000_000,
            max_bytes: 4096,
            align_ns: 0,
            ..Default::default()
        };
        let mut b = Batcher::new("p1", 1, limits, 1);
        let mut sealed = Vec::new();
        let mut v6 = rec(1, u64::MAX);
        v6.l3 = L3::Ipv6;
        v6.src_ip = [0xff; 16];
        v6.dst_ip = [0xfe; 16];
        v6.src_port = u16::MAX;
        v6.dst_port = u16::MAX;
        v6.protocol = u8::MAX;
        v6.tcp_flags = u8::MAX;
        v6.vlan = u16::MAX;
        v6.wire_len = u32::MAX;
        v6.cap_len = u32::MAX;
        v6.fragment = true;
        v6.l4_truncated = true;
        let mut one = Vec::new();
        wire::encode_packet(&v6, &mut one);
        assert!(one.len() <= MAX_PACKET_WIRE, "{} bytes", one.len());
        for i in 0..1000 {
            let r = if i % 2 == 0 { v6 } else { rec(1, i) };
            sealed.extend(b.push(&r));
        }
        b.flush(&mut sealed);
        assert!(sealed.len() > 5);
        assert!(sealed.iter().all(|s| s.payload.len() <= 4096));
        assert!(sealed[0].payload.len() > 4096 - 2 * MAX_PACKET_WIRE - 32);
        assert_eq!(sealed.iter().map(|s| s.packets).sum::<u32>(), 1000);
    }

    #[test]
    fn seals_by_time_and_reports_the_next_deadline() {
        let limits = BatchLimits {
            max_delay: Duration::from_millis(100),
            ..Default::default()
        };
        let mut b = Batcher::new("p1", 16, limits, 1);
        assert_eq!(b.next_deadline(), None);
        let t0 = Instant::now();
        b.push(&rec(1, 1));
        b.push(&rec(2, 2));
        let deadline = b.next_deadline().unwrap();
        assert!(deadline >= t0 + Duration::from_millis(100));
        assert!(deadline <= Instant::now() + Duration::from_millis(100));
        let mut out = Vec::new();
        b.expired(Instant::now(), &mut out);
        assert!(out.is_empty(), "nothing is due yet");
        b.expired(Instant::now() + Duration::from_millis(101), &mut out);
        assert_eq!(out.iter().map(|s| s.packets).sum::<u32>(), 2);
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn batches_never_span_an_alignment_boundary() {
        let limits = BatchLimits {
            max_packets: 50,
            align_ns: 1_000,
            ..Default::default()
        };
        let mut b = Batcher::new("p1", 2, limits, 1);
        let mut out = Vec::new();
        // 10 000 packets, 7 ns apart, over 4 sources: 70 slots of 1 µs.
        for i in 0..10_000u64 {
            out.extend(b.push(&rec((i % 4) as u32, 5_000 + i * 7)));
        }
        b.flush(&mut out);
        let mut total = 0;
        for s in &out {
            let recs = decode(s);
            let slot = recs[0].ts_ns / 1_000;
            assert!(
                recs.iter().all(|r| r.ts_ns / 1_000 == slot),
                "batch {} spans slots",
                s.seq
            );
            total += recs.len();
        }
        assert_eq!(total, 10_000);
        // Without alignment the same input needs fewer batches.
        let mut b = Batcher::new(
            "p1",
            2,
            BatchLimits {
                align_ns: 0,
                ..limits
            },
            1,
        );
        let mut n = (0..10_000u64)
            .filter_map(|i| b.push(&rec((i % 4) as u32, 5_000 + i * 7)))
            .count();
        let mut rest = Vec::new();
        b.flush(&mut rest);
        n += rest.len();
        assert!(n < out.len());
    }

    #[test]
    fn every_packet_lands_in_the_batch_of_its_source_shard() {
        let mut b = Batcher::new("p1", 8, BatchLimits::default(), 1);
        let mut out = Vec::new();
        for src in 0..1000u32 {
            for t in 0..3 {
                out.extend(b.push(&rec(src, t)));
            }
        }
        // Non-IP records are never published.
        assert!(b
            .push(&PacketRecord {
                l3: L3::NonIp,
                ..Default::default()
            })
            .is_none());
        b.flush(&mut out);
        let mut total = 0;
        for s in &out {
            for r in decode(s) {
                assert_eq!(shard_of(&r, 8), s.shard);
                total += 1;
            }
        }
        assert_eq!(total, 3000);
    }
}
