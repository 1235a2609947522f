//! Every SIMD tier must agree with the scalar reference kernels.

mod common;

use common::{Rng, WEIGHT_TYPES, abs_dot, act_row, acts, weight_row};
use ferrollama_tensor::{DType, Isa, available_isas, vec_dot, vec_dot_with};
use proptest::prelude::*;

fn check(w: DType, blocks: usize, seed: u64) -> Result<(), TestCaseError> {
    let n = if w.block_len() == 1 {
        blocks
    } else {
        blocks * w.block_len()
    };
    let mut rng = Rng(seed | 1);
    let wr = weight_row(w, n, &mut rng);
    let x = acts(n, &mut rng);
    let xr = act_row(w, &x);
    let reference = vec_dot_with(Isa::Scalar, w, &wr, &xr, n).expect("scalar");
    let scale = abs_dot(w, &wr, &xr, n);
    for isa in available_isas() {
        let got = vec_dot_with(isa, w, &wr, &xr, n).expect("simd");
        let tol = 2e-6 * scale + 1e-6;
        prop_assert!(
            (got - reference).abs() <= tol,
            "{w} {isa:?} n={n}: got {got}, scalar {reference}, tol {tol}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn legacy_quants(blocks in 1usize..70, seed in any::<u64>(), which in 0usize..3) {
        check([DType::Q8_0, DType::Q4_0, DType::Q4_1][which], blocks, seed)?;
    }

    #[test]
    fn q5_quants(blocks in 1usize..70, seed in any::<u64>(), which in 0usize..2) {
        check([DType::Q5_0, DType::Q5_1][which], blocks, seed)?;
    }

    #[test]
    fn k_quants(blocks in 1usize..12, seed in any::<u64>(), which in 0usize..2) {
        check([DType::Q4_K, DType::Q6_K][which], blocks, seed)?;
    }

    #[test]
    fn float_weights(n in 1usize..700, seed in any::<u64>(), which in 0usize..4) {
        check([DType::F32, DType::F16, DType::BF16, DType::F8E4M3][which], n, seed)?;
    }
}

#[test]
fn integer_parts_are_exact_for_legacy_quants() {
    // With all scales 1.0 the result is an integer sum, which every tier
    // must reproduce exactly (no float reassociation can change it).
    let mut rng = Rng(7);
    for w in [DType::Q8_0, DType::Q4_0, DType::Q5_0] {
        for blocks in [1usize, 2, 3, 15, 16, 17, 33, 64] {
            let n = blocks * 32;
            let mut wr = weight_row(w, n, &mut rng);
            let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 255) as f32) - 127.0).collect();
            let mut xr = act_row(w, &x);
            let one = half::f16::from_f32(1.0).to_le_bytes();
            for b in wr.chunks_exact_mut(w.block_bytes()) {
                b[..2].copy_from_slice(&one);
            }
            for b in xr.chunks_exact_mut(34) {
                b[..2].copy_from_slice(&one);
            }
            let r = vec_dot_with(Isa::Scalar, w, &wr, &xr, n).expect("scalar");
            for isa in available_isas() {
                assert_eq!(
                    vec_dot_with(isa, w, &wr, &xr, n).expect("simd"),
                    r,
                    "{w} {isa:?} {blocks}"
                );
            }
        }
    }
}

#[test]
fn vec_dot_rejects_bad_lengths() {
    for w in WEIGHT_TYPES {
        let n = w.block_len().max(32) * 2;
        let mut rng = Rng(3);
        let wr = weight_row(w, n, &mut rng);
        let xr = act_row(w, &acts(n, &mut rng));
        assert!(vec_dot(w, &wr, &xr, n).is_ok());
        assert!(vec_dot(w, &wr[1..], &xr, n).is_err());
        assert!(vec_dot(w, &wr, &xr[..xr.len() - 1], n).is_err());
        if w.block_len() > 1 {
            assert!(vec_dot(w, &wr, &xr, n - 1).is_err());
        }
    }
    assert!(vec_dot(DType::Q8_K, &[], &[], 0).is_err());
}
