//! AVX2 + FMA + F16C `vec_dot` kernels (for x86 CPUs without AVX-512 VNNI).
//!
//! One 32-element block per 256-bit register. u8 x i8 products use
//! `vpmaddubsw` (saturating i16 pair sums, safe here because one operand is
//! at most 15 or 63, or made non-negative by the sign trick), widened with
//! `vpmaddwd`. Same activation contract as the AVX-512 kernels (-127..=127).
//!
//! # Safety
//! Every `unsafe fn` requires AVX2, FMA and F16C and pointers valid for the
//! stated number of blocks/elements.

#![allow(unsafe_op_in_unsafe_fn)]

use core::arch::x86_64::*;

use super::avx512::{FloatW, Legacy, q4k_unpack};

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn hsum256(v: __m256) -> f32 {
    let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)))
}

#[inline]
#[target_feature(enable = "f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes(core::ptr::read_unaligned(p as *const [u8; 2]));
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q4_unpack(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(q, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1)
}

/// u8 x i8 dot of 32 bytes into 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_ub(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// Q5's 32 fifth bits (`qh` at `p`) as 32 bytes in element order: 0xff where
/// the bit is set, 0 where not (ggml's `bytes_from_bits_32`): broadcast the
/// word, give each byte lane the byte holding its bit, set every other bit,
/// and compare with all-ones.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bytes_from_bits_32(p: *const u8) -> __m256i {
    let x32 = i32::from_le_bytes(core::ptr::read_unaligned(p as *const [u8; 4]));
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// Legacy-format weights · Q8_0/Q8_1 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_legacy(kind: Legacy, w: *const u8, x: *const u8, nb: usize) -> f32 {
    let (ws, wo, qho) = kind.layout();
    let (xs, xo) = if kind.has_min() {
        (36usize, 4usize)
    } else {
        (34, 2)
    };
    let mut acc = _mm256_setzero_ps();
    let mut summ = 0.0f32;
    for i in 0..nb {
        let wb = w.add(i * ws);
        let xb = x.add(i * xs);
        let xv = _mm256_loadu_si256(xb.add(xo) as *const __m256i);
        let dot = match kind {
            Legacy::Q8_0 => {
                let wv = _mm256_loadu_si256(wb.add(wo) as *const __m256i);
                dot_ub(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv))
            }
            Legacy::Q4_0 => {
                let q = _mm256_sub_epi8(q4_unpack(wb.add(wo)), _mm256_set1_epi8(8));
                dot_ub(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xv, q))
            }
            Legacy::Q4_1 => {
                summ += f16_at(wb.add(2)) * f16_at(xb.add(2));
                dot_ub(q4_unpack(wb.add(wo)), xv)
            }
            Legacy::Q5_0 => {
                // q - 16 in one step: nibble | 0xf0 where the fifth bit is
                // clear (nibble - 16 as i8), the plain nibble where it is set.
                let hi =
                    _mm256_andnot_si256(bytes_from_bits_32(wb.add(qho)), _mm256_set1_epi8(-16));
                let q = _mm256_or_si256(q4_unpack(wb.add(wo)), hi);
                dot_ub(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xv, q))
            }
            Legacy::Q5_1 => {
                summ += f16_at(wb.add(2)) * f16_at(xb.add(2));
                let hi = _mm256_and_si256(bytes_from_bits_32(wb.add(qho)), _mm256_set1_epi8(0x10));
                dot_ub(_mm256_or_si256(q4_unpack(wb.add(wo)), hi), xv)
            }
        };
        let d = f16_at(wb) * f16_at(xb);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d), acc);
    }
    hsum256(acc) + summ
}

/// Q4_K · Q8_K.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_k(w: *const u8, x: *const u8, nb: usize) -> f32 {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    let mut summ = 0.0f32;
    for i in 0..nb {
        let wb = w.add(i * 144);
        let xb = x.add(i * 292);
        let dy = f32::from_le_bytes(core::ptr::read_unaligned(xb as *const [u8; 4]));
        let d = f16_at(wb) * dy;
        let dmin = f16_at(wb.add(2)) * dy;
        let (sc, mn) = q4k_unpack(&core::ptr::read_unaligned(wb.add(4) as *const [u8; 12]));
        let bs = core::ptr::read_unaligned(xb.add(260) as *const [[u8; 2]; 16]);
        let mut mins = 0i32;
        for (g, b) in bs.iter().enumerate() {
            mins += i16::from_le_bytes(*b) as i32 * mn[g / 2] as i32;
        }
        summ += dmin * mins as f32;
        let mut isum = _mm256_setzero_si256();
        for j in 0..4 {
            let q = _mm256_loadu_si256(wb.add(16 + 32 * j) as *const __m256i);
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            let y0 = _mm256_loadu_si256(xb.add(4 + 64 * j) as *const __m256i);
            let y1 = _mm256_loadu_si256(xb.add(36 + 64 * j) as *const __m256i);
            let p0 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, y0),
                _mm256_set1_epi16(sc[2 * j] as i16),
            );
            let p1 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, y1),
                _mm256_set1_epi16(sc[2 * j + 1] as i16),
            );
            isum = _mm256_add_epi32(isum, _mm256_add_epi32(p0, p1));
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d), acc);
    }
    hsum256(acc) - summ
}

/// Q6_K · Q8_K.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q6_k(w: *const u8, x: *const u8, nb: usize) -> f32 {
    let m4 = _mm256_set1_epi8(0x0f);
    let m3 = _mm256_set1_epi8(0x03);
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let wb = w.add(i * 210);
        let xb = x.add(i * 292);
        let dy = f32::from_le_bytes(core::ptr::read_unaligned(xb as *const [u8; 4]));
        let d = f16_at(wb.add(208)) * dy;
        let sc = core::ptr::read_unaligned(wb.add(192) as *const [i8; 16]);
        let bs = core::ptr::read_unaligned(xb.add(260) as *const [[u8; 2]; 16]);
        let mut corr = 0i32;
        for g in 0..16 {
            corr += sc[g] as i32 * i16::from_le_bytes(bs[g]) as i32;
        }
        let mut isum = _mm256_set1_epi32(0);
        for h in 0..2 {
            let ql0 = _mm256_loadu_si256(wb.add(64 * h) as *const __m256i);
            let ql1 = _mm256_loadu_si256(wb.add(64 * h + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(wb.add(128 + 32 * h) as *const __m256i);
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4),
                ),
            ];
            for (c, qv) in q.iter().enumerate() {
                let e = 128 * h + 32 * c; // first element of this 32-chunk
                let y = _mm256_loadu_si256(xb.add(4 + e) as *const __m256i);
                let g = e / 16;
                let scv = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_set1_epi16(sc[g] as i16)),
                    _mm_set1_epi16(sc[g + 1] as i16),
                    1,
                );
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(*qv, y), scv));
            }
        }
        let total = _mm256_sub_epi32(isum, _mm256_setr_epi32(32 * corr, 0, 0, 0, 0, 0, 0, 0));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_set1_ps(d), acc);
    }
    hsum256(acc)
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn load_w8(kind: FloatW, p: *const u8) -> __m256 {
    match kind {
        FloatW::F32 => _mm256_loadu_ps(p as *const f32),
        FloatW::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
        FloatW::BF16 => {
            let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32(v, 16))
        }
        FloatW::F8 => {
            let b = _mm_cvtepu8_epi16(_mm_loadl_epi64(p as *const __m128i));
            let h = _mm_or_si128(
                _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x80)), 8),
                _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x7f)), 7),
            );
            _mm256_cvtph_ps(h)
        }
    }
}

#[inline(always)]
fn fw_size(kind: FloatW) -> usize {
    match kind {
        FloatW::F32 => 4,
        FloatW::F16 | FloatW::BF16 => 2,
        FloatW::F8 => 1,
    }
}

/// Scalar weight decode for tails (same arithmetic as the vector path).
#[inline(always)]
unsafe fn w_at(kind: FloatW, p: *const u8, i: usize) -> f32 {
    let es = fw_size(kind);
    let b = core::slice::from_raw_parts(p.add(i * es), es);
    match kind {
        FloatW::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        FloatW::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
        FloatW::BF16 => crate::convert::bf16_to_f32(u16::from_le_bytes([b[0], b[1]])),
        FloatW::F8 => {
            let h = (((b[0] & 0x80) as u16) << 8) | (((b[0] & 0x7f) as u16) << 7);
            half::f16::from_bits(h).to_f32()
        }
    }
}

/// Σ w[i] * x[i] (F8: without the row scale).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_float(kind: FloatW, w: *const u8, x: *const f32, n: usize) -> f32 {
    let es = fw_size(kind);
    let mut a0 = _mm256_setzero_ps();
    let mut a1 = _mm256_setzero_ps();
    let mut i = 0usize;
    while i + 16 <= n {
        a0 = _mm256_fmadd_ps(load_w8(kind, w.add(i * es)), _mm256_loadu_ps(x.add(i)), a0);
        a1 = _mm256_fmadd_ps(
            load_w8(kind, w.add((i + 8) * es)),
            _mm256_loadu_ps(x.add(i + 8)),
            a1,
        );
        i += 16;
    }
    while i + 8 <= n {
        a0 = _mm256_fmadd_ps(load_w8(kind, w.add(i * es)), _mm256_loadu_ps(x.add(i)), a0);
        i += 8;
    }
    let mut s = hsum256(_mm256_add_ps(a0, a1));
    while i < n {
        s += w_at(kind, w, i) * x.add(i).read_unaligned();
        i += 1;
    }
    if kind == FloatW::F8 { s * 256.0 } else { s }
}

/// y += a * x.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn axpy_float(kind: FloatW, a: f32, x: *const u8, y: *mut f32, n: usize) {
    let es = fw_size(kind);
    let va = _mm256_set1_ps(a);
    let mut i = 0usize;
    while i + 8 <= n {
        let v = _mm256_fmadd_ps(va, load_w8(kind, x.add(i * es)), _mm256_loadu_ps(y.add(i)));
        _mm256_storeu_ps(y.add(i), v);
        i += 8;
    }
    while i < n {
        *y.add(i) += a * w_at(kind, x, i);
        i += 1;
    }
}

/// f32 -> f16, round to nearest even.
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn f32_to_f16(src: *const f32, dst: *mut u16, n: usize) {
    let mut i = 0usize;
    while i + 8 <= n {
        let h = _mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(_mm256_loadu_ps(src.add(i)));
        _mm_storeu_si128(dst.add(i) as *mut __m128i, h);
        i += 8;
    }
    while i < n {
        *dst.add(i) = half::f16::from_f32(*src.add(i)).to_bits();
        i += 1;
    }
}
