//! Elementwise transcendental kernels for encoder models: `exp`, the exact (erf) GELU and
//! softmax over f32 slices.
//!
//! libm's `expf` is a call per element, which LLVM cannot vectorize; in a BERT forward pass
//! the FFN's GELU and the attention softmax made it about a tenth of the run time. Here
//! `exp` is a branch-free Cephes-style polynomial (range reduction by `ln 2`, degree-6
//! polynomial, exponent bits built directly), so loops over slices compiled inside the
//! `#[target_feature]` wrappers become AVX2 / AVX-512 code. The `*_ref` functions evaluate
//! the same formulas in f64 with libm: the references the property tests hold these to.

use crate::isa::{Isa, best_isa};

/// Below this, `exp` returns 0 (the exact result is under 2^-125, far below anything a
/// softmax or erfc keeps).
const EXP_LO: f32 = -87.0;
/// Above this, `exp` overflows to +inf like libm.
const EXP_HI: f32 = 88.72284;

/// `e^x` to within about 2 ulp; 0 below -87, +inf above 88.72, NaN for NaN.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    exp_impl::<false>(x)
}

/// `c + a·b`, fused where the caller's target has FMA (`mul_add` is a libm call
/// otherwise, so the portable path keeps the plain form).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { c + a * b }
}

#[inline(always)]
pub(crate) fn exp_impl<const FMA: bool>(x: f32) -> f32 {
    // Not `clamp`: that keeps NaN, and NaN must not reach the exponent bits below (it is
    // answered by the select at the end).
    #[allow(clippy::manual_clamp)]
    let xc = x.max(EXP_LO).min(EXP_HI);
    // x = n ln2 + r with |r| <= ln2 / 2; ln 2 split in two so n·C1 is exact.
    let n = (xc * std::f32::consts::LOG2_E + 0.5).floor();
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let y = p * (r * r) + r + 1.0;
    // n as an integer without `as i32`, whose saturating semantics LLVM scalarizes: adding
    // 1.5 * 2^23 puts n (|n| < 2^22) in the low mantissa bits. Then 2^n as 2^(n-1) · 2:
    // n reaches 128 at the top of the range, whose exponent field 255 would read as
    // inf/NaN; n - 1 >= -126 stays a normal number at the bottom.
    let ni = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits(ni.wrapping_add(126) << 23);
    let e = (y * 2.0) * scale; // in this order: y · 2^(n-1) alone can be subnormal
    if x < EXP_LO {
        0.0
    } else if x.is_nan() {
        x
    } else {
        e
    }
}

/// erf via Numerical Recipes' Chebyshev fit of erfc (fractional error below 1.2e-7),
/// branch-free so it vectorizes.
#[inline(always)]
pub fn erf_fast(x: f32) -> f32 {
    erf_impl::<false>(x)
}

#[inline(always)]
fn erf_impl<const FMA: bool>(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / madd::<FMA>(0.5, z, 1.0);
    // Horner from the highest coefficient of the fit's polynomial in t.
    let mut p = 0.170_872_77;
    for c in [
        -0.822_152_2,
        1.488_515_9,
        -1.135_204,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_7,
    ] {
        p = madd::<FMA>(p, t, c);
    }
    let erfc = t * exp_impl::<FMA>(madd::<FMA>(t, p, madd::<FMA>(-z, z, -1.265_512_2)));
    if x >= 0.0 { 1.0 - erfc } else { erfc - 1.0 }
}

/// transformers' `gelu`, the exact form `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    gelu_impl::<false>(x)
}

#[inline(always)]
pub(crate) fn gelu_impl<const FMA: bool>(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_impl::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Reference for [`erf_fast`]: the same fit in f64 with libm's `exp`.
pub fn erf_ref(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = 1.000_023_68
        + t * (0.374_091_96
            + t * (0.096_784_18
                + t * (-0.186_288_06
                    + t * (0.278_868_07
                        + t * (-1.135_203_98
                            + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))));
    let erfc = t * (-z * z - 1.265_512_23 + t * poly).exp();
    if x >= 0.0 { 1.0 - erfc } else { erfc - 1.0 }
}

/// Reference for [`gelu_erf`].
pub fn gelu_erf_ref(x: f64) -> f64 {
    0.5 * x * (1.0 + erf_ref(x * std::f64::consts::FRAC_1_SQRT_2))
}

/// `x[i] = gelu(x[i])`.
pub fn gelu_inplace(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match best_isa() {
        // SAFETY: the tier was detected at run time.
        Isa::Avx512Vnni => return unsafe { gelu_avx512(x) },
        Isa::Avx2 => return unsafe { gelu_avx2(x) },
        _ => {}
    }
    gelu_generic::<false>(x);
}

#[inline(always)]
fn gelu_generic<const FMA: bool>(x: &mut [f32]) {
    for v in x {
        *v = gelu_impl::<FMA>(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn gelu_avx512(x: &mut [f32]) {
    gelu_generic::<true>(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(x: &mut [f32]) {
    gelu_generic::<true>(x)
}

/// Softmax of `x` in place (max-subtracted). An empty slice is left alone; a row of
/// `-inf` becomes NaN, as in torch.
pub fn softmax_inplace(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match best_isa() {
        // SAFETY: the tier was detected at run time.
        Isa::Avx512Vnni => return unsafe { softmax_avx512(x) },
        Isa::Avx2 => return unsafe { softmax_avx2(x) },
        _ => {}
    }
    softmax_generic::<false>(x);
}

/// Lanes of the max and sum reductions: float reductions only vectorize when written
/// as independent lanes (LLVM may not reassociate a single running sum).
const LANES: usize = 16;

#[inline(always)]
fn softmax_generic<const FMA: bool>(x: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let mut lane_max = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &v) in lane_max.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    let mut max = lane_max.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for &v in chunks.remainder() {
        max = max.max(v);
    }
    let mut lane_sum = [0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, v) in lane_sum.iter_mut().zip(c) {
            *v = exp_impl::<FMA>(*v - max);
            *s += *v;
        }
    }
    let mut sum: f32 = lane_sum.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp_impl::<FMA>(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn softmax_avx512(x: &mut [f32]) {
    softmax_generic::<true>(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(x: &mut [f32]) {
    softmax_generic::<true>(x)
}

/// `x[i] = e^(x[i] - shift)`, returning `Σ x[i]`: the exponentials of a softmax or a
/// log-sum-exp whose maximum the caller has (a training pass's attention rows and its
/// cross-entropy over the vocabulary, tens of millions of `exp` a step). The sum runs in
/// [`LANES`] lanes, then the remainder.
pub fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match best_isa() {
        // SAFETY: the tier was detected at run time.
        Isa::Avx512Vnni => return unsafe { exp_shifted_sum_avx512(x, shift) },
        Isa::Avx2 => return unsafe { exp_shifted_sum_avx2(x, shift) },
        _ => {}
    }
    exp_shifted_sum_generic::<false>(x, shift)
}

#[inline(always)]
fn exp_shifted_sum_generic<const FMA: bool>(x: &mut [f32], shift: f32) -> f32 {
    let mut lane_sum = [0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, v) in lane_sum.iter_mut().zip(c) {
            *v = exp_impl::<FMA>(*v - shift);
            *s += *v;
        }
    }
    let mut sum: f32 = lane_sum.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp_impl::<FMA>(*v - shift);
        sum += *v;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn exp_shifted_sum_avx512(x: &mut [f32], shift: f32) -> f32 {
    exp_shifted_sum_generic::<true>(x, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_sum_avx2(x: &mut [f32], shift: f32) -> f32 {
    exp_shifted_sum_generic::<true>(x, shift)
}

/// `out[i] = 1 / (1 + e^(-x[i]))` (SwiGLU's gate in a training pass: one `exp` per
/// element of every feed-forward activation, forward and backward).
pub fn sigmoid_into(out: &mut [f32], x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    match best_isa() {
        // SAFETY: the tier was detected at run time.
        Isa::Avx512Vnni => return unsafe { sigmoid_avx512(out, x) },
        Isa::Avx2 => return unsafe { sigmoid_avx2(out, x) },
        _ => {}
    }
    sigmoid_generic::<false>(out, x)
}

#[inline(always)]
fn sigmoid_generic<const FMA: bool>(out: &mut [f32], x: &[f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = 1.0 / (1.0 + exp_impl::<FMA>(-v));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn sigmoid_avx512(out: &mut [f32], x: &[f32]) {
    sigmoid_generic::<true>(out, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sigmoid_avx2(out: &mut [f32], x: &[f32]) {
    sigmoid_generic::<true>(out, x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rel(got: f32, want: f64) -> f64 {
        (f64::from(got) - want).abs() / want.abs().max(f64::MIN_POSITIVE)
    }

    proptest! {
        #[test]
        fn exp_matches_libm(x in -86.9f32..88.7) {
            let want = f64::from(x).exp();
            prop_assert!(rel(exp_fast(x), want) < 3e-7, "exp({x}) = {} vs {want}", exp_fast(x));
        }

        #[test]
        fn gelu_matches_reference(xs in proptest::collection::vec(-12f32..12.0, 1..70)) {
            let mut got = xs.clone();
            gelu_inplace(&mut got);
            for (&x, &g) in xs.iter().zip(&got) {
                let want = gelu_erf_ref(f64::from(x));
                prop_assert!((f64::from(g) - want).abs() < 2e-6 * (1.0 + want.abs()),
                    "gelu({x}) = {g} vs {want}");
                let scalar = f64::from(gelu_erf(x));
                prop_assert!((scalar - want).abs() < 2e-6 * (1.0 + want.abs()), "scalar gelu({x})");
            }
        }

        #[test]
        fn softmax_matches_f64(xs in proptest::collection::vec(-30f32..30.0, 1..90)) {
            let mut got = xs.clone();
            softmax_inplace(&mut got);
            let max = xs.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(f64::from(b)));
            let e: Vec<f64> = xs.iter().map(|&v| (f64::from(v) - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (&g, &w) in got.iter().zip(&e) {
                prop_assert!((f64::from(g) - w / sum).abs() < 1e-6, "{g} vs {}", w / sum);
            }
        }
    }

    proptest! {
        #[test]
        fn shifted_exponentials_and_their_sum_match_f64(
            xs in proptest::collection::vec(-30f32..30.0, 0..90), shift in -5f32..35.0
        ) {
            let mut got = xs.clone();
            let sum = exp_shifted_sum(&mut got, shift);
            // The difference is an f32, as the kernel computes it.
            let e: Vec<f64> = xs.iter().map(|&v| f64::from(v - shift).exp()).collect();
            for (&g, &w) in got.iter().zip(&e) {
                prop_assert!(rel(g, w) < 3e-7, "{g} vs {w}");
            }
            let want: f64 = e.iter().sum();
            prop_assert!((f64::from(sum) - want).abs() <= 1e-6 * want, "{sum} vs {want}");
        }
    }

    proptest! {
        #[test]
        fn sigmoid_matches_f64(xs in proptest::collection::vec(-100f32..100.0, 0..90)) {
            let mut got = vec![f32::NAN; xs.len()];
            sigmoid_into(&mut got, &xs);
            for (&x, &g) in xs.iter().zip(&got) {
                let want = 1.0 / (1.0 + (-f64::from(x)).exp());
                // Below -87 the result is under f32's normal range: 0 then.
                prop_assert!((f64::from(g) - want).abs() <= 4e-7 * want + 1e-37,
                    "σ({x}) = {g} vs {want}");
            }
        }
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp_fast(0.0), 1.0);
        assert_eq!(exp_fast(-1000.0), 0.0);
        assert_eq!(exp_fast(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_fast(89.0), f32::INFINITY);
        assert!(exp_fast(f32::NAN).is_nan());
        assert!(rel(exp_fast(-86.9), f64::from(-86.9f32).exp()) < 3e-7);
    }

    #[test]
    fn erf_reference_matches_known_values() {
        // erf(0.5), erf(1), erf(2) to 9 digits (A&S tables); odd.
        for (x, want) in [
            (0.5, 0.520_499_878),
            (1.0, 0.842_700_793),
            (2.0, 0.995_322_265),
        ] {
            assert!((erf_ref(x) - want).abs() < 2e-7, "erf_ref({x})");
            assert!(
                (f64::from(erf_fast(x as f32)) - want).abs() < 3e-7,
                "erf({x})"
            );
            assert!((f64::from(erf_fast(-x as f32)) + want).abs() < 3e-7);
        }
    }

    #[test]
    fn softmax_edge_cases() {
        let mut empty: [f32; 0] = [];
        softmax_inplace(&mut empty);
        let mut one = [5.0f32];
        softmax_inplace(&mut one);
        assert_eq!(one, [1.0]);
        // Large logits: max subtraction keeps it finite.
        let mut big = [1000.0f32, 1000.0];
        softmax_inplace(&mut big);
        assert_eq!(big, [0.5, 0.5]);
    }
}
