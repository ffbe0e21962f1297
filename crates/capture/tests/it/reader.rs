//! Capture reading: pcap and pcapng built byte by byte, damaged files, and a
//! no-panic property over random streams.

use netspectra_capture::link::LinkType;
use netspectra_capture::reader::{CaptureError, CaptureFormat, CaptureReader};
use proptest::prelude::*;
use std::io::{Read, Write};

// ---------- byte builders ----------

#[derive(Clone, Copy)]
enum Bo {
    Le,
    Be,
}

fn u16b(bo: Bo, v: u16) -> [u8; 2] {
    match bo {
        Bo::Le => v.to_le_bytes(),
        Bo::Be => v.to_be_bytes(),
    }
}

fn u32b(bo: Bo, v: u32) -> [u8; 4] {
    match bo {
        Bo::Le => v.to_le_bytes(),
        Bo::Be => v.to_be_bytes(),
    }
}

struct Pcap {
    bo: Bo,
    out: Vec<u8>,
}

impl Pcap {
    fn new(bo: Bo, nanos: bool, snaplen: u32, link: u32) -> Self {
        let mut out = Vec::new();
        out.extend(u32b(bo, if nanos { 0xA1B2_3C4D } else { 0xA1B2_C3D4 }));
        out.extend(u16b(bo, 2));
        out.extend(u16b(bo, 4));
        out.extend(u32b(bo, 0));
        out.extend(u32b(bo, 0));
        out.extend(u32b(bo, snaplen));
        out.extend(u32b(bo, link));
        Pcap { bo, out }
    }

    fn rec(mut self, sec: u32, frac: u32, data: &[u8], orig: u32) -> Self {
        let bo = self.bo;
        self.out.extend(u32b(bo, sec));
        self.out.extend(u32b(bo, frac));
        self.out.extend(u32b(bo, data.len() as u32));
        self.out.extend(u32b(bo, orig));
        self.out.extend_from_slice(data);
        self
    }
}

struct Ng {
    bo: Bo,
    out: Vec<u8>,
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

impl Ng {
    fn new() -> Self {
        Ng {
            bo: Bo::Le,
            out: Vec::new(),
        }
    }

    fn block(mut self, ty: u32, body: &[u8]) -> Self {
        let bo = self.bo;
        let len = 12 + body.len() as u32;
        self.out.extend(u32b(bo, ty));
        self.out.extend(u32b(bo, len));
        self.out.extend_from_slice(body);
        self.out.extend(u32b(bo, len));
        self
    }

    fn shb(mut self, bo: Bo) -> Self {
        self.bo = bo;
        let mut body = Vec::new();
        body.extend(u32b(bo, 0x1A2B_3C4D));
        body.extend(u16b(bo, 1));
        body.extend(u16b(bo, 0));
        body.extend((-1i64).to_le_bytes());
        // shb_userappl option
        body.extend(u16b(bo, 4));
        body.extend(u16b(bo, 5));
        body.extend(b"tests\0\0\0");
        body.extend([0, 0, 0, 0]);
        self.block(0x0A0D_0D0A, &body)
    }

    /// Interface with optional `if_tsresol` and `if_tsoffset`.
    fn idb(self, link: u16, tsresol: Option<u8>, tsoffset: Option<i64>) -> Self {
        let bo = self.bo;
        let mut body = Vec::new();
        body.extend(u16b(bo, link));
        body.extend(u16b(bo, 0));
        body.extend(u32b(bo, 65535));
        // if_name first, to exercise option skipping.
        body.extend(u16b(bo, 2));
        body.extend(u16b(bo, 4));
        body.extend(b"eth0");
        if let Some(r) = tsresol {
            body.extend(u16b(bo, 9));
            body.extend(u16b(bo, 1));
            body.extend([r, 0, 0, 0]);
        }
        if let Some(o) = tsoffset {
            body.extend(u16b(bo, 14));
            body.extend(u16b(bo, 8));
            body.extend(match bo {
                Bo::Le => o.to_le_bytes(),
                Bo::Be => o.to_be_bytes(),
            });
        }
        body.extend([0, 0, 0, 0]);
        self.block(1, &body)
    }

    fn epb(self, if_id: u32, ts: u64, data: &[u8], orig: u32) -> Self {
        let bo = self.bo;
        let mut body = Vec::new();
        body.extend(u32b(bo, if_id));
        body.extend(u32b(bo, (ts >> 32) as u32));
        body.extend(u32b(bo, ts as u32));
        body.extend(u32b(bo, data.len() as u32));
        body.extend(u32b(bo, orig));
        body.extend_from_slice(data);
        pad4(&mut body);
        self.block(6, &body)
    }

    fn spb(self, orig: u32, data: &[u8]) -> Self {
        let bo = self.bo;
        let mut body = Vec::new();
        body.extend(u32b(bo, orig));
        body.extend_from_slice(data);
        pad4(&mut body);
        self.block(3, &body)
    }
}

/// A reader handing out at most a few bytes per `read`, to exercise refills.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.step = self.step % 7 + 1;
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

type Pkt = (u64, LinkType, u32, Vec<u8>);

/// Reads everything: the packets, then the error that stopped it (if any).
fn read_all<R: Read>(mut r: CaptureReader<R>) -> (Vec<Pkt>, Option<CaptureError>) {
    let mut out = Vec::new();
    loop {
        match r.next_packet() {
            Ok(Some(p)) => out.push((p.ts_ns, p.link_type, p.wire_len, p.data.to_vec())),
            Ok(None) => return (out, None),
            Err(e) => {
                assert!(
                    matches!(r.next_packet(), Ok(None)),
                    "reader must be done after an error"
                );
                return (out, Some(e));
            }
        }
    }
}

fn open(bytes: &[u8]) -> CaptureReader<&[u8]> {
    CaptureReader::new(bytes, "test.cap").expect("valid capture")
}

fn damaged(e: Option<CaptureError>) -> (u64, String) {
    match e {
        Some(CaptureError::Damaged { offset, reason, .. }) => (offset, reason),
        other => panic!("expected Damaged, got {other:?}"),
    }
}

// ---------- pcap ----------

#[test]
fn pcap_all_magics() {
    for bo in [Bo::Le, Bo::Be] {
        for nanos in [false, true] {
            let file = Pcap::new(bo, nanos, 65535, 1)
                .rec(1_700_000_000, 123_456, &[1, 2, 3, 4], 60)
                .rec(1_700_000_001, 999_999, &[5; 10], 10)
                .out;
            let mut r = open(&file);
            assert_eq!(r.format(), CaptureFormat::Pcap);
            assert_eq!(r.link_types(), vec![LinkType::ETHERNET]);
            assert_eq!(r.offset(), 24);
            let p = r.next_packet().unwrap().unwrap();
            let unit = if nanos { 1 } else { 1000 };
            assert_eq!(p.ts_ns, 1_700_000_000_000_000_000 + 123_456 * unit);
            assert_eq!(
                (p.link_type, p.wire_len, p.data),
                (LinkType::ETHERNET, 60, &[1u8, 2, 3, 4][..])
            );
            assert_eq!(r.offset(), 24 + 20);
            let p = r.next_packet().unwrap().unwrap();
            assert_eq!(p.ts_ns, 1_700_000_001_000_000_000 + 999_999 * unit);
            assert_eq!((p.wire_len, p.data.len()), (10, 10));
            assert!(r.next_packet().unwrap().is_none());
            assert_eq!(r.offset(), file.len() as u64);
            assert_eq!(r.bytes_read(), file.len() as u64);
            assert!(r.next_packet().unwrap().is_none());
        }
    }
}

#[test]
fn pcap_header_only_and_quirks() {
    // No records at all.
    let (pkts, err) = read_all(open(&Pcap::new(Bo::Le, false, 65535, 101).out));
    assert!(pkts.is_empty() && err.is_none());
    // FCS bits in the link type field are masked; orig < incl is tolerated.
    let file = Pcap::new(Bo::Be, false, 0, 0x1400_0001)
        .rec(0, 0, &[9; 8], 4)
        .out;
    let r = open(&file);
    assert_eq!(r.link_types(), vec![LinkType::ETHERNET]);
    let (pkts, err) = read_all(r);
    assert!(err.is_none());
    assert_eq!((pkts[0].1, pkts[0].2), (LinkType::ETHERNET, 8));
}

#[test]
fn pcap_truncated_body_yields_complete_records_first() {
    let mut file = Pcap::new(Bo::Le, false, 65535, 1)
        .rec(1, 0, &[1; 100], 100)
        .rec(2, 0, &[2; 50], 50)
        .rec(3, 0, &[3; 80], 80)
        .out;
    file.truncate(file.len() - 30);
    let (pkts, err) = read_all(open(&file));
    assert_eq!(pkts.len(), 2);
    assert_eq!(pkts[1].3, vec![2; 50]);
    let (offset, reason) = damaged(err);
    assert_eq!(offset, 24 + 116 + 66);
    assert_eq!(
        reason,
        "truncated record: file ends 66 bytes into a record of 96 bytes"
    );
}

#[test]
fn pcap_truncated_record_header() {
    let mut file = Pcap::new(Bo::Le, true, 65535, 1)
        .rec(1, 0, &[1; 10], 10)
        .out;
    file.extend_from_slice(&[0; 7]);
    let (pkts, err) = read_all(open(&file));
    assert_eq!(pkts.len(), 1);
    let (offset, reason) = damaged(err);
    assert_eq!(offset, 24 + 26);
    assert!(
        reason.starts_with("truncated record header: file ends 7 bytes"),
        "{reason}"
    );
}

#[test]
fn pcap_huge_record_length_is_damaged_not_allocated() {
    let mut file = Pcap::new(Bo::Le, false, 65535, 1)
        .rec(1, 0, &[1; 10], 10)
        .out;
    file.extend(1u32.to_le_bytes());
    file.extend(0u32.to_le_bytes());
    file.extend(0xFFFF_FFF0u32.to_le_bytes());
    file.extend(0xFFFF_FFF0u32.to_le_bytes());
    let (pkts, err) = read_all(open(&file));
    assert_eq!(pkts.len(), 1);
    let (offset, reason) = damaged(err);
    assert_eq!(offset, 24 + 26);
    assert_eq!(reason, "record length 4294967280 exceeds snap length 65535");
    // A big snaplen does not lift the 256 KiB cap.
    let mut file = Pcap::new(Bo::Be, false, u32::MAX, 1).out;
    file.extend(0u32.to_be_bytes());
    file.extend(0u32.to_be_bytes());
    file.extend((300 * 1024u32).to_be_bytes());
    file.extend((300 * 1024u32).to_be_bytes());
    let (_, err) = read_all(open(&file));
    assert_eq!(
        damaged(err).1,
        "record length 307200 exceeds snap length 262144"
    );
}

#[test]
fn not_a_capture() {
    let err = CaptureReader::new(&b"hello, this is a text file\n"[..], "notes.txt")
        .err()
        .unwrap();
    assert!(
        matches!(&err, CaptureError::NotACapture { magic, .. } if magic == "68656c6c"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "notes.txt is not a pcap or pcapng capture (first bytes 68656c6c)"
    );
    let err = CaptureReader::new(&b""[..], "empty.pcap").err().unwrap();
    assert!(matches!(&err, CaptureError::NotACapture { magic, .. } if magic == "empty"));
    let err = CaptureReader::new(&[0xD4, 0xC3][..], "short.pcap")
        .err()
        .unwrap();
    assert!(matches!(&err, CaptureError::NotACapture { magic, .. } if magic == "d4c3"));
    // Valid magic but the file header is cut.
    let err = CaptureReader::new(&[0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0][..], "cut.pcap")
        .err()
        .unwrap();
    assert!(
        matches!(err, CaptureError::Damaged { offset: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn open_reads_files_larger_than_the_buffer() {
    // 9 MB: past the point where a mapped file's first pages are released.
    let mut p = Pcap::new(Bo::Le, false, 65535, 1);
    for i in 0..6000u32 {
        p = p.rec(i, 0, &[(i % 251) as u8; 1500], 1514);
    }
    let mut tmp = tempfile::NamedTempFile::new().unwrap();
    tmp.write_all(&p.out).unwrap();
    tmp.flush().unwrap();
    let mut r = CaptureReader::open(tmp.path()).unwrap();
    let mut n = 0u32;
    while let Some(pkt) = r.next_packet().unwrap() {
        assert_eq!(pkt.ts_ns, u64::from(n) * 1_000_000_000);
        assert_eq!(pkt.data.len(), 1500);
        assert!(pkt.data.iter().all(|&b| b == (n % 251) as u8));
        n += 1;
    }
    assert_eq!(n, 6000);
    assert_eq!(r.bytes_read(), p.out.len() as u64);
    let err = CaptureReader::open(std::path::Path::new("/nonexistent/x.pcap"))
        .err()
        .unwrap();
    assert!(matches!(err, CaptureError::Io { .. }));
    assert!(err
        .to_string()
        .starts_with("cannot read /nonexistent/x.pcap: "));
}

#[test]
fn trickling_reader_gives_the_same_packets() {
    let file = Pcap::new(Bo::Be, true, 65535, 1)
        .rec(1, 2, &[1; 33], 33)
        .rec(3, 4, &[2; 5], 9)
        .out;
    let (a, _) = read_all(open(&file));
    let r = CaptureReader::new(
        Trickle {
            data: &file,
            step: 0,
        },
        "trickle",
    )
    .unwrap();
    let (b, err) = read_all(r);
    assert!(err.is_none());
    assert_eq!(a, b);
    let ng = sample_pcapng();
    let (a, _) = read_all(open(&ng));
    let (b, err) = read_all(CaptureReader::new(Trickle { data: &ng, step: 0 }, "trickle").unwrap());
    assert!(err.is_none());
    assert_eq!(a, b);
}

// ---------- pcapng ----------

fn sample_pcapng() -> Vec<u8> {
    Ng::new()
        .shb(Bo::Le)
        .idb(1, None, None)
        .idb(101, Some(9), None) // ns resolution, raw IP
        .epb(0, 1_700_000_000_123_456, &[1, 2, 3], 64)
        .block(0x0000_0BAD, &[0xEE; 20]) // custom/unknown block: skipped
        .epb(1, 1_700_000_000_123_456_789, &[0x45; 21], 21)
        .spb(100, &[7; 40])
        .out
}

#[test]
fn pcapng_interfaces_resolutions_and_block_kinds() {
    let file = sample_pcapng();
    let r = open(&file);
    assert_eq!(r.format(), CaptureFormat::PcapNg);
    assert_eq!(r.format().to_string(), "pcapng");
    assert_eq!(r.link_types(), vec![LinkType::ETHERNET, LinkType::RAW]);
    let (pkts, err) = read_all(r);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(pkts.len(), 3);
    assert_eq!(
        pkts[0],
        (
            1_700_000_000_123_456_000,
            LinkType::ETHERNET,
            64,
            vec![1, 2, 3]
        )
    );
    assert_eq!(
        pkts[1],
        (1_700_000_000_123_456_789, LinkType::RAW, 21, vec![0x45; 21])
    );
    // SPB: interface 0, no timestamp of its own (keeps the previous one).
    assert_eq!(
        pkts[2],
        (
            1_700_000_000_123_456_789,
            LinkType::ETHERNET,
            100,
            vec![7; 40]
        )
    );
}

#[test]
fn pcapng_spb_cut_by_block_length() {
    let file = Ng::new()
        .shb(Bo::Le)
        .idb(1, None, None)
        .spb(1500, &[3; 60])
        .out;
    let (pkts, err) = read_all(open(&file));
    assert!(err.is_none());
    assert_eq!((pkts[0].2, pkts[0].3.len()), (1500, 60));
}

#[test]
fn pcapng_big_endian_then_little_endian_sections() {
    let file = Ng::new()
        .shb(Bo::Be)
        .idb(1, Some(0x80 | 10), None) // 2^-10 s
        .epb(0, 3 * 1024 + 512, &[0xAB; 7], 7)
        .shb(Bo::Le)
        .idb(276, Some(3), Some(1_000)) // ms, +1000 s
        .epb(0, 2_500, &[0xCD; 9], 90)
        .out;
    let r = open(&file);
    assert_eq!(r.link_types(), vec![LinkType::ETHERNET]);
    let mut r = r;
    let p = r.next_packet().unwrap().unwrap();
    assert_eq!(
        (p.ts_ns, p.link_type, p.data),
        (3_500_000_000, LinkType::ETHERNET, &[0xAB; 7][..])
    );
    let p = r.next_packet().unwrap().unwrap();
    assert_eq!(
        (p.ts_ns, p.link_type, p.wire_len),
        (1_002_500_000_000, LinkType::LINUX_SLL2, 90)
    );
    assert!(r.next_packet().unwrap().is_none());
    assert_eq!(
        r.link_types(),
        vec![LinkType::ETHERNET, LinkType::LINUX_SLL2]
    );
}

#[test]
fn pcapng_interface_ids_restart_per_section() {
    let file = Ng::new()
        .shb(Bo::Le)
        .idb(1, None, None)
        .idb(1, None, None)
        .epb(1, 0, &[1], 1)
        .shb(Bo::Le)
        .idb(101, None, None)
        .epb(1, 0, &[2], 1)
        .out;
    let (pkts, err) = read_all(open(&file));
    assert_eq!(pkts.len(), 1);
    let (offset, reason) = damaged(err);
    assert_eq!(reason, "packet refers to unknown interface 1");
    assert_eq!(offset, file.len() as u64 - 36);
}

#[test]
fn pcapng_large_unknown_block_is_streamed_past() {
    let file = Ng::new()
        .shb(Bo::Le)
        .idb(1, None, None)
        .block(0x4000_0001, &vec![0x11; 3 << 20])
        .epb(0, 5, &[1; 100], 100)
        .out;
    let (pkts, err) = read_all(CaptureReader::new(&file[..], "big").unwrap());
    assert!(err.is_none(), "{err:?}");
    assert_eq!(pkts.len(), 1);
}

#[test]
fn pcapng_damage_cases() {
    let base = Ng::new()
        .shb(Bo::Le)
        .idb(1, None, None)
        .epb(0, 0, &[1; 4], 4)
        .out;
    let base_len = base.len() as u64;

    // Truncated EPB at the end: the complete one comes out first.
    let mut f = Ng::new()
        .shb(Bo::Le)
        .idb(1, None, None)
        .epb(0, 0, &[1; 4], 4)
        .epb(0, 0, &[2; 40], 40)
        .out;
    f.truncate(f.len() - 10);
    let (pkts, err) = read_all(open(&f));
    assert_eq!(pkts.len(), 1);
    let (offset, reason) = damaged(err);
    assert_eq!(offset, base_len);
    assert_eq!(
        reason,
        "truncated block: file ends 62 bytes into a block of 72 bytes"
    );

    // Block length not a multiple of 4.
    let mut f = base.clone();
    f.extend(6u32.to_le_bytes());
    f.extend(30u32.to_le_bytes());
    f.extend([0; 26]);
    let (_, err) = read_all(open(&f));
    assert_eq!(damaged(err).0, base_len);

    // Block length over 16 MiB.
    let mut f = base.clone();
    f.extend(0x0BADu32.to_le_bytes());
    f.extend((32u32 << 20).to_le_bytes());
    let (pkts, err) = read_all(open(&f));
    assert_eq!(pkts.len(), 1);
    assert_eq!(damaged(err).0, base_len);

    // Trailer mismatch.
    let mut f = base.clone();
    let n = f.len();
    f[n - 4] ^= 0x40;
    let (pkts, err) = read_all(open(&f));
    assert!(pkts.is_empty());
    let (_, reason) = damaged(err);
    assert!(reason.contains("trailer"), "{reason}");

    // EPB captured length larger than its block.
    let mut f = Ng::new()
        .shb(Bo::Le)
        .idb(1, None, None)
        .epb(0, 0, &[1; 8], 8)
        .out;
    let cap_at = f.len() - 4 - 8 - 8;
    f[cap_at..cap_at + 4].copy_from_slice(&200u32.to_le_bytes());
    let (_, err) = read_all(open(&f));
    assert!(damaged(err).1.contains("captured length 200"));

    // EPB captured length beyond 256 KiB (block itself claims to be small).
    let mut f = Ng::new()
        .shb(Bo::Le)
        .idb(1, None, None)
        .epb(0, 0, &[1; 8], 8)
        .out;
    f[cap_at..cap_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let (_, err) = read_all(open(&f));
    assert!(damaged(err).1.contains("captured length 4294967295"));

    // Bad byte-order magic in the first section header: fails at open.
    let mut f = base.clone();
    f[8] = 0x99;
    let err = CaptureReader::new(&f[..], "x").err().unwrap();
    assert!(
        matches!(err, CaptureError::Damaged { offset: 0, .. }),
        "{err:?}"
    );

    // Packet before any interface.
    let f = Ng::new().shb(Bo::Be).epb(0, 0, &[1], 1).out;
    let (_, err) = read_all(open(&f));
    assert!(damaged(err).1.contains("unknown interface 0"));
}

/// A block whose total length is `len` (not a multiple of 4): `padded`
/// writes the body padded to 4 bytes (the length leaves the padding out),
/// otherwise the block is exactly `len` bytes long.
fn odd_block(ty: u32, body: &[u8], padded: bool) -> Vec<u8> {
    let len = 12 + body.len() as u32;
    let mut out = Vec::new();
    out.extend(ty.to_le_bytes());
    out.extend(len.to_le_bytes());
    out.extend_from_slice(body);
    if padded {
        pad4(&mut out);
    }
    out.extend(len.to_le_bytes());
    out
}

fn epb_body(data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(0u32.to_le_bytes());
    body.extend(0u32.to_le_bytes());
    body.extend(7u32.to_le_bytes());
    body.extend((data.len() as u32).to_le_bytes());
    body.extend((data.len() as u32).to_le_bytes());
    body.extend_from_slice(data);
    body
}

#[test]
fn pcapng_block_lengths_that_are_not_multiples_of_4_are_read_like_wireshark() {
    let mut f = Ng::new().shb(Bo::Le).idb(1, None, None).out;
    // Packet data of 61 bytes: the length leaves the 3 padding bytes out.
    f.extend(odd_block(6, &epb_body(&[0xA1; 61]), true));
    // An unknown block of 14 bytes, padded after its length...
    f.extend(odd_block(0x0BAD, &[1, 2], true));
    // ...and one written without padding at all.
    f.extend(odd_block(0x0BAD, &[3, 4], false));
    // A packet block written without padding.
    f.extend(odd_block(6, &epb_body(&[0xB2; 5]), false));
    let good = Ng {
        bo: Bo::Le,
        out: Vec::new(),
    }
    .epb(0, 9, &[0xC3; 8], 8)
    .out;
    f.extend(&good);
    let (pkts, err) = read_all(open(&f));
    assert!(err.is_none(), "{err:?}");
    let data: Vec<Vec<u8>> = pkts.iter().map(|p| p.3.clone()).collect();
    assert_eq!(data, vec![vec![0xA1; 61], vec![0xB2; 5], vec![0xC3; 8]]);
    let trickle = Trickle { data: &f, step: 0 };
    let (pkts, err) = read_all(CaptureReader::new(trickle, "t").unwrap());
    assert!(err.is_none(), "{err:?}");
    assert_eq!(pkts.len(), 3, "the same through small reads");

    // Real damage is still damage, at its byte offset, after every packet
    // before it: an odd length whose trailer confirms no layout.
    let at = f.len() as u64;
    let mut bad = odd_block(6, &epb_body(&[0xD4; 61]), true);
    let n = bad.len();
    bad[n - 4..].copy_from_slice(&77u32.to_le_bytes());
    f.extend(&bad);
    let (pkts, err) = read_all(open(&f));
    assert_eq!(pkts.len(), 3);
    let (offset, reason) = damaged(err);
    assert_eq!(offset, at);
    assert!(reason.contains("trailer"), "{reason}");
    // The same for a block skipped unread.
    let mut f2 = f[..at as usize].to_vec();
    let mut bad = odd_block(0x0BAD, &[9; 6], true);
    let n = bad.len();
    bad[n - 4..].copy_from_slice(&5u32.to_le_bytes());
    f2.extend(&bad);
    let (pkts, err) = read_all(open(&f2));
    assert_eq!(pkts.len(), 3);
    assert_eq!(damaged(err).0, at);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// `open` maps a file, `open_streamed` reads it: whatever the file holds,
    /// both give the same packets and stop with the same error.
    #[test]
    fn a_mapped_file_reads_like_a_streamed_one(
        ng in any::<bool>(),
        garbage in proptest::collection::vec(any::<u8>(), 0..300),
        cut in any::<proptest::sample::Index>(),
    ) {
        let mut data = if ng {
            sample_pcapng()
        } else {
            Pcap::new(Bo::Le, true, 65535, 1)
                .rec(1, 2, &[1; 60], 60)
                .rec(3, 4, &[2; 40], 90)
                .out
        };
        data.extend_from_slice(&garbage);
        data.truncate(cut.index(data.len() + 1));
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&data).unwrap();
        tmp.flush().unwrap();
        let outcome = |r: Result<CaptureReader<std::fs::File>, CaptureError>| match r {
            Ok(r) => {
                let (packets, err) = read_all(r);
                (packets, err.map(|e| e.to_string()))
            }
            Err(e) => (Vec::new(), Some(format!("open: {e}"))),
        };
        prop_assert_eq!(
            outcome(CaptureReader::open(tmp.path())),
            outcome(CaptureReader::open_streamed(tmp.path()))
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_streams_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        prefix in 0usize..4,
    ) {
        let magics: [&[u8]; 4] = [
            &[],
            &[0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 1, 0, 0, 0],
            &[0xA1, 0xB2, 0x3C, 0x4D, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 1],
            &[0x0A, 0x0D, 0x0D, 0x0A, 28, 0, 0, 0, 0x4D, 0x3C, 0x2B, 0x1A, 1, 0, 0, 0,
              0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 28, 0, 0, 0],
        ];
        let mut data = magics[prefix].to_vec();
        data.extend_from_slice(&bytes);
        if let Ok(mut r) = CaptureReader::new(&data[..], "fuzz") {
            for _ in 0..1000 {
                match r.next_packet() {
                    Ok(Some(p)) => prop_assert!(p.data.len() <= data.len()),
                    Ok(None) | Err(_) => break,
                }
            }
            prop_assert!(r.offset() <= data.len() as u64);
        }
    }

    #[test]
    fn valid_pcapng_prefix_then_garbage_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut data = sample_pcapng();
        data.extend_from_slice(&bytes);
        let mut r = CaptureReader::new(&data[..], "fuzz").unwrap();
        for _ in 0..1000 {
            match r.next_packet() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// The fuzz seeds (and the minimized crashes kept beside them) replayed on
/// every test run, so the fuzzers' findings stay fixed without nightly.
#[test]
fn fuzz_seeds_read_without_panicking() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let mut files = 0;
    for target in ["pcap_reader", "pcapng_reader"] {
        for entry in std::fs::read_dir(root.join(target)).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            if let Ok(r) = CaptureReader::new(&bytes[..], "seed") {
                let _ = read_all(r);
            }
            files += 1;
        }
    }
    assert!(files >= 5, "{files} seeds");
}
