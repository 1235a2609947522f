//! Scalar reference kernels for every `vec_dot` pair.
//!
//! These mirror ggml's `*_generic` kernels: integer dot products per block,
//! scaled in float with the same factor order. They define "correct" for the
//! SIMD kernels (which are property-tested against them) and are the
//! fallback on CPUs without the needed SIMD extensions. Callers validate
//! lengths; here `w` and `x` hold exactly `nb` blocks.

use crate::blocks::{
    BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, BlockQ8_1, BlockQ8K,
    q4k_scales_mins, q5_value, q6k_value, read_block,
};
use crate::convert::{F8E4M3_LUT, bf16_to_f32};

#[inline(always)]
fn blk<B: crate::blocks::Block>(bytes: &[u8], i: usize) -> Option<B> {
    read_block(bytes, i)
}

/// Q8_0 · Q8_0.
pub fn q8_0_q8_0(w: &[u8], x: &[u8], nb: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..nb {
        let (Some(a), Some(b)) = (blk::<BlockQ8_0>(w, i), blk::<BlockQ8_0>(x, i)) else {
            break;
        };
        let sumi: i32 =
            a.qs.iter()
                .zip(&b.qs)
                .map(|(&p, &q)| p as i32 * q as i32)
                .sum();
        sumf += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sumf
}

/// Q4_0 · Q8_0.
pub fn q4_0_q8_0(w: &[u8], x: &[u8], nb: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..nb {
        let (Some(a), Some(b)) = (blk::<BlockQ4_0>(w, i), blk::<BlockQ8_0>(x, i)) else {
            break;
        };
        let mut sumi = 0i32;
        for j in 0..16 {
            let v0 = (a.qs[j] & 0x0f) as i32 - 8;
            let v1 = (a.qs[j] >> 4) as i32 - 8;
            sumi += v0 * b.qs[j] as i32 + v1 * b.qs[j + 16] as i32;
        }
        sumf += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sumf
}

/// Q4_1 · Q8_1: `d*dy*sum(q*y) + m*s` per block.
pub fn q4_1_q8_1(w: &[u8], x: &[u8], nb: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..nb {
        let (Some(a), Some(b)) = (blk::<BlockQ4_1>(w, i), blk::<BlockQ8_1>(x, i)) else {
            break;
        };
        let mut sumi = 0i32;
        for j in 0..16 {
            let v0 = (a.qs[j] & 0x0f) as i32;
            let v1 = (a.qs[j] >> 4) as i32;
            sumi += v0 * b.qs[j] as i32 + v1 * b.qs[j + 16] as i32;
        }
        sumf += (a.d.to_f32() * b.d.to_f32()) * sumi as f32 + a.m.to_f32() * b.s.to_f32();
    }
    sumf
}

/// Q5_0 · Q8_0 (ggml's `ggml_vec_dot_q5_0_q8_0_generic`).
pub fn q5_0_q8_0(w: &[u8], x: &[u8], nb: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..nb {
        let (Some(a), Some(b)) = (blk::<BlockQ5_0>(w, i), blk::<BlockQ8_0>(x, i)) else {
            break;
        };
        let sumi: i32 = (0..32)
            .map(|j| (q5_value(&a.qh, &a.qs, j) as i32 - 16) * b.qs[j] as i32)
            .sum();
        sumf += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sumf
}

/// Q5_1 · Q8_1: `d*dy*sum(q*y) + m*s` per block, like Q4_1.
pub fn q5_1_q8_1(w: &[u8], x: &[u8], nb: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..nb {
        let (Some(a), Some(b)) = (blk::<BlockQ5_1>(w, i), blk::<BlockQ8_1>(x, i)) else {
            break;
        };
        let sumi: i32 = (0..32)
            .map(|j| q5_value(&a.qh, &a.qs, j) as i32 * b.qs[j] as i32)
            .sum();
        sumf += (a.d.to_f32() * b.d.to_f32()) * sumi as f32 + a.m.to_f32() * b.s.to_f32();
    }
    sumf
}

/// Q4_K · Q8_K: integer sums per super-block, then `d*dy*sum - dmin*dy*mins`.
pub fn q4_k_q8_k(w: &[u8], x: &[u8], nb: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..nb {
        let (Some(a), Some(b)) = (blk::<BlockQ4K>(w, i), blk::<BlockQ8K>(x, i)) else {
            break;
        };
        let (sc, mn) = q4k_scales_mins(&a.scales);
        let mut summin = 0i32;
        for j in 0..16 {
            summin += b.bsums[j] as i32 * mn[j / 2] as i32;
        }
        let mut sumi = 0i32;
        for j in 0..4 {
            let q = &a.qs[32 * j..32 * j + 32];
            let y = &b.qs[64 * j..64 * j + 64];
            let mut lo = 0i32;
            let mut hi = 0i32;
            for l in 0..32 {
                lo += (q[l] & 0xf) as i32 * y[l] as i32;
                hi += (q[l] >> 4) as i32 * y[l + 32] as i32;
            }
            sumi += lo * sc[2 * j] as i32 + hi * sc[2 * j + 1] as i32;
        }
        let d = a.d.to_f32() * b.d;
        let dmin = a.dmin.to_f32() * b.d;
        sumf += d * sumi as f32 - dmin * summin as f32;
    }
    sumf
}

/// Q6_K · Q8_K.
pub fn q6_k_q8_k(w: &[u8], x: &[u8], nb: usize) -> f32 {
    let mut sumf = 0.0f32;
    for i in 0..nb {
        let (Some(a), Some(b)) = (blk::<BlockQ6K>(w, i), blk::<BlockQ8K>(x, i)) else {
            break;
        };
        let mut sumi = 0i32;
        for g in 0..16 {
            let mut s = 0i32;
            for k in 16 * g..16 * g + 16 {
                s += (q6k_value(&a, k) as i32 - 32) * b.qs[k] as i32;
            }
            sumi += s * a.scales[g] as i32;
        }
        sumf += (a.d.to_f32() * b.d) * sumi as f32;
    }
    sumf
}

/// Reads little-endian f32 number `i` of `x`.
#[inline(always)]
pub(crate) fn f32_at(x: &[u8], i: usize) -> f32 {
    let c = &x[4 * i..4 * i + 4];
    f32::from_le_bytes([c[0], c[1], c[2], c[3]])
}

/// F32 · F32 (f64 accumulation, like ggml's scalar path).
pub fn f32_f32(w: &[u8], x: &[u8], n: usize) -> f32 {
    (0..n)
        .map(|i| f32_at(w, i) as f64 * f32_at(x, i) as f64)
        .sum::<f64>() as f32
}

/// F16 · F32.
pub fn f16_f32(w: &[u8], x: &[u8], n: usize) -> f32 {
    (0..n)
        .map(|i| {
            half::f16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32() as f64 * f32_at(x, i) as f64
        })
        .sum::<f64>() as f32
}

/// BF16 · F32.
pub fn bf16_f32(w: &[u8], x: &[u8], n: usize) -> f32 {
    (0..n)
        .map(|i| {
            bf16_to_f32(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])) as f64 * f32_at(x, i) as f64
        })
        .sum::<f64>() as f32
}

/// F8E4M3 · F8Act: both row scales are applied once at the end, as in
/// fbgemm's `f8f8bf16_rowwise` (`y = (Σ xq·wq) · t · s`).
pub fn f8_f8act(w: &[u8], x: &[u8], n: usize) -> f32 {
    let (sw, sx) = (f32_at(w, 0), f32_at(x, 0));
    let (body, xs) = (&w[4..], &x[4..]);
    let s: f64 = (0..n)
        .map(|i| F8E4M3_LUT[body[i] as usize] as f64 * f32_at(xs, i) as f64)
        .sum();
    (s * sw as f64 * sx as f64) as f32
}

/// F8Act · F8Act (for tests of the activation format).
pub fn f8act_f8act(w: &[u8], x: &[u8], n: usize) -> f32 {
    let (sw, sx) = (f32_at(w, 0), f32_at(x, 0));
    let (ws, xs) = (&w[4..], &x[4..]);
    let s: f64 = (0..n)
        .map(|i| f32_at(ws, i) as f64 * f32_at(xs, i) as f64)
        .sum();
    (s * sw as f64 * sx as f64) as f32
}
