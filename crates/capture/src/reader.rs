//! Streaming pcap and pcapng readers behind one [`CaptureReader`].
//!
//! Captures can be far larger than memory, so the reader keeps one fixed
//! 1 MiB buffer of its own, hands out packets as borrowed slices of it, and
//! allocates nothing per record. A regular file opened by
//! [`CaptureReader::open`] is mapped instead (`mapped.rs`): the same code
//! reads it, with the whole file as its buffer and the same limits. Length
//! fields are validated before any buffering, so a damaged or hostile file
//! yields [`CaptureError::Damaged`] rather than a huge allocation or a
//! panic.
//!
//! Tolerance: where Wireshark reads a file without complaint and the data
//! is unambiguous, so does this reader. A pcapng block whose total length
//! is not a multiple of 4 is read as Wireshark reads it (the length left
//! the padding out: the block spans the length rounded up), or as exactly
//! that many bytes when the trailing length copy says so; either way the
//! trailer must confirm the block's end, else it is damage at the block's
//! offset.

use crate::link::LinkType;
use crate::mapped::Mapped;
use serde::Serialize;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Size of the reader's own buffer; every block we look into must fit.
const BUF_CAP: usize = 1 << 20;
/// Largest packet we accept from a record, whatever the file claims.
pub const MAX_PACKET_LEN: u32 = 256 * 1024;
/// Largest pcapng block length we accept (blocks we do not need are skipped).
pub const MAX_BLOCK_LEN: u32 = 16 * 1024 * 1024;

const PCAP_HEADER_LEN: usize = 24;
const PCAP_RECORD_HEADER_LEN: usize = 16;

const BT_SHB: u32 = 0x0A0D_0D0A;
const BT_IDB: u32 = 1;
const BT_OPB: u32 = 2;
const BT_SPB: u32 = 3;
const BT_EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

/// Which container format a capture file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureFormat {
    /// Classic libpcap format (one link type per file).
    Pcap,
    /// pcapng (sections, interfaces with their own link types and clocks).
    PcapNg,
}

impl fmt::Display for CaptureFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CaptureFormat::Pcap => "pcap",
            CaptureFormat::PcapNg => "pcapng",
        })
    }
}

/// One captured packet, borrowed from the reader's buffer until the next call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawPacket<'a> {
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Link type of the interface the packet was captured on.
    pub link_type: LinkType,
    /// Length of the packet on the wire (never less than `data.len()`).
    pub wire_len: u32,
    /// The captured bytes (possibly cut by the snap length).
    pub data: &'a [u8],
}

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The operating system failed to read the file.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File (or stream name) being read.
        path: String,
        /// Underlying error.
        source: io::Error,
    },
    /// The file does not start with a pcap or pcapng magic number.
    #[error("{path} is not a pcap or pcapng capture (first bytes {magic})")]
    NotACapture {
        /// File (or stream name) being read.
        path: String,
        /// The first bytes in hex, or `empty`.
        magic: String,
    },
    /// The file is a capture but its structure is broken at `offset`.
    #[error("{path} is damaged at byte offset {offset}: {reason}")]
    Damaged {
        /// File (or stream name) being read.
        path: String,
        /// Byte offset of the record or block that is damaged.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// A live capture could not be opened or read (see `live`): the message
    /// says what to do (which interfaces exist, how to get the permission)
    /// and quotes libpcap.
    #[error("live capture on {iface}: {reason}")]
    Live {
        /// Interface being captured.
        iface: String,
        /// What went wrong, with libpcap's own message.
        reason: String,
    },
}

/// The bytes the reader looks into.
enum Buffer {
    /// A fixed window over a stream, refilled by `read`.
    Owned(Box<[u8]>),
    /// The whole file, mapped.
    Mapped(Mapped),
}

impl std::ops::Deref for Buffer {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            Buffer::Owned(b) => b,
            Buffer::Mapped(m) => m.bytes(),
        }
    }
}

/// Our own read buffer: a fixed window over the stream, or the mapped file
/// (then `start` and `end` are file offsets and `eof` is set from the start).
struct Input<R> {
    inner: R,
    buf: Buffer,
    start: usize,
    end: usize,
    /// File offset of `buf[start]`.
    pos: u64,
    read_total: u64,
    eof: bool,
}

impl<R: Read> Input<R> {
    /// Starts at offset 0: an owned buffer empty, a mapped file whole.
    fn new(inner: R, buf: Buffer) -> Self {
        let (end, eof) = match &buf {
            Buffer::Owned(_) => (0, false),
            Buffer::Mapped(m) => (m.bytes().len(), true),
        };
        Input {
            inner,
            buf,
            start: 0,
            end,
            pos: 0,
            read_total: 0,
            eof,
        }
    }

    #[inline]
    fn avail(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Tries to buffer `n` (≤ `BUF_CAP`) bytes; returns how many are
    /// available, fewer than `n` only at end of stream.
    #[inline]
    fn ensure(&mut self, n: usize) -> io::Result<usize> {
        debug_assert!(n <= BUF_CAP);
        if self.end - self.start >= n {
            return Ok(self.end - self.start);
        }
        self.fill(n)
    }

    #[cold]
    fn fill(&mut self, n: usize) -> io::Result<usize> {
        let Buffer::Owned(buf) = &mut self.buf else {
            return Ok(self.end - self.start);
        };
        if self.start + n > buf.len() {
            buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < n && !self.eof {
            match self.inner.read(&mut buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => {
                    self.end += k;
                    self.read_total += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end - self.start)
    }

    #[inline]
    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n;
        self.pos += n as u64;
    }

    /// Discards up to `n` bytes; returns how many were discarded.
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let mut left = n;
        loop {
            let take = (self.end - self.start).min(usize::try_from(left).unwrap_or(usize::MAX));
            self.consume(take);
            left -= take as u64;
            if left == 0 {
                return Ok(n);
            }
            if self.eof {
                return Ok(n - left);
            }
            self.start = 0;
            self.end = 0;
            if self.fill(1)? == 0 {
                return Ok(n - left);
            }
        }
    }
}

/// Byte order of the current pcap file or pcapng section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    #[inline]
    fn u16(self, b: &[u8], at: usize) -> u16 {
        let v = [b[at], b[at + 1]];
        match self {
            Endian::Little => u16::from_le_bytes(v),
            Endian::Big => u16::from_be_bytes(v),
        }
    }

    #[inline]
    fn u32(self, b: &[u8], at: usize) -> u32 {
        let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        match self {
            Endian::Little => u32::from_le_bytes(v),
            Endian::Big => u32::from_be_bytes(v),
        }
    }

    fn i64(self, b: &[u8], at: usize) -> i64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        match self {
            Endian::Little => i64::from_le_bytes(v),
            Endian::Big => i64::from_be_bytes(v),
        }
    }
}

/// A pcapng interface: its link type and clock.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link: LinkType,
    /// Timestamp units per second, or 0 when not representable (ts → 0).
    units_per_sec: u128,
    /// Fast path: ns per unit when the resolution is 10^-n with n ≤ 9.
    ns_per_unit: Option<u64>,
    offset_sec: i64,
}

impl Interface {
    fn new(link: LinkType) -> Self {
        let mut i = Interface {
            link,
            units_per_sec: 0,
            ns_per_unit: None,
            offset_sec: 0,
        };
        i.set_resolution(6);
        i
    }

    fn set_resolution(&mut self, tsresol: u8) {
        let n = u32::from(tsresol & 0x7F);
        if tsresol & 0x80 == 0 {
            self.units_per_sec = 10u128.checked_pow(n).unwrap_or(0);
            self.ns_per_unit = if n <= 9 { Some(10u64.pow(9 - n)) } else { None };
        } else {
            self.units_per_sec = 1u128 << n;
            self.ns_per_unit = if n == 0 { Some(1_000_000_000) } else { None };
        }
    }

    #[inline]
    fn ts_ns(&self, units: u64) -> u64 {
        let ns: i128 = match self.ns_per_unit {
            Some(m) => i128::from(units) * i128::from(m),
            None if self.units_per_sec == 0 => 0,
            None => (u128::from(units) * 1_000_000_000 / self.units_per_sec) as i128,
        };
        let ns = ns + i128::from(self.offset_sec) * 1_000_000_000;
        ns.clamp(0, i128::from(u64::MAX)) as u64
    }
}

/// Per-format state.
enum Format {
    Pcap {
        endian: Endian,
        nanos: bool,
        snaplen: u32,
        link: LinkType,
    },
    PcapNg {
        endian: Endian,
        interfaces: Vec<Interface>,
        last_ts: u64,
    },
}

/// Where the next packet lies in the buffer (plain data, no borrow).
struct Found {
    ts_ns: u64,
    link_type: LinkType,
    wire_len: u32,
    data_at: usize,
    data_len: usize,
}

/// What one pcapng step produced.
enum Step {
    Packet(Found),
    Other,
    End,
}

/// A streaming reader of pcap or pcapng captures from any [`Read`].
pub struct CaptureReader<R: Read> {
    input: Input<R>,
    name: String,
    format: Format,
    /// Bytes of the last returned record still in the buffer.
    pending: usize,
    link_types: Vec<LinkType>,
    done: bool,
}

impl CaptureReader<File> {
    /// Opens a capture file, mapped into memory when it is a regular file
    /// (see `mapped.rs` for why, and for the one risk it takes), else
    /// read through the reader's own buffer.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let (file, name) = open_file(path)?;
        match Mapped::new(&file) {
            Some(map) => CaptureReader::start(Input::new(file, Buffer::Mapped(map)), name),
            None => CaptureReader::new(file, name),
        }
    }

    /// Opens a capture file and reads it through the reader's own buffer,
    /// never mapping it: for a file another process may truncate meanwhile.
    pub fn open_streamed(path: &Path) -> Result<Self, CaptureError> {
        let (file, name) = open_file(path)?;
        CaptureReader::new(file, name)
    }
}

fn open_file(path: &Path) -> Result<(File, String), CaptureError> {
    let name = path.display().to_string();
    match File::open(path) {
        Ok(file) => Ok((file, name)),
        Err(source) => Err(CaptureError::Io { path: name, source }),
    }
}

impl<R: Read> CaptureReader<R> {
    /// Starts reading `inner`, whose `name` appears in errors. Reads the magic
    /// and file header (pcapng: the blocks before the first packet).
    pub fn new(inner: R, name: impl Into<String>) -> Result<Self, CaptureError> {
        let buf = Buffer::Owned(vec![0u8; BUF_CAP].into_boxed_slice());
        CaptureReader::start(Input::new(inner, buf), name.into())
    }

    /// Reads the magic and file header from `input`.
    fn start(mut input: Input<R>, name: String) -> Result<Self, CaptureError> {
        let io_err = |source| CaptureError::Io {
            path: name.clone(),
            source,
        };
        let got = input.ensure(PCAP_HEADER_LEN).map_err(io_err)?;
        let head = input.avail();
        let magic = head.get(..4).unwrap_or(head);
        let not_capture = || CaptureError::NotACapture {
            path: name.clone(),
            magic: if magic.is_empty() {
                "empty".to_string()
            } else {
                magic.iter().map(|b| format!("{b:02x}")).collect()
            },
        };
        let Some(&[m0, m1, m2, m3]) = head.get(..4) else {
            return Err(not_capture());
        };
        let pcap = match [m0, m1, m2, m3] {
            [0xD4, 0xC3, 0xB2, 0xA1] => Some((Endian::Little, false)),
            [0xA1, 0xB2, 0xC3, 0xD4] => Some((Endian::Big, false)),
            [0x4D, 0x3C, 0xB2, 0xA1] => Some((Endian::Little, true)),
            [0xA1, 0xB2, 0x3C, 0x4D] => Some((Endian::Big, true)),
            [0x0A, 0x0D, 0x0D, 0x0A] => None,
            _ => return Err(not_capture()),
        };
        let mut reader = match pcap {
            Some((endian, nanos)) => {
                if got < PCAP_HEADER_LEN {
                    return Err(CaptureError::Damaged {
                        path: name,
                        offset: 0,
                        reason: format!(
                            "truncated file header: file ends after {got} of {PCAP_HEADER_LEN} bytes"
                        ),
                    });
                }
                let snaplen = endian.u32(head, 16);
                let link = LinkType(endian.u32(head, 20) & 0xFFFF);
                input.consume(PCAP_HEADER_LEN);
                CaptureReader {
                    input,
                    name,
                    format: Format::Pcap {
                        endian,
                        nanos,
                        snaplen,
                        link,
                    },
                    pending: 0,
                    link_types: vec![link],
                    done: false,
                }
            }
            None => CaptureReader {
                input,
                name,
                format: Format::PcapNg {
                    endian: Endian::Little,
                    interfaces: Vec::new(),
                    last_ts: 0,
                },
                pending: 0,
                link_types: Vec::new(),
                done: false,
            },
        };
        if let Format::PcapNg { .. } = reader.format {
            // Read the section header and interfaces up front so that
            // `link_types` is meaningful before the first packet.
            loop {
                let got = reader.input.ensure(4).map_err(|e| reader.io(e))?;
                let Some(&[a, b, c, d]) = reader.input.avail().get(..4) else {
                    debug_assert!(got < 4);
                    break;
                };
                let ty = [a, b, c, d];
                let is_packet = [BT_EPB, BT_SPB, BT_OPB]
                    .iter()
                    .any(|t| t.to_le_bytes() == ty || t.to_be_bytes() == ty);
                if is_packet || !matches!(reader.step_pcapng()?, Step::Other) {
                    break;
                }
            }
        }
        Ok(reader)
    }

    /// The container format, detected from the magic number.
    pub fn format(&self) -> CaptureFormat {
        match self.format {
            Format::Pcap { .. } => CaptureFormat::Pcap,
            Format::PcapNg { .. } => CaptureFormat::PcapNg,
        }
    }

    /// Byte offset in the file of the next record (or block).
    pub fn offset(&self) -> u64 {
        self.input.pos + self.pending as u64
    }

    /// Link types seen so far (pcap: the header's; pcapng: every interface's),
    /// deduplicated, in order of first appearance.
    pub fn link_types(&self) -> Vec<LinkType> {
        self.link_types.clone()
    }

    /// Bytes read from the underlying stream so far, for progress reporting.
    pub fn bytes_read(&self) -> u64 {
        match self.input.buf {
            Buffer::Owned(_) => self.input.read_total,
            Buffer::Mapped(_) => self.offset(),
        }
    }

    /// The next packet, `Ok(None)` at a clean end of file. After an error the
    /// reader is finished and keeps returning `Ok(None)`.
    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        self.input.consume(self.pending);
        self.pending = 0;
        if let Buffer::Mapped(map) = &mut self.input.buf {
            map.advance(self.input.start);
        }
        let res = match self.format {
            Format::Pcap { .. } => self.next_pcap(),
            Format::PcapNg { .. } => loop {
                match self.step_pcapng() {
                    Ok(Step::Other) => continue,
                    Ok(Step::Packet(f)) => break Ok(Some(f)),
                    Ok(Step::End) => break Ok(None),
                    Err(e) => break Err(e),
                }
            },
        };
        match res {
            Ok(Some(f)) => {
                let at = self.input.start + f.data_at;
                Ok(Some(RawPacket {
                    ts_ns: f.ts_ns,
                    link_type: f.link_type,
                    wire_len: f.wire_len,
                    data: &self.input.buf[at..at + f.data_len],
                }))
            }
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    fn io(&self, source: io::Error) -> CaptureError {
        CaptureError::Io {
            path: self.name.clone(),
            source,
        }
    }

    fn damaged(&self, offset: u64, reason: String) -> CaptureError {
        damaged(&self.name, offset, reason)
    }

    #[inline]
    fn next_pcap(&mut self) -> Result<Option<Found>, CaptureError> {
        let Format::Pcap {
            endian,
            nanos,
            snaplen,
            link,
        } = self.format
        else {
            return Ok(None);
        };
        let offset = self.input.pos;
        let got = self
            .input
            .ensure(PCAP_RECORD_HEADER_LEN)
            .map_err(|e| self.io(e))?;
        if got == 0 {
            return Ok(None);
        }
        if got < PCAP_RECORD_HEADER_LEN {
            return Err(self.damaged(
                offset,
                format!(
                    "truncated record header: file ends {got} bytes into a record header of {PCAP_RECORD_HEADER_LEN} bytes"
                ),
            ));
        }
        let h = self.input.avail();
        let sec = endian.u32(h, 0);
        let frac = endian.u32(h, 4);
        let incl = endian.u32(h, 8);
        let orig = endian.u32(h, 12);
        let limit = snaplen.clamp(65535, MAX_PACKET_LEN);
        if incl > limit {
            return Err(self.damaged(
                offset,
                format!("record length {incl} exceeds snap length {limit}"),
            ));
        }
        let total = PCAP_RECORD_HEADER_LEN + incl as usize;
        let got = self.input.ensure(total).map_err(|e| self.io(e))?;
        if got < total {
            return Err(self.damaged(
                offset,
                format!("truncated record: file ends {got} bytes into a record of {total} bytes"),
            ));
        }
        self.pending = total;
        let frac_ns = if nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1000
        };
        Ok(Some(Found {
            ts_ns: u64::from(sec) * 1_000_000_000 + frac_ns,
            link_type: link,
            wire_len: orig.max(incl),
            data_at: PCAP_RECORD_HEADER_LEN,
            data_len: incl as usize,
        }))
    }

    /// Processes one pcapng block.
    fn step_pcapng(&mut self) -> Result<Step, CaptureError> {
        let offset = self.input.pos;
        let got = self.input.ensure(12).map_err(|e| self.io(e))?;
        if got == 0 {
            return Ok(Step::End);
        }
        let Format::PcapNg { endian: mut e, .. } = self.format else {
            return Ok(Step::End);
        };
        let truncated = |got: usize, len: String| {
            format!("truncated block: file ends {got} bytes into a block of {len} bytes")
        };
        if got < 8 {
            let reason = truncated(got, "at least 12".into());
            return Err(self.damaged(offset, reason));
        }
        let h = self.input.avail();
        let raw_type = [h[0], h[1], h[2], h[3]];
        if u32::from_le_bytes(raw_type) == BT_SHB {
            if got < 12 {
                let reason = truncated(got, "at least 12".into());
                return Err(self.damaged(offset, reason));
            }
            e = match [h[8], h[9], h[10], h[11]] {
                m if m == BYTE_ORDER_MAGIC.to_le_bytes() => Endian::Little,
                m if m == BYTE_ORDER_MAGIC.to_be_bytes() => Endian::Big,
                m => {
                    let reason = format!(
                        "section header has a bad byte-order magic {:02x}{:02x}{:02x}{:02x}",
                        m[0], m[1], m[2], m[3]
                    );
                    return Err(self.damaged(offset, reason));
                }
            };
            // A new section: new byte order, interface ids restart.
            if let Format::PcapNg {
                endian, interfaces, ..
            } = &mut self.format
            {
                *endian = e;
                interfaces.clear();
            }
        }
        let h = self.input.avail();
        let ty = e.u32(h, 0);
        let len = e.u32(h, 4);
        // A length that is not a multiple of 4 is read as Wireshark reads
        // it (some writers leave the packet data's padding out of the
        // length, others the padding itself): accepted when the trailing
        // length copy confirms where the block ends, damage otherwise.
        if !(12..=MAX_BLOCK_LEN).contains(&len) {
            let reason =
                format!("block length {len} is invalid (must be between 12 and {MAX_BLOCK_LEN})");
            return Err(self.damaged(offset, reason));
        }
        let len_us = len as usize;
        let min_len = match ty {
            BT_SHB => 28,
            BT_IDB => 20,
            BT_EPB | BT_OPB => 32,
            BT_SPB => 16,
            _ => 12,
        };
        if len < min_len {
            let reason = format!("block of type {ty:#x} is {len} bytes, shorter than {min_len}");
            return Err(self.damaged(offset, reason));
        }
        if matches!(ty, BT_IDB | BT_EPB | BT_OPB | BT_SPB) {
            // Blocks we look into are buffered whole.
            if len_us > BUF_CAP {
                let reason = format!(
                    "block of type {ty:#x} is {len} bytes, more than the {BUF_CAP} we buffer"
                );
                return Err(self.damaged(offset, reason));
            }
            let padded = len_us.next_multiple_of(4);
            let got = self.input.ensure(padded).map_err(|e| self.io(e))?;
            if got < len_us {
                return Err(self.damaged(offset, truncated(got, len.to_string())));
            }
            let b = &self.input.avail()[..got.min(padded)];
            // Where the trailer confirms the block ends: the padded length
            // first (the layout Wireshark reads), then the length as given.
            let span = [padded, len_us].into_iter().find(|&span| {
                span <= b.len() && {
                    let t = e.u32(b, span - 4);
                    t == len || t as usize == padded
                }
            });
            let Some(span) = span else {
                let trailer = e.u32(b, len_us - 4);
                let reason =
                    format!("block trailer length {trailer} does not match header length {len}");
                return Err(self.damaged(offset, reason));
            };
            return self.packet_or_interface(offset, e, ty, span);
        }
        // Any other block (section header included): skip by streaming,
        // then check the trailing length copy.
        if ty == BT_SHB {
            let got = self.input.ensure(28).map_err(|e| self.io(e))?;
            if got < 28 {
                return Err(self.damaged(offset, truncated(got, len.to_string())));
            }
            let major = e.u16(self.input.avail(), 12);
            if major != 1 {
                let reason = format!("unsupported pcapng major version {major}");
                return Err(self.damaged(offset, reason));
            }
        }
        let body = u64::from(len - 4);
        let pad = (len.next_multiple_of(4) - len) as usize;
        let skipped = self.input.skip(body).map_err(|e| self.io(e))?;
        let got = self.input.ensure(4 + pad).map_err(|e| self.io(e))?;
        if skipped < body || got < 4 {
            let at = skipped as usize + got.min(4);
            return Err(self.damaged(offset, truncated(at, len.to_string())));
        }
        let confirms = |t: u32| t == len || t == len.next_multiple_of(4);
        let tail = self.input.avail();
        // The trailer right after the body, or (length without its
        // padding) after the padding, as for packet blocks above.
        let used = if confirms(e.u32(tail, 0)) {
            4
        } else if pad > 0 && got >= 4 + pad && confirms(e.u32(tail, pad)) {
            4 + pad
        } else {
            let trailer = e.u32(tail, 0);
            let reason =
                format!("block trailer length {trailer} does not match header length {len}");
            return Err(self.damaged(offset, reason));
        };
        self.input.consume(used);
        Ok(Step::Other)
    }

    /// Handles a fully buffered IDB / EPB / SPB / OPB of `len` bytes.
    fn packet_or_interface(
        &mut self,
        offset: u64,
        e: Endian,
        ty: u32,
        len: usize,
    ) -> Result<Step, CaptureError> {
        let b = &self.input.buf[self.input.start..self.input.start + len];
        let Format::PcapNg {
            interfaces,
            last_ts,
            ..
        } = &mut self.format
        else {
            return Ok(Step::End);
        };
        let body_end = len - 4;
        let (if_id, units, cap, orig, data_at) = match ty {
            BT_IDB => {
                let mut iface = Interface::new(LinkType(u32::from(e.u16(b, 8))));
                parse_idb_options(e, &b[16..body_end], &mut iface);
                if !self.link_types.contains(&iface.link) {
                    self.link_types.push(iface.link);
                }
                interfaces.push(iface);
                self.input.consume(len);
                return Ok(Step::Other);
            }
            BT_EPB => {
                let units = (u64::from(e.u32(b, 12)) << 32) | u64::from(e.u32(b, 16));
                (e.u32(b, 8), Some(units), e.u32(b, 20), e.u32(b, 24), 28)
            }
            BT_OPB => {
                let units = (u64::from(e.u32(b, 12)) << 32) | u64::from(e.u32(b, 16));
                (
                    u32::from(e.u16(b, 8)),
                    Some(units),
                    e.u32(b, 20),
                    e.u32(b, 24),
                    28,
                )
            }
            _ => {
                // Simple Packet Block: no interface id, no timestamp.
                let orig = e.u32(b, 8);
                let cap = orig.min((len - 16) as u32);
                (0, None, cap, orig, 12)
            }
        };
        let Some(iface) = interfaces.get(if_id as usize).copied() else {
            let reason = format!("packet refers to unknown interface {if_id}");
            return Err(damaged(&self.name, offset, reason));
        };
        if cap > MAX_PACKET_LEN || data_at + cap as usize > body_end {
            let reason = format!(
                "captured length {cap} exceeds the block body of {} bytes (or {MAX_PACKET_LEN})",
                body_end - data_at
            );
            return Err(damaged(&self.name, offset, reason));
        }
        let ts_ns = match units {
            Some(u) => iface.ts_ns(u),
            None => *last_ts,
        };
        *last_ts = ts_ns;
        self.pending = len;
        Ok(Step::Packet(Found {
            ts_ns,
            link_type: iface.link,
            wire_len: orig.max(cap),
            data_at,
            data_len: cap as usize,
        }))
    }
}

fn damaged(name: &str, offset: u64, reason: String) -> CaptureError {
    CaptureError::Damaged {
        path: name.to_string(),
        offset,
        reason,
    }
}

/// Reads `if_tsresol` and `if_tsoffset`; malformed options end the scan.
fn parse_idb_options(e: Endian, mut opts: &[u8], iface: &mut Interface) {
    while opts.len() >= 4 {
        let code = e.u16(opts, 0);
        let olen = usize::from(e.u16(opts, 2));
        if code == 0 {
            break;
        }
        let Some(value) = opts.get(4..4 + olen) else {
            break;
        };
        match (code, olen) {
            (9, 1) => iface.set_resolution(value[0]),
            (14, 8) => iface.offset_sec = e.i64(value, 0),
            _ => {}
        }
        let padded = 4 + olen.div_ceil(4) * 4;
        opts = opts.get(padded..).unwrap_or(&[]);
    }
}
