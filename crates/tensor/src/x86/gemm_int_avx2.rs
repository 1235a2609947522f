//! AVX2 kernels of [`crate::gemm_int`]: the block quantizer of [`crate::IntActs`] and the
//! 16-row × `M`-token micro-kernel. Both compute what the scalar references compute, in
//! the same order, so the results are the same bits (`tests/gemm_int.rs`).
//!
//! # Safety
//! Every `unsafe fn` needs AVX2 and FMA, and the lengths stated on it.

#![allow(unsafe_op_in_unsafe_fn)]

use core::arch::x86_64::*;

use crate::gemm_int::{INT_BLOCK, NR, PANEL_BLOCK, Panel, TokenChunk, block_scale};

/// The block quantizer of `crate::gemm_int` (integers up to `qmax`) on each of
/// `d.len()` blocks.
///
/// # Safety
/// AVX2 + FMA; `x` and `q` hold `d.len()` blocks, `s` as many values.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn quantize_blocks(
    x: &[f32],
    q: &mut [i16],
    d: &mut [f32],
    s: &mut [f32],
    qmax: f32,
) {
    for b in 0..d.len() {
        let (db, sb) = quantize_block(
            x.as_ptr().add(b * INT_BLOCK),
            q.as_mut_ptr().add(b * INT_BLOCK),
            qmax,
        );
        *d.get_unchecked_mut(b) = db;
        *s.get_unchecked_mut(b) = sb;
    }
}

/// One block: 32 values at `x`, into 32 at `q`, integers up to `qmax`; returns `(d, s)`.
///
/// # Safety
/// AVX2 + FMA; `x` and `q` valid for 32 values.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn quantize_block(x: *const f32, q: *mut i16, qmax: f32) -> (f32, f32) {
    let v = [
        _mm256_loadu_ps(x),
        _mm256_loadu_ps(x.add(8)),
        _mm256_loadu_ps(x.add(16)),
        _mm256_loadu_ps(x.add(24)),
    ];
    // v - v is 0 for finite values, NaN for a NaN or an infinity.
    let z = _mm256_add_ps(
        _mm256_add_ps(_mm256_sub_ps(v[0], v[0]), _mm256_sub_ps(v[1], v[1])),
        _mm256_add_ps(_mm256_sub_ps(v[2], v[2]), _mm256_sub_ps(v[3], v[3])),
    );
    let zero_q = |q: *mut i16| {
        _mm256_storeu_si256(q as *mut __m256i, _mm256_setzero_si256());
        _mm256_storeu_si256(q.add(16) as *mut __m256i, _mm256_setzero_si256());
    };
    if _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(z, z)) != 0 {
        zero_q(q);
        return (f32::NAN, f32::NAN);
    }
    let sign = _mm256_set1_ps(-0.0);
    let a = _mm256_max_ps(
        _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
        _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
    );
    let h = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_max_ss(h, _mm_shuffle_ps::<1>(h, h));
    let amax = _mm_cvtss_f32(h);
    let Some((d, id)) = block_scale(amax, qmax) else {
        zero_q(q);
        return (0.0, 0.0);
    };
    let vid = _mm256_set1_ps(id);
    // Round half to even (the default MXCSR mode), as the reference's `round_ties_even`.
    let i: [__m256i; 4] = core::array::from_fn(|j| _mm256_cvtps_epi32(_mm256_mul_ps(v[j], vid)));
    // packs interleaves 128-bit lanes; the permute puts the values back in order.
    let lo = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(i[0], i[1]));
    let hi = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(i[2], i[3]));
    _mm256_storeu_si256(q as *mut __m256i, lo);
    _mm256_storeu_si256(q.add(16) as *mut __m256i, hi);
    let s = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
    let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    (d, d * _mm_cvtsi128_si32(s) as f32)
}

/// The panel interleave of [`crate::gemm_int`] for vector `v` (8 rows) of a block:
/// `dst` points at the block plus `16 v`; step `p` of lane `i` is `q[i][2p..2p + 2]`.
/// An 8 × 8 transpose of i16 pairs (32-bit elements), twice.
///
/// # Safety
/// AVX2; `dst` is valid for the panel block (`16 · 32` i16 past the block start).
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn interleave(q: &[[i16; INT_BLOCK]; 8], dst: *mut i16) {
    for half in 0..2 {
        let r: [__m256i; 8] = core::array::from_fn(|i| {
            _mm256_loadu_si256(q[i].as_ptr().add(16 * half) as *const __m256i)
        });
        // Element (i, j) is pair j of row i; after the transpose vector j holds pair j of
        // rows 0..8.
        let t: [__m256i; 8] = core::array::from_fn(|k| {
            let (a, b) = (r[2 * (k / 2)], r[2 * (k / 2) + 1]);
            if k % 2 == 0 {
                _mm256_unpacklo_epi32(a, b)
            } else {
                _mm256_unpackhi_epi32(a, b)
            }
        });
        // u[g * 4 + c]: rows 4g..4g + 4, pairs c (low lane) and c + 4 (high lane).
        let u: [__m256i; 8] = core::array::from_fn(|k| {
            let (g, c) = (k / 4, k % 4);
            let (a, b) = (t[4 * g + c / 2], t[4 * g + c / 2 + 2]);
            if c % 2 == 0 {
                _mm256_unpacklo_epi64(a, b)
            } else {
                _mm256_unpackhi_epi64(a, b)
            }
        });
        for c in 0..4 {
            let lo = _mm256_permute2x128_si256::<0x20>(u[c], u[4 + c]);
            let hi = _mm256_permute2x128_si256::<0x31>(u[c], u[4 + c]);
            let p = 8 * half + c;
            _mm256_storeu_si256(dst.add(p * 32) as *mut __m256i, lo);
            _mm256_storeu_si256(dst.add((p + 4) * 32) as *mut __m256i, hi);
        }
    }
}

/// [`crate::gemm_int::tile_scalar`] for `M` tokens, `MIN`: the weights have a min.
///
/// # Safety
/// AVX2 + FMA; the panel holds `nb` blocks and every token chunk `nb` blocks (checked
/// by the caller).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn tile<const M: usize, const MIN: bool>(
    p: &Panel,
    nb: usize,
    first: bool,
    x: &[TokenChunk<'_>; M],
    acc: [&mut [f32; NR]; M],
) {
    let acc: [*mut f32; M] = acc.map(|a| {
        if first {
            a.fill(0.0);
        }
        a.as_mut_ptr()
    });
    // The f32 chains live in `acc` (L1) and are touched once per block; the integer
    // sums of a block stay in registers.
    let wq = p.q.as_ptr();
    for b in 0..nb {
        let mut s = [[_mm256_setzero_si256(); 2]; M];
        let wb = wq.add(b * PANEL_BLOCK);
        let xb: [*const i32; M] =
            core::array::from_fn(|t| x[t].q.as_ptr().add(b * INT_BLOCK) as *const i32);
        for kp in 0..INT_BLOCK / 2 {
            let w0 = _mm256_loadu_si256(wb.add(kp * 32) as *const __m256i);
            let w1 = _mm256_loadu_si256(wb.add(kp * 32 + 16) as *const __m256i);
            for t in 0..M {
                let xv = _mm256_set1_epi32(xb[t].add(kp).read_unaligned());
                s[t][0] = _mm256_add_epi32(s[t][0], _mm256_madd_epi16(w0, xv));
                s[t][1] = _mm256_add_epi32(s[t][1], _mm256_madd_epi16(w1, xv));
            }
        }
        let d = [
            _mm256_loadu_ps(p.d.as_ptr().add(b * NR)),
            _mm256_loadu_ps(p.d.as_ptr().add(b * NR + 8)),
        ];
        let m = if MIN {
            [
                _mm256_loadu_ps(p.m.as_ptr().add(b * NR)),
                _mm256_loadu_ps(p.m.as_ptr().add(b * NR + 8)),
            ]
        } else {
            [_mm256_setzero_ps(); 2]
        };
        for t in 0..M {
            let dx = _mm256_set1_ps(*x[t].d.as_ptr().add(b));
            let sx = _mm256_set1_ps(*x[t].s.as_ptr().add(b));
            for v in 0..2 {
                let a = acc[t].add(8 * v);
                let mut f = _mm256_loadu_ps(a);
                f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t][v]), _mm256_mul_ps(d[v], dx), f);
                if MIN {
                    f = _mm256_fmadd_ps(m[v], sx, f);
                }
                _mm256_storeu_ps(a, f);
            }
        }
    }
}
