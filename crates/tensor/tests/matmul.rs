//! matmul against the scalar vec_dot reference, for every weight type,
//! decode and prefill token counts, awkward row counts, 1 and 2 threads.

mod common;

use common::{Rng, WEIGHT_TYPES, abs_dot, acts, weight_row};
use ferrollama_tensor::{
    DType, Isa, PackedMatrix, ThreadPool, available_isas, matmul, matmul_packed, matmul_with,
    quantize_acts, vec_dot_with,
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
    run_case_on(pool, Some(isa), w, rows, cols, n_tokens, seed);
}

/// Checks `matmul_with(isa)` (or, with `isa == None`, `matmul_packed`;
/// skipped where `PackedMatrix::pack` declines) against the scalar reference.
fn run_case_on(
    pool: &ThreadPool,
    isa: Option<Isa>,
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
    match isa {
        Some(isa) => {
            matmul_with(isa, pool, w, &wd, rows, cols, &xq, n_tokens, &mut out).expect("matmul")
        }
        None => {
            let Some(p) = PackedMatrix::pack(w, &wd, rows, cols).expect("pack") else {
                return;
            };
            assert!(p.bytes() >= wd.len() && p.bytes() <= wd.len() + wd.len() / 10);
            matmul_packed(pool, &p, &xq, n_tokens, &mut out).expect("matmul_packed");
        }
    }
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
                "{w} {isa:?} (None = packed) rows={rows} cols={cols} tokens={n_tokens} r={r} t={t}: got {got}, want {want}"
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
        DType::Q5_0,
        DType::Q5_1,
    ] {
        let cols = if w.block_len() == 256 { 768 } else { 576 };
        run_case(&pool, ferrollama_tensor::best_isa(), w, 70, cols, 67, 11);
    }
}

/// Every token count 1..=67 (all tile remainders, decode and prefill
/// paths), odd and 16-multiple row counts, 1 and 2 threads, best tier.
#[test]
fn matmul_every_token_count() {
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    for pool in &pools {
        for w in WEIGHT_TYPES {
            let cols = if w.block_len() == 256 { 512 } else { 160 };
            for n_tokens in 1..=67 {
                let rows = if n_tokens % 2 == 0 { 37 } else { 48 };
                let seed = (n_tokens * 7 + pool.n_threads()) as u64;
                run_case(
                    pool,
                    ferrollama_tensor::best_isa(),
                    w,
                    rows,
                    cols,
                    n_tokens,
                    seed,
                );
            }
        }
    }
}

/// `matmul_packed` against the reference wherever `pack` accepts.
#[test]
fn matmul_packed_matches_reference() {
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    for pool in &pools {
        for w in WEIGHT_TYPES {
            let cols = if w.block_len() == 256 { 512 } else { 160 };
            for n_tokens in 1..=67 {
                let rows = [16, 48, 80][n_tokens % 3];
                let seed = (n_tokens * 13 + pool.n_threads()) as u64;
                run_case_on(pool, None, w, rows, cols, n_tokens, seed);
            }
            run_case_on(pool, None, w, 16 * 21, w.block_len(), 5, 3);
        }
    }
}

#[test]
fn packed_declines_and_rejects() {
    let pool = ThreadPool::new(1);
    let mut rng = Rng(9);
    for w in [DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K] {
        let cols = w.block_len().max(64);
        let mut wd = Vec::new();
        for _ in 0..17 {
            wd.extend(weight_row(w, cols, &mut rng));
        }
        // 17 rows: not a multiple of 16.
        assert!(PackedMatrix::pack(w, &wd, 17, cols).expect("ok").is_none());
        // Wrong length is an error.
        assert!(PackedMatrix::pack(w, &wd[1..], 17, cols).is_err());
        let rb = wd.len() / 17;
        if let Some(p) = PackedMatrix::pack(w, &wd[..16 * rb], 16, cols).expect("ok") {
            assert_eq!((p.dtype(), p.rows(), p.cols()), (w, 16, cols));
            let mut xq = Vec::new();
            quantize_acts(w, &acts(cols, &mut rng), cols, &mut xq).expect("q");
            let mut out = vec![0f32; 16];
            assert!(matmul_packed(&pool, &p, &xq, 1, &mut out).is_ok());
            assert!(matmul_packed(&pool, &p, &xq, 2, &mut out).is_err());
            assert!(matmul_packed(&pool, &p, &xq[1..], 1, &mut out).is_err());
            assert!(matmul_packed(&pool, &p, &xq, 1, &mut out[1..]).is_err());
        }
    }
    let wd = weight_row(DType::Q6_K, 256, &mut rng);
    let wd16: Vec<u8> = wd.iter().cycle().take(16 * wd.len()).copied().collect();
    assert!(
        PackedMatrix::pack(DType::Q6_K, &wd16, 16, 256)
            .expect("ok")
            .is_none()
    );
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

/// Float weights at widths that are not a multiple of 16 (masked tails in the
/// one- and multi-token kernels), with token counts that use the 8-, 4- and
/// 1-token kernels in one call.
#[test]
fn matmul_float_types_odd_widths() {
    let pool = ThreadPool::new(2);
    for isa in available_isas() {
        for w in [DType::F32, DType::F16, DType::BF16, DType::F8E4M3] {
            for cols in [1usize, 15, 17, 33, 100] {
                for n_tokens in [1usize, 4, 8, 13] {
                    run_case(
                        &pool,
                        isa,
                        w,
                        19,
                        cols,
                        n_tokens,
                        (cols * 31 + n_tokens) as u64,
                    );
                }
            }
        }
    }
}
