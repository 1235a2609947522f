//! Attention tiles: scores of a block of queries against 16 key positions, and the
//! probability-weighted sum of 16 value rows.
//!
//! Calling a 64-element dot product per (query, position) spends most of the time in call
//! overhead and horizontal reductions. Here keys come transposed (`[head_dim][16]`), so the
//! 16 scores of one query are 16 vertical lanes accumulated over `head_dim` steps with no
//! reduction, and each converted key/value tile serves every query of the block. The loops
//! are plain Rust compiled once generically and once inside `#[target_feature]` functions,
//! where LLVM vectorizes them with AVX2 or AVX-512.

use crate::activation::madd;
use crate::isa::{Isa, best_isa};

/// Key positions per tile.
pub const ATT_TILE: usize = 16;

/// `out[q][j] = scale * Σ_d qs[q][d] * kt[d][j]` for `q < nq`, `j < 16`.
/// `qs` is `[nq][hd]`, `kt` is `[hd][16]`, `out` is `[nq][16]`.
pub fn qk_tile(qs: &[f32], nq: usize, hd: usize, kt: &[f32], scale: f32, out: &mut [f32]) {
    let (qs, kt, out) = (
        &qs[..nq * hd],
        &kt[..hd * ATT_TILE],
        &mut out[..nq * ATT_TILE],
    );
    #[cfg(target_arch = "x86_64")]
    match best_isa() {
        // SAFETY: the tier was detected at run time.
        Isa::Avx512Vnni => return unsafe { qk_avx512(qs, hd, kt, scale, out) },
        Isa::Avx2 => return unsafe { qk_avx2(qs, hd, kt, scale, out) },
        _ => {}
    }
    qk_generic::<false>(qs, hd, kt, scale, out);
}

/// `out[q][d] += Σ_{j < tl} w[q][j] * v[j][d]`. `w` is `[nq][16]`, `v` is `[16][hd]`,
/// `out` is `[nq][hd]`.
pub fn pv_tile(w: &[f32], nq: usize, v: &[f32], tl: usize, hd: usize, out: &mut [f32]) {
    let tl = tl.min(ATT_TILE);
    let (w, v, out) = (
        &w[..nq * ATT_TILE],
        &v[..ATT_TILE * hd],
        &mut out[..nq * hd],
    );
    #[cfg(target_arch = "x86_64")]
    match best_isa() {
        // SAFETY: the tier was detected at run time.
        Isa::Avx512Vnni => return unsafe { pv_avx512(w, v, tl, hd, out) },
        Isa::Avx2 => return unsafe { pv_avx2(w, v, tl, hd, out) },
        _ => {}
    }
    pv_generic::<false>(w, v, tl, hd, out);
}

/// Queries per register block in `qk`: 4 x 16 accumulators fill half of AVX2's
/// registers and each key row loaded serves four queries.
const QK_BLOCK: usize = 4;

#[inline(always)]
fn qk_generic<const FMA: bool>(qs: &[f32], hd: usize, kt: &[f32], scale: f32, out: &mut [f32]) {
    let mut q = qs.chunks_exact(hd * QK_BLOCK);
    let mut o = out.chunks_exact_mut(ATT_TILE * QK_BLOCK);
    for (q, o) in (&mut q).zip(&mut o) {
        qk_block::<QK_BLOCK, FMA>(q, hd, kt, scale, o);
    }
    for (q, o) in q
        .remainder()
        .chunks_exact(hd)
        .zip(o.into_remainder().chunks_exact_mut(ATT_TILE))
    {
        qk_block::<1, FMA>(q, hd, kt, scale, o);
    }
}

#[inline(always)]
fn qk_block<const QB: usize, const FMA: bool>(
    qs: &[f32],
    hd: usize,
    kt: &[f32],
    scale: f32,
    out: &mut [f32],
) {
    let mut acc = [[0f32; ATT_TILE]; QB];
    let q: [&[f32]; QB] = std::array::from_fn(|i| &qs[i * hd..(i + 1) * hd]);
    for (d, k) in kt.chunks_exact(ATT_TILE).take(hd).enumerate() {
        for i in 0..QB {
            let qd = q[i][d];
            for (a, &kj) in acc[i].iter_mut().zip(k) {
                *a = madd::<FMA>(qd, kj, *a);
            }
        }
    }
    for (o, a) in out.chunks_exact_mut(ATT_TILE).zip(&acc) {
        for (o, &a) in o.iter_mut().zip(a) {
            *o = a * scale;
        }
    }
}

#[inline(always)]
fn pv_generic<const FMA: bool>(w: &[f32], v: &[f32], tl: usize, hd: usize, out: &mut [f32]) {
    // Head sizes in use get a fixed-size block whose accumulators live in registers
    // across the 16 value rows; any other size takes the plain loop.
    match hd {
        32 => pv_fixed::<32, 3, FMA>(w, v, tl, out),
        64 => pv_fixed::<64, 1, FMA>(w, v, tl, out),
        128 => pv_fixed::<128, 1, FMA>(w, v, tl, out),
        _ => pv_any::<FMA>(w, v, tl, hd, out),
    }
}

#[inline(always)]
fn pv_any<const FMA: bool>(w: &[f32], v: &[f32], tl: usize, hd: usize, out: &mut [f32]) {
    for (wq, o) in w.chunks_exact(ATT_TILE).zip(out.chunks_exact_mut(hd)) {
        for (&wj, vr) in wq[..tl].iter().zip(v.chunks_exact(hd)) {
            for (od, &vd) in o.iter_mut().zip(vr) {
                *od = madd::<FMA>(wj, vd, *od);
            }
        }
    }
}

#[inline(always)]
fn pv_fixed<const HD: usize, const QB: usize, const FMA: bool>(
    w: &[f32],
    v: &[f32],
    tl: usize,
    out: &mut [f32],
) {
    let (rows, _) = v.as_chunks::<HD>();
    let rows = &rows[..tl.min(rows.len())];
    let mut wq = w.chunks_exact(ATT_TILE * QB);
    let (mut o, _) = out.as_chunks_mut::<HD>();
    let mut ob = o.chunks_exact_mut(QB);
    for (w, o) in (&mut wq).zip(&mut ob) {
        pv_block::<HD, QB, FMA>(w, rows, o);
    }
    o = ob.into_remainder();
    for (w, o) in wq
        .remainder()
        .chunks_exact(ATT_TILE)
        .zip(o.chunks_exact_mut(1))
    {
        pv_block::<HD, 1, FMA>(w, rows, o);
    }
}

/// `out[i] += Σ_j w[i][j] · rows[j]` for the block's `QB` queries, accumulated in
/// registers.
#[inline(always)]
fn pv_block<const HD: usize, const QB: usize, const FMA: bool>(
    w: &[f32],
    rows: &[[f32; HD]],
    out: &mut [[f32; HD]],
) {
    let mut acc = [[0f32; HD]; QB];
    for (a, o) in acc.iter_mut().zip(out.iter()) {
        *a = *o;
    }
    for (j, vr) in rows.iter().enumerate() {
        for (i, a) in acc.iter_mut().enumerate() {
            let wj = w[i * ATT_TILE + j];
            for (a, &vd) in a.iter_mut().zip(vr) {
                *a = madd::<FMA>(wj, vd, *a);
            }
        }
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = *a;
    }
}

// The SIMD wrappers keep multiply and add unfused (`::<false>`): fusing changes the
// rounding of every score, and the Llama path's greedy continuations, pinned to llama.cpp
// in crates/engine/tests/smollm2.rs, then flip at near-ties (4 of 6 prompts diverged).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn qk_avx512(qs: &[f32], hd: usize, kt: &[f32], scale: f32, out: &mut [f32]) {
    qk_generic::<false>(qs, hd, kt, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn qk_avx2(qs: &[f32], hd: usize, kt: &[f32], scale: f32, out: &mut [f32]) {
    qk_generic::<false>(qs, hd, kt, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn pv_avx512(w: &[f32], v: &[f32], tl: usize, hd: usize, out: &mut [f32]) {
    pv_generic::<false>(w, v, tl, hd, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pv_avx2(w: &[f32], v: &[f32], tl: usize, hd: usize, out: &mut [f32]) {
    pv_generic::<false>(w, v, tl, hd, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_match_plain_sums() {
        let (nq, hd) = (5, 64);
        let f = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 17.0;
        let qs: Vec<f32> = (0..nq * hd).map(f).collect();
        let kt: Vec<f32> = (0..hd * ATT_TILE).map(|i| f(i + 7)).collect();
        let mut s = vec![0.0; nq * ATT_TILE];
        qk_tile(&qs, nq, hd, &kt, 0.5, &mut s);
        for q in 0..nq {
            for j in 0..ATT_TILE {
                let want: f32 = (0..hd)
                    .map(|d| qs[q * hd + d] * kt[d * ATT_TILE + j])
                    .sum::<f32>()
                    * 0.5;
                assert!(
                    (s[q * ATT_TILE + j] - want).abs() < 1e-3 * (1.0 + want.abs()),
                    "{q} {j}"
                );
            }
        }
        let v: Vec<f32> = (0..ATT_TILE * hd).map(|i| f(i + 3)).collect();
        let mut out = vec![1.0; nq * hd];
        pv_tile(&s, nq, &v, 11, hd, &mut out);
        for q in 0..nq {
            for d in 0..hd {
                let want: f32 = 1.0
                    + (0..11)
                        .map(|j| s[q * ATT_TILE + j] * v[j * hd + d])
                        .sum::<f32>();
                assert!(
                    (out[q * hd + d] - want).abs() < 1e-3 * (1.0 + want.abs()),
                    "{q} {d}"
                );
            }
        }
    }
}

/// Decoding attention straight from an f16 cache block: `out[q][j] = scale * Σ_d
/// qs[q][d] * k[j * stride + d]` for `j < tl` (`tl <= 16`), `q < nq`. `k` starts at the
/// head's first element of the block's first row; rows are `stride` elements apart.
///
/// Used when one token's few query rows (the query heads of one KV head) read a block: a
/// transposed f32 tile would cost more to build than it saves.
#[allow(clippy::too_many_arguments)]
pub fn qk_rows_f16(
    qs: &[f32],
    nq: usize,
    hd: usize,
    k: &[half::f16],
    stride: usize,
    tl: usize,
    scale: f32,
    out: &mut [f32],
) {
    let tl = tl.min(ATT_TILE);
    if tl == 0 {
        return;
    }
    let (qs, k, out) = (
        &qs[..nq * hd],
        &k[..(tl - 1) * stride + hd],
        &mut out[..nq * ATT_TILE],
    );
    #[cfg(target_arch = "x86_64")]
    if best_isa() == Isa::Avx512Vnni && hd.is_multiple_of(16) && hd <= 256 {
        // SAFETY: tier detected; lengths checked above.
        return unsafe { x86_rows::qk(qs, nq, hd, k, stride, tl, scale, out) };
    }
    for (q, o) in qs.chunks_exact(hd).zip(out.chunks_exact_mut(ATT_TILE)) {
        for (j, oj) in o[..tl].iter_mut().enumerate() {
            let kr = &k[j * stride..j * stride + hd];
            *oj = scale * q.iter().zip(kr).map(|(a, b)| a * b.to_f32()).sum::<f32>();
        }
    }
}

/// `out[q][d] += Σ_{j < tl} w[q][j] * v[j * stride + d]`, the f16 counterpart of
/// [`pv_tile`] for decoding (see [`qk_rows_f16`]).
pub fn pv_rows_f16(
    w: &[f32],
    nq: usize,
    v: &[half::f16],
    stride: usize,
    tl: usize,
    hd: usize,
    out: &mut [f32],
) {
    let tl = tl.min(ATT_TILE);
    if tl == 0 {
        return;
    }
    let (w, v, out) = (
        &w[..nq * ATT_TILE],
        &v[..(tl - 1) * stride + hd],
        &mut out[..nq * hd],
    );
    #[cfg(target_arch = "x86_64")]
    if best_isa() == Isa::Avx512Vnni && hd.is_multiple_of(16) && hd <= 256 {
        // SAFETY: tier detected; lengths checked above.
        return unsafe { x86_rows::pv(w, nq, v, stride, tl, hd, out) };
    }
    for (wq, o) in w.chunks_exact(ATT_TILE).zip(out.chunks_exact_mut(hd)) {
        for (j, &wj) in wq[..tl].iter().enumerate() {
            for (od, vd) in o.iter_mut().zip(&v[j * stride..j * stride + hd]) {
                *od += wj * vd.to_f32();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_rows {
    use core::arch::x86_64::*;

    use super::ATT_TILE;

    /// # Safety
    /// AVX-512F available; `hd % 16 == 0`, `hd <= 256`; slices as checked by the caller.
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn qk(
        qs: &[f32],
        nq: usize,
        hd: usize,
        k: &[half::f16],
        stride: usize,
        tl: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        // SAFETY: the caller checked the tier and that every row read lies in `k` and `qs`.
        unsafe {
            let kp = k.as_ptr() as *const u16;
            for j in 0..tl {
                let row = kp.add(j * stride);
                for q in 0..nq {
                    let qp = qs.as_ptr().add(q * hd);
                    let mut acc = _mm512_setzero_ps();
                    let mut c = 0;
                    while c < hd {
                        let kv = _mm512_cvtph_ps(_mm256_loadu_si256(row.add(c) as *const __m256i));
                        acc = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(c)), kv, acc);
                        c += 16;
                    }
                    out[q * ATT_TILE + j] = scale * _mm512_reduce_add_ps(acc);
                }
            }
        }
    }

    /// # Safety
    /// As [`qk`].
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn pv(
        w: &[f32],
        nq: usize,
        v: &[half::f16],
        stride: usize,
        tl: usize,
        hd: usize,
        out: &mut [f32],
    ) {
        // SAFETY: as in `qk`: every row read lies in `v`, every write in `out`.
        unsafe {
            let vp = v.as_ptr() as *const u16;
            let mut c = 0;
            // Per 16-lane chunk of the head: the chunk of every value row is converted once and
            // used by every query row; accumulators stay in registers across the block.
            while c < hd {
                let mut acc = [_mm512_setzero_ps(); 4];
                for (q, a) in acc.iter_mut().enumerate().take(nq.min(4)) {
                    *a = _mm512_loadu_ps(out.as_ptr().add(q * hd + c));
                }
                for j in 0..tl {
                    let x = _mm512_cvtph_ps(_mm256_loadu_si256(
                        vp.add(j * stride + c) as *const __m256i
                    ));
                    for (q, a) in acc.iter_mut().enumerate().take(nq.min(4)) {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(w[q * ATT_TILE + j]), x, *a);
                    }
                    for q in 4..nq {
                        let o = out.as_mut_ptr().add(q * hd + c);
                        _mm512_storeu_ps(
                            o,
                            _mm512_fmadd_ps(
                                _mm512_set1_ps(w[q * ATT_TILE + j]),
                                x,
                                _mm512_loadu_ps(o),
                            ),
                        );
                    }
                }
                for (q, a) in acc.iter().enumerate().take(nq.min(4)) {
                    _mm512_storeu_ps(out.as_mut_ptr().add(q * hd + c), *a);
                }
                c += 16;
            }
        }
    }
}

#[cfg(test)]
mod rows_tests {
    use half::f16;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Both the dispatched kernels and the portable ones, for the head sizes with
        /// fixed-size blocks (32, 64, 128) and others, against f64 sums.
        #[test]
        fn tiles_match_f64_sums(
            nq in 1usize..12, hd in prop::sample::select(vec![8usize, 16, 32, 48, 64, 128]),
            tl in 1usize..17, seed in any::<u64>()
        ) {
            let mut s = seed | 1;
            let mut rnd = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5 };
            let qs: Vec<f32> = (0..nq * hd).map(|_| rnd()).collect();
            let kt: Vec<f32> = (0..hd * ATT_TILE).map(|_| rnd()).collect();
            let v: Vec<f32> = (0..ATT_TILE * hd).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..nq * ATT_TILE).map(|_| rnd()).collect();
            for portable in [false, true] {
                let mut sc = vec![f32::NAN; nq * ATT_TILE];
                let mut out = vec![0.25f32; nq * hd];
                if portable {
                    qk_generic::<false>(&qs, hd, &kt, 0.5, &mut sc);
                    pv_generic::<false>(&w, &v, tl, hd, &mut out);
                } else {
                    qk_tile(&qs, nq, hd, &kt, 0.5, &mut sc);
                    pv_tile(&w, nq, &v, tl, hd, &mut out);
                }
                for q in 0..nq {
                    for j in 0..ATT_TILE {
                        let want: f64 = (0..hd).map(|d| qs[q * hd + d] as f64 * kt[d * ATT_TILE + j] as f64).sum::<f64>() * 0.5;
                        prop_assert!((sc[q * ATT_TILE + j] as f64 - want).abs() < 1e-5, "qk {q} {j}");
                    }
                    for d in 0..hd {
                        let want: f64 = 0.25 + (0..tl).map(|j| w[q * ATT_TILE + j] as f64 * v[j * hd + d] as f64).sum::<f64>();
                        prop_assert!((out[q * hd + d] as f64 - want).abs() < 1e-5, "pv {q} {d}");
                    }
                }
            }
        }

        #[test]
        fn f16_rows_match_plain_sums(
            nq in 1usize..7, hdk in 1usize..9, tl in 1usize..17, pad in 0usize..40, seed in any::<u64>()
        ) {
            let hd = hdk * 16;
            let stride = hd + pad;
            let mut s = seed | 1;
            let mut rnd = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5 };
            let qs: Vec<f32> = (0..nq * hd).map(|_| rnd()).collect();
            let k: Vec<f16> = (0..tl * stride).map(|_| f16::from_f32(rnd())).collect();
            let v: Vec<f16> = (0..tl * stride).map(|_| f16::from_f32(rnd())).collect();
            let w: Vec<f32> = (0..nq * ATT_TILE).map(|_| rnd()).collect();
            let mut sc = vec![0f32; nq * ATT_TILE];
            qk_rows_f16(&qs, nq, hd, &k, stride, tl, 0.5, &mut sc);
            let mut out = vec![0.25f32; nq * hd];
            pv_rows_f16(&w, nq, &v, stride, tl, hd, &mut out);
            for q in 0..nq {
                for j in 0..tl {
                    let want: f64 = (0..hd).map(|d| qs[q * hd + d] as f64 * k[j * stride + d].to_f64()).sum::<f64>() * 0.5;
                    prop_assert!((sc[q * ATT_TILE + j] as f64 - want).abs() < 1e-4, "qk {q} {j}");
                }
                for d in 0..hd {
                    let want: f64 = 0.25 + (0..tl).map(|j| w[q * ATT_TILE + j] as f64 * v[j * stride + d].to_f64()).sum::<f64>();
                    prop_assert!((out[q * hd + d] as f64 - want).abs() < 1e-4, "pv {q} {d}");
                }
            }
        }
    }
}
