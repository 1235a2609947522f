//! ferrollama-tensor: numbers and memory for CPU inference.
//!
//! - [`DType`] and ggml's block layouts ([`blocks`]), bit-exact
//!   [`dequantize_row`] / [`quantize_row`];
//! - [`vec_dot`] / [`matmul`]: quantized weight x activation products with
//!   scalar reference kernels and AVX2 / AVX-512-VNNI versions chosen at run
//!   time ([`Isa`], [`cpu_features`]);
//! - [`PackedMatrix`] / [`matmul_packed`]: optional load-time repacking
//!   with faster kernels for some formats;
//! - f32/f16 helpers for attention ([`dot_f32`], [`axpy_f16_f32`], ...);
//! - [`dot_rows_f32`]: one query against many rows, the vector index's flat scan;
//! - [`ThreadPool`] / [`SyncSlice`] for per-token parallel work.

mod activation;
mod attn;
pub mod blocks;
mod convert;
mod dequantize;
mod dot;
mod dot_rows;
pub mod dot_scalar;
mod dtype;
mod error;
mod f32ops;
mod gemm_f32;
mod gemm_int;
mod isa;
mod matmul;
#[cfg(target_arch = "aarch64")]
mod neon;
mod packed;
pub mod pool;
mod quantize;
mod quantize_k;
mod sync_slice;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use activation::{
    erf_fast, erf_ref, exp_fast, exp_shifted_sum, gelu_erf, gelu_erf_ref, gelu_inplace,
    sigmoid_into, softmax_inplace,
};
pub use attn::{ATT_TILE, pv_rows_f16, pv_tile, qk_rows_f16, qk_tile};
pub use convert::{F8E4M3_LUT, bf16_to_f32, f8e4m3_to_f32, f32_to_bf16, f32_to_f8e4m3};
pub use dequantize::dequantize_row;
pub use dot::{vec_dot, vec_dot_with};
pub use dot_rows::{dot_rows_f32, dot_rows_f32_scalar, dot_rows_f32_with};
pub use dtype::{DType, F8E4M3_GGUF_ID};
pub use error::TensorError;
pub use f32ops::{
    axpy_f16_f32, axpy_f16_f32_scalar, axpy_f32, axpy_f32_scalar, dot_f16_f32, dot_f16_f32_scalar,
    dot_f32, dot_f32_scalar, f32_to_f16_slice,
};
pub use gemm_f32::{
    Epilogue, PANEL_ROWS, PackedActs, PackedF32, matmul_f32_packed, matmul_f32_packed_part_with,
    matmul_f32_packed_with, matmul_f32_packed_xt_with, matmul_f32_panels,
};
pub use gemm_int::{
    INT_BLOCK, IntActs, IntWeights, KC_BLOCKS, WideMatrix, int_readable, int_weights, matmul_int,
    matmul_int_with, quantize_block_scalar,
};
pub use isa::{Isa, available_isas, best_isa, cpu_features};
pub use matmul::{matmul, matmul_with, quantize_acts};
pub use packed::{PackedMatrix, matmul_packed};
pub use pool::{PoolOptions, PoolStats, ThreadPool};
pub use quantize::{F8_ACT_SCALE_UB, quantize_row};
pub use sync_slice::SyncSlice;
