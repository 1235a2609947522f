//! AVX-512 VNNI matmul for the 32-element block formats (Q8_0, Q4_0, Q4_1,
//! Q5_0, Q5_1), for decode and prefill.
//!
//! A micro-kernel computes an R-rows x T-tokens tile over the whole row,
//! so each unpacked weight register is used for T tokens and each activation
//! register for R rows. Per pair of blocks and (row, token) the inner loop is
//! 4 instructions: `vpdpbusd`, convert, scale product, FMA.
//!
//! Integer exactness without sign tricks: weights enter `vpdpbusd` as
//! unsigned (Q8_0 as q+128, Q4_0 and Q5_0 as q) and the offset is removed by
//! starting the accumulator at `-offset * sum(x)` of the block (precomputed
//! per token). Q5's fifth bits are added to the unpacked nibbles with one
//! masked byte add (`qh` of two blocks is exactly a 64-bit byte mask).
//! Q4_1's and Q5_1's `m * s` term is one FMA per 16 blocks. Activation scales, sums
//! and corrections are extracted once per call into a reused scratch buffer
//! (`ActPrep`), so the kernel never converts f16 on the activation side.

#![allow(unsafe_op_in_unsafe_fn)]

use core::arch::x86_64::*;
use std::cell::RefCell;

use crate::{DType, SyncSlice, TensorError, ThreadPool};

/// Weight formats handled here.
pub(crate) fn supports(w: DType) -> bool {
    matches!(
        w,
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1
    )
}

pub(crate) const K_Q8_0: u8 = 0;
pub(crate) const K_Q4_0: u8 = 1;
pub(crate) const K_Q4_1: u8 = 2;
pub(crate) const K_Q5_0: u8 = 3;
pub(crate) const K_Q5_1: u8 = 4;

/// Whether kind `k` has a min term (`m * s`, Q8_1 activations).
#[inline(always)]
pub(crate) const fn has_min(k: u8) -> bool {
    k == K_Q4_1 || k == K_Q5_1
}

/// Weight block layout of kind `k`: (block bytes, quants offset, offset of
/// Q5's high-bit word or 0).
#[inline(always)]
const fn layout(k: u8) -> (usize, usize, usize) {
    match k {
        K_Q8_0 => (34, 2, 0),
        K_Q4_0 => (18, 2, 0),
        K_Q4_1 => (20, 4, 0),
        K_Q5_0 => (22, 6, 2),
        _ => (24, 8, 4),
    }
}

/// Tokens processed per pass over a row tile (their activations stay in L2).
const TOKEN_CHUNK: usize = 64;
/// Rows per micro-kernel tile.
const R: usize = 4;
/// Tokens per micro-kernel tile.
const T: usize = 4;

/// Per-token, per-block activation data, padded to a multiple of 16 blocks
/// so 16-lane loads stay in bounds (padding is zero).
#[derive(Default)]
pub(crate) struct ActPrep {
    pub(crate) nb16: usize,
    pub(crate) dx: Vec<f32>,
    pub(crate) sx: Vec<f32>,
    pub(crate) corr: Vec<i32>,
}

thread_local! {
    pub(crate) static PREP: RefCell<ActPrep> = RefCell::new(ActPrep::default());
}

/// Fills `p` for `n_tokens` activation rows of `nb` blocks (`kind` = K_*).
pub(crate) fn prepare(kind: u8, x_q: &[u8], n_tokens: usize, nb: usize, p: &mut ActPrep) {
    let nb16 = nb.div_ceil(16) * 16;
    p.nb16 = nb16;
    let total = nb16 * n_tokens;
    for v in [&mut p.dx, &mut p.sx] {
        v.clear();
        v.resize(total, 0.0);
    }
    p.corr.clear();
    p.corr.resize(total, 0);
    let xs = if has_min(kind) { 36 } else { 34 };
    let qoff = if has_min(kind) { 4 } else { 2 };
    let off = match kind {
        K_Q8_0 => 128,
        K_Q4_0 => 8,
        K_Q5_0 => 16,
        _ => 0,
    };
    for t in 0..n_tokens {
        for b in 0..nb {
            let base = (t * nb + b) * xs;
            let Some(blk) = x_q.get(base..base + xs) else {
                return;
            };
            let i = t * nb16 + b;
            p.dx[i] = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            if has_min(kind) {
                p.sx[i] = half::f16::from_le_bytes([blk[2], blk[3]]).to_f32();
            } else {
                let s: i32 = blk[qoff..].iter().map(|&q| q as i8 as i32).sum();
                p.corr[i] = -off * s;
            }
        }
    }
}

/// Scales `[2k x 8, 2k+1 x 8]` from a 16-lane per-block vector.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn pair_idx(k: usize) -> __m512i {
    let a = _mm512_set1_epi32(2 * k as i32);
    _mm512_mask_add_epi32(a, 0xff00, a, _mm512_set1_epi32(1))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_pair32(p: *const u8, two: bool, stride: usize) -> __m512i {
    let lo = _mm256_loadu_si256(p as *const __m256i);
    let hi = if two {
        _mm256_loadu_si256(p.add(stride) as *const __m256i)
    } else {
        _mm256_setzero_si256()
    };
    _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_pair4(p: *const u8, two: bool, stride: usize) -> __m512i {
    let a = _mm_loadu_si128(p as *const __m128i);
    let b = if two {
        _mm_loadu_si128(p.add(stride) as *const __m128i)
    } else {
        _mm_setzero_si128()
    };
    let ab = _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1);
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

/// Pointers for one tile.
struct Tile<const RR: usize, const TT: usize> {
    w: [*const u8; RR],
    /// Software prefetch distance in bytes (0 = none); decode streams the
    /// weights once from DRAM, and the hardware prefetchers alone leave
    /// most of the bandwidth unused on these short interleaved row streams.
    pf: usize,
    x: [*const u8; TT],
    dx: [*const f32; TT],
    sx: [*const f32; TT],
    corr: [*const i32; TT],
}

/// The micro-kernel: `out[r][t] = dot(w row r, x token t)` over `nb` blocks.
/// (Index loops over the tiny const-size tile are clearer than iterators and
/// are fully unrolled.)
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
unsafe fn tile<const K: u8, const RR: usize, const TT: usize>(
    p: &Tile<RR, TT>,
    nb: usize,
) -> [[f32; TT]; RR] {
    let (ws, woff, qhoff) = layout(K);
    let (xs, xoff) = if has_min(K) {
        (36usize, 4usize)
    } else {
        (34, 2)
    };
    let flip = _mm512_set1_epi8(-128);
    let sixteens = _mm512_set1_epi8(16);
    let idx16 = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(ws as i32),
    );
    let mut acc = [[_mm512_setzero_ps(); TT]; RR];
    let mut base = 0usize;
    while base < nb {
        let cnt = (nb - base).min(16);
        let mask: __mmask16 = if cnt == 16 {
            0xffff
        } else {
            ((1u32 << cnt) - 1) as u16
        };
        let mut dw16 = [_mm512_setzero_ps(); RR];
        for r in 0..RR {
            let wh = _mm512_mask_i32gather_epi32::<1>(
                _mm512_setzero_si512(),
                mask,
                idx16,
                p.w[r].add(base * ws) as *const i32,
            );
            dw16[r] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(wh));
            if has_min(K) {
                let mw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(wh, 16)));
                for t in 0..TT {
                    acc[r][t] = _mm512_fmadd_ps(mw, _mm512_loadu_ps(p.sx[t].add(base)), acc[r][t]);
                }
            }
        }
        let mut dx16 = [_mm512_setzero_ps(); TT];
        let mut c16 = [_mm512_setzero_si512(); TT];
        for t in 0..TT {
            dx16[t] = _mm512_loadu_ps(p.dx[t].add(base));
            if !has_min(K) {
                c16[t] = _mm512_loadu_si512(p.corr[t].add(base) as *const _);
            }
        }
        let pairs = cnt.div_ceil(2);
        for k in 0..pairs {
            let two = 2 * k + 1 < cnt;
            let pidx = pair_idx(k);
            let b0 = base + 2 * k;
            let mut wv = [_mm512_setzero_si512(); RR];
            let mut dw = [_mm512_setzero_ps(); RR];
            if p.pf != 0 {
                for r in 0..RR {
                    let q = p.w[r].wrapping_add(b0 * ws + p.pf) as *const i8;
                    _mm_prefetch::<_MM_HINT_T0>(q);
                    if K == K_Q8_0 {
                        _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(64));
                    }
                }
            }
            for r in 0..RR {
                let wp = p.w[r].add(b0 * ws + woff);
                wv[r] = match K {
                    K_Q8_0 => _mm512_xor_si512(load_pair32(wp, two, ws), flip),
                    K_Q5_0 | K_Q5_1 => {
                        let lo = load_pair4(wp, two, ws);
                        let hm = super::avx512::q5_high_mask(p.w[r].add(b0 * ws + qhoff), ws, two);
                        _mm512_mask_add_epi8(lo, hm, lo, sixteens)
                    }
                    _ => load_pair4(wp, two, ws),
                };
                dw[r] = _mm512_permutexvar_ps(pidx, dw16[r]);
            }
            for t in 0..TT {
                let xv = load_pair32(p.x[t].add(b0 * xs + xoff), two, xs);
                let dx = _mm512_permutexvar_ps(pidx, dx16[t]);
                let c = if has_min(K) {
                    _mm512_setzero_si512()
                } else {
                    _mm512_maskz_permutexvar_epi32(0x0101, pidx, c16[t])
                };
                for r in 0..RR {
                    let i = _mm512_dpbusd_epi32(c, wv[r], xv);
                    acc[r][t] =
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(dw[r], dx), acc[r][t]);
                }
            }
        }
        base += cnt;
    }
    let mut out = [[0f32; TT]; RR];
    for r in 0..RR {
        for t in 0..TT {
            out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
        }
    }
    out
}

/// Everything a thread needs to compute its tiles.
struct Ctx<'a> {
    w_data: &'a [u8],
    x_q: &'a [u8],
    prep: &'a ActPrep,
    rows: usize,
    nb: usize,
    wrb: usize,
    xrb: usize,
    pf: usize,
    out: &'a SyncSlice<'a, f32>,
}

/// Runs one tile of `RR` rows from `r0` and `TT` tokens from `t0`.
///
/// # Safety
/// AVX-512 VNNI available; `r0 + RR <= rows`, `t0 + TT <= n_tokens`, and the
/// rows belong to the calling thread.
#[inline]
unsafe fn run_tile<const K: u8, const RR: usize, const TT: usize>(
    c: &Ctx<'_>,
    r0: usize,
    t0: usize,
) {
    let nb16 = c.prep.nb16;
    let p = Tile::<RR, TT> {
        w: core::array::from_fn(|r| c.w_data.as_ptr().add((r0 + r) * c.wrb)),
        pf: if TT < T { c.pf } else { 0 },
        x: core::array::from_fn(|t| c.x_q.as_ptr().add((t0 + t) * c.xrb)),
        dx: core::array::from_fn(|t| c.prep.dx.as_ptr().add((t0 + t) * nb16)),
        sx: core::array::from_fn(|t| c.prep.sx.as_ptr().add((t0 + t) * nb16)),
        corr: core::array::from_fn(|t| c.prep.corr.as_ptr().add((t0 + t) * nb16)),
    };
    let v = tile::<K, RR, TT>(&p, c.nb);
    for (r, row) in v.iter().enumerate() {
        for (t, val) in row.iter().enumerate() {
            c.out.write((t0 + t) * c.rows + r0 + r, *val);
        }
    }
}

/// Dispatches the token remainder (1..=T tokens) for a fixed row count.
#[inline]
unsafe fn run_rows<const K: u8, const RR: usize>(c: &Ctx<'_>, r0: usize, t0: usize, nt: usize) {
    match nt {
        1 => run_tile::<K, RR, 1>(c, r0, t0),
        2 => run_tile::<K, RR, 2>(c, r0, t0),
        3 => run_tile::<K, RR, 3>(c, r0, t0),
        _ => run_tile::<K, RR, T>(c, r0, t0),
    }
}

/// Computes rows `r_begin..r_end` for all tokens.
unsafe fn thread_work<const K: u8>(c: &Ctx<'_>, r_begin: usize, r_end: usize, n_tokens: usize) {
    let mut tc = 0;
    while tc < n_tokens {
        let tc_end = (tc + TOKEN_CHUNK).min(n_tokens);
        let mut r = r_begin;
        while r < r_end {
            let nr = (r_end - r).min(R);
            let mut t = tc;
            while t < tc_end {
                let nt = (tc_end - t).min(T);
                match nr {
                    1 => run_rows::<K, 1>(c, r, t, nt),
                    2 => run_rows::<K, 2>(c, r, t, nt),
                    3 => run_rows::<K, 3>(c, r, t, nt),
                    _ => run_rows::<K, R>(c, r, t, nt),
                }
                t += nt;
            }
            r += nr;
        }
        tc = tc_end;
    }
}

/// Full matmul; shapes were validated by the caller (`matmul_with`) and the
/// AVX-512 VNNI tier is available.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    pool: &ThreadPool,
    w: DType,
    w_data: &[u8],
    rows: usize,
    cols: usize,
    x_q: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), TensorError> {
    let kind = match w {
        DType::Q8_0 => K_Q8_0,
        DType::Q4_0 => K_Q4_0,
        DType::Q4_1 => K_Q4_1,
        DType::Q5_0 => K_Q5_0,
        DType::Q5_1 => K_Q5_1,
        _ => {
            return Err(TensorError::Unsupported {
                op: "matmul",
                dtype: w,
            });
        }
    };
    let nb = cols / 32;
    let wrb = w.row_bytes_for("matmul", cols)?;
    let xrb = w.vec_dot_type().row_bytes_for("matmul", cols)?;
    PREP.with(|cell| {
        let mut prep = cell.borrow_mut();
        prepare(kind, x_q, n_tokens, nb, &mut prep);
        let out = SyncSlice::new(out);
        let ctx = Ctx {
            w_data,
            x_q,
            prep: &prep,
            rows,
            nb,
            wrb,
            xrb,
            // At least 4 tiles and ~12 KiB ahead (tuned on 2048- and 576-col
            // Q8_0/Q4_1 matrices streamed from DRAM).
            pf: (12288usize.div_ceil(R * wrb)).max(4) * R * wrb,
            out: &out,
        };
        let n_threads = pool.n_threads();
        // Row blocks per thread, in multiples of 16 rows (whole tiles, and no
        // shared output cache lines in decode).
        let per = rows.div_ceil(n_threads).div_ceil(16) * 16;
        pool.run(&|ti, nt| {
            let per = if nt == n_threads { per } else { rows };
            let r0 = (ti * per).min(rows);
            let r1 = ((ti + 1) * per).min(rows);
            // SAFETY: tier checked by the caller; rows r0..r1 are this
            // thread's; all pointers are within the validated buffers.
            unsafe {
                match kind {
                    K_Q8_0 => thread_work::<K_Q8_0>(&ctx, r0, r1, n_tokens),
                    K_Q4_0 => thread_work::<K_Q4_0>(&ctx, r0, r1, n_tokens),
                    K_Q4_1 => thread_work::<K_Q4_1>(&ctx, r0, r1, n_tokens),
                    K_Q5_0 => thread_work::<K_Q5_0>(&ctx, r0, r1, n_tokens),
                    _ => thread_work::<K_Q5_1>(&ctx, r0, r1, n_tokens),
                }
            }
        });
    });
    Ok(())
}
