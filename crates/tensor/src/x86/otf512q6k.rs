//! AVX-512 VNNI prefill matmul for Q6_K: each thread packs a group of 16
//! rows at a time ("on the fly", into a thread-local buffer) into a
//! row-interleaved layout with the 6-bit quants expanded to bytes, then
//! runs that group against every token.
//!
//! Why: like `packed512k` for Q4_K, 16 rows in the 16 lanes of a register
//! make activations 4-byte broadcasts and every float operation serve 16
//! rows; expanding the quants once per call removes all bit fiddling from
//! the per-token loop. (Expanded, the layout is 30% larger than Q6_K, so it
//! is only used as a per-call scratch buffer, never stored.)
//!
//! Group-super-block layout (16 rows, 256 elements): `d[16]` f16,
//! `sc[16][16]` i8 (sub-block `s`, row `i` at `16s + i`), then 64 chunks of
//! 64 bytes: chunk `c` holds elements `4c..4c + 4` of every row as
//! unsigned `q` (0..63; the value is `q - 32`, whose offset is removed with
//! the activation block sums).

#![allow(unsafe_op_in_unsafe_fn)]
// Kernels index small fixed-size register arrays; index loops unroll fully.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;
use std::cell::RefCell;

use crate::{SyncSlice, ThreadPool};

const GROUP: usize = 16;
/// Bytes of one expanded group-super-block.
const GSB: usize = 32 + 256 + 4096;
/// Q8_K activation block bytes.
const XS: usize = 292;
/// Q6_K block bytes.
const WS: usize = 210;
/// Tokens per micro-kernel call.
const T: usize = 8;
/// Prep floats per (token, super-block): `d_y`, 16 x `32 * d_y * bsum_s`.
const PR: usize = 17;

/// Expands group `g` of the row-major Q6_K `data` into `dst`.
fn pack_group(data: &[u8], wrb: usize, g: usize, nsb: usize, dst: &mut [u8]) {
    for i in 0..GROUP {
        let row = &data[(g * GROUP + i) * wrb..][..nsb * WS];
        for (s, d) in row.chunks_exact(WS).zip(dst.chunks_exact_mut(GSB)) {
            d[2 * i..2 * i + 2].copy_from_slice(&s[208..210]);
            for j in 0..16 {
                d[32 + 16 * j + i] = s[192 + j];
            }
            let mut q = [0u8; 256];
            for n in 0..2 {
                let ql = &s[64 * n..64 * n + 64];
                let qh = &s[128 + 32 * n..128 + 32 * n + 32];
                for l in 0..32 {
                    q[128 * n + l] = (ql[l] & 0xf) | ((qh[l] & 3) << 4);
                    q[128 * n + l + 32] = (ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4);
                    q[128 * n + l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                    q[128 * n + l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                }
            }
            for c in 0..64 {
                let o = 288 + 64 * c + 4 * i;
                d[o..o + 4].copy_from_slice(&q[4 * c..4 * c + 4]);
            }
        }
    }
}

thread_local! {
    static PREP: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn prepare(x_q: &[u8], n_tokens: usize, nsb: usize, p: &mut Vec<f32>) {
    p.clear();
    p.resize(n_tokens * nsb * PR, 0.0);
    for (blk, o) in x_q.chunks_exact(XS).zip(p.chunks_exact_mut(PR)) {
        let dy = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
        o[0] = dy;
        for s in 0..16 {
            let b = i16::from_le_bytes([blk[260 + 2 * s], blk[261 + 2 * s]]) as f32;
            o[1 + s] = 32.0 * dy * b;
        }
    }
}

#[inline(always)]
unsafe fn bcast4(p: *const u8) -> __m512i {
    _mm512_set1_epi32(core::ptr::read_unaligned(p as *const i32))
}

/// One group (16 rows, expanded at `w`) against `TT` tokens.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
unsafe fn group<const TT: usize>(
    w: *const u8,
    nsb: usize,
    x: [*const u8; TT],
    pr: [*const f32; TT],
) -> [__m512; TT] {
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); TT];
    for sb in 0..nsb {
        let g = w.add(sb * GSB);
        let d16 = _mm512_cvtph_ps(_mm256_loadu_si256(g as *const __m256i));
        let mut dsc = [_mm512_setzero_ps(); 16];
        for s in 0..16 {
            let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(g.add(32 + 16 * s) as *const __m128i));
            dsc[s] = _mm512_mul_ps(d16, _mm512_cvtepi32_ps(sc));
        }
        // Offset: acc -= sum_s d*sc_s * 32*d_y*bsum_s.
        for t in 0..TT {
            let pt = pr[t].add(sb * PR);
            for s in 0..16 {
                acc[t] = _mm512_fnmadd_ps(dsc[s], _mm512_set1_ps(*pt.add(1 + s)), acc[t]);
            }
        }
        for p in 0..4 {
            let mut wv = [zero; 16];
            for k in 0..16 {
                wv[k] = _mm512_loadu_si512(g.add(288 + 64 * (16 * p + k)) as *const _);
            }
            for t in 0..TT {
                let xb = x[t].add(sb * XS + 4 + 64 * p);
                let dy = _mm512_set1_ps(*pr[t].add(sb * PR));
                let mut ia = [zero; 4];
                for k in 0..4 {
                    for s4 in 0..4 {
                        ia[s4] = _mm512_dpbusd_epi32(
                            ia[s4],
                            wv[4 * s4 + k],
                            bcast4(xb.add(16 * s4 + 4 * k)),
                        );
                    }
                }
                for s4 in 0..4 {
                    acc[t] = _mm512_fmadd_ps(
                        _mm512_mul_ps(_mm512_cvtepi32_ps(ia[s4]), dy),
                        dsc[4 * p + s4],
                        acc[t],
                    );
                }
            }
        }
    }
    acc
}

struct Ctx<'a> {
    x_q: &'a [u8],
    prep: &'a [f32],
    rows: usize,
    nsb: usize,
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
        core::array::from_fn(|t| c.prep.as_ptr().add((t0 + t) * c.nsb * PR)),
    );
    for (t, a) in acc.iter().enumerate() {
        let dst = c.out.slice_mut((t0 + t) * c.rows + g * GROUP, GROUP);
        _mm512_storeu_ps(dst.as_mut_ptr(), *a);
    }
}

unsafe fn group_tokens(c: &Ctx<'_>, wg: *const u8, g: usize, n_tokens: usize) {
    let mut t = 0;
    while t < n_tokens {
        let nt = (n_tokens - t).min(T);
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

/// Q6_K matmul packing on the fly. The caller validated every length
/// (`w`: `rows` Q6_K rows of `wrb` bytes, `rows % 16 == 0`; `x_q`:
/// `n_tokens` Q8_K rows; `out`: `rows * n_tokens`) and that AVX-512 VNNI is
/// available.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    pool: &ThreadPool,
    w: &[u8],
    wrb: usize,
    rows: usize,
    cols: usize,
    x_q: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    let nsb = cols / 256;
    let groups = rows / GROUP;
    PREP.with(|cell| {
        let mut prep = cell.borrow_mut();
        prepare(x_q, n_tokens, nsb, &mut prep);
        let out = SyncSlice::new(out);
        let ctx = Ctx {
            x_q,
            prep: &prep,
            rows,
            nsb,
            out: &out,
        };
        let n_threads = pool.n_threads();
        let per = groups.div_ceil(n_threads);
        pool.run(&|ti, nt| {
            let per = if nt == n_threads { per } else { groups };
            let g0 = (ti * per).min(groups);
            let g1 = ((ti + 1) * per).min(groups);
            BUF.with(|cell| {
                let mut buf = cell.borrow_mut();
                buf.clear();
                buf.resize(nsb * GSB, 0);
                for g in g0..g1 {
                    pack_group(w, wrb, g, nsb, &mut buf);
                    // SAFETY: tier and lengths checked by the caller; group
                    // g is this thread's; `buf` holds the packed group.
                    unsafe { group_tokens(&ctx, buf.as_ptr(), g, n_tokens) };
                }
            });
        });
    });
}
