//! `vec_dot`: one weight row times one activation row, dispatched to the
//! best kernel for the CPU.
//!
//! Kernels are resolved to a plain function pointer ([`RowDot`]) once per
//! call site (e.g. once per `matmul`), so the per-row cost is one indirect
//! call. All length checks happen here, before any kernel runs; kernels then
//! trust their pointers.

use crate::isa::{Isa, best_isa};
use crate::{DType, TensorError, dot_scalar as sc};

/// A resolved row kernel: `(weight row, activation row, n elements) -> dot`.
///
/// # Safety
/// `w` must be valid for `dtype.row_bytes(n)` bytes, `x` for
/// `dtype.vec_dot_type().row_bytes(n)` bytes, and the CPU must support the
/// tier the kernel was selected for.
pub(crate) type RowDot = unsafe fn(*const u8, *const u8, usize) -> f32;

/// A row kernel for 4 tokens at once (weights unpacked once, used 4 times).
/// Same safety contract as [`RowDot`], for each of the 4 activation rows.
pub(crate) type RowDot4 = unsafe fn(*const u8, [*const u8; 4], usize) -> [f32; 4];
/// Eight-token variant of [`RowDot4`].
pub(crate) type RowDot8 = unsafe fn(*const u8, [*const u8; 8], usize) -> [f32; 8];

macro_rules! scalar_wrap {
    ($name:ident, $f:path, $w:expr, $x:expr, $per:expr) => {
        /// Scalar kernel behind the `RowDot` signature.
        unsafe fn $name(w: *const u8, x: *const u8, n: usize) -> f32 {
            let wl = $w.row_bytes(n).unwrap_or(0);
            let xl = $x.row_bytes(n).unwrap_or(0);
            // SAFETY: the caller guarantees both rows are that long.
            let (ws, xs) = unsafe {
                (
                    core::slice::from_raw_parts(w, wl),
                    core::slice::from_raw_parts(x, xl),
                )
            };
            $f(ws, xs, n / $per)
        }
    };
}

scalar_wrap!(s_q8_0, sc::q8_0_q8_0, DType::Q8_0, DType::Q8_0, 32);
scalar_wrap!(s_q4_0, sc::q4_0_q8_0, DType::Q4_0, DType::Q8_0, 32);
scalar_wrap!(s_q4_1, sc::q4_1_q8_1, DType::Q4_1, DType::Q8_1, 32);
scalar_wrap!(s_q5_0, sc::q5_0_q8_0, DType::Q5_0, DType::Q8_0, 32);
scalar_wrap!(s_q5_1, sc::q5_1_q8_1, DType::Q5_1, DType::Q8_1, 32);
scalar_wrap!(s_q4_k, sc::q4_k_q8_k, DType::Q4_K, DType::Q8_K, 256);
scalar_wrap!(s_q6_k, sc::q6_k_q8_k, DType::Q6_K, DType::Q8_K, 256);
scalar_wrap!(s_f32, sc::f32_f32, DType::F32, DType::F32, 1);
scalar_wrap!(s_f16, sc::f16_f32, DType::F16, DType::F32, 1);
scalar_wrap!(s_bf16, sc::bf16_f32, DType::BF16, DType::F32, 1);
scalar_wrap!(s_f8, sc::f8_f8act, DType::F8E4M3, DType::F8Act, 1);
scalar_wrap!(s_f8act, sc::f8act_f8act, DType::F8Act, DType::F8Act, 1);

#[cfg(target_arch = "x86_64")]
mod x86w {
    //! Adapters from the x86 kernels to the `RowDot` signature.
    use crate::x86::avx512::{FloatW, Legacy};
    use crate::x86::{avx2, avx512};

    macro_rules! wrap {
        ($name:ident, $body:expr) => {
            pub(super) unsafe fn $name(w: *const u8, x: *const u8, n: usize) -> f32 {
                // SAFETY: forwarded caller contract (features + lengths).
                unsafe { $body(w, x, n) }
            }
        };
    }
    wrap!(z_q8_0, |w, x, n: usize| avx512::dot_legacy(
        Legacy::Q8_0,
        w,
        x,
        n / 32
    ));
    wrap!(z_q4_0, |w, x, n: usize| avx512::dot_legacy(
        Legacy::Q4_0,
        w,
        x,
        n / 32
    ));
    wrap!(z_q4_1, |w, x, n: usize| avx512::dot_legacy(
        Legacy::Q4_1,
        w,
        x,
        n / 32
    ));
    wrap!(z_q5_0, |w, x, n: usize| avx512::dot_legacy(
        Legacy::Q5_0,
        w,
        x,
        n / 32
    ));
    wrap!(z_q5_1, |w, x, n: usize| avx512::dot_legacy(
        Legacy::Q5_1,
        w,
        x,
        n / 32
    ));
    wrap!(z_q4_k, |w, x, n: usize| avx512::dot_q4_k(w, x, n / 256));
    wrap!(z_q6_k, |w, x, n: usize| avx512::dot_q6_k(w, x, n / 256));
    wrap!(z_f32, |w, x: *const u8, n| avx512::dot_float(
        FloatW::F32,
        w,
        x.cast(),
        n
    ));
    wrap!(z_f16, |w, x: *const u8, n| avx512::dot_float(
        FloatW::F16,
        w,
        x.cast(),
        n
    ));
    wrap!(z_bf16, |w, x: *const u8, n| avx512::dot_float(
        FloatW::BF16,
        w,
        x.cast(),
        n
    ));
    wrap!(z_f8, |w: *const u8, x: *const u8, n| {
        // Weight row: f32 scale + E4M3 bytes; activation row: f32 scale +
        // E4M3 values widened to f32 (DType::F8Act).
        let sw = f32::from_le_bytes(core::ptr::read_unaligned(w as *const [u8; 4]));
        let sx = f32::from_le_bytes(core::ptr::read_unaligned(x as *const [u8; 4]));
        avx512::dot_float(FloatW::F8, w.add(4), x.add(4).cast(), n) * sw * sx
    });
    pub(super) unsafe fn z4_q4_k(w: *const u8, x: [*const u8; 4], n: usize) -> [f32; 4] {
        // SAFETY: forwarded caller contract (features + lengths).
        unsafe { avx512::dot_q4_k_multi::<4>(w, x, n / 256) }
    }
    pub(super) unsafe fn z4_q6_k(w: *const u8, x: [*const u8; 4], n: usize) -> [f32; 4] {
        // SAFETY: forwarded caller contract (features + lengths).
        unsafe { avx512::dot_q6_k_multi::<4>(w, x, n / 256) }
    }
    pub(super) unsafe fn z8_q4_k(w: *const u8, x: [*const u8; 8], n: usize) -> [f32; 8] {
        // SAFETY: forwarded caller contract (features + lengths).
        unsafe { avx512::dot_q4_k_multi::<8>(w, x, n / 256) }
    }
    pub(super) unsafe fn z8_q6_k(w: *const u8, x: [*const u8; 8], n: usize) -> [f32; 8] {
        // SAFETY: forwarded caller contract (features + lengths).
        unsafe { avx512::dot_q6_k_multi::<8>(w, x, n / 256) }
    }
    /// Multi-token float kernels: `$kind` weights, f32 activations (F8:
    /// scale-prefixed rows on both sides, see `z_f8`).
    macro_rules! float_multi {
        ($name:ident, $tt:expr, $kind:expr) => {
            pub(super) unsafe fn $name(w: *const u8, x: [*const u8; $tt], n: usize) -> [f32; $tt] {
                // SAFETY: forwarded caller contract (features + lengths).
                unsafe {
                    if $kind == FloatW::F8 {
                        let sw = f32::from_le_bytes(core::ptr::read_unaligned(w as *const [u8; 4]));
                        let v = avx512::dot_float_multi::<$tt>(
                            $kind,
                            w.add(4),
                            x.map(|p| p.add(4).cast()),
                            n,
                        );
                        core::array::from_fn(|t| {
                            let sx = f32::from_le_bytes(core::ptr::read_unaligned(
                                x[t] as *const [u8; 4],
                            ));
                            v[t] * sw * sx
                        })
                    } else {
                        avx512::dot_float_multi::<$tt>($kind, w, x.map(|p| p.cast()), n)
                    }
                }
            }
        };
    }
    float_multi!(z4_f32, 4, FloatW::F32);
    float_multi!(z8_f32, 8, FloatW::F32);
    float_multi!(z4_f16, 4, FloatW::F16);
    float_multi!(z8_f16, 8, FloatW::F16);
    float_multi!(z4_bf16, 4, FloatW::BF16);
    float_multi!(z8_bf16, 8, FloatW::BF16);
    float_multi!(z4_f8, 4, FloatW::F8);
    float_multi!(z8_f8, 8, FloatW::F8);
    wrap!(y_q8_0, |w, x, n: usize| avx2::dot_legacy(
        Legacy::Q8_0,
        w,
        x,
        n / 32
    ));
    wrap!(y_q4_0, |w, x, n: usize| avx2::dot_legacy(
        Legacy::Q4_0,
        w,
        x,
        n / 32
    ));
    wrap!(y_q4_1, |w, x, n: usize| avx2::dot_legacy(
        Legacy::Q4_1,
        w,
        x,
        n / 32
    ));
    wrap!(y_q5_0, |w, x, n: usize| avx2::dot_legacy(
        Legacy::Q5_0,
        w,
        x,
        n / 32
    ));
    wrap!(y_q5_1, |w, x, n: usize| avx2::dot_legacy(
        Legacy::Q5_1,
        w,
        x,
        n / 32
    ));
    wrap!(y_q4_k, |w, x, n: usize| avx2::dot_q4_k(w, x, n / 256));
    wrap!(y_q6_k, |w, x, n: usize| avx2::dot_q6_k(w, x, n / 256));
    wrap!(y_f32, |w, x: *const u8, n| avx2::dot_float(
        FloatW::F32,
        w,
        x.cast(),
        n
    ));
    wrap!(y_f16, |w, x: *const u8, n| avx2::dot_float(
        FloatW::F16,
        w,
        x.cast(),
        n
    ));
    wrap!(y_bf16, |w, x: *const u8, n| avx2::dot_float(
        FloatW::BF16,
        w,
        x.cast(),
        n
    ));
    wrap!(y_f8, |w: *const u8, x: *const u8, n| {
        // Weight row: f32 scale + E4M3 bytes; activation row: f32 scale +
        // E4M3 values widened to f32 (DType::F8Act).
        let sw = f32::from_le_bytes(core::ptr::read_unaligned(w as *const [u8; 4]));
        let sx = f32::from_le_bytes(core::ptr::read_unaligned(x as *const [u8; 4]));
        avx2::dot_float(FloatW::F8, w.add(4), x.add(4).cast(), n) * sw * sx
    });
}

/// The row kernel for weights of `w` on tier `isa` (`None`: not a weight format).
pub(crate) fn row_kernel(isa: Isa, w: DType) -> Option<RowDot> {
    #[cfg(target_arch = "x86_64")]
    {
        use x86w::*;
        let k: Option<RowDot> = match (isa, w) {
            (Isa::Avx512Vnni, DType::Q8_0) => Some(z_q8_0),
            (Isa::Avx512Vnni, DType::Q4_0) => Some(z_q4_0),
            (Isa::Avx512Vnni, DType::Q4_1) => Some(z_q4_1),
            (Isa::Avx512Vnni, DType::Q5_0) => Some(z_q5_0),
            (Isa::Avx512Vnni, DType::Q5_1) => Some(z_q5_1),
            (Isa::Avx512Vnni, DType::Q4_K) => Some(z_q4_k),
            (Isa::Avx512Vnni, DType::Q6_K) => Some(z_q6_k),
            (Isa::Avx512Vnni, DType::F32) => Some(z_f32),
            (Isa::Avx512Vnni, DType::F16) => Some(z_f16),
            (Isa::Avx512Vnni, DType::BF16) => Some(z_bf16),
            (Isa::Avx512Vnni, DType::F8E4M3) => Some(z_f8),
            (Isa::Avx2, DType::Q8_0) => Some(y_q8_0),
            (Isa::Avx2, DType::Q4_0) => Some(y_q4_0),
            (Isa::Avx2, DType::Q4_1) => Some(y_q4_1),
            (Isa::Avx2, DType::Q5_0) => Some(y_q5_0),
            (Isa::Avx2, DType::Q5_1) => Some(y_q5_1),
            (Isa::Avx2, DType::Q4_K) => Some(y_q4_k),
            (Isa::Avx2, DType::Q6_K) => Some(y_q6_k),
            (Isa::Avx2, DType::F32) => Some(y_f32),
            (Isa::Avx2, DType::F16) => Some(y_f16),
            (Isa::Avx2, DType::BF16) => Some(y_bf16),
            (Isa::Avx2, DType::F8E4M3) => Some(y_f8),
            _ => None,
        };
        if k.is_some() {
            return k;
        }
    }
    let _ = isa;
    match w {
        DType::Q8_0 => Some(s_q8_0),
        DType::Q4_0 => Some(s_q4_0),
        DType::Q4_1 => Some(s_q4_1),
        DType::Q5_0 => Some(s_q5_0),
        DType::Q5_1 => Some(s_q5_1),
        DType::Q4_K => Some(s_q4_k),
        DType::Q6_K => Some(s_q6_k),
        DType::F32 => Some(s_f32),
        DType::F16 => Some(s_f16),
        DType::BF16 => Some(s_bf16),
        DType::F8E4M3 => Some(s_f8),
        DType::F8Act => Some(s_f8act),
        DType::Q8_1 | DType::Q8_K => None,
    }
}

/// The 4-token row kernel for `w` on `isa`, where one exists.
pub(crate) fn row_kernel4(isa: Isa, w: DType) -> Option<RowDot4> {
    #[cfg(target_arch = "x86_64")]
    {
        match (isa, w) {
            (Isa::Avx512Vnni, DType::Q4_K) => return Some(x86w::z4_q4_k),
            (Isa::Avx512Vnni, DType::Q6_K) => return Some(x86w::z4_q6_k),
            (Isa::Avx512Vnni, DType::F32) => return Some(x86w::z4_f32),
            (Isa::Avx512Vnni, DType::F16) => return Some(x86w::z4_f16),
            (Isa::Avx512Vnni, DType::BF16) => return Some(x86w::z4_bf16),
            (Isa::Avx512Vnni, DType::F8E4M3) => return Some(x86w::z4_f8),
            _ => {}
        }
    }
    let _ = (isa, w);
    None
}

/// The 8-token row kernel for `w` on `isa`, where one exists (k-quants:
/// unpacking a super-block costs about as much as dotting it with 2-3
/// tokens, so amortizing it over 8 tokens pays).
pub(crate) fn row_kernel8(isa: Isa, w: DType) -> Option<RowDot8> {
    #[cfg(target_arch = "x86_64")]
    {
        match (isa, w) {
            (Isa::Avx512Vnni, DType::Q4_K) => return Some(x86w::z8_q4_k),
            (Isa::Avx512Vnni, DType::Q6_K) => return Some(x86w::z8_q6_k),
            (Isa::Avx512Vnni, DType::F32) => return Some(x86w::z8_f32),
            (Isa::Avx512Vnni, DType::F16) => return Some(x86w::z8_f16),
            (Isa::Avx512Vnni, DType::BF16) => return Some(x86w::z8_bf16),
            (Isa::Avx512Vnni, DType::F8E4M3) => return Some(x86w::z8_f8),
            _ => {}
        }
    }
    let _ = (isa, w);
    None
}

/// Checks a (weight row, activation row) pair for `n` elements and returns
/// the kernel for `isa`.
pub(crate) fn checked_kernel(
    op: &'static str,
    isa: Isa,
    w: DType,
    w_len: usize,
    x_len: usize,
    n: usize,
) -> Result<RowDot, TensorError> {
    let k = row_kernel(isa, w).ok_or(TensorError::Unsupported { op, dtype: w })?;
    let wl = w.row_bytes_for(op, n)?;
    if w_len != wl {
        return Err(TensorError::len(op, w, "weight row", "bytes", wl, w_len));
    }
    let vt = w.vec_dot_type();
    let xl = vt.row_bytes_for(op, n)?;
    if x_len != xl {
        return Err(TensorError::len(
            op,
            vt,
            "activation row",
            "bytes",
            xl,
            x_len,
        ));
    }
    Ok(k)
}

/// dot(weight row, activation row) for one row of `n` elements; `x_row` is
/// in `w.vec_dot_type()` format. Uses the best SIMD tier.
pub fn vec_dot(w: DType, w_row: &[u8], x_row: &[u8], n: usize) -> Result<f32, TensorError> {
    vec_dot_with(best_isa(), w, w_row, x_row, n)
}

/// [`vec_dot`] on an explicit tier (tests compare tiers; unavailable tiers
/// fall back to scalar).
pub fn vec_dot_with(
    isa: Isa,
    w: DType,
    w_row: &[u8],
    x_row: &[u8],
    n: usize,
) -> Result<f32, TensorError> {
    let isa = if isa.is_available() { isa } else { Isa::Scalar };
    let k = checked_kernel("vec_dot", isa, w, w_row.len(), x_row.len(), n)?;
    // SAFETY: lengths checked above; `isa` is available on this CPU.
    Ok(unsafe { k(w_row.as_ptr(), x_row.as_ptr(), n) })
}
