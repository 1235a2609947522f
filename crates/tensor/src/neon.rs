//! aarch64 NEON kernels for the f32 attention helpers.
//!
//! Quantized dots on aarch64 currently use the scalar reference kernels;
//! NEON (and `sdot`) versions of those are future work.

use core::arch::aarch64::*;

/// Σ a[i]·b[i] (equal lengths).
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut i = 0;
    // SAFETY: NEON is baseline on aarch64; every load is within `n`.
    unsafe {
        let mut acc0 = vdupq_n_f32(0.0);
        let mut acc1 = vdupq_n_f32(0.0);
        while i + 8 <= n {
            acc0 = vfmaq_f32(
                acc0,
                vld1q_f32(a.as_ptr().add(i)),
                vld1q_f32(b.as_ptr().add(i)),
            );
            acc1 = vfmaq_f32(
                acc1,
                vld1q_f32(a.as_ptr().add(i + 4)),
                vld1q_f32(b.as_ptr().add(i + 4)),
            );
            i += 8;
        }
        let mut s = vaddvq_f32(vaddq_f32(acc0, acc1));
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }
}

/// y += a·x (equal lengths).
pub(crate) fn axpy_f32(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let mut i = 0;
    // SAFETY: NEON is baseline on aarch64; every access is within `n`.
    unsafe {
        let va = vdupq_n_f32(a);
        while i + 4 <= n {
            let v = vfmaq_f32(
                vld1q_f32(y.as_ptr().add(i)),
                va,
                vld1q_f32(x.as_ptr().add(i)),
            );
            vst1q_f32(y.as_mut_ptr().add(i), v);
            i += 4;
        }
    }
    while i < n {
        y[i] += a * x[i];
        i += 1;
    }
}
