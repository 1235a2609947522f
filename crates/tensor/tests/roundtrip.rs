//! Quantize → dequantize round trips stay within ggml's error bounds.
//!
//! The data and the metric are ggml's `tests/test-quantize-fns.cpp`: 4096 values
//! `0.1 + A·cos(i + offset)`, error `sqrt(Σ (x − x̂)²) / n`, which must stay under
//! `MAX_QUANTIZATION_TOTAL_ERROR = 0.002` for every type we write. Q8_0 and FP8 also get
//! a per-element bound derived from their formats, which the aggregate metric is too
//! lenient to catch.

use ferrollama_tensor::{DType, dequantize_row, quantize_row};

const N: usize = 32 * 128;

fn generate(offset: f32, amplitude: f32) -> Vec<f32> {
    (0..N)
        .map(|i| 0.1 + amplitude * (i as f32 + offset).cos())
        .collect()
}

fn roundtrip(t: DType, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut q = vec![0u8; t.row_bytes(x.len()).expect("aligned")];
    quantize_row(t, x, &mut q).expect("quantize");
    let mut y = vec![0f32; x.len()];
    dequantize_row(t, &q, &mut y).expect("dequantize");
    (q, y)
}

fn ggml_rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum();
    (sum.sqrt() as f32) / a.len() as f32
}

#[test]
fn every_written_type_is_within_ggml_total_error() {
    for t in [
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q6_K,
        DType::F8E4M3,
    ] {
        for (offset, amp) in [(0.0, 2.0), (1.0, 2.0), (3.0, 1.0), (4.0, 1.5)] {
            let x = generate(offset, amp);
            let (_, y) = roundtrip(t, &x);
            let e = ggml_rmse(&x, &y);
            assert!(
                e < 0.002,
                "{t}: total error {e} (offset {offset}, amplitude {amp})"
            );
        }
    }
}

#[test]
fn q8_0_elements_are_within_half_a_step() {
    // q = round(x / d) with d = amax / 127, then d is stored as f16: each element is off
    // by at most d/2 plus 127·|d − f16(d)| ≤ 127·d·2⁻¹¹, so 0.5625·d bounds it.
    let x = generate(0.0, 2.0);
    let (_, y) = roundtrip(DType::Q8_0, &x);
    for (bx, by) in x.chunks(32).zip(y.chunks(32)) {
        let d = bx.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        for (a, b) in bx.iter().zip(by) {
            assert!((a - b).abs() <= 0.5625 * d, "{a} vs {b}, step {d}");
        }
    }
}

#[test]
fn fp8_rows_are_within_e4m3_rounding() {
    // E4M3 has 3 mantissa bits: a normal value is off by at most 2⁻⁴ of itself; below
    // the smallest normal (2⁻⁶ after scaling) the step is 2⁻⁹, so half of it, 2⁻¹⁰,
    // times the row scale s = amax / 448. A little slack for the f32 scale arithmetic.
    for (offset, amp) in [(0.0, 2.0), (3.0, 1.0)] {
        let x = generate(offset, amp);
        for row in x.chunks(512) {
            let (q, y) = roundtrip(DType::F8E4M3, row);
            let s = f32::from_le_bytes([q[0], q[1], q[2], q[3]]);
            for (a, b) in row.iter().zip(&y) {
                let bound = (a.abs() / 16.0).max(s / 1024.0) * 1.0001;
                assert!((a - b).abs() <= bound, "{a} vs {b}, scale {s}");
            }
        }
    }
}

#[test]
fn fp8_activation_rows_are_within_e4m3_rounding_below_the_cap() {
    // Activations below the 1200 cap: the same bound as weights, with t = amax / 448.
    let x: Vec<f32> = generate(1.0, 300.0);
    for row in x.chunks(256) {
        let (q, y) = roundtrip(DType::F8Act, row);
        let t = f32::from_le_bytes([q[0], q[1], q[2], q[3]]);
        for (a, b) in row.iter().zip(&y) {
            let bound = (a.abs() / 16.0).max(t / 1024.0) * 1.0001;
            assert!((a - b).abs() <= bound, "{a} vs {b}, scale {t}");
        }
    }
}
