//! `SyncSlice`: a mutable slice that several pool threads write at disjoint
//! indices (each thread owns a block of matmul output rows).
//!
//! Rust cannot prove disjointness across a `Fn` closure shared by threads,
//! so writes are `unsafe` with a documented contract; bounds are still
//! checked, so a wrong index can never write outside the slice.

use core::marker::PhantomData;

/// A `&mut [T]` shareable between threads for disjoint writes.
#[derive(Debug)]
pub struct SyncSlice<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: SyncSlice only hands out access through `unsafe` methods whose
// contract forbids overlapping access; moving T values across threads
// requires T: Send.
unsafe impl<T: Send> Sync for SyncSlice<'_, T> {}
// SAFETY: as above; it is just an exclusive borrow.
unsafe impl<T: Send> Send for SyncSlice<'_, T> {}

impl<'a, T> SyncSlice<'a, T> {
    /// Wraps an exclusive borrow for the duration of `'a`.
    pub fn new(s: &'a mut [T]) -> Self {
        SyncSlice {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _borrow: PhantomData,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `v` at `i`. Out-of-range indices are ignored (and assert in
    /// debug builds).
    ///
    /// # Safety
    /// No other thread may read or write index `i` concurrently (including
    /// through [`SyncSlice::slice_mut`]).
    #[inline]
    pub unsafe fn write(&self, i: usize, v: T) {
        debug_assert!(i < self.len, "SyncSlice::write out of range");
        if i < self.len {
            // SAFETY: in bounds; exclusivity is the caller's contract.
            unsafe { *self.ptr.add(i) = v };
        }
    }

    /// A mutable view of `start..start + len`. Out-of-range requests get an
    /// empty slice (and assert in debug builds).
    ///
    /// # Safety
    /// The range must not be accessed by any other thread while the returned
    /// slice is alive.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, start: usize, len: usize) -> &mut [T] {
        let ok = start.checked_add(len).is_some_and(|e| e <= self.len);
        debug_assert!(ok, "SyncSlice::slice_mut out of range");
        if !ok {
            return &mut [];
        }
        // SAFETY: in bounds; exclusivity is the caller's contract.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}
