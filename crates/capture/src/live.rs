//! Live capture from a network interface through libpcap.
//!
//! libpcap is loaded at run time (`dlopen`, once per process, see
//! [`libpcap_available`]), not linked: the crate builds without libpcap's
//! development files and binaries start without the library. Only live
//! capture needs it; when it is missing, opening a capture fails with a
//! [`CaptureError::Live`] naming the package to install. The environment
//! variable `NETSPECTRA_LIBPCAP` names a library (path or soname) to load
//! instead of `libpcap.so.1`, `libpcap.so.0.8`, `libpcap.so`.
//!
//! [`LiveCapture`] hands out the same [`RawPacket`] as the file readers, so
//! everything downstream (decode, engine, probe batching) is shared between
//! live and offline input:
//!
//! ```no_run
//! use netspectra_capture::live::{LiveCapture, LiveOptions};
//! let mut cap = LiveCapture::open(&LiveOptions {
//!     bpf: Some("udp".into()),
//!     ..LiveOptions::new("eth0")
//! })?;
//! let stop = false; // e.g. a signal flag
//! while !stop {
//!     match cap.next_packet()? {
//!         Some(p) => println!("{} bytes at {} ns", p.wire_len, p.ts_ns),
//!         None => {} // read timeout: nothing arrived, check the stop flag
//!     }
//! }
//! let stats = cap.stats()?; // received, dropped by the kernel, by the interface
//! # Ok::<(), netspectra_capture::reader::CaptureError>(())
//! ```
//!
//! How packets reach us: the kernel fills a ring buffer shared with libpcap
//! in blocks (TPACKET_V3 on Linux), handing a block over when it is full or
//! [`LiveOptions::timeout_ms`] after its first packet, so at high rates a
//! read costs no system call, and a packet waits at most `timeout_ms` before
//! it can be read. [`LiveOptions::immediate`] delivers every packet at once
//! instead (lower latency, more CPU per packet).
//!
//! [`LiveCapture::next_packet`] never blocks for long: libpcap's own read
//! timeout does not fire on an idle Linux link (its documentation says not to
//! rely on it), so the capture is non-blocking and an empty read sleeps
//! [`IDLE_SLEEP`] then returns `Ok(None)`; callers check their stop
//! conditions and call again. One `LiveCapture` is read by one thread (it is
//! `Send`, not `Sync`).

mod ffi;

use crate::link::LinkType;
use crate::reader::{CaptureError, RawPacket};
use serde::Serialize;

/// How to open a live capture. [`LiveOptions::new`] gives the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveOptions {
    /// Interface name (`eth0`, `any`, …), as `ip link` shows it.
    pub iface: String,
    /// Optional BPF filter expression (tcpdump syntax), applied in the kernel
    /// so unwanted packets never cost a copy.
    pub bpf: Option<String>,
    /// Bytes kept of each packet (default 65535: whole frames on common
    /// links; lower it to capture headers only at high rates).
    pub snaplen: i32,
    /// Promiscuous mode: also see traffic not addressed to this host
    /// (default true, what a monitor wants).
    pub promisc: bool,
    /// Kernel ring buffer size in bytes (default 16 MiB); larger absorbs
    /// longer bursts before the kernel drops.
    pub buffer_bytes: i32,
    /// Packet buffer timeout in milliseconds (default 100): the longest a
    /// captured packet waits in the kernel before it can be read (see
    /// [`LiveCapture::max_delay`]).
    pub timeout_ms: i32,
    /// Immediate mode (default false): every packet is readable as soon as it
    /// arrives, at the cost of more work per packet; use it when latency
    /// matters more than throughput.
    pub immediate: bool,
}

impl LiveOptions {
    /// Default options for `iface`: snaplen 65535, promiscuous, 16 MiB
    /// buffer, 100 ms timeout, no filter.
    pub fn new(iface: impl Into<String>) -> Self {
        LiveOptions {
            iface: iface.into(),
            bpf: None,
            snaplen: 65535,
            promisc: true,
            buffer_bytes: 16 << 20,
            timeout_ms: 100,
            immediate: false,
        }
    }
}

impl Default for LiveOptions {
    /// Defaults of [`LiveOptions::new`] on the `any` pseudo-interface.
    fn default() -> Self {
        LiveOptions::new("any")
    }
}

/// Capture counters since the capture was opened (libpcap's `pcap_stats`,
/// widened to 64 bits so they do not wrap on long runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LiveStats {
    /// Packets that passed the filter and reached the capture (on Linux this
    /// includes those then dropped).
    pub received: u64,
    /// Packets the kernel dropped because the buffer was full (we read too
    /// slowly): results miss these.
    pub dropped: u64,
    /// Packets the interface or its driver dropped (not supported everywhere).
    pub if_dropped: u64,
}

/// An open live capture on one interface.
pub struct LiveCapture {
    handle: ffi::Handle,
    iface: String,
    link: LinkType,
    /// Whether libpcap hands out nanoseconds in `tv_usec`.
    nanos: bool,
    max_delay: std::time::Duration,
    /// libpcap's last (32-bit) counters and our 64-bit totals.
    last: ffi::Stat,
    totals: LiveStats,
}

// One thread reads a capture, possibly not the one that opened it.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<LiveCapture>();
};

/// How long an empty read sleeps before [`LiveCapture::next_packet`] returns
/// `Ok(None)`: short enough that the kernel ring does not fill meanwhile at
/// line rate, long enough that an idle capture costs next to no CPU.
pub const IDLE_SLEEP: std::time::Duration = std::time::Duration::from_millis(1);

impl LiveCapture {
    /// Opens `opts.iface` and applies the filter.
    ///
    /// Errors say what to do: a missing libpcap names the package to
    /// install, a missing interface lists the ones that exist, a permission
    /// error says to run as root or grant `CAP_NET_RAW`, a bad filter quotes
    /// libpcap's message.
    pub fn open(opts: &LiveOptions) -> Result<Self, CaptureError> {
        let iface = opts.iface.as_str();
        let err = |reason: String| CaptureError::Live {
            iface: iface.to_string(),
            reason,
        };
        let lib = ffi::lib().map_err(|e| err(e.to_string()))?;
        let mut handle = ffi::Handle::create(lib, iface)
            .map_err(|e| err(format!("cannot create capture: {e}")))?;
        handle.configure(
            opts.snaplen,
            opts.promisc,
            opts.buffer_bytes,
            opts.timeout_ms,
            opts.immediate,
        );
        // Negative: an error. Positive: a warning (say, promiscuous mode not
        // supported), the capture works all the same.
        let status = handle.activate();
        if status < 0 {
            return Err(open_error(iface, status, &handle.error_text(status)));
        }
        handle
            .set_nonblocking()
            .map_err(|e| err(format!("cannot make the capture non-blocking: {e}")))?;
        if let Some(expr) = &opts.bpf {
            handle.set_filter(expr).map_err(|e| {
                err(format!(
                    "bad BPF filter `{expr}`: {e} (see `man pcap-filter`)"
                ))
            })?;
        }
        let link = LinkType(u32::try_from(handle.datalink()).unwrap_or(u32::MAX));
        let nanos = handle.nanos();
        Ok(LiveCapture {
            handle,
            iface: iface.to_string(),
            link,
            nanos,
            max_delay: if opts.immediate {
                std::time::Duration::ZERO
            } else {
                std::time::Duration::from_millis(u64::try_from(opts.timeout_ms).unwrap_or(0))
            },
            last: ffi::Stat::default(),
            totals: LiveStats::default(),
        })
    }

    /// The interface being captured.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Link type of the interface (what [`crate::decode::decode`] needs).
    /// This is libpcap's DLT number, which equals the `LINKTYPE_*` number for
    /// every type we decode (Linux's raw IP DLT 12 is decoded as raw IP).
    pub fn link_type(&self) -> LinkType {
        self.link
    }

    /// The longest a packet the kernel captured can wait before
    /// [`LiveCapture::next_packet`] sees it (the packet buffer timeout; zero in
    /// immediate mode). To read everything captured before a stop, keep
    /// reading for this long after it.
    pub fn max_delay(&self) -> std::time::Duration {
        self.max_delay
    }

    /// The next packet, borrowed until the next call; `Ok(None)` after
    /// sleeping [`IDLE_SLEEP`] when nothing was ready (so callers can check
    /// their stop conditions, then call again). Timestamps are in nanoseconds
    /// (microsecond resolution where libpcap cannot give more).
    #[inline]
    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        let reason = match self.handle.next() {
            ffi::Next::Packet {
                sec,
                frac,
                len,
                data,
            } => {
                return Ok(Some(RawPacket {
                    ts_ns: timestamp_ns(sec, frac, self.nanos),
                    link_type: self.link,
                    wire_len: len.max(data.len() as u32),
                    data,
                }))
            }
            ffi::Next::Timeout => {
                std::thread::sleep(IDLE_SLEEP);
                return Ok(None);
            }
            ffi::Next::Eof => "the capture was ended (no more packets)".to_string(),
            ffi::Next::Error(msg) => msg,
        };
        Err(CaptureError::Live {
            iface: self.iface.clone(),
            reason: format!("read failed: {reason}"),
        })
    }

    /// Counters since the capture was opened: received, dropped by the
    /// kernel, dropped by the interface. Call it now and then (say once a
    /// second) on long captures: libpcap's counters are 32-bit and the 64-bit
    /// totals can only absorb one wrap between two calls.
    ///
    /// Takes `&mut self` because libpcap's `pcap_stats` needs the handle
    /// exclusively.
    pub fn stats(&mut self) -> Result<LiveStats, CaptureError> {
        let now = self.handle.stats().map_err(|e| CaptureError::Live {
            iface: self.iface.clone(),
            reason: format!("cannot read statistics: {e}"),
        })?;
        self.totals.received += u64::from(now.received.wrapping_sub(self.last.received));
        self.totals.dropped += u64::from(now.dropped.wrapping_sub(self.last.dropped));
        self.totals.if_dropped += u64::from(now.if_dropped.wrapping_sub(self.last.if_dropped));
        self.last = now;
        Ok(self.totals)
    }
}

/// Nanoseconds since the Unix epoch of a libpcap timestamp: `sec` seconds
/// plus `frac` nanoseconds (`nanos`) or microseconds, clamped to `u64`.
fn timestamp_ns(sec: i64, frac: i64, nanos: bool) -> u64 {
    let unit = if nanos { 1 } else { 1000 };
    let ts = i128::from(sec) * 1_000_000_000 + i128::from(frac) * unit;
    ts.clamp(0, i128::from(u64::MAX)) as u64
}

/// Whether libpcap can be loaded: `Ok` once it is (the first call loads it,
/// once per process), otherwise the [`CaptureError::Live`] every live
/// capture would fail with, naming the package to install.
pub fn libpcap_available() -> Result<(), CaptureError> {
    ffi::lib().map(|_| ()).map_err(|e| CaptureError::Live {
        iface: "*".into(),
        reason: e.to_string(),
    })
}

/// Names of the interfaces libpcap can capture on, for error messages and
/// `--iface` help.
pub fn interfaces() -> Result<Vec<String>, CaptureError> {
    let err = |reason: String| CaptureError::Live {
        iface: "*".into(),
        reason,
    };
    let lib = ffi::lib().map_err(|e| err(e.to_string()))?;
    lib.interfaces()
        .map_err(|e| err(format!("cannot list interfaces: {e}")))
}

/// Turns an activation failure (`status` < 0, libpcap's message `msg`) into
/// an error saying what to do.
fn open_error(iface: &str, status: i32, msg: &str) -> CaptureError {
    let lower = msg.to_lowercase();
    let known = interfaces().ok();
    let missing = status == ffi::PCAP_ERROR_NO_SUCH_DEVICE
        || lower.contains("no such device")
        || known
            .as_ref()
            .is_some_and(|list| !list.iter().any(|n| n == iface));
    let reason = if missing {
        let available = match &known {
            Some(list) if !list.is_empty() => list.join(", "),
            _ => "none found".to_string(),
        };
        format!("no such interface (available: {available}); libpcap: {msg}")
    } else if status == ffi::PCAP_ERROR_PERM_DENIED
        || status == ffi::PCAP_ERROR_PROMISC_PERM_DENIED
        || lower.contains("permission")
        || lower.contains("not permitted")
        || lower.contains("access denied")
    {
        format!(
            "permission denied: run as root or give the binary CAP_NET_RAW \
             (`setcap cap_net_raw,cap_net_admin=eip $(which netspectra)`); libpcap: {msg}"
        )
    } else {
        format!("cannot open: {msg}")
    };
    CaptureError::Live {
        iface: iface.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_convert_micro_and_nanoseconds() {
        assert_eq!(timestamp_ns(0, 0, true), 0);
        assert_eq!(timestamp_ns(1, 500, true), 1_000_000_500);
        assert_eq!(timestamp_ns(1, 500, false), 1_000_500_000);
        let sec = 1_767_225_600; // 2026-01-01T00:00:00Z
        assert_eq!(
            timestamp_ns(sec, 999_999_999, true),
            1_767_225_600_999_999_999
        );
        assert_eq!(timestamp_ns(sec, 999_999, false), 1_767_225_600_999_999_000);
    }

    #[test]
    fn timestamps_out_of_range_are_clamped() {
        assert_eq!(timestamp_ns(-1, 0, true), 0);
        assert_eq!(timestamp_ns(0, -5, false), 0);
        assert_eq!(timestamp_ns(i64::MAX, i64::MAX, false), u64::MAX);
    }
}
