//! A capture file mapped into memory: the reader's unsafe corner.
//!
//! Why: reading a capture through `read(2)` copies every byte from the page
//! cache into the reader's buffer, and on the reader thread (which is also
//! worker 0, see `EnginePlan::inline_worker`) that copy took 6–22 % of the
//! thread's time in `perf`. A read-only mapping hands the decoder the page
//! cache itself.
//!
//! The risk is ripgrep's, and taken the same way: if another process
//! truncates the file while it is mapped, touching the lost pages raises
//! `SIGBUS`, which ends the process. Appending (a capture still being
//! written) is safe: the mapping covers the length the file had when it was
//! opened. [`CaptureReader::open_streamed`](crate::reader::CaptureReader::open_streamed)
//! reads without a mapping for callers that cannot take that risk.
//!
//! The pages already read are handed back to the kernel as the reader moves
//! on, so a mapped 3 GB capture does not show up as 3 GB of resident memory.

#![allow(unsafe_code)]

use std::fs::File;

/// How far behind the reader pages are released, in one `madvise` call.
const RELEASE_STEP: usize = 8 << 20;
/// How far ahead of the reader its bytes are prefetched into the cache.
const PREFETCH_AHEAD: usize = 4096;
const CACHE_LINE: usize = 64;

/// A whole file mapped read-only, released behind the reader.
pub(crate) struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
    /// Bytes before this offset have been released (a multiple of the page size).
    released: usize,
    /// Bytes before this offset have been prefetched.
    prefetched: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; moving it
// to another thread moves the only handle to it.
unsafe impl Send for Mapped {}

impl Mapped {
    /// Maps `file` when it is a non-empty regular file; `None` (read it
    /// instead) for pipes, devices, empty files or a refused mapping.
    pub(crate) fn new(file: &File) -> Option<Mapped> {
        use std::os::fd::AsRawFd as _;
        let meta = file.metadata().ok()?;
        let len = usize::try_from(meta.len()).ok()?;
        if !meta.is_file() || len == 0 {
            return None;
        }
        // SAFETY: a fresh read-only private mapping of a file we hold open;
        // the kernel picks the address. Failure is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: advice on the mapping just made; it changes read-ahead
        // only. Best effort: a refusal changes only speed.
        unsafe {
            libc::madvise(ptr, len, libc::MADV_SEQUENTIAL);
        }
        Some(Mapped {
            ptr,
            len,
            released: 0,
            prefetched: 0,
        })
    }

    /// The file's bytes as they were when it was mapped.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self`
        // lives. Released pages stay mapped (they read back from the file).
        // The contents change only if another process writes the file, the
        // risk the module documentation states.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }

    /// Moves the reader to `offset`: prefetches the bytes up to
    /// [`PREFETCH_AHEAD`] beyond it and hands back to the kernel the pages
    /// wholly before it, once there are [`RELEASE_STEP`] bytes of them.
    /// Nothing before `offset` may be borrowed any more.
    ///
    /// Why prefetch: read(2) left each record in a buffer the copy had just
    /// warmed; a mapping leaves it in memory, a cache miss per record that
    /// the hardware prefetcher does not cover across page boundaries.
    #[inline]
    pub(crate) fn advance(&mut self, offset: usize) {
        let ahead = offset.saturating_add(PREFETCH_AHEAD).min(self.len);
        while self.prefetched < ahead {
            prefetch(self.ptr.cast::<u8>().wrapping_add(self.prefetched));
            self.prefetched += CACHE_LINE;
        }
        if offset - self.released >= RELEASE_STEP {
            self.release(offset);
        }
    }

    #[cold]
    fn release(&mut self, offset: usize) {
        let end = offset / RELEASE_STEP * RELEASE_STEP;
        // SAFETY: the range lies inside the mapping and starts on a page
        // boundary (`released` and `end` are multiples of RELEASE_STEP).
        // For a private read-only file mapping MADV_DONTNEED only drops
        // the pages from this process: a later read faults them in again
        // from the file, so no slice over them can see different bytes.
        unsafe {
            libc::madvise(
                self.ptr.cast::<u8>().add(self.released).cast(),
                end - self.released,
                libc::MADV_DONTNEED,
            );
        }
        self.released = end;
    }
}

/// Hints the CPU to bring the cache line holding `p` into all cache levels.
/// A copy of `netspectra_sketch::prefetch::read`, as the store keeps one:
/// capture depends on `model` only.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 has no architectural effect: it cannot fault and
    // does not modify memory, for any address; SSE is part of the x86_64
    // baseline, so the instruction always exists.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`; no borrow of it outlives
        // `self`.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}
