//! Scalar conversions between f32 and the narrow float formats
//! (f16, bf16, FP8 E4M3), with ggml's rounding rules.
//!
//! f16 uses the `half` crate (round-to-nearest-even, like F16C and numpy).
//! bf16 follows ggml's `ggml_compute_fp32_to_bf16` (RNE, NaN forced quiet).
//! FP8 E4M3 is the OCP "fn" variant (no infinities, max 448), used by our own
//! `F8E4M3` row format.

use half::f16;

/// bf16 bits -> f32 (exact).
#[inline(always)]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// f32 -> bf16 bits, exactly as ggml: NaNs become quiet NaNs, everything
/// else rounds to nearest even.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

/// Largest finite E4M3 value.
pub const F8E4M3_MAX: f32 = 448.0;

/// E4M3 byte -> f32. Builds the f16 with the same bit layout and rebiases
/// (exponent bias 7 vs 15) with one multiply by 2^8; the SIMD kernels use the
/// same trick, so scalar and SIMD agree exactly. 0x7F/0xFF (NaN) decode as
/// NaN here; our quantizer never produces them.
#[inline(always)]
pub fn f8e4m3_to_f32(b: u8) -> f32 {
    if b & 0x7f == 0x7f {
        return f32::NAN;
    }
    let h = (((b & 0x80) as u16) << 8) | (((b & 0x7f) as u16) << 7);
    f16::from_bits(h).to_f32() * 256.0
}

/// f32 -> E4M3 byte, round to nearest even, saturating at ±448 (NaN -> 0).
#[inline(always)]
pub fn f32_to_f8e4m3(x: f32) -> u8 {
    if x.is_nan() {
        return 0;
    }
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    let a = x.abs();
    if a >= F8E4M3_MAX {
        return sign | 0x7e;
    }
    // Below the smallest normal (2^-6) values are multiples of 2^-9.
    if a < 1.0 / 64.0 {
        let q = (a * 512.0).round_ties_even() as u8; // 0..=8; 8 == smallest normal
        return sign | q;
    }
    let bits = a.to_bits();
    let rounded = (bits + 0x7_ffff + ((bits >> 20) & 1)) >> 20;
    // Re-bias the exponent from 127 to 7 (fields are adjacent, so subtract).
    let v = rounded - ((127 - 7) << 3);
    sign | (v.min(0x7e) as u8)
}

/// 256-entry decode table (built once at compile time).
pub static F8E4M3_LUT: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let e = ((b >> 3) & 0xf) as i32;
        let m = (b & 7) as f32;
        let mag = if b & 0x7f == 0x7f {
            f32::NAN
        } else if e == 0 {
            m / 8.0 / 64.0
        } else {
            let mut p = 1.0f32;
            let mut k = 7;
            while k < e {
                p *= 2.0;
                k += 1;
            }
            while k > e {
                p /= 2.0;
                k -= 1;
            }
            (1.0 + m / 8.0) * p
        };
        t[i] = if b & 0x80 != 0 { -mag } else { mag };
        i += 1;
    }
    t
};

/// Converts a slice of f32 to f16 (scalar reference).
pub fn f32_to_f16_slice_scalar(src: &[f32], dst: &mut [f16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(*s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f8_lut_matches_formula_and_roundtrips() {
        for b in 0..=255u8 {
            let v = F8E4M3_LUT[b as usize];
            let f = f8e4m3_to_f32(b);
            if b & 0x7f == 0x7f {
                assert!(v.is_nan() && f.is_nan());
                continue;
            }
            assert_eq!(v.to_bits(), f.to_bits(), "byte {b:#x}");
            // Negative zero encodes back to 0x80; everything else roundtrips.
            assert_eq!(f32_to_f8e4m3(v), b, "value {v}");
        }
        assert_eq!(F8E4M3_LUT[0x7e], 448.0);
        assert_eq!(f32_to_f8e4m3(1e9), 0x7e);
        assert_eq!(f32_to_f8e4m3(-1e9), 0xfe);
    }

    #[test]
    fn f8_rounds_to_nearest_even() {
        // 1.0625 is halfway between 1.0 (0x38) and 1.125 (0x39): ties to even.
        assert_eq!(f32_to_f8e4m3(1.0625), 0x38);
        assert_eq!(f32_to_f8e4m3(1.1875), 0x3a);
        assert_eq!(f32_to_f8e4m3(1.07), 0x39);
    }

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(bf16_to_f32(f32_to_bf16(3.0)), 3.0);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie -> even
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
    }
}
