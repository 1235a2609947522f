//! [`PackedMatrix`] / [`matmul_packed`]: an optional load-time repacking of
//! weight matrices into a row-interleaved layout with faster kernels
//! (AVX-512 VNNI: Q8_0, Q4_0, Q4_1, Q4_K), computing the same as
//! [`crate::matmul`] on the original data (up to float summation order).
//!
//! Layout: rows in groups of 16; each group stores, for each 32-element
//! block index `b`, one "group-block": the 16 rows' f16 scales `d`
//! (contiguous), for Q4_1 the 16 f16 mins `m`, then the quants as chunks of
//! 64 bytes, chunk `j` holding bytes `4j..4j+4` of every row's block quants
//! (row `i` at `4i`). Q8_0 quants are stored `^ 0x80` (unsigned for
//! `vpdpbusd`). The size equals the original's. Q4_K: see
//! `x86/packed512k.rs` (scales stored unpacked, +2.8%).

use crate::{DType, TensorError, ThreadPool};

const OP: &str = "matmul_packed";

/// A weight matrix repacked for [`matmul_packed`]. Build it once at load
/// time with [`PackedMatrix::pack`].
pub struct PackedMatrix {
    dtype: DType,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("dtype", &self.dtype)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

#[cfg(target_arch = "x86_64")]
fn kind_of(dtype: DType) -> Option<u8> {
    use crate::x86::gemm512::{K_Q4_0, K_Q4_1, K_Q8_0};
    match dtype {
        DType::Q8_0 => Some(K_Q8_0),
        DType::Q4_0 => Some(K_Q4_0),
        DType::Q4_1 => Some(K_Q4_1),
        _ => None,
    }
}

impl PackedMatrix {
    /// Repacks `data` (`rows x cols` of `dtype`, ggml row-major blocks).
    /// `Ok(None)`: no packed kernel for this dtype / CPU / shape (rows must
    /// be a multiple of 16); keep using [`crate::matmul`] then.
    pub fn pack(
        dtype: DType,
        data: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<Option<PackedMatrix>, TensorError> {
        let wrb = dtype.row_bytes_for(OP, cols)?;
        let total = wrb.checked_mul(rows).ok_or(TensorError::Overflow {
            op: OP,
            what: "matrix size",
        })?;
        if data.len() != total {
            return Err(TensorError::len(
                OP,
                dtype,
                "weights",
                "bytes",
                total,
                data.len(),
            ));
        }
        #[cfg(target_arch = "x86_64")]
        {
            use crate::x86::packed512::{GROUP, group_block_bytes};
            if crate::best_isa() != crate::Isa::Avx512Vnni
                || !rows.is_multiple_of(GROUP)
                || rows == 0
            {
                return Ok(None);
            }
            if dtype == DType::Q4_K {
                use crate::x86::packed512k::{GSB, pack_group};
                let nsb = cols / 256;
                let mut out = vec![0u8; rows / GROUP * nsb * GSB];
                for (g, dst) in out.chunks_exact_mut(nsb * GSB).enumerate() {
                    pack_group(data, wrb, g, nsb, dst);
                }
                return Ok(Some(PackedMatrix {
                    dtype,
                    rows,
                    cols,
                    data: out,
                }));
            }
            let Some(kind) = kind_of(dtype) else {
                return Ok(None);
            };
            let nb = cols / 32;
            let gbb = nb * group_block_bytes(kind);
            let mut out = vec![0u8; total];
            for (g, dst) in out.chunks_exact_mut(gbb).enumerate() {
                crate::x86::packed512::pack_group(kind, data, wrb, g, nb, dst);
            }
            Ok(Some(PackedMatrix {
                dtype,
                rows,
                cols,
                data: out,
            }))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (data, rows, cols);
            Ok(None)
        }
    }

    /// Weight type of the original matrix.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Number of rows (outputs per token).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Bytes held (the original's; Q4_K: +2.8%).
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// [`crate::matmul`] on a [`PackedMatrix`]: `out[t * rows + r] = dot(W row
/// r, x row t)`; `x_q` holds `n_tokens` rows from [`crate::quantize_acts`]
/// for `w.dtype()`.
pub fn matmul_packed(
    pool: &ThreadPool,
    w: &PackedMatrix,
    x_q: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), TensorError> {
    crate::matmul::check_acts_and_out(OP, w.dtype, w.rows, w.cols, x_q, n_tokens, out.len())?;
    let xrb = w.dtype.vec_dot_type().row_bytes_for(OP, w.cols)?;
    if n_tokens == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if w.dtype == DType::Q4_K && crate::Isa::Avx512Vnni.is_available() {
        crate::x86::packed512k::matmul(pool, &w.data, w.rows, w.cols, x_q, n_tokens, out, None);
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(kind) = kind_of(w.dtype)
        && crate::Isa::Avx512Vnni.is_available()
    {
        crate::x86::packed512::matmul(
            pool, kind, &w.data, w.rows, w.cols, x_q, xrb, n_tokens, out, None,
        );
        return Ok(());
    }
    let _ = pool;
    Err(TensorError::Unsupported {
        op: OP,
        dtype: w.dtype,
    })
}
