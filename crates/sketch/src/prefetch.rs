//! Cache prefetch hints, the one unsafe corner of the hot path.
//!
//! Why: sketches and flow tables are larger than the caches, so nearly every
//! update misses. Issuing the loads of a packet a few packets ahead overlaps
//! those misses; the engine does that through the `prefetch` methods of
//! each structure, which all end here.

/// Hints the CPU to bring the cache line holding `p` into all cache levels.
/// Never faults and never changes memory, whatever the address.
#[inline(always)]
#[allow(unsafe_code)]
pub fn read<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 has no architectural effect — it cannot fault and
    // does not modify memory, for any address; SSE is part of the x86_64
    // baseline, so the instruction always exists.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
