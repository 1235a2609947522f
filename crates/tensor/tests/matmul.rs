//! matmul against the scalar vec_dot reference, for every weight type,
//! decode and prefill token counts, awkward row counts, 1 and 2 threads.

mod common;

use common::{Rng, WEIGHT_TYPES, abs_dot, acts, weight_row};
use ferrollama_tensor::{
    DType, Isa, ThreadPool, available_isas, matmul, matmul_with, quantize_acts, vec_dot_with,
};

fn run_case(
    pool: &ThreadPool,
    isa: Isa,
    w: DType,
    rows: usize,
    cols: usize,
    n_tokens: usize,
    seed: u64,
) {
    let mut rng = Rng(seed);
    let mut wd = Vec::new();
    for _ in 0..rows {
        wd.extend(weight_row(w, cols, &mut rng));
    }
    let x = acts(cols * n_tokens, &mut rng);
    let mut xq = Vec::new();
    quantize_acts(w, &x, cols, &mut xq).expect("quantize_acts");
    let mut out = vec![f32::NAN; rows * n_tokens];
    matmul_with(isa, pool, w, &wd, rows, cols, &xq, n_tokens, &mut out).expect("matmul");
    let wrb = w.row_bytes(cols).expect("rb");
    let xrb = w.vec_dot_type().row_bytes(cols).expect("xrb");
    for t in 0..n_tokens {
        let xr = &xq[t * xrb..(t + 1) * xrb];
        for r in 0..rows {
            let wr = &wd[r * wrb..(r + 1) * wrb];
            let want = vec_dot_with(Isa::Scalar, w, wr, xr, cols).expect("ref");
            let tol = 5e-6 * abs_dot(w, wr, xr, cols) + 1e-5;
            let got = out[t * rows + r];
            assert!(
                (got - want).abs() <= tol,
                "{w} {isa:?} rows={rows} cols={cols} tokens={n_tokens} r={r} t={t}: got {got}, want {want}"
            );
        }
    }
}

#[test]
fn matmul_matches_reference_all_types() {
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    for pool in &pools {
        for isa in available_isas() {
            for w in WEIGHT_TYPES {
                let cols = if w.block_len() == 256 { 512 } else { 96 };
                for (rows, n_tokens) in [(1, 1), (37, 1), (37, 3), (21, 4), (50, 9), (19, 33)] {
                    run_case(
                        pool,
                        isa,
                        w,
                        rows,
                        cols,
                        n_tokens,
                        (rows * 131 + n_tokens) as u64,
                    );
                }
            }
        }
    }
}

#[test]
fn matmul_larger_prefill_shapes() {
    let pool = ThreadPool::new(2);
    for w in [
        DType::Q4_1,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q6_K,
        DType::Q4_0,
    ] {
        let cols = if w.block_len() == 256 { 768 } else { 576 };
        run_case(&pool, ferrollama_tensor::best_isa(), w, 70, cols, 67, 11);
    }
}

#[test]
fn matmul_rejects_bad_shapes() {
    let pool = ThreadPool::new(1);
    let w = DType::Q8_0;
    let mut rng = Rng(5);
    let wd = weight_row(w, 64, &mut rng);
    let mut xq = Vec::new();
    quantize_acts(w, &acts(64, &mut rng), 64, &mut xq).expect("q");
    let mut out = vec![0f32; 1];
    assert!(matmul(&pool, w, &wd, 1, 64, &xq, 1, &mut out).is_ok());
    assert!(matmul(&pool, w, &wd, 2, 64, &xq, 1, &mut out).is_err());
    assert!(matmul(&pool, w, &wd, 1, 64, &xq, 2, &mut out).is_err());
    assert!(matmul(&pool, w, &wd, 1, 63, &xq, 1, &mut out).is_err());
    assert!(matmul(&pool, w, &wd[1..], 1, 64, &xq, 1, &mut out).is_err());
    let mut big = vec![0f32; 2];
    assert!(matmul(&pool, w, &wd, 1, 64, &xq, 1, &mut big).is_err());
    assert!(matmul(&pool, DType::Q8_K, &[], 0, 256, &[], 0, &mut []).is_err());
    assert!(quantize_acts(w, &[0.0; 10], 3, &mut xq).is_err());
    assert!(quantize_acts(w, &[0.0; 10], 0, &mut xq).is_err());
}
