//! Large arrays of the hot path, the other unsafe corner of it: sketch
//! arrays backed by huge pages, and arrays that, once large, grow without
//! copying, on huge pages too.
//!
//! Why huge pages: a sketch or a large flow table is tens of megabytes
//! probed at random, so with 4 KiB pages nearly every probe also misses
//! the TLB (its second level covers a few megabytes) and pays a page walk
//! on top of the cache miss. With 2 MiB pages a whole sketch fits the
//! TLB. Linux gives huge pages to memory that asks for them
//! (`MADV_HUGEPAGE`) when transparent huge pages are in `madvise` mode,
//! the common default; elsewhere the advice is ignored and nothing
//! changes.

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

#[cfg(target_os = "linux")]
pub use mapped::GrowingArray;

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod mapped {
    use std::alloc::{handle_alloc_error, Layout};
    use std::mem::ManuallyDrop;
    use std::ptr::NonNull;

    /// Size from which an array lives in a mapping of its own rather than
    /// on the heap: glibc's largest `mmap` threshold. Above it malloc maps
    /// fresh memory for every allocation anyway, so growing the mapping in
    /// place only saves pages; below it malloc hands a freed array's
    /// memory to the next one (a window's table to the next window's),
    /// which a mapping of our own would give back to the kernel instead.
    const MAP_FROM: usize = 32 << 20;

    /// An array that only grows; past [`MAP_FROM`] bytes it keeps the
    /// memory of what it already holds.
    ///
    /// Why: a flow table doubles as keys arrive. Growing a `Vec` that
    /// large maps fresh memory for the whole new array and frees the old,
    /// so a table that ends at 64 MB made the kernel zero 128 MB of fresh
    /// pages, and zeroing fresh pages took up to a tenth of a run's CPU
    /// (README, Performance). Here growth past `MAP_FROM` moves the old
    /// pages' mappings instead of their bytes (`mremap`): only the added
    /// part is fresh memory, and the elements stay where they are for the
    /// caller to rearrange.
    pub struct GrowingArray<T: Copy + Default> {
        /// Start of `len` initialised elements: a `Vec`'s buffer of
        /// capacity `heap_cap`, or (when `heap_cap` is 0 and `len` is not)
        /// a private anonymous mapping of exactly `len` elements; dangling
        /// while `len` is 0.
        ptr: NonNull<T>,
        len: usize,
        heap_cap: usize,
    }

    // SAFETY: the array owns its memory outright, as a `Vec` its buffer.
    unsafe impl<T: Copy + Default + Send> Send for GrowingArray<T> {}
    // SAFETY: shared access only hands out `&[T]`.
    unsafe impl<T: Copy + Default + Sync> Sync for GrowingArray<T> {}

    impl<T: Copy + Default> GrowingArray<T> {
        /// An empty array; the first growth allocates.
        pub fn new() -> Self {
            GrowingArray {
                ptr: NonNull::dangling(),
                len: 0,
                heap_cap: 0,
            }
        }

        /// Grows to `len` elements (no-op if already that long): the first
        /// ones keep their values and the new ones are `T::default()`.
        pub fn grow_to(&mut self, len: usize) {
            if len <= self.len {
                return;
            }
            let layout = Layout::array::<T>(len).expect("array size overflows");
            assert!(layout.size() > 0, "zero-sized elements need no memory");
            if layout.size() < MAP_FROM {
                let mut heap = ManuallyDrop::new(self.take_heap());
                heap.resize(len, T::default());
                self.ptr = NonNull::new(heap.as_mut_ptr()).expect("a Vec's buffer is not null");
                self.heap_cap = heap.capacity();
                self.len = len;
                return;
            }
            let kept = self.len;
            let ptr = if !self.is_mapped() {
                let heap = self.take_heap();
                let ptr = map(layout);
                // SAFETY: the new mapping holds `len > heap.len()`
                // elements and cannot overlap the heap buffer.
                unsafe { std::ptr::copy_nonoverlapping(heap.as_ptr(), ptr.as_ptr(), heap.len()) };
                ptr
            } else {
                remap(self.ptr, kept * size_of::<T>(), layout)
            };
            for i in kept..len {
                // SAFETY: `i` is inside the mapping, which is writable and
                // aligned; `T: Copy` has no drop to skip.
                unsafe { ptr.as_ptr().add(i).write(T::default()) };
            }
            self.ptr = ptr;
            self.len = len;
            self.heap_cap = 0;
        }

        /// Whether the elements live in a mapping of their own (from
        /// [`MAP_FROM`] bytes on) rather than in a heap buffer.
        fn is_mapped(&self) -> bool {
            self.heap_cap == 0 && self.len > 0
        }

        /// The heap buffer as a `Vec` (empty if there is none), leaving the
        /// array empty: its memory is now the `Vec`'s.
        fn take_heap(&mut self) -> Vec<T> {
            debug_assert!(!self.is_mapped(), "a mapping is not a heap buffer");
            let heap = if self.heap_cap == 0 {
                Vec::new()
            } else {
                // SAFETY: `ptr`, `len` and `heap_cap` are the parts of a
                // `Vec<T>` this array took apart and has owned since.
                unsafe { Vec::from_raw_parts(self.ptr.as_ptr(), self.len, self.heap_cap) }
            };
            self.ptr = NonNull::dangling();
            self.len = 0;
            self.heap_cap = 0;
            heap
        }
    }

    /// A new private anonymous mapping for `layout`, on huge pages.
    fn map<T>(layout: Layout) -> NonNull<T> {
        // SAFETY: a fresh mapping at an address the kernel picks; page
        // alignment is at least any element's alignment.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        let ptr: NonNull<T> = mapped(ptr, layout);
        // Tables this large are probed at random, one cache miss per
        // packet: with 4 KiB pages most probes also missed the TLB. The
        // advice covers the whole mapping, not only the whole huge pages
        // inside it as `advise_huge_pages` does: advice on part of a
        // mapping splits it in two, and `mremap` cannot grow a range that
        // spans two (the growth test aborted on it). `mremap` keeps the
        // advice for the grown or moved mapping.
        // SAFETY: `ptr` starts a mapping of `layout.size()` bytes this
        // array owns; the advice changes how pages are backed, never their
        // contents. Best effort: a refusal changes only speed.
        unsafe {
            libc::madvise(ptr.as_ptr().cast(), layout.size(), libc::MADV_HUGEPAGE);
        }
        ptr
    }

    /// The mapping of `old` bytes at `ptr`, grown to `layout`'s size,
    /// moved if it has to be.
    fn remap<T>(ptr: NonNull<T>, old: usize, layout: Layout) -> NonNull<T> {
        // SAFETY: `ptr` and `old` describe a mapping the caller owns and
        // no longer borrows; the kernel rounds lengths up to whole pages.
        let ptr = unsafe {
            libc::mremap(
                ptr.as_ptr().cast(),
                old,
                layout.size(),
                libc::MREMAP_MAYMOVE,
            )
        };
        mapped(ptr, layout)
    }

    fn mapped<T>(ptr: *mut libc::c_void, layout: Layout) -> NonNull<T> {
        if ptr == libc::MAP_FAILED {
            handle_alloc_error(layout);
        }
        NonNull::new(ptr.cast::<T>()).expect("a mapping is never at address 0")
    }

    impl<T: Copy + Default> std::ops::Deref for GrowingArray<T> {
        type Target = [T];
        fn deref(&self) -> &[T] {
            // SAFETY: `len` initialised elements start at `ptr` (dangling
            // but aligned when `len` is 0), borrowed with `self`.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
        }
    }

    impl<T: Copy + Default> std::ops::DerefMut for GrowingArray<T> {
        fn deref_mut(&mut self) -> &mut [T] {
            // SAFETY: as `deref`, borrowed mutably with `self`.
            unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
        }
    }

    impl<T: Copy + Default> Drop for GrowingArray<T> {
        fn drop(&mut self) {
            if self.is_mapped() {
                // SAFETY: the mapping this array owns; nothing borrows it
                // any more. A failure could only leak it.
                unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len * size_of::<T>()) };
            } else {
                drop(self.take_heap());
            }
        }
    }
}

/// Elsewhere a `Vec`, whose growth copies: same results, no gain.
#[cfg(not(target_os = "linux"))]
pub struct GrowingArray<T: Copy + Default>(Vec<T>);

#[cfg(not(target_os = "linux"))]
impl<T: Copy + Default> GrowingArray<T> {
    /// An empty array.
    pub fn new() -> Self {
        GrowingArray(Vec::new())
    }

    /// Grows to `len` elements, the new ones `T::default()`.
    pub fn grow_to(&mut self, len: usize) {
        if len > self.0.len() {
            self.0.resize(len, T::default());
        }
    }
}

#[cfg(not(target_os = "linux"))]
impl<T: Copy + Default> std::ops::Deref for GrowingArray<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

#[cfg(not(target_os = "linux"))]
impl<T: Copy + Default> std::ops::DerefMut for GrowingArray<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

impl<T: Copy + Default> Default for GrowingArray<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default> Clone for GrowingArray<T> {
    fn clone(&self) -> Self {
        let mut copy = Self::new();
        copy.grow_to(self.len());
        copy.copy_from_slice(self);
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_array_keeps_its_values_and_adds_defaults() {
        let mut a = GrowingArray::<[u64; 8]>::new();
        assert!(a.is_empty());
        let mut len = 0;
        // 64-byte elements: the heap up to 500 000, a mapping from 600 000.
        for grown in [1, 3, 64, 1000, 70_000, 70_000, 500_000, 600_000, 1_300_000] {
            a.grow_to(grown);
            assert_eq!(a.len(), grown);
            assert!(a[len..].iter().all(|v| *v == [0; 8]), "new tail at {grown}");
            assert!(
                a[..len]
                    .iter()
                    .enumerate()
                    .all(|(i, v)| *v == [i as u64; 8]),
                "kept head at {grown}"
            );
            for (i, v) in a.iter_mut().enumerate().skip(len) {
                *v = [i as u64; 8];
            }
            len = grown;
        }
        let copy = a.clone();
        drop(a);
        assert!(copy.iter().enumerate().all(|(i, v)| *v == [i as u64; 8]));
    }

    #[test]
    fn filled_vec_holds_the_value_at_every_size() {
        for len in [0, 1, 1000, (HUGE_PAGE / 8) * 3 + 5] {
            let v = filled_vec(len, 7u64);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 7));
        }
    }
}
