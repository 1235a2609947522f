//! x86-64 SIMD kernels: an AVX2 tier and an AVX-512 + VNNI tier.
//! Which one runs is decided once at startup by `isa.rs`.

pub(crate) mod avx2;
pub(crate) mod avx512;
pub(crate) mod gemm512;
pub(crate) mod gemm_int_avx2;
pub(crate) mod otf512q6k;
pub(crate) mod packed512;
pub(crate) mod packed512k;
pub(crate) mod quant512;
