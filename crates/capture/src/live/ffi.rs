//! libpcap, loaded at run time with `dlopen` (through `libloading`): with
//! `mapped.rs`, the `unsafe` code of the crate.
//!
//! Nothing links `-lpcap`, so the crate builds without libpcap's headers and
//! the binary starts without the library; [`lib`] loads it on first use, once
//! per process, and resolves every function [`super`] calls. The C structs
//! are declared here by hand, with Linux's layout (the sonames tried are
//! Linux's too).
//!
//! Everything exported is safe: a [`Handle`] owns one `pcap_t` (closed on
//! drop), is `Send` but not `Sync` (libpcap allows a handle on any thread,
//! one at a time), and packets it returns borrow it until the next read.
#![allow(unsafe_code)]

use libloading::Library;
use std::ffi::{c_char, c_int, c_long, c_uint, c_void, CStr, CString, OsString};
use std::ptr::{self, NonNull};
use std::sync::{Mutex, OnceLock};

/// Environment variable naming the library (a path or a soname) to load
/// instead of the default sonames (tests use it to simulate a missing
/// library).
pub(super) const ENV: &str = "NETSPECTRA_LIBPCAP";

/// Sonames tried in order: the current ABI (Fedora, Arch, Alpine…), Debian
/// and Ubuntu's name for the same ABI, then the development symlink.
#[cfg(not(target_os = "macos"))]
pub(super) const SONAMES: &[&str] = &["libpcap.so.1", "libpcap.so.0.8", "libpcap.so"];
/// Sonames tried in order (macOS ships libpcap with the system).
#[cfg(target_os = "macos")]
pub(super) const SONAMES: &[&str] = &["libpcap.A.dylib", "libpcap.dylib"];

/// What to install when no libpcap could be loaded.
pub(super) const INSTALL_HINT: &str = "install it with `apt-get install libpcap0.8` \
     (Debian/Ubuntu; the package is `libpcap0.8t64` on Debian 13 and Ubuntu 24.04 or newer) \
     or `dnf install libpcap` (Fedora/RHEL)";

// Status codes of pcap_activate and friends (pcap/pcap.h).
/// Generic error; `pcap_geterr` has the message.
pub(super) const PCAP_ERROR: c_int = -1;
/// The interface does not exist.
pub(super) const PCAP_ERROR_NO_SUCH_DEVICE: c_int = -5;
/// No permission to open the interface.
pub(super) const PCAP_ERROR_PERM_DENIED: c_int = -8;
/// No permission to put the interface in promiscuous mode.
pub(super) const PCAP_ERROR_PROMISC_PERM_DENIED: c_int = -11;

const PCAP_ERRBUF_SIZE: usize = 256;
const PCAP_NETMASK_UNKNOWN: u32 = 0xffff_ffff;
const PCAP_TSTAMP_PRECISION_NANO: c_int = 1;

/// `pcap_t`: opaque.
#[repr(C)]
struct PcapT {
    _opaque: [u8; 0],
}

/// `struct timeval` (`time_t` and `suseconds_t` are both `long` on Linux).
#[repr(C)]
#[derive(Clone, Copy)]
struct Timeval {
    tv_sec: c_long,
    #[cfg(not(target_os = "macos"))]
    tv_usec: c_long,
    #[cfg(target_os = "macos")]
    tv_usec: i32,
}

/// `struct pcap_pkthdr`.
#[repr(C)]
#[derive(Clone, Copy)]
struct PcapPkthdr {
    ts: Timeval,
    caplen: u32,
    len: u32,
}

/// `struct pcap_stat` (the fields every platform has; Linux has no more).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PcapStat {
    ps_recv: c_uint,
    ps_drop: c_uint,
    ps_ifdrop: c_uint,
}

/// `struct bpf_program` (filled and read by libpcap only).
#[repr(C)]
#[allow(dead_code)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut c_void,
}

/// `struct pcap_if` (`pcap_if_t`); the list is only walked for names.
#[repr(C)]
#[allow(dead_code)]
struct PcapIf {
    next: *mut PcapIf,
    name: *mut c_char,
    description: *mut c_char,
    addresses: *mut c_void,
    flags: u32,
}

type SetInt = unsafe extern "C" fn(*mut PcapT, c_int) -> c_int;

/// The loaded library and the functions we call.
pub(super) struct Lib {
    create: unsafe extern "C" fn(*const c_char, *mut c_char) -> *mut PcapT,
    set_snaplen: SetInt,
    set_promisc: SetInt,
    set_buffer_size: SetInt,
    set_timeout: SetInt,
    set_immediate_mode: SetInt,
    set_tstamp_precision: SetInt,
    get_tstamp_precision: unsafe extern "C" fn(*mut PcapT) -> c_int,
    activate: unsafe extern "C" fn(*mut PcapT) -> c_int,
    setnonblock: unsafe extern "C" fn(*mut PcapT, c_int, *mut c_char) -> c_int,
    compile: unsafe extern "C" fn(*mut PcapT, *mut BpfProgram, *const c_char, c_int, u32) -> c_int,
    setfilter: unsafe extern "C" fn(*mut PcapT, *mut BpfProgram) -> c_int,
    freecode: unsafe extern "C" fn(*mut BpfProgram),
    datalink: unsafe extern "C" fn(*mut PcapT) -> c_int,
    next_ex: unsafe extern "C" fn(*mut PcapT, *mut *mut PcapPkthdr, *mut *const u8) -> c_int,
    stats: unsafe extern "C" fn(*mut PcapT, *mut PcapStat) -> c_int,
    findalldevs: unsafe extern "C" fn(*mut *mut PcapIf, *mut c_char) -> c_int,
    freealldevs: unsafe extern "C" fn(*mut PcapIf),
    geterr: unsafe extern "C" fn(*mut PcapT) -> *mut c_char,
    statustostr: unsafe extern "C" fn(c_int) -> *const c_char,
    close: unsafe extern "C" fn(*mut PcapT),
    /// Keeps the function pointers above valid. The `Lib` lives in a static
    /// and is never dropped, so the library is never unloaded.
    _lib: Library,
}

static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();

/// Serialises `pcap_compile`, which libpcap before 1.8 did not make
/// thread-safe.
static COMPILE: Mutex<()> = Mutex::new(());

/// The loaded libpcap, loading it on first call; the error says what was
/// tried and which package to install (the same error for the whole
/// process: loading is attempted once).
pub(super) fn lib() -> Result<&'static Lib, &'static str> {
    LIB.get_or_init(load).as_ref().map_err(String::as_str)
}

fn load() -> Result<Lib, String> {
    let (names, from_env): (Vec<OsString>, bool) = match std::env::var_os(ENV) {
        Some(v) if !v.is_empty() => (vec![v], true),
        _ => (SONAMES.iter().map(OsString::from).collect(), false),
    };
    let mut unusual = Vec::new();
    for name in &names {
        // SAFETY: dlopen runs libpcap's initialisers, which only set up
        // libpcap's own state; they make no assumptions about the caller.
        // (A library that is not libpcap is caught by the symbol checks.)
        match unsafe { Library::new(name) } {
            Ok(lib) => return resolve(lib, &name.to_string_lossy()),
            Err(e) => {
                let e = e.to_string();
                // "not found" is the expected failure; anything else (wrong
                // architecture, broken file) is worth quoting.
                if !e.contains("No such file or directory") || from_env {
                    unusual.push(e);
                }
            }
        }
    }
    let tried = names
        .iter()
        .map(|n| n.to_string_lossy())
        .collect::<Vec<_>>()
        .join(", ");
    let source = if from_env {
        format!(", from {ENV}")
    } else {
        String::new()
    };
    let detail = if unusual.is_empty() {
        String::new()
    } else {
        format!("; {}", unusual.join("; "))
    };
    Err(format!(
        "libpcap is not installed (tried {tried}{source}{detail}): {INSTALL_HINT}"
    ))
}

/// Resolves every function we call from `lib`, loaded from `name`.
fn resolve(lib: Library, name: &str) -> Result<Lib, String> {
    macro_rules! sym {
        ($symbol:literal) => {
            // SAFETY: the symbol is libpcap's function of that name, and the
            // field it is stored in has that function's C signature (see
            // pcap/pcap.h); the pointer is used only while `lib` is loaded,
            // which is forever (see `Lib::_lib`).
            *unsafe { lib.get(concat!($symbol, "\0").as_bytes()) }.map_err(|e| {
                format!(
                    "{name} lacks {} ({e}): it is not libpcap 1.5 or newer; {INSTALL_HINT}",
                    $symbol
                )
            })?
        };
    }
    Ok(Lib {
        create: sym!("pcap_create"),
        set_snaplen: sym!("pcap_set_snaplen"),
        set_promisc: sym!("pcap_set_promisc"),
        set_buffer_size: sym!("pcap_set_buffer_size"),
        set_timeout: sym!("pcap_set_timeout"),
        set_immediate_mode: sym!("pcap_set_immediate_mode"),
        set_tstamp_precision: sym!("pcap_set_tstamp_precision"),
        get_tstamp_precision: sym!("pcap_get_tstamp_precision"),
        activate: sym!("pcap_activate"),
        setnonblock: sym!("pcap_setnonblock"),
        compile: sym!("pcap_compile"),
        setfilter: sym!("pcap_setfilter"),
        freecode: sym!("pcap_freecode"),
        datalink: sym!("pcap_datalink"),
        next_ex: sym!("pcap_next_ex"),
        stats: sym!("pcap_stats"),
        findalldevs: sym!("pcap_findalldevs"),
        freealldevs: sym!("pcap_freealldevs"),
        geterr: sym!("pcap_geterr"),
        statustostr: sym!("pcap_statustostr"),
        close: sym!("pcap_close"),
        _lib: lib,
    })
}

/// A zeroed error buffer for the calls that take one.
fn errbuf() -> [c_char; PCAP_ERRBUF_SIZE] {
    [0; PCAP_ERRBUF_SIZE]
}

/// The text libpcap left in `buf`.
fn errbuf_text(buf: &[c_char; PCAP_ERRBUF_SIZE]) -> String {
    // The last byte is ours and stays NUL, so there is always a terminator
    // within the buffer even if libpcap filled all the rest.
    let bytes: Vec<u8> = buf[..PCAP_ERRBUF_SIZE - 1]
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Copies a C string libpcap owns (empty for a null pointer).
///
/// # Safety
///
/// `p` is null or points to a NUL-terminated string that stays valid for
/// the duration of the call.
unsafe fn c_text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null, and valid and NUL-terminated (the caller's promise).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl Lib {
    /// `pcap_statustostr`: libpcap's text for a status code.
    pub(super) fn status_text(&self, status: c_int) -> String {
        // SAFETY: takes any integer and returns a static NUL-terminated
        // string (for unknown codes, a static buffer), copied at once.
        unsafe { c_text((self.statustostr)(status)) }
    }

    /// Names of the capture devices (`pcap_findalldevs`).
    pub(super) fn interfaces(&self) -> Result<Vec<String>, String> {
        let mut err = errbuf();
        let mut list: *mut PcapIf = ptr::null_mut();
        // SAFETY: both out-pointers point to live locals; errbuf has
        // PCAP_ERRBUF_SIZE bytes as the function requires.
        if unsafe { (self.findalldevs)(&mut list, err.as_mut_ptr()) } != 0 {
            return Err(errbuf_text(&err));
        }
        let mut names = Vec::new();
        let mut node = list;
        while !node.is_null() {
            // SAFETY: `node` is an element of the list pcap_findalldevs just
            // built, which stays valid until pcap_freealldevs below.
            let entry = unsafe { &*node };
            // SAFETY: `name` is a NUL-terminated string of that list.
            names.push(unsafe { c_text(entry.name) });
            node = entry.next;
        }
        if !list.is_null() {
            // SAFETY: `list` came from pcap_findalldevs and is freed once;
            // no pointer into it outlives this line (names were copied).
            unsafe { (self.freealldevs)(list) };
        }
        Ok(names)
    }
}

/// Counters of `pcap_stats` (32-bit in libpcap).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Stat {
    pub received: u32,
    pub dropped: u32,
    pub if_dropped: u32,
}

/// What one `pcap_next_ex` returned.
pub(super) enum Next<'a> {
    /// A packet: seconds and fraction (micro- or nanoseconds, whichever the
    /// handle was activated with), length on the wire, and the captured bytes.
    Packet {
        sec: i64,
        frac: i64,
        len: u32,
        data: &'a [u8],
    },
    /// Nothing was ready (non-blocking) or the read timeout expired.
    Timeout,
    /// No more packets (`pcap_breakloop` or a savefile's end).
    Eof,
    /// A read error, with libpcap's message.
    Error(String),
}

/// One open `pcap_t`, closed on drop.
pub(super) struct Handle {
    p: NonNull<PcapT>,
    lib: &'static Lib,
}

// SAFETY: libpcap lets a pcap_t be used from any thread as long as calls on
// it do not overlap; `Handle` is not `Sync` (it holds a raw pointer) and
// every method that calls libpcap borrows it, so one thread at a time uses it.
unsafe impl Send for Handle {}

impl Handle {
    /// `pcap_create` on `device`: a handle to configure, then activate.
    pub(super) fn create(lib: &'static Lib, device: &str) -> Result<Handle, String> {
        let device = CString::new(device)
            .map_err(|_| "the interface name contains a NUL byte".to_string())?;
        let mut err = errbuf();
        // SAFETY: `device` is NUL-terminated, errbuf has PCAP_ERRBUF_SIZE
        // bytes; both outlive the call.
        let p = unsafe { (lib.create)(device.as_ptr(), err.as_mut_ptr()) };
        match NonNull::new(p) {
            Some(p) => Ok(Handle { p, lib }),
            None => Err(errbuf_text(&err)),
        }
    }

    /// Calls `f` on the handle.
    ///
    /// # Safety
    ///
    /// `f` is one of `Lib`'s `pcap_set_*` functions.
    unsafe fn set(&mut self, f: SetInt, value: c_int) -> c_int {
        // SAFETY: `f` is a pcap_set_* function (the caller's promise), which
        // takes an open handle, as ours is, and an int.
        unsafe { f(self.p.as_ptr(), value) }
    }

    /// Sets the options `pcap_activate` will apply, asking for nanosecond
    /// timestamps ([`Handle::nanos`] says whether they were granted).
    pub(super) fn configure(
        &mut self,
        snaplen: i32,
        promisc: bool,
        buffer_bytes: i32,
        timeout_ms: i32,
        immediate: bool,
    ) {
        let lib = self.lib;
        // SAFETY: each function is one of lib's pcap_set_* functions.
        // These only fail on an activated handle, which ours is not, except
        // the precision, refused where unsupported: timestamps then stay in
        // microseconds, which `nanos` reports after activation.
        unsafe {
            self.set(lib.set_snaplen, snaplen);
            self.set(lib.set_promisc, c_int::from(promisc));
            self.set(lib.set_buffer_size, buffer_bytes);
            self.set(lib.set_timeout, timeout_ms);
            self.set(lib.set_immediate_mode, c_int::from(immediate));
            self.set(lib.set_tstamp_precision, PCAP_TSTAMP_PRECISION_NANO);
        }
    }

    /// `pcap_activate`: 0 on success, positive for a warning (the capture
    /// works), negative for an error (see [`Handle::error_text`]).
    pub(super) fn activate(&mut self) -> c_int {
        // SAFETY: our handle is open.
        unsafe { (self.lib.activate)(self.p.as_ptr()) }
    }

    /// libpcap's explanation of `status` (from `pcap_activate`): the
    /// handle's message for `PCAP_ERROR`, otherwise the status text with the
    /// handle's message, if any, appended.
    pub(super) fn error_text(&self, status: c_int) -> String {
        let detail = self.geterr();
        if status == PCAP_ERROR && !detail.is_empty() {
            return detail;
        }
        let text = self.lib.status_text(status);
        if detail.is_empty() || detail == text {
            text
        } else {
            format!("{text} ({detail})")
        }
    }

    /// `pcap_geterr`: the message of the last failed call on this handle.
    pub(super) fn geterr(&self) -> String {
        // SAFETY: our handle is open; the returned NUL-terminated string
        // lives in the handle and is copied before any other call on it.
        unsafe { c_text((self.lib.geterr)(self.p.as_ptr())) }
    }

    /// Whether packets carry nanoseconds (`pcap_get_tstamp_precision`, after
    /// activation).
    pub(super) fn nanos(&self) -> bool {
        // SAFETY: our handle is open.
        unsafe { (self.lib.get_tstamp_precision)(self.p.as_ptr()) == PCAP_TSTAMP_PRECISION_NANO }
    }

    /// `pcap_setnonblock(1)`: reads return at once when nothing is ready.
    pub(super) fn set_nonblocking(&mut self) -> Result<(), String> {
        let mut err = errbuf();
        // SAFETY: our handle is activated; errbuf has PCAP_ERRBUF_SIZE bytes.
        if unsafe { (self.lib.setnonblock)(self.p.as_ptr(), 1, err.as_mut_ptr()) } != 0 {
            return Err(errbuf_text(&err));
        }
        Ok(())
    }

    /// Compiles `expr` (optimised, netmask unknown) and installs it as the
    /// kernel filter.
    pub(super) fn set_filter(&mut self, expr: &str) -> Result<(), String> {
        let expr = CString::new(expr).map_err(|_| "the filter contains a NUL byte".to_string())?;
        let mut prog = BpfProgram {
            bf_len: 0,
            bf_insns: ptr::null_mut(),
        };
        let compiled = {
            let _guard = COMPILE.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: our handle is activated, `prog` and `expr` are live
            // and `expr` is NUL-terminated; calls are serialised (COMPILE).
            unsafe {
                (self.lib.compile)(
                    self.p.as_ptr(),
                    &mut prog,
                    expr.as_ptr(),
                    1,
                    PCAP_NETMASK_UNKNOWN,
                )
            }
        };
        if compiled != 0 {
            return Err(self.geterr());
        }
        // SAFETY: `prog` was filled by pcap_compile; pcap_setfilter copies it.
        let set = unsafe { (self.lib.setfilter)(self.p.as_ptr(), &mut prog) };
        let result = if set != 0 { Err(self.geterr()) } else { Ok(()) };
        // SAFETY: `prog` holds pcap_compile's allocation, freed once here and
        // not used after.
        unsafe { (self.lib.freecode)(&mut prog) };
        result
    }

    /// `pcap_datalink`: the DLT of the activated handle.
    pub(super) fn datalink(&self) -> i32 {
        // SAFETY: our handle is activated.
        unsafe { (self.lib.datalink)(self.p.as_ptr()) }
    }

    /// `pcap_next_ex`: the next packet, borrowed until the next call on the
    /// handle.
    #[inline]
    // `c_long` is i64 here but narrower on some targets: widen losslessly.
    #[allow(clippy::useless_conversion)]
    pub(super) fn next(&mut self) -> Next<'_> {
        let mut header: *mut PcapPkthdr = ptr::null_mut();
        let mut data: *const u8 = ptr::null();
        // SAFETY: our handle is activated; both out-pointers point to locals.
        let status = unsafe { (self.lib.next_ex)(self.p.as_ptr(), &mut header, &mut data) };
        match status {
            1 if !header.is_null() => {
                // SAFETY: on success libpcap points `header` at a valid
                // pcap_pkthdr it owns, valid until the next call on the
                // handle; we copy it.
                let h = unsafe { *header };
                let data = if data.is_null() || h.caplen == 0 {
                    &[][..]
                } else {
                    // SAFETY: libpcap's buffer holds `caplen` bytes at `data`
                    // and keeps them until the next call on the handle, which
                    // needs `&mut self`: the slice borrows `self` until then.
                    unsafe { std::slice::from_raw_parts(data, h.caplen as usize) }
                };
                Next::Packet {
                    sec: i64::from(h.ts.tv_sec),
                    frac: i64::from(h.ts.tv_usec),
                    len: h.len,
                    data,
                }
            }
            0 => Next::Timeout,
            -2 => Next::Eof,
            PCAP_ERROR => Next::Error(self.geterr()),
            other => Next::Error(format!(
                "pcap_next_ex returned {other}: {}",
                self.lib.status_text(other)
            )),
        }
    }

    /// `pcap_stats`: counters since activation.
    pub(super) fn stats(&mut self) -> Result<Stat, String> {
        let mut s = PcapStat::default();
        // SAFETY: our handle is activated and `s` is a live pcap_stat.
        if unsafe { (self.lib.stats)(self.p.as_ptr(), &mut s) } != 0 {
            return Err(self.geterr());
        }
        Ok(Stat {
            received: s.ps_recv,
            dropped: s.ps_drop,
            if_dropped: s.ps_ifdrop,
        })
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle is open and closed exactly once, here; nothing
        // borrowed from it outlives `self`.
        unsafe { (self.lib.close)(self.p.as_ptr()) }
    }
}
