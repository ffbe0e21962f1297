//! Rotating pcap persistence of captured packets, written off the capture
//! thread.
//!
//! The capture thread copies each packet into a batch buffer
//! ([`Persister::write`], no allocation per packet: buffers are recycled);
//! full batches go over a bounded channel to one writer thread, so files are
//! never interleaved and a slow disk never blocks the capture. When the
//! channel is full the batch is dropped and its packets are counted in
//! [`PersistStats::dropped`] — capture and counting always win over the copy.
//!
//! Files are `<dir>/<YYYYmmdd-HHMMSS>.pcap`, named after the UTC packet time
//! of their first packet (`-1`, `-2`… appended when that name is taken),
//! nanosecond pcap with the capture's real link type, and rotate when they
//! reach [`PersistOptions::max_file_bytes`] or span
//! [`PersistOptions::max_file_age`] of packet time.

use crate::link::LinkType;
use crate::writer::PcapWriter;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where and how to persist packets. [`PersistOptions::new`] gives defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistOptions {
    /// Directory of the pcap files (created if missing).
    pub dir: PathBuf,
    /// Link type written in every file header: the capture's own.
    pub link_type: LinkType,
    /// Snap length written in the file header (the capture's).
    pub snaplen: u32,
    /// Start a new file once this many bytes were written (default 256 MiB).
    pub max_file_bytes: u64,
    /// Start a new file once a packet is this much later than the file's
    /// first one (default 5 minutes of packet time).
    pub max_file_age: Duration,
    /// Bytes per batch handed to the writer (default 1 MiB).
    pub batch_bytes: usize,
    /// Batches that may wait for the writer before new ones are dropped
    /// (default 32: 32 MiB of burst at the default batch size).
    pub queue_batches: usize,
}

impl PersistOptions {
    /// Defaults for files in `dir` of a capture with `link_type`.
    pub fn new(dir: impl Into<PathBuf>, link_type: LinkType) -> Self {
        PersistOptions {
            dir: dir.into(),
            link_type,
            snaplen: 262_144,
            max_file_bytes: 256 << 20,
            max_file_age: Duration::from_secs(300),
            batch_bytes: 1 << 20,
            queue_batches: 32,
        }
    }
}

/// What persistence did, reported when it finishes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistStats {
    /// Packets written to files.
    pub packets: u64,
    /// Packets dropped because the writer fell behind (queue full).
    pub dropped: u64,
    /// Files written, in order.
    pub files: Vec<PathBuf>,
}

/// Bytes before each packet in a batch: ts_ns (8), wire_len (4), cap_len (4).
const REC_HEADER: usize = 16;

/// A batch of packets packed into one buffer.
struct Batch {
    buf: Vec<u8>,
    packets: u64,
}

/// The capture side of persistence: copies packets into batches and hands
/// them to the writer thread.
pub struct Persister {
    current: Batch,
    batch_bytes: usize,
    tx: Option<SyncSender<Batch>>,
    recycle: Receiver<Vec<u8>>,
    writer: Option<JoinHandle<io::Result<PersistStats>>>,
    dropped: u64,
}

impl Persister {
    /// Creates the directory and starts the writer thread (the first file is
    /// created with the first packet).
    pub fn start(opts: PersistOptions) -> io::Result<Self> {
        std::fs::create_dir_all(&opts.dir)?;
        let (tx, rx) = mpsc::sync_channel::<Batch>(opts.queue_batches.max(1));
        let (back, recycle) = mpsc::channel::<Vec<u8>>();
        let batch_bytes = opts.batch_bytes.max(REC_HEADER + 1);
        let writer = std::thread::Builder::new()
            .name("pcap-persist".into())
            .spawn(move || write_files(&opts, &rx, &back))?;
        Ok(Persister {
            current: Batch {
                buf: Vec::with_capacity(batch_bytes),
                packets: 0,
            },
            batch_bytes,
            tx: Some(tx),
            recycle,
            writer: Some(writer),
            dropped: 0,
        })
    }

    /// Queues one packet (`data` as captured, `wire_len` its length on the
    /// wire). Never blocks: if the writer is behind, the batch is dropped
    /// and counted.
    #[inline]
    pub fn write(&mut self, ts_ns: u64, wire_len: u32, data: &[u8]) {
        if !self.current.buf.is_empty()
            && self.current.buf.len() + REC_HEADER + data.len() > self.batch_bytes
        {
            self.flush();
        }
        let buf = &mut self.current.buf;
        buf.extend_from_slice(&ts_ns.to_le_bytes());
        buf.extend_from_slice(&wire_len.to_le_bytes());
        buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
        buf.extend_from_slice(data);
        self.current.packets += 1;
    }

    /// Hands the partial batch to the writer now (call it when the link is
    /// idle so files stay current).
    pub fn flush(&mut self) {
        if self.current.packets == 0 {
            return;
        }
        let next = self.recycle.try_recv().unwrap_or_else(|_| Vec::new());
        let mut next = next;
        next.clear();
        next.reserve(self.batch_bytes);
        let batch = std::mem::replace(
            &mut self.current,
            Batch {
                buf: next,
                packets: 0,
            },
        );
        let Some(tx) = &self.tx else {
            self.dropped += batch.packets;
            return;
        };
        match tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => {
                self.dropped += b.packets;
            }
        }
    }

    /// Packets dropped so far because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Writes what is queued, closes the last file and reports.
    pub fn finish(mut self) -> io::Result<PersistStats> {
        self.flush();
        self.tx = None;
        let handle = self.writer.take().expect("writer running");
        let mut stats = handle
            .join()
            .map_err(|_| io::Error::other("pcap writer thread panicked"))??;
        stats.dropped += self.dropped;
        Ok(stats)
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

/// The writer thread: batches in, rotating files out.
fn write_files(
    opts: &PersistOptions,
    rx: &Receiver<Batch>,
    back: &mpsc::Sender<Vec<u8>>,
) -> io::Result<PersistStats> {
    let mut stats = PersistStats::default();
    // (writer, bytes written, ts of the first packet)
    let mut file: Option<(PcapWriter<BufWriter<File>>, u64, u64)> = None;
    let link = file_link_type(opts.link_type);
    let max_age = u64::try_from(opts.max_file_age.as_nanos()).unwrap_or(u64::MAX);
    for batch in rx {
        let mut at = 0;
        let buf = &batch.buf;
        while at + REC_HEADER <= buf.len() {
            let ts = u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
            let wire = u32::from_le_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
            let len =
                u32::from_le_bytes(buf[at + 12..at + 16].try_into().expect("4 bytes")) as usize;
            let data = &buf[at + REC_HEADER..at + REC_HEADER + len];
            at += REC_HEADER + len;
            let rotate = match &file {
                None => true,
                Some((_, bytes, first)) => {
                    *bytes >= opts.max_file_bytes || ts.saturating_sub(*first) >= max_age
                }
            };
            if rotate {
                if let Some((w, _, _)) = file.take() {
                    w.finish()?;
                }
                let path = file_name(&opts.dir, ts);
                let w = PcapWriter::new(
                    BufWriter::with_capacity(1 << 20, File::create(&path)?),
                    link,
                    opts.snaplen,
                    true,
                )?;
                stats.files.push(path);
                file = Some((w, 24, ts));
            }
            let (w, bytes, _) = file.as_mut().expect("file open");
            w.write_packet(ts, wire, data)?;
            *bytes += 16 + len as u64;
            stats.packets += 1;
        }
        let _ = back.send(batch.buf);
    }
    if let Some((w, _, _)) = file.take() {
        w.finish()?;
    }
    Ok(stats)
}

/// The `LINKTYPE_*` to write for a capture's DLT: they are equal except raw
/// IP, whose DLT differs between systems (12 or 14) but whose file link type
/// is 101.
fn file_link_type(link: LinkType) -> u32 {
    match link {
        LinkType::RAW_12 | LinkType::RAW_14 => LinkType::RAW.0,
        other => other.0,
    }
}

/// `<dir>/<YYYYmmdd-HHMMSS>.pcap` for packet time `ts_ns` (UTC), with a
/// `-N` suffix when that file already exists.
fn file_name(dir: &Path, ts_ns: u64) -> PathBuf {
    // "2026-01-01T12:34:56.000000000Z" → "20260101-123456"
    let t = netspectra_model::time::format_rfc3339_ns(ts_ns);
    let stamp: String = t
        .get(..19)
        .unwrap_or(&t)
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .map(|c| if c == 'T' { '-' } else { c })
        .collect();
    let mut path = dir.join(format!("{stamp}.pcap"));
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("{stamp}-{n}.pcap"));
        n += 1;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::CaptureReader;

    #[test]
    fn rotates_by_size_and_age_and_every_packet_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let opts = PersistOptions {
            max_file_bytes: 4_000,
            max_file_age: Duration::from_secs(10),
            batch_bytes: 700,
            queue_batches: 1_000,
            ..PersistOptions::new(dir.path(), LinkType::RAW_12)
        };
        let mut p = Persister::start(opts).unwrap();
        let base = 1_767_225_600_000_000_000u64; // 2026-01-01T00:00:00Z
        let mut sent = Vec::new();
        for i in 0..100u64 {
            // 20 s of packet time: the age limit rotates too.
            let ts = base + i * 200_000_000 + 7;
            let data = vec![(i % 251) as u8; 50 + (i as usize % 40)];
            p.write(ts, data.len() as u32 + 3, &data);
            sent.push((ts, data));
        }
        let stats = p.finish().unwrap();
        assert_eq!(stats.packets, 100);
        assert_eq!(stats.dropped, 0);
        assert!(stats.files.len() >= 3, "{:?}", stats.files);
        assert!(stats.files[0].ends_with("20260101-000000.pcap"));
        let mut got = Vec::new();
        for f in &stats.files {
            let mut r = CaptureReader::open(f).unwrap();
            assert_eq!(r.link_types(), vec![LinkType::RAW]);
            while let Some(pkt) = r.next_packet().unwrap() {
                assert_eq!(pkt.wire_len as usize, pkt.data.len() + 3);
                got.push((pkt.ts_ns, pkt.data.to_vec()));
            }
        }
        assert_eq!(got, sent);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let opts = PersistOptions {
            batch_bytes: 64,
            queue_batches: 1,
            ..PersistOptions::new(dir.path(), LinkType::ETHERNET)
        };
        let mut p = Persister::start(opts).unwrap();
        for i in 0..20_000u64 {
            p.write(1_767_225_600_000_000_000 + i, 60, &[0u8; 40]);
        }
        let stats = p.finish().unwrap();
        assert_eq!(stats.packets + stats.dropped, 20_000);
    }
}
