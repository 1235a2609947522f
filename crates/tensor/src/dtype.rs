//! `DType`: the element formats a tensor can be stored in, and their sizes.
//!
//! The numeric ids are ggml's (`enum ggml_type`), because GGUF files store
//! them verbatim. `F8E4M3` is ferrollama's own row format (one f32 scale per
//! row followed by one FP8 byte per element); ggml has no such type, so GGUF
//! files carry it under a private id ([`F8E4M3_GGUF_ID`]). `F8Act` is the
//! activation side of Meta's FP8 scheme (spec §6.2): a row quantized to E4M3
//! with its own scale, kept widened to f32 (every E4M3 value is exactly an
//! f32), so the kernels decode only the weight bytes.

use crate::blocks::{
    BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, BlockQ8_1, BlockQ8K,
    QK_K, QK8_0,
};

/// Element storage format.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q8_1,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4_K,
    Q6_K,
    Q8_K,
    F8E4M3,
    F8Act,
}

/// The GGUF type id ferrollama writes for `F8E4M3` tensors. ggml's ids are
/// small consecutive numbers (below 64 in 2026); this one is far from them so
/// a future ggml type can never be mistaken for ours. llama.cpp refuses such
/// files, which is right: it has no FP8 row kernel.
pub const F8E4M3_GGUF_ID: u32 = 0x4638; // "F8"

impl DType {
    /// Every dtype, for tests and tables.
    pub const ALL: [DType; 14] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q8_1,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q6_K,
        DType::Q8_K,
        DType::F8E4M3,
        DType::F8Act,
    ];

    /// Maps a ggml type id (as stored in GGUF tensor infos) to a dtype.
    pub fn from_ggml(id: u32) -> Option<DType> {
        Some(match id {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::Q4_0,
            3 => DType::Q4_1,
            6 => DType::Q5_0,
            7 => DType::Q5_1,
            8 => DType::Q8_0,
            9 => DType::Q8_1,
            12 => DType::Q4_K,
            14 => DType::Q6_K,
            15 => DType::Q8_K,
            30 => DType::BF16,
            F8E4M3_GGUF_ID => DType::F8E4M3,
            _ => return None,
        })
    }

    /// The GGUF type id (ggml's, or ours for `F8E4M3`), or `None` for
    /// formats that never appear in files.
    pub fn ggml_id(self) -> Option<u32> {
        Some(match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q5_0 => 6,
            DType::Q5_1 => 7,
            DType::Q8_0 => 8,
            DType::Q8_1 => 9,
            DType::Q4_K => 12,
            DType::Q6_K => 14,
            DType::Q8_K => 15,
            DType::BF16 => 30,
            DType::F8E4M3 => F8E4M3_GGUF_ID,
            DType::F8Act => return None,
        })
    }

    /// Lower-case name as used by llama.cpp ("q4_k", "f16", ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Q8_0 => "q8_0",
            DType::Q8_1 => "q8_1",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q4_K => "q4_k",
            DType::Q6_K => "q6_k",
            DType::Q8_K => "q8_k",
            DType::F8E4M3 => "f8e4m3",
            DType::F8Act => "f8act",
        }
    }

    /// Elements per block.
    pub fn block_len(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3 | DType::F8Act => 1,
            DType::Q8_0 | DType::Q8_1 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 => {
                QK8_0
            }
            DType::Q4_K | DType::Q6_K | DType::Q8_K => QK_K,
        }
    }

    /// Bytes per block (for `F8E4M3` and `F8Act`, per element: the row scale
    /// is extra, see [`DType::row_bytes`]).
    pub fn block_bytes(self) -> usize {
        use core::mem::size_of;
        match self {
            DType::F32 | DType::F8Act => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F8E4M3 => 1,
            DType::Q8_0 => size_of::<BlockQ8_0>(),
            DType::Q8_1 => size_of::<BlockQ8_1>(),
            DType::Q4_0 => size_of::<BlockQ4_0>(),
            DType::Q4_1 => size_of::<BlockQ4_1>(),
            DType::Q5_0 => size_of::<BlockQ5_0>(),
            DType::Q5_1 => size_of::<BlockQ5_1>(),
            DType::Q4_K => size_of::<BlockQ4K>(),
            DType::Q6_K => size_of::<BlockQ6K>(),
            DType::Q8_K => size_of::<BlockQ8K>(),
        }
    }

    /// Bytes of one row of `n` elements, or `None` if `n` is not a whole
    /// number of blocks or the size overflows.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        let bl = self.block_len();
        if !n.is_multiple_of(bl) {
            return None;
        }
        let body = (n / bl).checked_mul(self.block_bytes())?;
        if matches!(self, DType::F8E4M3 | DType::F8Act) {
            body.checked_add(4)
        } else {
            Some(body)
        }
    }

    /// The activation format this weight dtype is multiplied against.
    pub fn vec_dot_type(self) -> DType {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => DType::F32,
            // Meta's scheme: FP8 weights meet FP8 activations (spec §6.2).
            DType::F8E4M3 | DType::F8Act => DType::F8Act,
            DType::Q8_0 | DType::Q4_0 | DType::Q5_0 => DType::Q8_0,
            // Formats with a min term need the activation block sum (`s`).
            DType::Q4_1 | DType::Q5_1 => DType::Q8_1,
            DType::Q4_K | DType::Q6_K => DType::Q8_K,
            // Activation formats multiply against themselves (used by tests).
            DType::Q8_1 => DType::Q8_1,
            DType::Q8_K => DType::Q8_K,
        }
    }

    /// Checked `row_bytes` that reports an error naming `op`.
    pub(crate) fn row_bytes_for(
        self,
        op: &'static str,
        n: usize,
    ) -> Result<usize, crate::TensorError> {
        self.row_bytes(n)
            .ok_or(crate::TensorError::NotBlockAligned {
                op,
                dtype: self,
                n,
                block_len: self.block_len(),
            })
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
