//! AVX-512 (F/BW/VL/DQ + VNNI) `vec_dot` kernels on ggml's native block layouts.
//!
//! These serve decode (one token: each weight row is streamed once) and
//! `vec_dot`. Design choices, all to keep up with memory bandwidth:
//! - two 32-element blocks per 512-bit register, multiplied with one
//!   `vpdpbusd` (u8 x i8 -> i32, 4 products per lane);
//! - per-block scales of 16 consecutive blocks fetched with one gather and
//!   converted from f16 together, instead of scalar f16 conversions;
//! - k-quants accumulate sub-block scales in integers with `vpdpwssd` (the
//!   4-product dots fit in i16), converting to float once per 256 elements.
//!
//! Activations must lie in -127..=127 (what `quantize_acts` produces): the
//! signed x signed Q8_0 kernel moves the weight sign onto the activation,
//! which would overflow for -128 (ggml has the same contract).
//!
//! # Safety
//! Every `unsafe fn` here requires the CPU features in its `target_feature`
//! list and pointers valid for the stated number of blocks.

#![allow(unsafe_op_in_unsafe_fn)]
// Kernels index small fixed-size register arrays; index loops unroll fully.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

/// Horizontal sum of 16 f32 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn hsum_ps(v: __m512) -> f32 {
    _mm512_reduce_add_ps(v)
}

/// Lane index vectors selecting block `2k` for lanes 0..8 and `2k+1` for
/// lanes 8..16 from a 16-lane per-block scale vector.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn pair_idx(k: i32) -> __m512i {
    let a = _mm512_set1_epi32(2 * k);
    let b = _mm512_set1_epi32(2 * k + 1);
    _mm512_mask_blend_epi32(0xff00, a, b)
}

/// Loads the 32 quant bytes of two consecutive 8-bit blocks (block stride
/// `stride`, quants at `off`); `two == false` loads only the first and zeroes
/// the upper half, so nothing past the row is touched.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_q8_pair(p: *const u8, off: usize, stride: usize, two: bool) -> __m512i {
    let lo = _mm256_loadu_si256(p.add(off) as *const __m256i);
    let hi = if two {
        _mm256_loadu_si256(p.add(stride + off) as *const __m256i)
    } else {
        _mm256_setzero_si256()
    };
    _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
}

/// Unpacks two consecutive 4-bit blocks (16 bytes each, low nibbles are
/// elements 0..16) into 64 bytes in element order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_q4_pair(p: *const u8, off: usize, stride: usize, two: bool) -> __m512i {
    let a = _mm_loadu_si128(p.add(off) as *const __m128i);
    let b = if two {
        _mm_loadu_si128(p.add(stride + off) as *const __m128i)
    } else {
        _mm_setzero_si128()
    };
    let ab = _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1);
    // [a, a, b, b] then shift the 2nd and 4th copies right by 4.
    let dup = _mm512_permutexvar_epi64(
        _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3),
        _mm512_castsi256_si512(ab),
    );
    let sh = _mm512_setr_epi64(
        0,
        0,
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
        0,
        0,
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
    );
    _mm512_and_si512(_mm512_srlv_epi16(dup, sh), _mm512_set1_epi8(0x0f))
}

/// f16 scales in the low (or, with `HI`, high) half of each gathered word.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn f16_lanes<const HI: bool>(words: __m512i) -> __m512 {
    let w = if HI {
        _mm512_srli_epi32(words, 16)
    } else {
        words
    };
    _mm512_cvtph_ps(_mm512_cvtepi32_epi16(w))
}

/// Gathers the first 4 bytes of up to 16 consecutive blocks (lanes past
/// `count` are zero and never read).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gather_heads(p: *const u8, stride: usize, count: usize) -> __m512i {
    let s = stride as i32;
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(s),
    );
    let mask: __mmask16 = if count >= 16 {
        0xffff
    } else {
        ((1u32 << count) - 1) as u16
    };
    _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), mask, idx, p as *const i32)
}

/// Which legacy 32-element format the weights use.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Legacy {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
}

impl Legacy {
    /// Weight block layout: (block bytes, offset of the quants, offset of
    /// Q5's high-bit word, 0 for the 4/8-bit formats).
    #[inline(always)]
    pub(crate) fn layout(self) -> (usize, usize, usize) {
        match self {
            Legacy::Q8_0 => (34, 2, 0),
            Legacy::Q4_0 => (18, 2, 0),
            Legacy::Q4_1 => (20, 4, 0),
            Legacy::Q5_0 => (22, 6, 2),
            Legacy::Q5_1 => (24, 8, 4),
        }
    }

    /// Whether the format has a min (`m`), so it meets Q8_1 activations.
    #[inline(always)]
    pub(crate) fn has_min(self) -> bool {
        matches!(self, Legacy::Q4_1 | Legacy::Q5_1)
    }
}

/// Q5's fifth bits of two consecutive blocks as a byte mask in element order
/// (block one in bits 0..32, block two in 32..64): `qh` is already one bit per
/// element, so it becomes a `__mmask64` with no shuffling at all.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn q5_high_mask(p: *const u8, stride: usize, two: bool) -> __mmask64 {
    let lo = u32::from_le_bytes(core::ptr::read_unaligned(p as *const [u8; 4])) as u64;
    let hi = if two {
        u32::from_le_bytes(core::ptr::read_unaligned(p.add(stride) as *const [u8; 4])) as u64
    } else {
        0
    };
    _cvtu64_mask64(lo | (hi << 32))
}

/// Dot of `nb` legacy blocks of weights with Q8_0/Q8_1 activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
pub(crate) unsafe fn dot_legacy(kind: Legacy, w: *const u8, x: *const u8, nb: usize) -> f32 {
    let (wstride, woff, qhoff) = kind.layout();
    let (xstride, xoff) = if kind.has_min() {
        (36usize, 4usize)
    } else {
        (34, 2)
    };
    let zero = _mm512_setzero_si512();
    let eights = _mm512_set1_epi8(8);
    let sixteens = _mm512_set1_epi8(16);
    let mut acc0 = _mm512_setzero_ps();
    let mut acc1 = _mm512_setzero_ps();
    let mut accm = _mm512_setzero_ps();
    let mut base = 0usize;
    while base < nb {
        let cnt = (nb - base).min(16);
        let wp = w.add(base * wstride);
        let xp = x.add(base * xstride);
        let wh = gather_heads(wp, wstride, cnt);
        let xh = gather_heads(xp, xstride, cnt);
        let scale = _mm512_mul_ps(f16_lanes::<false>(wh), f16_lanes::<false>(xh));
        if kind.has_min() {
            // m * s term: one FMA covers 16 blocks.
            accm = _mm512_fmadd_ps(f16_lanes::<true>(wh), f16_lanes::<true>(xh), accm);
        }
        let pairs = cnt.div_ceil(2);
        for k in 0..pairs {
            let two = 2 * k + 1 < cnt;
            let wb = wp.add(2 * k * wstride);
            let xv = load_q8_pair(xp.add(2 * k * xstride), xoff, xstride, two);
            let dot = match kind {
                Legacy::Q8_0 => {
                    let wv = load_q8_pair(wb, woff, wstride, two);
                    // |w| * (x with w's sign): u8 x i8 as vpdpbusd wants.
                    let neg = _mm512_movepi8_mask(wv);
                    let xs = _mm512_mask_sub_epi8(xv, neg, zero, xv);
                    _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(wv), xs)
                }
                Legacy::Q4_0 => {
                    let wv = load_q4_pair(wb, woff, wstride, two);
                    let d = _mm512_dpbusd_epi32(zero, wv, xv);
                    _mm512_sub_epi32(d, _mm512_dpbusd_epi32(zero, eights, xv))
                }
                Legacy::Q4_1 => {
                    let wv = load_q4_pair(wb, woff, wstride, two);
                    _mm512_dpbusd_epi32(zero, wv, xv)
                }
                Legacy::Q5_0 | Legacy::Q5_1 => {
                    // Low nibbles as Q4, then +16 where the fifth bit is set.
                    let hm = q5_high_mask(wb.add(qhoff), wstride, two);
                    let lo = load_q4_pair(wb, woff, wstride, two);
                    let wv = _mm512_mask_add_epi8(lo, hm, lo, sixteens);
                    let d = _mm512_dpbusd_epi32(zero, wv, xv);
                    if kind == Legacy::Q5_0 {
                        // q - 16: subtract 16 * sum(x).
                        _mm512_sub_epi32(d, _mm512_dpbusd_epi32(zero, sixteens, xv))
                    } else {
                        d
                    }
                }
            };
            let sc = _mm512_permutexvar_ps(pair_idx(k as i32), scale);
            if k % 2 == 0 {
                acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc0);
            } else {
                acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc1);
            }
        }
        base += cnt;
    }
    hsum_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), accm))
}

/// Unpacks the 8 scales and 8 mins of a Q4_K block (ggml's `utmp` trick).
#[inline(always)]
pub(crate) fn q4k_unpack(scales: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let u0 = u32::from_le_bytes([scales[0], scales[1], scales[2], scales[3]]);
    let u1 = u32::from_le_bytes([scales[4], scales[5], scales[6], scales[7]]);
    let u2 = u32::from_le_bytes([scales[8], scales[9], scales[10], scales[11]]);
    let sc_lo = u0 & KMASK1;
    let sc_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let mn_lo = u1 & KMASK1;
    let mn_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    let s = [sc_lo.to_le_bytes(), sc_hi.to_le_bytes()];
    let m = [mn_lo.to_le_bytes(), mn_hi.to_le_bytes()];
    (
        [
            s[0][0], s[0][1], s[0][2], s[0][3], s[1][0], s[1][1], s[1][2], s[1][3],
        ],
        [
            m[0][0], m[0][1], m[0][2], m[0][3], m[1][0], m[1][1], m[1][2], m[1][3],
        ],
    )
}

/// Q4_K's 12 packed scale bytes at `p` (16 bytes readable) unpacked to
/// `[sc0..sc8, mn0..mn8]`, as [`q4k_unpack`] does.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
unsafe fn q4k_scales_mins(p: *const u8) -> __m128i {
    let v = _mm_loadu_si128(p as *const __m128i);
    // lanes [u0, u2, u1, u2] and [u0, u0, u1, u1]
    let a = _mm_shuffle_epi32::<0b10_01_10_00>(v);
    let b = _mm_shuffle_epi32::<0b01_01_00_00>(v);
    let a = _mm_and_si128(
        _mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
        _mm_setr_epi32(0x3f3f_3f3f, 0x0f0f_0f0f, 0x3f3f_3f3f, 0x0f0f_0f0f),
    );
    let b = _mm_and_si128(
        _mm_srli_epi32::<2>(b),
        _mm_setr_epi32(0, 0x3030_3030, 0, 0x3030_3030),
    );
    _mm_or_si128(a, b)
}

#[inline]
#[target_feature(enable = "f16c")]
unsafe fn f16_to_f32(bits: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline(always)]
unsafe fn rd_u16(p: *const u8) -> u16 {
    u16::from_le_bytes(core::ptr::read_unaligned(p as *const [u8; 2]))
}

#[inline(always)]
unsafe fn rd_f32(p: *const u8) -> f32 {
    f32::from_le_bytes(core::ptr::read_unaligned(p as *const [u8; 4]))
}

/// Q4_K · Q8_K over `nb` super-blocks (one token).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
pub(crate) unsafe fn dot_q4_k(w: *const u8, x: *const u8, nb: usize) -> f32 {
    dot_q4_k_multi::<1>(w, [x], nb)[0]
}

/// Q4_K · Q8_K for `TT` tokens at once: each weight super-block is unpacked
/// (nibbles, 6-bit scales) once and reused for every token.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
pub(crate) unsafe fn dot_q4_k_multi<const TT: usize>(
    w: *const u8,
    x: [*const u8; TT],
    nb: usize,
) -> [f32; TT] {
    let zero = _mm512_setzero_si512();
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); TT];
    let mut accm = [_mm256_setzero_ps(); TT];
    for i in 0..nb {
        let wb = w.add(i * 144);
        // d and dmin with one conversion.
        let dd = _mm_cvtph_ps(_mm_cvtsi32_si128(core::ptr::read_unaligned(
            wb as *const i32,
        )));
        let dw = _mm_cvtss_f32(dd);
        let dminw = _mm_cvtss_f32(_mm_movehdup_ps(dd));
        // 6-bit scales and mins in registers (ggml's `utmp` trick on u32
        // lanes; building them in memory stalls on store forwarding):
        // bytes 0..8 = scales, 8..16 = mins.
        let sm = q4k_scales_mins(wb.add(4));
        let mn8 = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(sm, sm));
        let mn16 = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_unpacklo_epi16(mn8, mn8)),
            _mm_unpackhi_epi16(mn8, mn8),
            1,
        );
        let sc32 = _mm512_cvtepu8_epi32(sm);
        let mut qv = [zero; 4];
        let mut scv = [zero; 4];
        for j in 0..4 {
            let q = _mm256_loadu_si256(wb.add(16 + 32 * j) as *const __m256i);
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            qv[j] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            scv[j] = _mm512_permutexvar_epi32(pair_idx(j as i32), sc32);
        }
        for t in 0..TT {
            let xb = x[t].add(i * 292);
            let dy = rd_f32(xb);
            // sum_j m_j * (bsum_2j + bsum_2j+1), in 16-bit pairs.
            let bsums = _mm256_loadu_si256(xb.add(260) as *const __m256i);
            let prod = _mm256_madd_epi16(mn16, bsums);
            accm[t] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(prod),
                _mm256_set1_ps(dminw * dy),
                accm[t],
            );
            let mut isum = zero;
            for j in 0..4 {
                let yv = _mm512_loadu_si512(xb.add(4 + 64 * j) as *const _);
                isum = _mm512_dpwssd_epi32(isum, _mm512_dpbusd_epi32(zero, qv[j], yv), scv[j]);
            }
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(dw * dy), acc[t]);
        }
    }
    let mut out = [0f32; TT];
    for t in 0..TT {
        let h = _mm_add_ps(
            _mm256_castps256_ps128(accm[t]),
            _mm256_extractf128_ps(accm[t], 1),
        );
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let m = _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
        out[t] = hsum_ps(acc[t]) - m;
    }
    out
}

/// Q6_K · Q8_K over `nb` super-blocks (one token).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
pub(crate) unsafe fn dot_q6_k(w: *const u8, x: *const u8, nb: usize) -> f32 {
    dot_q6_k_multi::<1>(w, [x], nb)[0]
}

/// Q6_K · Q8_K for `TT` tokens at once (weights unpacked once per block).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
pub(crate) unsafe fn dot_q6_k_multi<const TT: usize>(
    w: *const u8,
    x: [*const u8; TT],
    nb: usize,
) -> [f32; TT] {
    let zero = _mm512_setzero_si512();
    let m4 = _mm512_set1_epi8(0x0f);
    let m30 = _mm512_set1_epi8(0x30);
    // Per-256-bit-half shift counts (16-bit lanes): A chunk <<[4,2], B chunk >>[0,2].
    let shl = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    let shr = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    let grp = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    let mut acc = [_mm512_setzero_ps(); TT];
    for i in 0..nb {
        let wb = w.add(i * 210);
        let dw = f16_to_f32(rd_u16(wb.add(208)));
        let s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wb.add(192) as *const __m128i));
        // Zero-extended 16-bit scales: vpdpwssd must see 0 in the high half.
        let sc32 = _mm512_cvtepu16_epi32(s16);
        let mut qv = [zero; 4];
        let mut scv = [zero; 4];
        for h in 0..2 {
            let ql = _mm512_loadu_si512(wb.add(64 * h) as *const _);
            let qh =
                _mm512_broadcast_i64x4(_mm256_loadu_si256(wb.add(128 + 32 * h) as *const __m256i));
            qv[2 * h] = _mm512_or_si512(
                _mm512_and_si512(ql, m4),
                _mm512_and_si512(_mm512_sllv_epi16(qh, shl), m30),
            );
            qv[2 * h + 1] = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                _mm512_and_si512(_mm512_srlv_epi16(qh, shr), m30),
            );
        }
        for (c, s) in scv.iter_mut().enumerate() {
            // lanes 4g..4g+4 of chunk c belong to sub-block 4c+g.
            *s = _mm512_permutexvar_epi32(
                _mm512_add_epi32(_mm512_set1_epi32(4 * c as i32), grp),
                sc32,
            );
        }
        for t in 0..TT {
            let xb = x[t].add(i * 292);
            let d = dw * rd_f32(xb);
            // q - 32: start from -32 * sum_g sc_g * bsum_g.
            let corr = _mm256_madd_epi16(s16, _mm256_loadu_si256(xb.add(260) as *const __m256i));
            let mut isum = _mm512_zextsi256_si512(_mm256_sub_epi32(
                _mm256_setzero_si256(),
                _mm256_slli_epi32(corr, 5),
            ));
            for c in 0..4 {
                let yv = _mm512_loadu_si512(xb.add(4 + 64 * c) as *const _);
                isum = _mm512_dpwssd_epi32(isum, _mm512_dpbusd_epi32(zero, qv[c], yv), scv[c]);
            }
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(d), acc[t]);
        }
    }
    let mut out = [0f32; TT];
    for t in 0..TT {
        out[t] = hsum_ps(acc[t]);
    }
    out
}

/// Loads up to 16 weights of a float format as f32 (masked past `n`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloatW {
    F32,
    F16,
    BF16,
    F8,
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn load_w16(kind: FloatW, p: *const u8, m: __mmask16) -> __m512 {
    match kind {
        FloatW::F32 => _mm512_maskz_loadu_ps(m, p as *const f32),
        FloatW::F16 => _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p as *const i16)),
        FloatW::BF16 => {
            let v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p as *const i16));
            _mm512_castsi512_ps(_mm512_slli_epi32(v, 16))
        }
        FloatW::F8 => {
            // E4M3 -> f16 bit layout (sign<<8 | rest<<7); caller rescales by 2^8.
            let b = _mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(m, p as *const i8));
            let h = _mm256_or_si256(
                _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x80)), 8),
                _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x7f)), 7),
            );
            _mm512_cvtph_ps(h)
        }
    }
}

/// Bytes per element for the float weight formats.
#[inline(always)]
fn fw_size(kind: FloatW) -> usize {
    match kind {
        FloatW::F32 => 4,
        FloatW::F16 | FloatW::BF16 => 2,
        FloatW::F8 => 1,
    }
}

/// Σ w[i] * x[i] for a float-format weight row (F8: without the row scale).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
pub(crate) unsafe fn dot_float(kind: FloatW, w: *const u8, x: *const f32, n: usize) -> f32 {
    let es = fw_size(kind);
    let mut a0 = _mm512_setzero_ps();
    let mut a1 = _mm512_setzero_ps();
    let mut a2 = _mm512_setzero_ps();
    let mut a3 = _mm512_setzero_ps();
    let mut i = 0usize;
    while i + 64 <= n {
        a0 = _mm512_fmadd_ps(
            load_w16(kind, w.add(i * es), 0xffff),
            _mm512_loadu_ps(x.add(i)),
            a0,
        );
        a1 = _mm512_fmadd_ps(
            load_w16(kind, w.add((i + 16) * es), 0xffff),
            _mm512_loadu_ps(x.add(i + 16)),
            a1,
        );
        a2 = _mm512_fmadd_ps(
            load_w16(kind, w.add((i + 32) * es), 0xffff),
            _mm512_loadu_ps(x.add(i + 32)),
            a2,
        );
        a3 = _mm512_fmadd_ps(
            load_w16(kind, w.add((i + 48) * es), 0xffff),
            _mm512_loadu_ps(x.add(i + 48)),
            a3,
        );
        i += 64;
    }
    while i < n {
        let c = (n - i).min(16);
        let m: __mmask16 = if c == 16 {
            0xffff
        } else {
            ((1u32 << c) - 1) as u16
        };
        a0 = _mm512_fmadd_ps(
            load_w16(kind, w.add(i * es), m),
            _mm512_maskz_loadu_ps(m, x.add(i)),
            a0,
        );
        i += c;
    }
    let s = hsum_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    if kind == FloatW::F8 { s * 256.0 } else { s }
}

/// Σ w[i] * x_t[i] for `TT` tokens at once (F8: without the row scales):
/// each 16-weight chunk is converted to f32 once and multiplied with every
/// token, so prefill pays the conversion once per `TT` tokens instead of once
/// per token. Accumulation is f32 FMA in the same per-lane order as
/// [`dot_float`]'s tail loop (one accumulator per token).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
pub(crate) unsafe fn dot_float_multi<const TT: usize>(
    kind: FloatW,
    w: *const u8,
    x: [*const f32; TT],
    n: usize,
) -> [f32; TT] {
    let es = fw_size(kind);
    let mut acc = [_mm512_setzero_ps(); TT];
    let mut i = 0usize;
    while i < n {
        let c = (n - i).min(16);
        let m: __mmask16 = if c == 16 {
            0xffff
        } else {
            ((1u32 << c) - 1) as u16
        };
        let wv = load_w16(kind, w.add(i * es), m);
        for t in 0..TT {
            acc[t] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x[t].add(i)), acc[t]);
        }
        i += c;
    }
    let k = if kind == FloatW::F8 { 256.0 } else { 1.0 };
    core::array::from_fn(|t| hsum_ps(acc[t]) * k)
}

/// y += a * x for a float-format row (used for the F16 KV cache).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
pub(crate) unsafe fn axpy_float(kind: FloatW, a: f32, x: *const u8, y: *mut f32, n: usize) {
    let es = fw_size(kind);
    let va = _mm512_set1_ps(a);
    let mut i = 0usize;
    while i < n {
        let c = (n - i).min(16);
        let m: __mmask16 = if c == 16 {
            0xffff
        } else {
            ((1u32 << c) - 1) as u16
        };
        let v = _mm512_fmadd_ps(
            va,
            load_w16(kind, x.add(i * es), m),
            _mm512_maskz_loadu_ps(m, y.add(i)),
        );
        _mm512_mask_storeu_ps(y.add(i), m, v);
        i += c;
    }
}

/// f32 -> f16 with round to nearest even.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(crate) unsafe fn f32_to_f16(src: *const f32, dst: *mut u16, n: usize) {
    let mut i = 0usize;
    while i < n {
        let c = (n - i).min(16);
        let m: __mmask16 = if c == 16 {
            0xffff
        } else {
            ((1u32 << c) - 1) as u16
        };
        let h =
            _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(_mm512_maskz_loadu_ps(m, src.add(i)));
        _mm256_mask_storeu_epi16(dst.add(i) as *mut i16, m, h);
        i += c;
    }
}
