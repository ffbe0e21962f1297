//! Large arrays backed by huge pages, the other unsafe corner of the hot path.
//!
//! Why: a sketch is tens of megabytes probed at random, so with 4 KiB pages
//! nearly every probe also misses the TLB (its second level covers a few
//! megabytes) and pays a page walk on top of the cache miss. With 2 MiB
//! pages a whole sketch fits the TLB. Linux gives huge pages to memory that
//! asks for them (`MADV_HUGEPAGE`) when transparent huge pages are in
//! `madvise` mode, the common default; elsewhere the advice is ignored and
//! nothing changes.

/// Size of a huge page: smaller arrays have nothing to gain.
const HUGE_PAGE: usize = 2 << 20;

/// `len` copies of `value`, in memory advised to use huge pages before it
/// is first touched (advice given later would wait for the kernel's
/// background collapse).
pub fn filled_vec<T: Clone>(len: usize, value: T) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    advise_huge_pages(v.as_ptr().cast(), len.saturating_mul(size_of::<T>()));
    v.resize(len, value);
    v
}

/// Asks the kernel to back the whole huge pages inside `[start, start + len)`
/// with huge pages. Best effort: a refusal changes only speed.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise_huge_pages(start: *const u8, len: usize) {
    let first = (start as usize).next_multiple_of(HUGE_PAGE);
    let end = (start as usize).saturating_add(len) / HUGE_PAGE * HUGE_PAGE;
    if first >= end {
        return;
    }
    // SAFETY: the range lies inside one live allocation this process owns
    // (a Vec's reserved capacity). MADV_HUGEPAGE only changes how the kernel
    // backs those pages, never their contents or whether they are mapped, so
    // no reference to the memory can observe it.
    unsafe {
        libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_start: *const u8, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_vec_holds_the_value_at_every_size() {
        for len in [0, 1, 1000, (HUGE_PAGE / 8) * 3 + 5] {
            let v = filled_vec(len, 7u64);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 7));
        }
    }
}
