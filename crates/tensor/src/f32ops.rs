//! f32 helpers for attention (scores = q·k, output += p·v) over f32 or f16
//! (KV cache) data, each with a scalar reference and SIMD dispatch.
//!
//! Mismatched slice lengths use the common prefix (these helpers return
//! plain values, and a panic would be reachable from data); debug builds
//! assert equal lengths to catch caller bugs early.

use half::f16;

use crate::isa::{Isa, best_isa};

/// Scalar reference: Σ a[i]·b[i] with f64 accumulation.
pub fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| *x as f64 * *y as f64)
        .sum::<f64>() as f32
}

/// Scalar reference: y += a·x.
pub fn axpy_f32_scalar(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Scalar reference: Σ a[i]·b[i] with f16 `a`.
pub fn dot_f16_f32_scalar(a: &[f16], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.to_f32() as f64 * *y as f64)
        .sum::<f64>() as f32
}

/// Scalar reference: y += a·x with f16 `x`.
pub fn axpy_f16_f32_scalar(a: f32, x: &[f16], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi.to_f32();
    }
}

/// Σ a[i]·b[i].
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    match best_isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => {
            use crate::x86::avx512::{FloatW, dot_float};
            // SAFETY: tier detected; both slices hold at least n f32.
            unsafe { dot_float(FloatW::F32, a.as_ptr().cast(), b.as_ptr(), n) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            use crate::x86::avx2::dot_float;
            use crate::x86::avx512::FloatW;
            // SAFETY: as above.
            unsafe { dot_float(FloatW::F32, a.as_ptr().cast(), b.as_ptr(), n) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => crate::neon::dot_f32(&a[..n], &b[..n]),
        _ => dot_f32_scalar(&a[..n], &b[..n]),
    }
}

/// y += a·x.
pub fn axpy_f32(a: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    let n = x.len().min(y.len());
    match best_isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => {
            use crate::x86::avx512::{FloatW, axpy_float};
            // SAFETY: tier detected; both slices hold at least n f32.
            unsafe { axpy_float(FloatW::F32, a, x.as_ptr().cast(), y.as_mut_ptr(), n) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            use crate::x86::avx2::axpy_float;
            use crate::x86::avx512::FloatW;
            // SAFETY: as above.
            unsafe { axpy_float(FloatW::F32, a, x.as_ptr().cast(), y.as_mut_ptr(), n) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => crate::neon::axpy_f32(a, &x[..n], &mut y[..n]),
        _ => axpy_f32_scalar(a, &x[..n], &mut y[..n]),
    }
}

/// Σ a[i]·b[i] with an f16 `a` (KV cache).
pub fn dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    match best_isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => {
            use crate::x86::avx512::{FloatW, dot_float};
            // SAFETY: tier detected; a holds n f16, b n f32.
            unsafe { dot_float(FloatW::F16, a.as_ptr().cast(), b.as_ptr(), n) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            use crate::x86::avx2::dot_float;
            use crate::x86::avx512::FloatW;
            // SAFETY: as above.
            unsafe { dot_float(FloatW::F16, a.as_ptr().cast(), b.as_ptr(), n) }
        }
        _ => dot_f16_f32_scalar(&a[..n], &b[..n]),
    }
}

/// y += a·x with an f16 `x` (KV cache).
pub fn axpy_f16_f32(a: f32, x: &[f16], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    let n = x.len().min(y.len());
    match best_isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => {
            use crate::x86::avx512::{FloatW, axpy_float};
            // SAFETY: tier detected; x holds n f16, y n f32.
            unsafe { axpy_float(FloatW::F16, a, x.as_ptr().cast(), y.as_mut_ptr(), n) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            use crate::x86::avx2::axpy_float;
            use crate::x86::avx512::FloatW;
            // SAFETY: as above.
            unsafe { axpy_float(FloatW::F16, a, x.as_ptr().cast(), y.as_mut_ptr(), n) }
        }
        _ => axpy_f16_f32_scalar(a, &x[..n], &mut y[..n]),
    }
}

/// Converts f32 to f16 (round to nearest even), `min(len)` elements.
pub fn f32_to_f16_slice(src: &[f32], dst: &mut [f16]) {
    debug_assert_eq!(src.len(), dst.len());
    let n = src.len().min(dst.len());
    match best_isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => {
            // SAFETY: tier detected; both hold n elements; f16 is a u16.
            unsafe { crate::x86::avx512::f32_to_f16(src.as_ptr(), dst.as_mut_ptr().cast(), n) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: as above.
            unsafe { crate::x86::avx2::f32_to_f16(src.as_ptr(), dst.as_mut_ptr().cast(), n) }
        }
        _ => crate::convert::f32_to_f16_slice_scalar(&src[..n], &mut dst[..n]),
    }
}
