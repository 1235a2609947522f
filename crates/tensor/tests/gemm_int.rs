//! `matmul_int`, `IntActs` and `WideMatrix`: every SIMD tier gives the scalar reference's
//! bits, the thread count and the chunking of the reduction change nothing, and the
//! product is within the bound that 16-bit activations (and, for float weights, 12-bit
//! weight blocks) allow of the exact product (f64) over the dequantized weights.

#![allow(clippy::unwrap_used)]

use ferrollama_tensor::{
    DType, INT_BLOCK, IntActs, IntWeights, Isa, KC_BLOCKS, ThreadPool, WideMatrix, available_isas,
    dequantize_row, matmul_int_with, quantize_block_scalar, quantize_row,
};
use proptest::prelude::*;

/// Read exactly, then rounded to 12-bit blocks on the fly.
const TYPES: [DType; 10] = [
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q4_K,
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q6_K,
];

/// Whether `dtype`'s weights are rounded to 12 bits by `matmul_int`.
fn rounded(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::Q6_K)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 20001) as f32 / 10000.0 - 1.0
    }
}

/// `rows × cols` of `dtype` from uniform values in ±1, and the dequantized matrix.
fn matrix(dtype: DType, rows: usize, cols: usize, rng: &mut Rng) -> (Vec<u8>, Vec<f32>) {
    let rb = dtype.row_bytes(cols).unwrap();
    let mut data = vec![0u8; rows * rb];
    let mut w = vec![0f32; rows * cols];
    let mut src = vec![0f32; cols];
    for (dst, wr) in data.chunks_exact_mut(rb).zip(w.chunks_exact_mut(cols)) {
        src.iter_mut().for_each(|v| *v = rng.next());
        quantize_row(dtype, &src, dst).unwrap();
        dequantize_row(dtype, dst, wr).unwrap();
    }
    (data, w)
}

/// Activations with a spread of magnitudes (blocks from 1e-3 to 1e2), like a network's.
fn acts(n: usize, rng: &mut Rng) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n).map(|_| rng.next()).collect();
    for (b, blk) in x.chunks_mut(INT_BLOCK).enumerate() {
        let s = 10f32.powi((b % 6) as i32 - 3);
        blk.iter_mut().for_each(|v| *v *= s);
    }
    x
}

#[allow(clippy::too_many_arguments)]
fn run(
    isa: Isa,
    threads: usize,
    w: IntWeights<'_>,
    rows: usize,
    cols: usize,
    x: &[f32],
    init: Option<&[f32]>,
) -> Vec<f32> {
    let t = x.len() / cols;
    let mut out = init.map_or_else(|| vec![f32::NAN; t * rows], <[f32]>::to_vec);
    let mut acts = IntActs::default();
    let pool = ThreadPool::new(threads);
    matmul_int_with(
        isa,
        &pool,
        w,
        rows,
        cols,
        x,
        &mut out,
        init.is_some(),
        &mut acts,
    )
    .unwrap();
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Against the exact product over the dequantized weights. The error has these parts:
/// - the activations' rounding: `x̂ = dₓ q` with `q = round(x · 32767 / amax)` is within
///   `dₓ / 2 + 2u · amax` of `x` (`dₓ = amax / 32767` and its inverse are each rounded
///   once, `u = 2⁻²⁴`), so a block adds at most `Σⱼ |wⱼ| (dₓ / 2 + 2u · amax)`;
/// - the f32 chain: per block the integer sum is exact, its conversion, `d_w · dₓ` and
///   the fma each round once, and the min term's fma once more, so the chain over `nb`
///   blocks is within `γ_{nb + 3} Σ (|d_w dₓ| Σ|q_w q_x| + |m sₓ|)` (Higham 3.1), plus
///   the start value's share `γ_{2 nb} |init|`;
/// - for float weights, their rounding to 12 bits: `w` moves by at most half its block's
///   scale `max|w_b| / 2047` (plus `2u` of it for the scale's own rounding), so a block
///   adds `Σⱼ |xⱼ| · max|w_b| (1/4094 + 2u)`.
fn check_bound(
    dtype: DType,
    rows: usize,
    cols: usize,
    t: usize,
    seed: u64,
    accumulate: bool,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed | 1);
    let (data, w) = matrix(dtype, rows, cols, &mut rng);
    let x = acts(t * cols, &mut rng);
    let init: Vec<f32> = (0..t * rows).map(|_| rng.next()).collect();
    let got = run(
        Isa::Scalar,
        1,
        IntWeights::Blocks { dtype, data: &data },
        rows,
        cols,
        &x,
        accumulate.then_some(&init[..]),
    );
    let mut acts = IntActs::default();
    acts.quantize_with(Isa::Scalar, &ThreadPool::new(1), &x, cols, 0, cols)
        .unwrap();
    let u = f64::from(f32::EPSILON) / 2.0;
    let nb = cols / INT_BLOCK;
    let gamma = |n: usize| n as f64 * u / (1.0 - n as f64 * u);
    for tt in 0..t {
        let (q, d, s) = acts.token(tt).unwrap();
        for r in 0..rows {
            let wr = &w[r * cols..(r + 1) * cols];
            let xr = &x[tt * cols..(tt + 1) * cols];
            let start = if accumulate {
                f64::from(init[tt * rows + r])
            } else {
                0.0
            };
            let exact: f64 = start
                + wr.iter()
                    .zip(xr)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum::<f64>();
            let mut tol = gamma(2 * nb) * start.abs();
            for b in 0..nb {
                let blk = b * INT_BLOCK..(b + 1) * INT_BLOCK;
                let amax = xr[blk.clone()]
                    .iter()
                    .fold(0f64, |m, v| m.max(f64::from(v.abs())));
                let wsum: f64 = wr[blk.clone()].iter().map(|v| f64::from(v.abs())).sum();
                tol += wsum * (f64::from(d[b]) / 2.0 + 2.0 * u * amax);
                if rounded(dtype) {
                    let wmax = wr[blk.clone()]
                        .iter()
                        .fold(0f64, |m, v| m.max(f64::from(v.abs())));
                    let xsum: f64 = xr[blk.clone()].iter().map(|v| f64::from(v.abs())).sum();
                    tol += xsum * wmax * (1.0 / 4094.0 + 2.0 * u) * 1.01;
                }
                // |d_w q_w| ≈ |w| up to the min: bound the chain's terms by the values.
                let terms: f64 = wr[blk.clone()]
                    .iter()
                    .zip(&q[blk])
                    .map(|(&a, &qx)| (f64::from(a.abs()) + 1.0) * f64::from(qx.abs()))
                    .sum::<f64>()
                    * f64::from(d[b])
                    + f64::from(s[b].abs());
                tol += gamma(nb + 3) * terms * 2.0;
            }
            let g = f64::from(got[tt * rows + r]);
            prop_assert!(
                (g - exact).abs() <= tol,
                "{dtype} {rows}x{cols} t{t} [{tt},{r}]: {g} vs {exact} (tol {tol:e})"
            );
        }
    }
    Ok(())
}

/// Every tier and thread count gives the scalar reference's bits.
fn check_tiers(
    dtype: DType,
    rows: usize,
    cols: usize,
    t: usize,
    seed: u64,
    accumulate: bool,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed | 1);
    let (data, _) = matrix(dtype, rows, cols, &mut rng);
    let x = acts(t * cols, &mut rng);
    let init: Vec<f32> = (0..t * rows).map(|_| rng.next()).collect();
    let init = accumulate.then_some(&init[..]);
    let w = IntWeights::Blocks { dtype, data: &data };
    let want = bits(&run(Isa::Scalar, 1, w, rows, cols, &x, init));
    for isa in available_isas() {
        for threads in [1, 2, 3] {
            let got = bits(&run(isa, threads, w, rows, cols, &x, init));
            prop_assert!(
                got == want,
                "{dtype} {isa:?} {threads} threads {rows}x{cols} t{t}"
            );
        }
    }
    Ok(())
}

#[test]
fn the_quantizer_of_every_tier_is_the_reference() {
    let mut rng = Rng(3);
    let mut blocks: Vec<Vec<f32>> = (0..200)
        .map(|i| {
            let s = 10f32.powi(i % 12 - 6);
            (0..INT_BLOCK).map(|_| rng.next() * s).collect()
        })
        .collect();
    // Ties (x · 32767 / amax exactly k + 0.5), zeros, a lone value, tiny and huge
    // magnitudes, and non-finite values.
    let mut ties: Vec<f32> = (0..32).map(|j| j as f32 - 15.5).collect();
    ties[0] = 32767.0; // the scale is 1: every other value is a tie
    blocks.push(ties);
    blocks.push(vec![0.0; 32]);
    let mut one = vec![0.0; 32];
    one[7] = -3.0;
    blocks.push(one);
    blocks.push(vec![1e-36; 32]);
    blocks.push(vec![3e38; 32]);
    let mut nan = vec![1.0; 32];
    nan[31] = f32::NAN;
    blocks.push(nan);
    let mut inf = vec![1.0; 32];
    inf[0] = f32::NEG_INFINITY;
    blocks.push(inf);
    let x: Vec<f32> = blocks.concat();
    let pool = ThreadPool::new(2);
    let mut want = IntActs::default();
    want.quantize_with(Isa::Scalar, &pool, &x, INT_BLOCK, 0, INT_BLOCK)
        .unwrap();
    for isa in available_isas() {
        let mut got = IntActs::default();
        got.quantize_with(isa, &pool, &x, INT_BLOCK, 0, INT_BLOCK)
            .unwrap();
        for t in 0..blocks.len() {
            let (a, b) = (got.token(t).unwrap(), want.token(t).unwrap());
            assert_eq!(a.0, b.0, "{isa:?} block {t}");
            assert_eq!(bits(a.1), bits(b.1), "{isa:?} block {t}");
            assert_eq!(bits(a.2), bits(b.2), "{isa:?} block {t}");
        }
    }
    // The reference itself: 32767 at the largest magnitude, NaN scales for NaN blocks.
    let mut q = [0i16; INT_BLOCK];
    let (d, _) = quantize_block_scalar(&blocks[202], &mut q);
    assert_eq!((q[7], d), (-32767, 3.0 / 32767.0));
    let (d, s) = quantize_block_scalar(&blocks[205], &mut q);
    assert!(d.is_nan() && s.is_nan() && q == [0; INT_BLOCK]);
    let (d, _) = quantize_block_scalar(&blocks[203], &mut q);
    assert_eq!((d, q), (0.0, [0; INT_BLOCK]), "1e-36 is zero in effect");
}

/// A NaN in the activations reaches every output it enters, and no other.
#[test]
fn non_finite_activations_make_their_outputs_nan() {
    let mut rng = Rng(5);
    let (data, _) = matrix(DType::Q8_0, 20, 64, &mut rng);
    let mut x = acts(3 * 64, &mut rng);
    x[64 + 40] = f32::INFINITY;
    for isa in available_isas() {
        let w = IntWeights::Blocks {
            dtype: DType::Q8_0,
            data: &data,
        };
        let out = run(isa, 2, w, 20, 64, &x, None);
        for (i, v) in out.iter().enumerate() {
            assert_eq!(v.is_nan(), i / 20 == 1, "{isa:?} [{i}] {v}");
        }
    }
}

#[test]
fn wrong_shapes_and_types_are_errors() {
    let pool = ThreadPool::new(1);
    let mut acts = IntActs::default();
    let w = vec![0u8; 34 * 2];
    let mut out = vec![0f32; 4];
    let m = |dtype, w: &[u8], rows, cols, x: &[f32], out: &mut [f32], acts: &mut IntActs| {
        let w = IntWeights::Blocks { dtype, data: w };
        matmul_int_with(Isa::Scalar, &pool, w, rows, cols, x, out, false, acts)
    };
    assert!(m(DType::Q8_0, &w, 2, 32, &[0.0; 64], &mut out, &mut acts).is_ok());
    assert!(m(DType::Q8_0, &w, 2, 32, &[0.0; 63], &mut out, &mut acts).is_err());
    assert!(m(DType::Q8_0, &w, 2, 32, &[0.0; 64], &mut out[..3], &mut acts).is_err());
    assert!(
        m(
            DType::Q8_0,
            &w[..67],
            2,
            32,
            &[0.0; 64],
            &mut out,
            &mut acts
        )
        .is_err()
    );
    assert!(
        m(
            DType::F16,
            &[0; 128],
            2,
            32,
            &[0.0; 64],
            &mut out,
            &mut acts
        )
        .is_ok()
    );
    assert!(
        m(
            DType::F16,
            &[0; 126],
            2,
            32,
            &[0.0; 64],
            &mut out,
            &mut acts
        )
        .is_err()
    );
    assert!(
        m(
            DType::F8E4M3,
            &[0; 72],
            2,
            32,
            &[0.0; 64],
            &mut out,
            &mut acts
        )
        .is_err()
    );
    assert!(
        m(
            DType::F32,
            &[0; 2 * 40 * 4],
            2,
            40,
            &[0.0; 80],
            &mut out,
            &mut acts
        )
        .is_err()
    );
    let wide = WideMatrix::from_f32(&[0.0; 64], 2, 32).unwrap();
    let run_wide = |rows, cols, x: &[f32], out: &mut [f32], acts: &mut IntActs| {
        let w = IntWeights::Wide(&wide);
        matmul_int_with(Isa::Scalar, &pool, w, rows, cols, x, out, false, acts)
    };
    assert!(run_wide(2, 32, &[0.0; 64], &mut out, &mut acts).is_ok());
    assert!(run_wide(1, 64, &[0.0; 64], &mut out[..1], &mut acts).is_err());
    assert!(WideMatrix::from_f32(&[0.0; 40], 1, 40).is_err());
    assert!(acts.quantize(&pool, &[0.0; 64], 32, 16, 32).is_err());
    assert!(acts.quantize(&pool, &[0.0; 64], 32, 0, 16).is_err());
}

/// A wide matrix is its source within 1/4094 of each block's largest value, the
/// transposed one is the transpose, and products over either follow the same bits on
/// every tier.
#[test]
fn wide_matrices_round_to_12_bits_and_transpose() {
    let mut rng = Rng(21);
    let (rows, cols) = (64, 96);
    for dtype in [DType::F16, DType::Q4_K, DType::Q8_0] {
        let c = if dtype == DType::Q4_K { 256 } else { cols };
        let (data, w) = matrix(dtype, rows, c, &mut rng);
        let pool = ThreadPool::new(2);
        let wt = WideMatrix::transposed(&pool, dtype, &data, rows, c).unwrap();
        assert_eq!((wt.rows(), wt.cols()), (c, rows));
        let back = wt.to_f32();
        for cc in 0..c {
            for b in 0..rows / INT_BLOCK {
                let col: Vec<f32> = (0..INT_BLOCK)
                    .map(|i| w[(b * INT_BLOCK + i) * c + cc])
                    .collect();
                let amax = col.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (i, &want) in col.iter().enumerate() {
                    let got = back[cc * rows + b * INT_BLOCK + i];
                    assert!(
                        (got - want).abs() <= amax / 4094.0 * 1.001 + 1e-12,
                        "{dtype} Wᵀ[{cc}][{}]: {got} vs {want}",
                        b * INT_BLOCK + i
                    );
                }
            }
        }
        let x = acts(5 * rows, &mut rng);
        let want = bits(&run(
            Isa::Scalar,
            1,
            IntWeights::Wide(&wt),
            c,
            rows,
            &x,
            None,
        ));
        for isa in available_isas() {
            for threads in [1, 2] {
                let got = bits(&run(isa, threads, IntWeights::Wide(&wt), c, rows, &x, None));
                assert!(got == want, "{dtype} {isa:?} {threads}");
            }
        }
    }
}

#[test]
fn long_reductions_are_chunked_without_changing_a_bit() {
    // Reductions over several chunks, rows past whole panels, tokens past whole tiles.
    let cols = INT_BLOCK * (2 * KC_BLOCKS + 3);
    for dtype in [DType::Q8_0, DType::Q4_K, DType::F16] {
        check_tiers(dtype, 37, cols.div_ceil(256) * 256, 7, 11, false).unwrap();
        check_bound(dtype, 19, cols.div_ceil(256) * 256, 4, 12, true).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    #[test]
    fn every_tier_gives_the_reference_bits(ti in 0usize..10, rows in 1usize..50,
            blocks in 1usize..4, t in 1usize..12, seed: u64, accumulate: bool) {
        let dtype = TYPES[ti];
        let per = dtype.block_len().max(INT_BLOCK);
        check_tiers(dtype, rows, per * blocks, t, seed, accumulate)?;
    }

    #[test]
    fn products_are_within_the_bound_of_the_exact_product(ti in 0usize..10,
            rows in 1usize..40, blocks in 1usize..4, t in 1usize..8, seed: u64,
            accumulate: bool) {
        let dtype = TYPES[ti];
        let per = dtype.block_len().max(INT_BLOCK);
        check_bound(dtype, rows, per * blocks, t, seed, accumulate)?;
    }
}
