//! The linear layer without bias, as `nn.Linear` stores it: `out = inp · Wᵀ`, `W` (OC, C).
//! All three products (forward, input gradient, weight gradient) are the one kernel
//! [`Float::gemm`] with operands read transposed, so f32 runs all of them on the SIMD GEMM.

use ferrollama_tensor::{SyncSlice, ThreadPool};

use crate::Float;
use crate::float::Layout;

/// `out (T, OC) = inp (T, C) · w (OC, C)ᵀ`.
pub fn forward<F: Float>(
    pool: &ThreadPool,
    out: &mut [F],
    inp: &[F],
    w: &[F],
    c: usize,
    oc: usize,
) {
    F::gemm(pool, out, inp, w, Layout::Rows, c, oc, false);
}

/// `dinp (T, C) += dout (T, OC) · w (OC, C)`; `dw (OC, C) += doutᵀ · inp`. Either is
/// `None` where that gradient is not wanted (a frozen weight, an input that is data).
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(
    pool: &ThreadPool,
    dinp: Option<&mut [F]>,
    dw: Option<&mut [F]>,
    dout: &[F],
    inp: &[F],
    w: &[F],
    c: usize,
    oc: usize,
) {
    let t = inp.len() / c;
    if let Some(dinp) = dinp {
        // dinp += dout · (wᵀ)ᵀ: the matrix wᵀ (C, OC) is stored as w.
        F::gemm(pool, dinp, dout, w, Layout::Transposed, oc, c, true);
    }
    // dw += doutᵀ (OC, T) · (inpᵀ (C, T))ᵀ: inpᵀ is stored as inp.
    if let Some(dw) = dw {
        if c * (t + oc) < t * oc {
            // A narrow input (a LoRA B's `x Aᵀ`, C = rank): transposing it and the small
            // result is cheaper than transposing dout. dWᵀ (C, OC) = inpᵀ (C, T) · dout
            // (T, OC): the matrix doutᵀ (OC, T) is stored as dout.
            let inp_t = transpose(pool, inp, t, c); // (C, T)
            let mut dw_t = vec![F::ZERO; c * oc];
            F::gemm(
                pool,
                &mut dw_t,
                &inp_t,
                dout,
                Layout::Transposed,
                t,
                oc,
                false,
            );
            let dws = SyncSlice::new(dw);
            super::par_ranges(pool, oc, c * oc, &|rows| {
                // SAFETY: the row ranges of different threads are disjoint.
                let dw = unsafe { dws.slice_mut(rows.start * c, rows.len() * c) };
                for (o, row) in rows.zip(dw.chunks_exact_mut(c)) {
                    for (j, d) in row.iter_mut().enumerate() {
                        *d += dw_t[j * oc + o];
                    }
                }
            });
        } else {
            // The row operand doutᵀ (OC, T) is read from dout (T, OC) as it is.
            F::gemm_xt(pool, dw, dout, inp, Layout::Transposed, t, c, true);
        }
    }
}

/// `(rows, cols)` row-major into `(cols, rows)`, in 16 x 16 tiles so that both the reads
/// and the writes stay within a few cache lines at a time. The output's rows are spread
/// over the pool.
pub fn transpose<F: Float>(pool: &ThreadPool, a: &[F], rows: usize, cols: usize) -> Vec<F> {
    const B: usize = 16;
    let mut out = vec![F::ZERO; rows * cols];
    let os = SyncSlice::new(&mut out);
    // Ranges of 16-column tiles of `a`, i.e. of 16-row bands of the output.
    super::par_ranges(pool, cols.div_ceil(B), rows * cols, &|tiles| {
        let (c_lo, c_hi) = (tiles.start * B, (tiles.end * B).min(cols));
        // SAFETY: output rows c_lo..c_hi belong to this thread alone.
        let out = unsafe { os.slice_mut(c_lo * rows, (c_hi - c_lo) * rows) };
        for r0 in (0..rows).step_by(B) {
            for c0 in (c_lo..c_hi).step_by(B) {
                for r in r0..(r0 + B).min(rows) {
                    for c in c0..(c0 + B).min(c_hi) {
                        out[(c - c_lo) * rows + r] = a[r * cols + c];
                    }
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The f32 path (SIMD GEMM, any thread count) against the same products in f64 loops.
    fn check(t: usize, c: usize, oc: usize, seed: u64, threads: usize) {
        let mut s = seed | 1;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2001) as f64 / 1000.0 - 1.0
        };
        let x: Vec<f64> = (0..t * c).map(|_| rnd()).collect();
        let w: Vec<f64> = (0..oc * c).map(|_| rnd()).collect();
        let dy: Vec<f64> = (0..t * oc).map(|_| rnd()).collect();
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let pool = ThreadPool::new(threads);
        let one = ThreadPool::new(1);
        let mut y64 = vec![0.0; t * oc];
        forward(&one, &mut y64, &x, &w, c, oc);
        let mut y32 = vec![0.0f32; t * oc];
        forward(&pool, &mut y32, &f(&x), &f(&w), c, oc);
        let (mut dx64, mut dw64) = (vec![0.0; t * c], vec![0.0; oc * c]);
        backward(&one, Some(&mut dx64), Some(&mut dw64), &dy, &x, &w, c, oc);
        // Gradients accumulate: start from ones.
        let (mut dx32, mut dw32) = (vec![1.0f32; t * c], vec![1.0f32; oc * c]);
        backward(
            &pool,
            Some(&mut dx32),
            Some(&mut dw32),
            &f(&dy),
            &f(&x),
            &f(&w),
            c,
            oc,
        );
        let close = |got: &[f32], want: &[f64], plus: f64, n: usize, what: &str| {
            for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                let tol = 1e-5 * n as f64;
                assert!(
                    (f64::from(g) - (w + plus)).abs() <= tol,
                    "{what}[{i}] ({t}x{c}->{oc}, {threads} threads): {g} vs {}",
                    w + plus
                );
            }
        };
        close(&y32, &y64, 0.0, c, "forward");
        close(&dx32, &dx64, 1.0, oc, "dinp");
        close(&dw32, &dw64, 1.0, t, "dweight");
    }

    #[test]
    fn transpose_matches_the_definition() {
        for (rows, cols) in [(37, 19), (19, 37), (300, 70)] {
            let a: Vec<f64> = (0..rows * cols).map(|i| i as f64).collect();
            for threads in [1, 2, 3] {
                let t = transpose(&ThreadPool::new(threads), &a, rows, cols);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(t[c * rows + r], a[r * cols + c]);
                    }
                }
            }
        }
    }

    #[test]
    fn odd_shapes_match_the_loops() {
        check(1, 1, 1, 1, 1);
        // A narrow input (LoRA's B): the weight gradient is computed transposed.
        check(64, 4, 200, 4, 2);
        check(9, 2, 300, 5, 1);
        check(7, 33, 65, 2, 2);
        check(50, 64, 96, 3, 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn f32_kernels_match_the_f64_loops(t in 1usize..40, c in 1usize..80, oc in 1usize..80, seed: u64, threads in 1usize..3) {
            check(t, c, oc, seed, threads);
        }
    }
}
