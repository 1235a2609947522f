//! AVX-512 VNNI matmul on row-interleaved Q4_K weights (see
//! [`crate::PackedMatrix`]), for decode and prefill.
//!
//! Why: the row-major Q4_K kernels unpack nibbles and 6-bit scales per
//! super-block and row, and apply sub-block scales with an extra
//! `vpdpwssd` per 64 products. Interleaving 16 rows puts 16 rows in the 16
//! lanes of a register: activations are 4-byte broadcasts, the scales and
//! mins are stored unpacked (one byte per row and sub-block, +2.8% memory)
//! and turn into 16-lane float vectors once per super-block, and every
//! float operation serves 16 rows.
//!
//! Group-super-block layout (16 rows, 256 elements, 2368 bytes):
//! `d[16]` f16, `dmin[16]` f16, `sc[8][16]` u8, `mn[8][16]` u8, then 32
//! quant chunks of 64 bytes: chunk `8p + j` holds bytes `32p + 4j .. +4` of
//! every row's `qs` (row `i` at `4i`): low nibbles are elements
//! `64p + 4j ..`, high nibbles `64p + 32 + 4j ..`.

#![allow(unsafe_op_in_unsafe_fn)]
// Kernels index small fixed-size register arrays; index loops unroll fully.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;
use std::cell::RefCell;

use crate::{SyncSlice, ThreadPool};

/// Rows interleaved per group.
pub(crate) const GROUP: usize = 16;
/// Bytes of one packed group-super-block.
pub(crate) const GSB: usize = 64 + 256 + 2048;
/// Q8_K activation block bytes.
const XS: usize = 292;
/// Tokens per micro-kernel call.
const T: usize = 8;

/// Packs group `g` (rows `16g..16g + 16`) of the row-major Q4_K `data`
/// (rows of `wrb` bytes, `nsb` super-blocks) into `dst` (`nsb * GSB` bytes).
pub(crate) fn pack_group(data: &[u8], wrb: usize, g: usize, nsb: usize, dst: &mut [u8]) {
    for i in 0..GROUP {
        let row = &data[(g * GROUP + i) * wrb..][..nsb * 144];
        for (s, d) in row.chunks_exact(144).zip(dst.chunks_exact_mut(GSB)) {
            d[2 * i..2 * i + 2].copy_from_slice(&s[0..2]);
            d[32 + 2 * i..32 + 2 * i + 2].copy_from_slice(&s[2..4]);
            let mut sc12 = [0u8; 12];
            sc12.copy_from_slice(&s[4..16]);
            let (sc, mn) = super::avx512::q4k_unpack(&sc12);
            for j in 0..8 {
                d[64 + 16 * j + i] = sc[j];
                d[192 + 16 * j + i] = mn[j];
            }
            for c in 0..32 {
                let (p, j) = (c / 8, c % 8);
                let o = 320 + 64 * c + 4 * i;
                d[o..o + 4].copy_from_slice(&s[16 + 32 * p + 4 * j..16 + 32 * p + 4 * j + 4]);
            }
        }
    }
}

thread_local! {
    /// Per (token, super-block): `d_y`, then 8 x `d_y * (bsum_2s + bsum_2s+1)`.
    static PREP: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn prepare(x_q: &[u8], n_tokens: usize, nsb: usize, p: &mut Vec<f32>) {
    p.clear();
    p.resize(n_tokens * nsb * 9, 0.0);
    for (blk, o) in x_q.chunks_exact(XS).zip(p.chunks_exact_mut(9)) {
        let dy = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
        o[0] = dy;
        for s in 0..8 {
            let b = |k: usize| i16::from_le_bytes([blk[260 + 2 * k], blk[261 + 2 * k]]) as i32;
            o[1 + s] = dy * (b(2 * s) + b(2 * s + 1)) as f32;
        }
    }
}

#[inline(always)]
unsafe fn bcast4(p: *const u8) -> __m512i {
    _mm512_set1_epi32(core::ptr::read_unaligned(p as *const i32))
}

/// 16 rows' u8 values at `p` as f32 lanes.
#[inline(always)]
unsafe fn u8x16_ps(p: *const u8) -> __m512 {
    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i)))
}

/// One group (16 rows) against `TT` tokens over `nsb` super-blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
unsafe fn group<const TT: usize>(
    w: *const u8,
    nsb: usize,
    x: [*const u8; TT],
    pr: [*const f32; TT],
    pf: usize,
) -> [__m512; TT] {
    let m4 = _mm512_set1_epi8(0x0f);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); TT];
    for sb in 0..nsb {
        let g = w.add(sb * GSB);
        if pf != 0 {
            let mut l = 0;
            while l < GSB {
                _mm_prefetch::<_MM_HINT_T0>(g.wrapping_add(pf + l) as *const i8);
                l += 64;
            }
        }
        let d16 = _mm512_cvtph_ps(_mm256_loadu_si256(g as *const __m256i));
        let dm16 = _mm512_cvtph_ps(_mm256_loadu_si256(g.add(32) as *const __m256i));
        let mut dsc = [_mm512_setzero_ps(); 8];
        let mut dmn = [_mm512_setzero_ps(); 8];
        for s in 0..8 {
            dsc[s] = _mm512_mul_ps(d16, u8x16_ps(g.add(64 + 16 * s)));
            dmn[s] = _mm512_mul_ps(dm16, u8x16_ps(g.add(192 + 16 * s)));
        }
        // Mins: acc -= sum_s dmin*mn_s * d_y*(bsum pair s).
        for t in 0..TT {
            let pt = pr[t].add(sb * 9);
            for s in 0..8 {
                acc[t] = _mm512_fnmadd_ps(dmn[s], _mm512_set1_ps(*pt.add(1 + s)), acc[t]);
            }
        }
        for p in 0..4 {
            let mut lo = [zero; 8];
            let mut hi = [zero; 8];
            for j in 0..8 {
                let v = _mm512_loadu_si512(g.add(320 + 64 * (8 * p + j)) as *const _);
                lo[j] = _mm512_and_si512(v, m4);
                hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            }
            for t in 0..TT {
                let xb = x[t].add(sb * XS + 4 + 64 * p);
                let mut il = zero;
                let mut ih = zero;
                for j in 0..8 {
                    il = _mm512_dpbusd_epi32(il, lo[j], bcast4(xb.add(4 * j)));
                    ih = _mm512_dpbusd_epi32(ih, hi[j], bcast4(xb.add(32 + 4 * j)));
                }
                let dy = _mm512_set1_ps(*pr[t].add(sb * 9));
                acc[t] = _mm512_fmadd_ps(
                    _mm512_mul_ps(_mm512_cvtepi32_ps(il), dy),
                    dsc[2 * p],
                    acc[t],
                );
                acc[t] = _mm512_fmadd_ps(
                    _mm512_mul_ps(_mm512_cvtepi32_ps(ih), dy),
                    dsc[2 * p + 1],
                    acc[t],
                );
            }
        }
    }
    acc
}

struct Ctx<'a> {
    w: &'a [u8],
    x_q: &'a [u8],
    prep: &'a [f32],
    rows: usize,
    nsb: usize,
    pf: usize,
    out: &'a SyncSlice<'a, f32>,
}

/// # Safety
/// AVX-512 VNNI available; group and tokens in range; the group's rows are
/// the calling thread's.
#[inline]
unsafe fn run<const TT: usize>(c: &Ctx<'_>, wg: *const u8, g: usize, t0: usize) {
    let acc = group::<TT>(
        wg,
        c.nsb,
        core::array::from_fn(|t| c.x_q.as_ptr().add((t0 + t) * c.nsb * XS)),
        core::array::from_fn(|t| c.prep.as_ptr().add((t0 + t) * c.nsb * 9)),
        if TT < 4 { c.pf } else { 0 },
    );
    for (t, a) in acc.iter().enumerate() {
        let dst = c.out.slice_mut((t0 + t) * c.rows + g * GROUP, GROUP);
        _mm512_storeu_ps(dst.as_mut_ptr(), *a);
    }
}

unsafe fn group_tokens(c: &Ctx<'_>, wg: *const u8, g: usize, t0: usize, t1: usize) {
    let mut t = t0;
    while t < t1 {
        let nt = (t1 - t).min(T);
        match nt {
            1 => run::<1>(c, wg, g, t),
            2 => run::<2>(c, wg, g, t),
            3 => run::<3>(c, wg, g, t),
            4 => run::<4>(c, wg, g, t),
            5 => run::<5>(c, wg, g, t),
            6 => run::<6>(c, wg, g, t),
            7 => run::<7>(c, wg, g, t),
            _ => run::<T>(c, wg, g, t),
        }
        t += nt;
    }
}

thread_local! {
    /// One packed group, for on-the-fly packing (`otf`).
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Groups `g0..g1` for all tokens; with `otf = Some(wrb)` `c.w` is the
/// original row-major matrix and each group is packed once into a
/// thread-local buffer, then used for every token.
unsafe fn thread_work(c: &Ctx<'_>, g0: usize, g1: usize, n_tokens: usize, otf: Option<usize>) {
    if let Some(wrb) = otf {
        BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            buf.clear();
            buf.resize(c.nsb * GSB, 0);
            for g in g0..g1 {
                pack_group(c.w, wrb, g, c.nsb, &mut buf);
                group_tokens(c, buf.as_ptr(), g, 0, n_tokens);
            }
        });
        return;
    }
    // Group-major: a group's weights stay in L1/L2 for all tokens.
    for g in g0..g1 {
        group_tokens(c, c.w.as_ptr().add(g * c.nsb * GSB), g, 0, n_tokens);
    }
}

/// Packed Q4_K matmul. The caller validated every length (`w`: `rows / 16`
/// groups of `cols / 256` group-super-blocks, `rows % 16 == 0`; `x_q`:
/// `n_tokens` Q8_K rows; `out`: `rows * n_tokens`) and that AVX-512 VNNI is
/// available. `otf = Some(wrb)`: `w` is the original row-major matrix,
/// packed on the fly.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    pool: &ThreadPool,
    w: &[u8],
    rows: usize,
    cols: usize,
    x_q: &[u8],
    n_tokens: usize,
    out: &mut [f32],
    otf: Option<usize>,
) {
    let nsb = cols / 256;
    let groups = rows / GROUP;
    PREP.with(|cell| {
        let mut prep = cell.borrow_mut();
        prepare(x_q, n_tokens, nsb, &mut prep);
        let out = SyncSlice::new(out);
        let ctx = Ctx {
            w,
            x_q,
            prep: &prep,
            rows,
            nsb,
            pf: 12288,
            out: &out,
        };
        let n_threads = pool.n_threads();
        let per = groups.div_ceil(n_threads);
        pool.run(&|ti, nt| {
            let per = if nt == n_threads { per } else { groups };
            let g0 = (ti * per).min(groups);
            let g1 = ((ti + 1) * per).min(groups);
            // SAFETY: tier and lengths checked by the caller; groups g0..g1
            // are this thread's.
            unsafe { thread_work(&ctx, g0, g1, n_tokens, otf) };
        });
    });
}
