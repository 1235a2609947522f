//! Shared helpers for the integration tests: random but well-formed rows.
#![allow(dead_code)]

use ferrollama_tensor::{DType, dequantize_row, quantize_row};

/// Weight dtypes that have a vec_dot kernel.
pub const WEIGHT_TYPES: [DType; 11] = [
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q4_K,
    DType::Q6_K,
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::F8E4M3,
];

/// Tiny deterministic generator (xorshift64*), so tests need no extra deps.
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn f32(&mut self) -> f32 {
        // Roughly gaussian: sum of uniforms.
        let mut s = 0.0f32;
        for _ in 0..4 {
            s += (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        }
        s
    }
    pub fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
}

/// A weight row of `n` elements: random quant bits with sane scales.
pub fn weight_row(dtype: DType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let len = dtype.row_bytes(n).expect("aligned");
    let mut b: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
    let bb = dtype.block_bytes();
    match dtype {
        DType::Q8_0 | DType::Q4_0 | DType::Q5_0 => {
            for blk in b.chunks_exact_mut(bb) {
                let d = rng.f32() * 0.05;
                put_f16(blk, 0, d);
            }
        }
        DType::Q4_1 | DType::Q5_1 => {
            for blk in b.chunks_exact_mut(bb) {
                let d = rng.f32() * 0.05;
                let m = rng.f32() * 0.5;
                put_f16(blk, 0, d);
                put_f16(blk, 2, m);
            }
        }
        DType::Q4_K => {
            for blk in b.chunks_exact_mut(bb) {
                let d = rng.f32().abs() * 0.01;
                let m = rng.f32().abs() * 0.01;
                put_f16(blk, 0, d);
                put_f16(blk, 2, m);
            }
        }
        DType::Q6_K => {
            for blk in b.chunks_exact_mut(bb) {
                let d = rng.f32() * 0.001;
                put_f16(blk, 208, d);
            }
        }
        DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3 => {
            let x: Vec<f32> = (0..n).map(|_| rng.f32() * 3.0).collect();
            quantize_row(dtype, &x, &mut b).expect("quantize");
        }
        DType::Q8_1 | DType::Q8_K | DType::F8Act => unreachable!("not a weight type"),
    }
    b
}

/// Random f32 activations.
pub fn acts(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.f32() * 2.0).collect()
}

/// Activation row in the format `w` multiplies against.
pub fn act_row(w: DType, x: &[f32]) -> Vec<u8> {
    let vt = w.vec_dot_type();
    let mut b = vec![0u8; vt.row_bytes(x.len()).expect("aligned")];
    quantize_row(vt, x, &mut b).expect("quantize acts");
    b
}

/// Σ |w_i x_i| over the dequantized rows: the scale for relative tolerances.
pub fn abs_dot(w: DType, wr: &[u8], xr: &[u8], n: usize) -> f32 {
    let mut a = vec![0f32; n];
    let mut b = vec![0f32; n];
    dequantize_row(w, wr, &mut a).expect("deq w");
    dequantize_row(w.vec_dot_type(), xr, &mut b).expect("deq x");
    a.iter().zip(&b).map(|(p, q)| (p * q).abs()).sum()
}
