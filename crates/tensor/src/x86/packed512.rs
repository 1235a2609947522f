//! AVX-512 VNNI matmul on row-interleaved ("packed") Q8_0 / Q4_0 / Q4_1
//! weights, see [`crate::PackedMatrix`] for the layout.
//!
//! Why: on ggml's row-major blocks one 512-bit `vpdpbusd` covers two blocks
//! of ONE row, so every pair of blocks needs its own float epilogue
//! (convert, scale product, FMA) per (row, token) and its scales must be
//! gathered and permuted. Interleaving 16 rows makes the 16 lanes of a
//! register 16 different rows: the activation side is a 4-byte broadcast,
//! the 16 row scales are one contiguous `vcvtph2ps`, and the float epilogue
//! runs once per block for 16 rows at a time. Decode streams the packed
//! matrix strictly sequentially (plus software prefetch).
//!
//! Integer exactness: Q8_0 weights are stored as `q ^ 0x80` (= q + 128,
//! unsigned for `vpdpbusd`), Q4_0 nibbles as stored (q + 8); the offset is
//! removed by starting the accumulator at `-offset * sum(x)` of the block,
//! precomputed per token by `gemm512::prepare`. Q4_1's `m * s` term is one
//! FMA per block.
//!
//! Q5_0 / Q5_1 are only packed on the fly (prefill), unpacked to one byte per
//! weight (q in 0..32, like Q8_0's layout without the flip): the packed group
//! is 1.45x the original, too much to keep as a `PackedMatrix`, but a
//! transient per-thread buffer, and it turns the fifth-bit decoding into a
//! once-per-group cost instead of once per (row, token) tile. Q5_0's offset
//! (16) goes through `corr` like Q4_0's; Q5_1's `m * s` like Q4_1's.

#![allow(unsafe_op_in_unsafe_fn)]
// Kernels index small fixed-size register arrays; index loops unroll fully.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;
use std::cell::RefCell;

use super::gemm512::{ActPrep, K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1, K_Q8_0, PREP, has_min, prepare};
use crate::{SyncSlice, ThreadPool};

/// Rows interleaved per group.
pub(crate) const GROUP: usize = 16;
/// Tokens per micro-kernel call.
const T: usize = 8;

/// Bytes of one packed group-block (16 rows x 32 elements).
pub(crate) const fn group_block_bytes(kind: u8) -> usize {
    match kind {
        K_Q8_0 | K_Q5_0 => 32 + 512,
        K_Q4_0 => 32 + 256,
        K_Q5_1 => 64 + 512,
        _ => 64 + 256,
    }
}

/// Whether the group-block holds one byte per weight (Q8_0, and Q5 unpacked).
const fn bytewise(kind: u8) -> bool {
    kind == K_Q8_0 || kind == K_Q5_0 || kind == K_Q5_1
}

/// Offset of the quants inside a group-block.
const fn quant_off(kind: u8) -> usize {
    if has_min(kind) { 64 } else { 32 }
}

/// Broadcasts the 4 activation bytes at `p` to all lanes.
#[inline(always)]
unsafe fn bcast4(p: *const u8) -> __m512i {
    _mm512_set1_epi32(core::ptr::read_unaligned(p as *const i32))
}

/// One group of 16 rows against `TT` tokens over `nb` blocks; lane `i` of
/// result `t` is row `i` dotted with token `t`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
unsafe fn group<const K: u8, const TT: usize>(
    w: *const u8,
    nb: usize,
    x: [*const u8; TT],
    dx: [*const f32; TT],
    sx: [*const f32; TT],
    corr: [*const i32; TT],
    pf: usize,
) -> [__m512; TT] {
    let gb_bytes = group_block_bytes(K);
    let qo = quant_off(K);
    let (xs, xoff) = if has_min(K) {
        (36usize, 4usize)
    } else {
        (34, 2)
    };
    let m4 = _mm512_set1_epi8(0x0f);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); TT];
    for b in 0..nb {
        let gb = w.add(b * gb_bytes);
        if pf != 0 {
            let mut l = 0;
            while l < gb_bytes {
                _mm_prefetch::<_MM_HINT_T0>(gb.wrapping_add(pf + l) as *const i8);
                l += 64;
            }
        }
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
        let q = gb.add(qo);
        if bytewise(K) {
            let mut wv = [zero; 8];
            for j in 0..8 {
                wv[j] = _mm512_loadu_si512(q.add(64 * j) as *const _);
            }
            let mw = if has_min(K) {
                _mm512_cvtph_ps(_mm256_loadu_si256(gb.add(32) as *const __m256i))
            } else {
                _mm512_setzero_ps()
            };
            for t in 0..TT {
                let xb = x[t].add(b * xs + xoff);
                let mut i0 = if has_min(K) {
                    zero
                } else {
                    _mm512_set1_epi32(*corr[t].add(b))
                };
                let mut i1 = zero;
                for j in (0..8).step_by(2) {
                    i0 = _mm512_dpbusd_epi32(i0, wv[j], bcast4(xb.add(4 * j)));
                    i1 = _mm512_dpbusd_epi32(i1, wv[j + 1], bcast4(xb.add(4 * j + 4)));
                }
                let d = _mm512_mul_ps(dw, _mm512_set1_ps(*dx[t].add(b)));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1)), d, acc[t]);
                if has_min(K) {
                    acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(*sx[t].add(b)), acc[t]);
                }
            }
        } else {
            let mut lo = [zero; 4];
            let mut hi = [zero; 4];
            for j in 0..4 {
                let v = _mm512_loadu_si512(q.add(64 * j) as *const _);
                lo[j] = _mm512_and_si512(v, m4);
                hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            }
            let mw = if K == K_Q4_1 {
                _mm512_cvtph_ps(_mm256_loadu_si256(gb.add(32) as *const __m256i))
            } else {
                _mm512_setzero_ps()
            };
            for t in 0..TT {
                let xb = x[t].add(b * xs + xoff);
                let mut i0 = if K == K_Q4_1 {
                    zero
                } else {
                    _mm512_set1_epi32(*corr[t].add(b))
                };
                let mut i1 = zero;
                for j in 0..4 {
                    i0 = _mm512_dpbusd_epi32(i0, lo[j], bcast4(xb.add(4 * j)));
                    i1 = _mm512_dpbusd_epi32(i1, hi[j], bcast4(xb.add(16 + 4 * j)));
                }
                let d = _mm512_mul_ps(dw, _mm512_set1_ps(*dx[t].add(b)));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1)), d, acc[t]);
                if K == K_Q4_1 {
                    acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(*sx[t].add(b)), acc[t]);
                }
            }
        }
    }
    acc
}

/// Everything a thread needs.
struct Ctx<'a> {
    w: &'a [u8],
    x_q: &'a [u8],
    prep: &'a ActPrep,
    rows: usize,
    nb: usize,
    xrb: usize,
    pf: usize,
    out: &'a SyncSlice<'a, f32>,
}

/// Group `g` against tokens `t0..t0 + TT`.
///
/// # Safety
/// AVX-512 VNNI available; group and tokens in range; the group's rows are
/// the calling thread's.
#[inline]
unsafe fn run<const K: u8, const TT: usize>(c: &Ctx<'_>, wg: *const u8, g: usize, t0: usize) {
    let nb16 = c.prep.nb16;
    let acc = group::<K, TT>(
        wg,
        c.nb,
        core::array::from_fn(|t| c.x_q.as_ptr().add((t0 + t) * c.xrb)),
        core::array::from_fn(|t| c.prep.dx.as_ptr().add((t0 + t) * nb16)),
        core::array::from_fn(|t| c.prep.sx.as_ptr().add((t0 + t) * nb16)),
        core::array::from_fn(|t| c.prep.corr.as_ptr().add((t0 + t) * nb16)),
        if TT < 4 { c.pf } else { 0 },
    );
    for (t, a) in acc.iter().enumerate() {
        let dst = c.out.slice_mut((t0 + t) * c.rows + g * GROUP, GROUP);
        _mm512_storeu_ps(dst.as_mut_ptr(), *a);
    }
}

/// Group `g` (weights at `wg`) for tokens `t0..t1`.
unsafe fn group_tokens<const K: u8>(c: &Ctx<'_>, wg: *const u8, g: usize, t0: usize, t1: usize) {
    let mut t = t0;
    while t < t1 {
        // Q8_0 takes 16 tokens per pass when it can: a group of a 2048-wide matrix is
        // 34 KiB packed, more than L1, so each pass streams it from L2 again; 16
        // accumulators + 8 weight vectors still fit the 32 registers.
        let left = t1 - t;
        let nt = if K == K_Q8_0 && left >= 16 {
            16
        } else {
            left.min(T)
        };
        match nt {
            16 => run::<K, 16>(c, wg, g, t),
            1 => run::<K, 1>(c, wg, g, t),
            2 => run::<K, 2>(c, wg, g, t),
            3 => run::<K, 3>(c, wg, g, t),
            4 => run::<K, 4>(c, wg, g, t),
            5 => run::<K, 5>(c, wg, g, t),
            6 => run::<K, 6>(c, wg, g, t),
            7 => run::<K, 7>(c, wg, g, t),
            _ => run::<K, T>(c, wg, g, t),
        }
        t += nt;
    }
}

/// Groups `g0..g1` for all tokens. With `otf` (`c.w` is then the original
/// row-major matrix of `wrb`-byte rows), each group is first packed into a
/// thread-local buffer and used for every token.
unsafe fn thread_work<const K: u8>(
    c: &Ctx<'_>,
    g0: usize,
    g1: usize,
    n_tokens: usize,
    otf: Option<usize>,
) {
    let gbytes = c.nb * group_block_bytes(K);
    if let Some(wrb) = otf {
        BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            buf.clear();
            buf.resize(gbytes, 0);
            for g in g0..g1 {
                pack_group(K, c.w, wrb, g, c.nb, &mut buf);
                group_tokens::<K>(c, buf.as_ptr(), g, 0, n_tokens);
            }
        });
        return;
    }
    // Group-major: a group's weights stay in L1/L2 for all tokens.
    for g in g0..g1 {
        group_tokens::<K>(c, c.w.as_ptr().add(g * gbytes), g, 0, n_tokens);
    }
}

thread_local! {
    /// One packed group, for on-the-fly packing (`otf`).
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Packs group `g` (rows `16g..16g + 16`) of the row-major `data` (rows of
/// `wrb` bytes, `nb` blocks of format `kind`) into `dst`
/// (`nb * group_block_bytes(kind)` bytes).
pub(crate) fn pack_group(kind: u8, data: &[u8], wrb: usize, g: usize, nb: usize, dst: &mut [u8]) {
    let gbb = group_block_bytes(kind);
    if kind == K_Q5_0 || kind == K_Q5_1 {
        pack_group_q5(kind, data, wrb, g, nb, dst);
        return;
    }
    let (bs, hdr, qlen) = match kind {
        K_Q8_0 => (34usize, 2usize, 32usize),
        K_Q4_0 => (18, 2, 16),
        _ => (20, 4, 16),
    };
    let qdst = quant_off(kind);
    let flip: u32 = if kind == K_Q8_0 { 0x8080_8080 } else { 0 };
    for i in 0..GROUP {
        let row = &data[(g * GROUP + i) * wrb..][..nb * bs];
        for (src, d) in row.chunks_exact(bs).zip(dst.chunks_exact_mut(gbb)) {
            d[2 * i..2 * i + 2].copy_from_slice(&src[..2]);
            if hdr == 4 {
                d[32 + 2 * i..32 + 2 * i + 2].copy_from_slice(&src[2..4]);
            }
            for j in 0..qlen / 4 {
                let mut v = [0u8; 4];
                v.copy_from_slice(&src[hdr + 4 * j..hdr + 4 * j + 4]);
                let v = u32::from_le_bytes(v) ^ flip;
                let o = qdst + 64 * j + 4 * i;
                d[o..o + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// [`pack_group`] for Q5_0 / Q5_1: scales (and Q5_1 mins) as for Q4, the
/// 5-bit weights unpacked to bytes in element order, chunk `j` holding
/// elements `4j..4j+4` of every row (row `i` at `4i`).
fn pack_group_q5(kind: u8, data: &[u8], wrb: usize, g: usize, nb: usize, dst: &mut [u8]) {
    let gbb = group_block_bytes(kind);
    let (bs, qh_off, qs_off) = if kind == K_Q5_0 {
        (22usize, 2usize, 6usize)
    } else {
        (24, 4, 8)
    };
    let qdst = quant_off(kind);
    for i in 0..GROUP {
        let row = &data[(g * GROUP + i) * wrb..][..nb * bs];
        for (src, d) in row.chunks_exact(bs).zip(dst.chunks_exact_mut(gbb)) {
            d[2 * i..2 * i + 2].copy_from_slice(&src[..2]);
            if kind == K_Q5_1 {
                d[32 + 2 * i..32 + 2 * i + 2].copy_from_slice(&src[2..4]);
            }
            let qh = u32::from_le_bytes([
                src[qh_off],
                src[qh_off + 1],
                src[qh_off + 2],
                src[qh_off + 3],
            ]);
            let qs = &src[qs_off..qs_off + 16];
            for e in 0..32 {
                let lo = if e < 16 {
                    qs[e] & 0x0f
                } else {
                    qs[e - 16] >> 4
                };
                let v = lo | ((((qh >> e) & 1) as u8) << 4);
                d[qdst + 64 * (e / 4) + 4 * i + e % 4] = v;
            }
        }
    }
}

/// Packed matmul. The caller validated every length (`w` holds
/// `rows / 16` groups of `cols / 32` group-blocks of `kind`, or with
/// `otf = Some(wrb)` the original row-major matrix; `rows % 16 == 0`; `x_q`
/// `n_tokens` rows of `xrb` bytes; `out` `rows * n_tokens`) and that
/// AVX-512 VNNI is available.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    pool: &ThreadPool,
    kind: u8,
    w: &[u8],
    rows: usize,
    cols: usize,
    x_q: &[u8],
    xrb: usize,
    n_tokens: usize,
    out: &mut [f32],
    otf: Option<usize>,
) {
    let nb = cols / 32;
    let groups = rows / GROUP;
    PREP.with(|cell| {
        let mut prep = cell.borrow_mut();
        prepare(kind, x_q, n_tokens, nb, &mut prep);
        let out = SyncSlice::new(out);
        let ctx = Ctx {
            w,
            x_q,
            prep: &prep,
            rows,
            nb,
            xrb,
            // ~12 KiB ahead of the sequential weight stream.
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
            // (rows 16*g0..16*g1) are this thread's.
            unsafe {
                match kind {
                    K_Q8_0 => thread_work::<K_Q8_0>(&ctx, g0, g1, n_tokens, otf),
                    K_Q4_0 => thread_work::<K_Q4_0>(&ctx, g0, g1, n_tokens, otf),
                    K_Q4_1 => thread_work::<K_Q4_1>(&ctx, g0, g1, n_tokens, otf),
                    K_Q5_0 => thread_work::<K_Q5_0>(&ctx, g0, g1, n_tokens, otf),
                    _ => thread_work::<K_Q5_1>(&ctx, g0, g1, n_tokens, otf),
                }
            }
        });
    });
}
