//! Scores of one f32 query against many stored f32 rows: `out[r] = Σ_d q[d] · rows[r][d]`.
//!
//! This is the flat-scan kernel of the vector index (retrieval, issue 14): 384-dimensional
//! embeddings, tens of thousands of rows per query. Calling [`crate::dot_f32`] per row pays
//! a dispatch and a horizontal reduction per row and reloads the query each time; here four
//! rows are scored together, each with 16 vertical lanes, so one query load serves four
//! rows and the reduction happens once per row at the end. The loops are plain Rust compiled
//! once generically and once inside `#[target_feature]` functions (as in `attn.rs`), where
//! LLVM vectorizes the 16-lane accumulators into AVX2 / AVX-512 registers.
//!
//! The summation order (16 lanes, then a tree of lanes, then the tail) differs from the
//! scalar reference's sequential f64 sum, so results agree to rounding, not bit for bit.

use crate::isa::{Isa, best_isa};

/// Vertical lanes per row accumulator.
const LANES: usize = 16;
/// Rows scored together (one query load serves them all).
const ROWS: usize = 4;

/// Scalar reference: `out[r] = Σ_d q[d] · rows[r·dim + d]` with f64 accumulation, for
/// `r < min(out.len(), rows.len() / dim)`.
pub fn dot_rows_f32_scalar(q: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    if dim == 0 {
        out.fill(0.0);
        return;
    }
    let q = &q[..dim.min(q.len())];
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        *o = q
            .iter()
            .zip(row)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum::<f64>() as f32;
    }
}

/// `out[r] = Σ_d q[d] · rows[r·dim + d]` for `r < min(out.len(), rows.len() / dim)`, on the
/// best SIMD tier of this CPU. `q` must hold `dim` values; a shorter `q` scores only its
/// prefix (debug builds assert), since a panic here would be reachable from data.
pub fn dot_rows_f32(q: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    dot_rows_f32_with(best_isa(), q, rows, dim, out)
}

/// [`dot_rows_f32`] on a chosen tier (for tests and benchmarks); a tier this CPU lacks
/// falls back to the portable loop.
pub fn dot_rows_f32_with(isa: Isa, q: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    debug_assert!(q.len() >= dim, "query shorter than dim");
    if dim == 0 {
        out.fill(0.0);
        return;
    }
    let n = out.len().min(rows.len() / dim);
    let qd = dim.min(q.len());
    let (q, rows, out) = (&q[..qd], &rows[..n * dim], &mut out[..n]);
    let isa = if isa.is_available() { isa } else { Isa::Scalar };
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the tier was checked available on this CPU just above.
        Isa::Avx512Vnni => return unsafe { rows_avx512(q, rows, dim, out) },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { rows_avx2(q, rows, dim, out) },
        _ => {}
    }
    if isa == Isa::Scalar {
        dot_rows_f32_scalar(q, rows, dim, out);
    } else {
        rows_generic(q, rows, dim, out);
    }
}

/// Sums 16 lanes pairwise (a fixed tree, so every tier rounds the same way).
#[inline(always)]
fn reduce(acc: &[f32; LANES]) -> f32 {
    let mut h = [0f32; 8];
    for (i, v) in h.iter_mut().enumerate() {
        *v = acc[i] + acc[i + 8];
    }
    let (a, b, c, d) = (h[0] + h[4], h[1] + h[5], h[2] + h[6], h[3] + h[7]);
    (a + c) + (b + d)
}

/// One row: 16-lane body, then the `dim % 16` tail added sequentially.
#[inline(always)]
fn dot_one(q: &[f32], row: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let body = q.len() / LANES * LANES;
    for (qc, rc) in q[..body]
        .chunks_exact(LANES)
        .zip(row[..body].chunks_exact(LANES))
    {
        for j in 0..LANES {
            acc[j] += qc[j] * rc[j];
        }
    }
    let mut s = reduce(&acc);
    for (a, b) in q[body..].iter().zip(&row[body..]) {
        s += a * b;
    }
    s
}

#[inline(always)]
fn rows_generic(q: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    // `q` may be shorter than `dim` only in a caller bug (release builds score the prefix).
    let qd = q.len();
    let body = qd / LANES * LANES;
    let mut blocks = rows.chunks_exact(ROWS * dim);
    let mut outs = out.chunks_exact_mut(ROWS);
    for (block, o) in (&mut blocks).zip(&mut outs) {
        let (r0, rest) = block.split_at(dim);
        let (r1, rest) = rest.split_at(dim);
        let (r2, r3) = rest.split_at(dim);
        let (r0, r1, r2, r3) = (&r0[..qd], &r1[..qd], &r2[..qd], &r3[..qd]);
        let mut acc = [[0f32; LANES]; ROWS];
        let mut d = 0;
        while d < body {
            let qc = &q[d..d + LANES];
            let (c0, c1, c2, c3) = (
                &r0[d..d + LANES],
                &r1[d..d + LANES],
                &r2[d..d + LANES],
                &r3[d..d + LANES],
            );
            for j in 0..LANES {
                acc[0][j] += qc[j] * c0[j];
                acc[1][j] += qc[j] * c1[j];
                acc[2][j] += qc[j] * c2[j];
                acc[3][j] += qc[j] * c3[j];
            }
            d += LANES;
        }
        for (r, (a, row)) in acc.iter().zip([r0, r1, r2, r3]).enumerate() {
            let mut s = reduce(a);
            for (x, y) in q[body..].iter().zip(&row[body..]) {
                s += x * y;
            }
            o[r] = s;
        }
    }
    // Fewer than four rows left: one at a time, same summation order as above.
    for (o, row) in outs
        .into_remainder()
        .iter_mut()
        .zip(blocks.remainder().chunks_exact(dim))
    {
        *o = dot_one(q, &row[..qd]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn rows_avx512(q: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    rows_generic(q, rows, dim, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(q: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    rows_generic(q, rows, dim, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::available_isas;
    use proptest::prelude::*;

    fn check(q: &[f32], rows: &[f32], dim: usize) {
        let n = rows.len() / dim.max(1);
        let mut want = vec![0f32; n];
        dot_rows_f32_scalar(q, rows, dim, &mut want);
        // Worst-case rounding of an f32 sum of `dim` products: dim ulps of Σ|q·r|.
        let mags: Vec<f32> = rows
            .chunks_exact(dim.max(1))
            .map(|r| q.iter().zip(r).map(|(a, b)| (a * b).abs()).sum())
            .collect();
        for isa in available_isas() {
            let mut got = vec![f32::NAN; n];
            dot_rows_f32_with(isa, q, rows, dim, &mut got);
            for i in 0..n {
                let tol = 1e-6 + mags[i] * (dim as f32 + 2.0) * f32::EPSILON;
                assert!(
                    (got[i] - want[i]).abs() <= tol,
                    "{isa:?} row {i}: got {} want {} (dim {dim})",
                    got[i],
                    want[i]
                );
            }
        }
    }

    #[test]
    fn embedding_shape_matches_reference() {
        let dim = 384;
        let f = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 57.0;
        let q: Vec<f32> = (0..dim).map(f).collect();
        let rows: Vec<f32> = (0..dim * 11).map(|i| f(i * 7 + 3)).collect();
        check(&q, &rows, dim);
    }

    #[test]
    fn short_out_scores_only_its_rows() {
        let dim = 5;
        let q = [1.0f32; 5];
        let rows: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let mut out = [0f32; 2];
        dot_rows_f32(&q, &rows, dim, &mut out);
        assert_eq!(out, [10.0, 35.0]);
    }

    proptest! {
        #[test]
        fn rows_match_scalar_reference(
            dim in 1usize..80,
            n in 0usize..13,
            seed in any::<u64>(),
        ) {
            // A splitmix-style stream: values in [-2, 2), reproducible from the seed.
            let mut s = seed;
            let mut next = move || {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                ((z >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            };
            let q: Vec<f32> = (0..dim).map(|_| next()).collect();
            let rows: Vec<f32> = (0..dim * n).map(|_| next()).collect();
            check(&q, &rows, dim);
        }
    }
}
