//! `quantize_row`: f32 -> any dtype, following ggml's reference quantizers
//! (`quantize_row_*_ref`) operation by operation.
//!
//! Rounding modes matter for reproducibility and differ per format, exactly
//! as in ggml: Q8_0/Q8_1 use `roundf` (half away from zero), Q4_0/Q4_1 add
//! 8.5/0.5 and truncate, Q5_0/Q5_1 add 16.5/0.5 and truncate, Q8_K uses round-half-to-even (`nearest_int`).
//! (ggml's own SIMD activation quantizers round half to even; this only
//! changes exact .5 ties, which random data essentially never hits.)

use half::f16;

use crate::blocks::{
    BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, BlockQ8K, QK_K, QK8_0,
    write_block,
};
use crate::convert::{F8E4M3_MAX, f32_to_bf16, f32_to_f8e4m3};
use crate::{DType, TensorError};

const OP: &str = "quantize_row";

/// Encodes `src` (a whole number of blocks) into `dst`, which must be exactly
/// `dtype.row_bytes(src.len())` bytes.
pub fn quantize_row(dtype: DType, src: &[f32], dst: &mut [u8]) -> Result<(), TensorError> {
    let n = src.len();
    let need = dtype.row_bytes_for(OP, n)?;
    if dst.len() != need {
        return Err(TensorError::len(OP, dtype, "dst", "bytes", need, dst.len()));
    }
    match dtype {
        DType::F32 => {
            for (c, s) in dst.chunks_exact_mut(4).zip(src) {
                c.copy_from_slice(&s.to_le_bytes());
            }
        }
        DType::F16 => {
            for (c, s) in dst.chunks_exact_mut(2).zip(src) {
                c.copy_from_slice(&f16::from_f32(*s).to_le_bytes());
            }
        }
        DType::BF16 => {
            for (c, s) in dst.chunks_exact_mut(2).zip(src) {
                c.copy_from_slice(&f32_to_bf16(*s).to_le_bytes());
            }
        }
        DType::F8E4M3 => quantize_f8e4m3(src, dst),
        DType::F8Act => quantize_f8_act(src, dst),
        DType::Q8_0 => {
            #[cfg(target_arch = "x86_64")]
            if crate::isa::best_isa() == crate::isa::Isa::Avx512Vnni {
                // SAFETY: AVX-512 checked at run time; `dst` length checked above.
                unsafe { crate::x86::quant512::quantize_row_q8_0(src, dst) };
                return Ok(());
            }
            for (i, x) in src.chunks_exact(QK8_0).enumerate() {
                put(dst, i, &q8_0_block(x))?;
            }
        }
        DType::Q8_1 => {
            for (i, x) in src.chunks_exact(QK8_0).enumerate() {
                put(dst, i, &q8_1_block(x))?;
            }
        }
        DType::Q4_0 => {
            for (i, x) in src.chunks_exact(QK8_0).enumerate() {
                put(dst, i, &q4_0_block(x))?;
            }
        }
        DType::Q4_1 => {
            for (i, x) in src.chunks_exact(QK8_0).enumerate() {
                put(dst, i, &q4_1_block(x))?;
            }
        }
        DType::Q5_0 => {
            for (i, x) in src.chunks_exact(QK8_0).enumerate() {
                put(dst, i, &q5_0_block(x))?;
            }
        }
        DType::Q5_1 => {
            for (i, x) in src.chunks_exact(QK8_0).enumerate() {
                put(dst, i, &q5_1_block(x))?;
            }
        }
        DType::Q8_K => {
            for (i, x) in src.chunks_exact(QK_K).enumerate() {
                put(dst, i, &q8_k_block(x))?;
            }
        }
        DType::Q4_K => crate::quantize_k::quantize_row_q4_k(src, dst)?,
        DType::Q6_K => crate::quantize_k::quantize_row_q6_k(src, dst)?,
    }
    Ok(())
}

#[inline(always)]
pub(crate) fn put<B: crate::blocks::Block>(
    dst: &mut [u8],
    i: usize,
    b: &B,
) -> Result<(), TensorError> {
    write_block(dst, i, b).ok_or(TensorError::Overflow {
        op: OP,
        what: "block index past the end of the row",
    })
}

/// `x.round() as i8` (half away from zero, saturating), without the libm
/// call `f32::round` compiles to on baseline x86-64 (no SSE4.1), so the
/// activation quantizers vectorize: truncate, then fix up from the exact
/// remainder (`x - trunc(x)` is exact for |x| < 2^23; larger values
/// saturate either way, NaN gives 0 like `as i8`).
#[inline(always)]
fn round_i8(x: f32) -> i8 {
    // Saturate early so the integer steps below cannot overflow.
    let x = x.clamp(-256.0, 256.0);
    let t = x as i32;
    let d = x - t as f32;
    let r = t + (d >= 0.5) as i32 - (d <= -0.5) as i32;
    r.clamp(-128, 127) as i8
}

/// ggml's `nearest_int` for |x| <= 2^22: round half to even through the
/// 1.5 * 2^23 magic constant (bit-identical to `round_ties_even`, but no
/// libm `rintf` call on baseline x86-64).
#[inline(always)]
fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Largest |x| of a block.
#[inline(always)]
fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |a, v| a.max(v.abs()))
}

/// ggml `quantize_row_q8_0_ref` for one block.
#[inline(always)]
pub(crate) fn q8_0_block(x: &[f32]) -> BlockQ8_0 {
    let d = amax(x) / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; 32];
    for (q, v) in qs.iter_mut().zip(x) {
        *q = round_i8(v * id);
    }
    BlockQ8_0 {
        d: f16::from_f32(d),
        qs,
    }
}

/// ggml `quantize_row_q8_1_ref` for one block: `s` is `sum(qs) * d` with the
/// unrounded f32 `d`.
#[inline(always)]
pub(crate) fn q8_1_block(x: &[f32]) -> BlockQ8_1 {
    let d = amax(x) / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; 32];
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(x) {
        *q = round_i8(v * id);
    }
    for q in qs {
        sum += q as i32;
    }
    BlockQ8_1 {
        d: f16::from_f32(d),
        s: f16::from_f32(sum as f32 * d),
        qs,
    }
}

/// ggml `quantize_row_q4_0_ref` for one block: the signed value with the
/// largest magnitude maps to -8.
#[inline(always)]
fn q4_0_block(x: &[f32]) -> BlockQ4_0 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; 16];
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[16 + j] * id;
        let q0 = ((x0 + 8.5) as i8).min(15) as u8;
        let q1 = ((x1 + 8.5) as i8).min(15) as u8;
        qs[j] = q0 | (q1 << 4);
    }
    BlockQ4_0 {
        d: f16::from_f32(d),
        qs,
    }
}

/// ggml `quantize_row_q4_1_ref` for one block.
#[inline(always)]
fn q4_1_block(x: &[f32]) -> BlockQ4_1 {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; 16];
    for j in 0..16 {
        let x0 = (x[j] - min) * id;
        let x1 = (x[16 + j] - min) * id;
        let q0 = ((x0 + 0.5) as i8).min(15) as u8;
        let q1 = ((x1 + 0.5) as i8).min(15) as u8;
        qs[j] = q0 | (q1 << 4);
    }
    BlockQ4_1 {
        d: f16::from_f32(d),
        m: f16::from_f32(min),
        qs,
    }
}

/// Packs 32 five-bit values the Q5 way: low nibbles of elements `j` and
/// `j + 16` share byte `j` of `qs`; bit 4 of element `j` is bit `j` of `qh`.
#[inline(always)]
fn pack_q5(q: &[u8; 32]) -> ([u8; 4], [u8; 16]) {
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for j in 0..16 {
        qs[j] = (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4);
        qh |= (((q[j] & 0x10) >> 4) as u32) << j;
        qh |= (((q[j + 16] & 0x10) >> 4) as u32) << (j + 16);
    }
    (qh.to_le_bytes(), qs)
}

/// ggml `quantize_row_q5_0_ref` for one block: the signed value with the
/// largest magnitude maps to -16 (`d = max / -16`), `q = min(31, (i8)(x/d + 16.5))`.
#[inline(always)]
fn q5_0_block(x: &[f32]) -> BlockQ5_0 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; 32];
    for (o, &v) in q.iter_mut().zip(x) {
        // |v * id| <= 16, so the sum is in 0..=32.5 and the i8 cast is the
        // C truncation (Rust's saturating `as` only differs for NaN -> 0).
        *o = ((v * id + 16.5) as i8).min(31) as u8;
    }
    let (qh, qs) = pack_q5(&q);
    BlockQ5_0 {
        d: f16::from_f32(d),
        qh,
        qs,
    }
}

/// ggml `quantize_row_q5_1_ref` for one block: `d = (max - min) / 31`,
/// `q = (u8)((x - min) / d + 0.5)`.
#[inline(always)]
fn q5_1_block(x: &[f32]) -> BlockQ5_1 {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; 32];
    for (o, &v) in q.iter_mut().zip(x) {
        // 0..=31.5 up to rounding; the clamp (as in the gguf reference) only
        // guards against a last-ulp overshoot, which ggml would wrap.
        *o = (((v - min) * id + 0.5) as u8).min(31);
    }
    let (qh, qs) = pack_q5(&q);
    BlockQ5_1 {
        d: f16::from_f32(d),
        m: f16::from_f32(min),
        qh,
        qs,
    }
}

/// ggml `quantize_row_q8_K_ref` for one block: scale chosen so the signed
/// extreme maps to -127, round half to even, and per-16 sums for the
/// k-quant min/offset terms.
#[inline(always)]
pub(crate) fn q8_k_block(x: &[f32]) -> BlockQ8K {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let mut b = BlockQ8K {
        d: 0.0,
        qs: [0; 256],
        bsums: [0; 16],
    };
    if amax == 0.0 {
        return b;
    }
    let iscale = -127.0 / max;
    for (q, v) in b.qs.iter_mut().zip(x) {
        // |iscale * v| <= 127 (up to rounding), well inside nearest_int's range.
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (j, s) in b.bsums.iter_mut().enumerate() {
        *s = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
    }
    b.d = 1.0 / iscale;
    b
}

/// Our FP8 row: f32 scale (amax / 448) then one E4M3 byte per element.
fn quantize_f8e4m3(src: &[f32], dst: &mut [u8]) {
    let scale = amax(src) / F8E4M3_MAX;
    let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let (head, body) = dst.split_at_mut(4);
    head.copy_from_slice(&scale.to_le_bytes());
    for (b, v) in body.iter_mut().zip(src) {
        *b = f32_to_f8e4m3(v * inv);
    }
}

/// Meta's upper bound on an activation row's FP8 scale input
/// (`fp8_activation_scale_ub`): one outlier token cannot flatten the rest of
/// its row to zero, at the price of clamping values beyond it.
pub const F8_ACT_SCALE_UB: f32 = 1200.0;

/// fbgemm's floor on the row maximum (`quantize_fp8_per_row`), so an all-zero
/// row gets a finite scale.
const F8_ACT_EPS: f32 = 1e-12;

/// An activation row the way Meta's FP8 inference quantizes it (spec §6.2,
/// fbgemm `quantize_fp8_per_row` with `scale_ub = 1200`):
/// `a = min(max|x|, 1200)`, `t = max(a, eps) / 448`,
/// `q = fp8(clamp(x / t, -448, 448))`. Stored as `t` then each `q` as f32.
fn quantize_f8_act(src: &[f32], dst: &mut [u8]) {
    let a = amax(src).clamp(F8_ACT_EPS, F8_ACT_SCALE_UB);
    let t = a / F8E4M3_MAX;
    let inv = F8E4M3_MAX / a;
    let (head, body) = dst.split_at_mut(4);
    head.copy_from_slice(&t.to_le_bytes());
    for (c, v) in body.chunks_exact_mut(4).zip(src) {
        // f32_to_f8e4m3 saturates at ±448, which is the clamp.
        let q = crate::convert::f8e4m3_to_f32(f32_to_f8e4m3(v * inv));
        c.copy_from_slice(&q.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::{nearest_int, round_i8};

    #[test]
    fn rounding_helpers_match_std() {
        let mut v = -140.0f32;
        while v <= 140.0 {
            for x in [v, v + 0.5, v - 0.5, v + 0.49999997, v + 1e-3] {
                assert_eq!(round_i8(x), x.round() as i8, "{x}");
                if x.abs() <= 128.0 {
                    assert_eq!(nearest_int(x), x.round_ties_even() as i32, "{x}");
                }
            }
            v += 0.25;
        }
        assert_eq!(round_i8(f32::NAN), 0);
        assert_eq!(round_i8(1e30), 127);
        assert_eq!(round_i8(-1e30), -128);
    }

    /// The AVX-512 Q8_0 path (taken by `quantize_row` where available) gives the
    /// reference's bytes: random rows, rows built to hit exact .5 ties after
    /// scaling, zeros, and blocks with NaN or infinities.
    #[test]
    fn q8_0_simd_is_bit_identical_to_the_reference() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for n in [32usize, 64, 576, 2048] {
            for scale in [1e-3f32, 1.0, 300.0, 6e4] {
                rows.push(
                    (0..n)
                        .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale)
                        .collect(),
                );
            }
        }
        // amax 127 gives id = 1: k + 0.5 are exact ties, both signs.
        rows.push(
            (0..64)
                .map(|i| {
                    if i % 32 == 0 {
                        127.0
                    } else {
                        ((i % 50) as f32 - 25.0) + 0.5
                    }
                })
                .collect(),
        );
        rows.push(vec![0.0; 64]);
        let mut special = vec![1.5f32; 96];
        special[3] = f32::NAN;
        special[40] = f32::INFINITY;
        special[70] = f32::NEG_INFINITY;
        rows.push(special);
        for x in rows {
            let mut got = vec![0u8; x.len() / 32 * 34];
            super::quantize_row(crate::DType::Q8_0, &x, &mut got).expect("quantize");
            let mut want = Vec::new();
            for b in x.chunks_exact(32) {
                let q = super::q8_0_block(b);
                want.extend_from_slice(&q.d.to_le_bytes());
                want.extend(q.qs.iter().map(|&v| v as u8));
            }
            assert_eq!(got, want, "row of {} starting {:?}", x.len(), &x[..2]);
        }
    }

    fn act_row(x: &[f32]) -> (f32, Vec<f32>) {
        let mut b = vec![0u8; 4 + 4 * x.len()];
        super::quantize_f8_act(x, &mut b);
        let f = |c: &[u8]| f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        (f(&b[..4]), b[4..].chunks_exact(4).map(f).collect())
    }

    #[test]
    fn f8_activations_follow_meta_scale_and_cap() {
        // Hand-derived: amax 896 -> t = 2, values / 2 rounded to E4M3
        // (3.1 -> 1.55 -> 1.5; 448 stays; -10 -> -5).
        let (t, q) = act_row(&[896.0, 3.1, -10.0, 0.0]);
        assert_eq!(t, 2.0);
        assert_eq!(q, vec![448.0, 1.5, -5.0, 0.0]);
        // amax 4800 is capped at 1200 (t = 1200/448): the outlier clamps to
        // 448 (so 4800 comes back as 1200), while 600 keeps its value
        // (600/t = 224 exactly).
        let (t, q) = act_row(&[4800.0, 600.0, -4800.0]);
        assert_eq!(t, 1200.0 / 448.0);
        assert_eq!(q, vec![448.0, 224.0, -448.0]);
        // An all-zero row gets the eps floor, not a division by zero.
        let (t, q) = act_row(&[0.0; 8]);
        assert!(t > 0.0 && t.is_finite());
        assert!(q.iter().all(|&v| v == 0.0));
    }
}
