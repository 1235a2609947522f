//! Attention tiles: scores of a block of queries against 16 key positions, and the
//! probability-weighted sum of 16 value rows.
//!
//! Calling a 64-element dot product per (query, position) spends most of the time in call
//! overhead and horizontal reductions. Here keys come transposed (`[head_dim][16]`), so the
//! 16 scores of one query are 16 vertical lanes accumulated over `head_dim` steps with no
//! reduction, and each converted key/value tile serves every query of the block. The loops
//! are plain Rust compiled once generically and once inside `#[target_feature]` functions,
//! where LLVM vectorizes them with AVX2 or AVX-512.

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
    qk_generic(qs, hd, kt, scale, out);
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
    pv_generic(w, v, tl, hd, out);
}

#[inline(always)]
fn qk_generic(qs: &[f32], hd: usize, kt: &[f32], scale: f32, out: &mut [f32]) {
    for (q, o) in qs.chunks_exact(hd).zip(out.chunks_exact_mut(ATT_TILE)) {
        let mut acc = [0f32; ATT_TILE];
        for (&qd, k) in q.iter().zip(kt.chunks_exact(ATT_TILE)) {
            for (a, &kj) in acc.iter_mut().zip(k) {
                *a += qd * kj;
            }
        }
        for (o, a) in o.iter_mut().zip(acc) {
            *o = a * scale;
        }
    }
}

#[inline(always)]
fn pv_generic(w: &[f32], v: &[f32], tl: usize, hd: usize, out: &mut [f32]) {
    for (wq, o) in w.chunks_exact(ATT_TILE).zip(out.chunks_exact_mut(hd)) {
        for (&wj, vr) in wq[..tl].iter().zip(v.chunks_exact(hd)) {
            for (od, &vd) in o.iter_mut().zip(vr) {
                *od += wj * vd;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn qk_avx512(qs: &[f32], hd: usize, kt: &[f32], scale: f32, out: &mut [f32]) {
    qk_generic(qs, hd, kt, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn qk_avx2(qs: &[f32], hd: usize, kt: &[f32], scale: f32, out: &mut [f32]) {
    qk_generic(qs, hd, kt, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn pv_avx512(w: &[f32], v: &[f32], tl: usize, hd: usize, out: &mut [f32]) {
    pv_generic(w, v, tl, hd, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pv_avx2(w: &[f32], v: &[f32], tl: usize, hd: usize, out: &mut [f32]) {
    pv_generic(w, v, tl, hd, out)
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
