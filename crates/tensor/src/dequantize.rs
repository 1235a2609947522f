//! `dequantize_row`: any dtype -> f32, bit-exact with ggml.
//!
//! Every formula keeps ggml's floating-point operation order (e.g. Q4_K is
//! `(d * sc) * q - (dmin * m)`, Q6_K is `(d * sc) * q`), because that order is
//! what makes results reproducible against llama.cpp and the gguf reference.
//! This is not a hot path (embedding lookups, debugging), so it stays scalar.

use crate::blocks::{
    BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, BlockQ8_1, BlockQ8K,
    QK_K, q4k_scales_mins, q5_value, q6k_value, read_block,
};
use crate::convert::{F8E4M3_LUT, bf16_to_f32};
use crate::{DType, TensorError};

const OP: &str = "dequantize_row";

/// Decodes one row: `dst.len()` elements from `src`, which must be exactly
/// `dtype.row_bytes(dst.len())` bytes.
pub fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<(), TensorError> {
    let n = dst.len();
    let need = dtype.row_bytes_for(OP, n)?;
    if src.len() != need {
        return Err(TensorError::len(OP, dtype, "src", "bytes", need, src.len()));
    }
    let bl = dtype.block_len();
    match dtype {
        DType::F32 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        DType::F8E4M3 => {
            let scale = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
            for (d, &b) in dst.iter_mut().zip(&src[4..]) {
                *d = F8E4M3_LUT[b as usize] * scale;
            }
        }
        DType::F8Act => {
            let scale = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
            for (d, c) in dst.iter_mut().zip(src[4..].chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * scale;
            }
        }
        DType::Q8_0 => {
            for (i, y) in dst.chunks_exact_mut(bl).enumerate() {
                let b: BlockQ8_0 = block(src, i)?;
                let d = b.d.to_f32();
                for (o, &q) in y.iter_mut().zip(&b.qs) {
                    *o = q as f32 * d;
                }
            }
        }
        DType::Q8_1 => {
            for (i, y) in dst.chunks_exact_mut(bl).enumerate() {
                let b: BlockQ8_1 = block(src, i)?;
                let d = b.d.to_f32();
                for (o, &q) in y.iter_mut().zip(&b.qs) {
                    *o = q as f32 * d;
                }
            }
        }
        DType::Q4_0 => {
            for (i, y) in dst.chunks_exact_mut(bl).enumerate() {
                let b: BlockQ4_0 = block(src, i)?;
                let d = b.d.to_f32();
                for j in 0..16 {
                    let x0 = (b.qs[j] & 0x0f) as i32 - 8;
                    let x1 = (b.qs[j] >> 4) as i32 - 8;
                    y[j] = x0 as f32 * d;
                    y[j + 16] = x1 as f32 * d;
                }
            }
        }
        DType::Q4_1 => {
            for (i, y) in dst.chunks_exact_mut(bl).enumerate() {
                let b: BlockQ4_1 = block(src, i)?;
                let d = b.d.to_f32();
                let m = b.m.to_f32();
                for j in 0..16 {
                    y[j] = (b.qs[j] & 0x0f) as f32 * d + m;
                    y[j + 16] = (b.qs[j] >> 4) as f32 * d + m;
                }
            }
        }
        DType::Q5_0 => {
            for (i, y) in dst.chunks_exact_mut(bl).enumerate() {
                let b: BlockQ5_0 = block(src, i)?;
                let d = b.d.to_f32();
                for (j, o) in y.iter_mut().enumerate() {
                    *o = (q5_value(&b.qh, &b.qs, j) as i32 - 16) as f32 * d;
                }
            }
        }
        DType::Q5_1 => {
            for (i, y) in dst.chunks_exact_mut(bl).enumerate() {
                let b: BlockQ5_1 = block(src, i)?;
                let d = b.d.to_f32();
                let m = b.m.to_f32();
                for (j, o) in y.iter_mut().enumerate() {
                    *o = q5_value(&b.qh, &b.qs, j) as f32 * d + m;
                }
            }
        }
        DType::Q4_K => {
            for (i, y) in dst.chunks_exact_mut(QK_K).enumerate() {
                let b: BlockQ4K = block(src, i)?;
                let d = b.d.to_f32();
                let min = b.dmin.to_f32();
                let (sc, mn) = q4k_scales_mins(&b.scales);
                for j in 0..4 {
                    let q = &b.qs[32 * j..32 * j + 32];
                    let d1 = d * sc[2 * j] as f32;
                    let m1 = min * mn[2 * j] as f32;
                    let d2 = d * sc[2 * j + 1] as f32;
                    let m2 = min * mn[2 * j + 1] as f32;
                    let out = &mut y[64 * j..64 * j + 64];
                    for l in 0..32 {
                        out[l] = d1 * (q[l] & 0xf) as f32 - m1;
                        out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
                    }
                }
            }
        }
        DType::Q6_K => {
            for (i, y) in dst.chunks_exact_mut(QK_K).enumerate() {
                let b: BlockQ6K = block(src, i)?;
                let d = b.d.to_f32();
                for (k, o) in y.iter_mut().enumerate() {
                    let q = q6k_value(&b, k) as i32 - 32;
                    *o = d * b.scales[k / 16] as f32 * q as f32;
                }
            }
        }
        DType::Q8_K => {
            for (i, y) in dst.chunks_exact_mut(QK_K).enumerate() {
                let b: BlockQ8K = block(src, i)?;
                for (o, &q) in y.iter_mut().zip(&b.qs) {
                    *o = b.d * q as f32;
                }
            }
        }
    }
    Ok(())
}

/// Reads block `i`; the length was validated up front, so a failure here is
/// an internal inconsistency, still reported as an error rather than a panic.
#[inline(always)]
pub(crate) fn block<B: crate::blocks::Block>(src: &[u8], i: usize) -> Result<B, TensorError> {
    read_block(src, i).ok_or(TensorError::Overflow {
        op: OP,
        what: "block index past the end of the row",
    })
}
