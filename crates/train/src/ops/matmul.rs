//! The linear layer without bias, as `nn.Linear` stores it: `out = inp · Wᵀ`, `W` (OC, C).
//! All three products (forward, input gradient, weight gradient) are the one kernel
//! [`Float::gemm_nt`] on transposed operands, so f32 runs all of them on the SIMD GEMM.

use ferrollama_tensor::ThreadPool;

use crate::Float;

/// `out (T, OC) = inp (T, C) · w (OC, C)ᵀ`.
pub fn forward<F: Float>(
    pool: &ThreadPool,
    out: &mut [F],
    inp: &[F],
    w: &[F],
    c: usize,
    oc: usize,
) {
    F::gemm_nt(pool, out, inp, w, c, oc);
}

/// `dinp (T, C) += dout (T, OC) · w (OC, C)`; `dw (OC, C) += doutᵀ · inp`. `dinp` is
/// `None` where the input needs no gradient.
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(
    pool: &ThreadPool,
    dinp: Option<&mut [F]>,
    dw: &mut [F],
    dout: &[F],
    inp: &[F],
    w: &[F],
    c: usize,
    oc: usize,
) {
    let t = inp.len() / c;
    if let Some(dinp) = dinp {
        // dinp = dout (T, OC) · (wᵀ (C, OC))ᵀ
        let wt = transpose(w, oc, c); // (C, OC)
        let mut tmp = vec![F::ZERO; t * c];
        F::gemm_nt(pool, &mut tmp, dout, &wt, oc, c);
        super::add_into(dinp, &tmp);
    }
    // dw = doutᵀ (OC, T) · (inpᵀ (C, T))ᵀ
    let dout_t = transpose(dout, t, oc); // (OC, T)
    let inp_t = transpose(inp, t, c); // (C, T)
    let mut tmp = vec![F::ZERO; oc * c];
    F::gemm_nt(pool, &mut tmp, &dout_t, &inp_t, t, c);
    super::add_into(dw, &tmp);
}

/// `(rows, cols)` row-major into `(cols, rows)`.
pub fn transpose<F: Float>(a: &[F], rows: usize, cols: usize) -> Vec<F> {
    let mut out = vec![F::ZERO; rows * cols];
    for (r, row) in a.chunks_exact(cols).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            out[k * rows + r] = v;
        }
    }
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
        backward(&one, Some(&mut dx64), &mut dw64, &dy, &x, &w, c, oc);
        // Gradients accumulate: start from ones.
        let (mut dx32, mut dw32) = (vec![1.0f32; t * c], vec![1.0f32; oc * c]);
        backward(
            &pool,
            Some(&mut dx32),
            &mut dw32,
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
    fn odd_shapes_match_the_loops() {
        check(1, 1, 1, 1, 1);
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
