//! `quantize_acts` and `matmul`: the whole cost of decode and prefill.
//!
//! Two regimes:
//! - decode (few tokens): memory bound. Each thread takes a contiguous block
//!   of weight rows and streams every row once through the row kernel,
//!   dotting it with each token (the activations stay in L1/L2).
//! - prefill (many tokens): compute bound. On AVX-512, for Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/
//!   Q4_K/Q6_K with rows a multiple of 16, each thread packs 16-row groups
//!   on the fly into a row-interleaved layout (`x86::packed512*`,
//!   `x86::otf512q6k`; the layout of `PackedMatrix`) and runs every token
//!   against the packed group (Q5_0/Q5_1 too, unpacked to bytes); otherwise
//!   `x86::gemm512` reuses every unpacked weight block for a tile of tokens.
//!   On AVX-512 the 32-element block formats take `gemm512` for decode too.
//! - decode on the row-major layout software-prefetches the weight stream.
//!
//! Work is split by blocks of rows, so every thread writes a disjoint set of
//! output elements (through `SyncSlice`).

use crate::dot::{checked_kernel, row_kernel4, row_kernel8};
use crate::isa::{Isa, best_isa};
use crate::{DType, SyncSlice, TensorError, ThreadPool, quantize_row};

const OP: &str = "matmul";

/// Tokens per pass over a thread's rows (activations of a chunk stay in L2).
const TOKEN_CHUNK: usize = 64;

/// Token count from which the packed GEMM beats per-row kernels.
#[cfg(target_arch = "x86_64")]
const GEMM_MIN_TOKENS: usize = 1;

/// Token count from which packing 16-row groups on the fly (per call) beats
/// the row-major kernels (measured on Zen 4, 576..8192 x 1536..2048).
#[cfg(target_arch = "x86_64")]
fn otf_min_tokens(w: DType) -> usize {
    match w {
        DType::Q4_0 | DType::Q4_1 => 4,
        // Q5 is packed to one byte per weight, so it runs Q8_0's kernel.
        DType::Q8_0 | DType::Q5_0 | DType::Q5_1 => 8,
        DType::Q4_K => 12,
        DType::Q6_K => 24,
        _ => usize::MAX,
    }
}

/// Quantizes `x` (`[n_tokens, cols]` f32, row-major) into
/// `w.vec_dot_type()` rows, back to back, reusing `out`'s allocation.
pub fn quantize_acts(
    w: DType,
    x: &[f32],
    cols: usize,
    out: &mut Vec<u8>,
) -> Result<(), TensorError> {
    const QOP: &str = "quantize_acts";
    let vt = w.vec_dot_type();
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(TensorError::len(
            QOP,
            vt,
            "activations",
            "elements",
            cols,
            x.len(),
        ));
    }
    let rb = vt.row_bytes_for(QOP, cols)?;
    let n_tokens = x.len() / cols;
    let total = rb.checked_mul(n_tokens).ok_or(TensorError::Overflow {
        op: QOP,
        what: "activation buffer size",
    })?;
    out.clear();
    out.resize(total, 0);
    for (src, dst) in x.chunks_exact(cols).zip(out.chunks_exact_mut(rb)) {
        quantize_row(vt, src, dst)?;
    }
    Ok(())
}

/// `out[t * rows + r] = dot(W row r, x row t)` for all `r < rows`,
/// `t < n_tokens`. `W` is `[rows, cols]` in `w`; `x_q` holds `n_tokens` rows
/// produced by [`quantize_acts`]. Work is split across `pool` by row blocks.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    pool: &ThreadPool,
    w: DType,
    w_data: &[u8],
    rows: usize,
    cols: usize,
    x_q: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), TensorError> {
    matmul_with(best_isa(), pool, w, w_data, rows, cols, x_q, n_tokens, out)
}

/// [`matmul`] on an explicit SIMD tier (unavailable tiers fall back to scalar).
#[allow(clippy::too_many_arguments)]
pub fn matmul_with(
    isa: Isa,
    pool: &ThreadPool,
    w: DType,
    w_data: &[u8],
    rows: usize,
    cols: usize,
    x_q: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), TensorError> {
    let isa = if isa.is_available() { isa } else { Isa::Scalar };
    let vt = w.vec_dot_type();
    let wrb = w.row_bytes_for(OP, cols)?;
    let xrb = vt.row_bytes_for(OP, cols)?;
    let ovf = TensorError::Overflow {
        op: OP,
        what: "matrix size",
    };
    let w_total = wrb.checked_mul(rows).ok_or(ovf)?;
    if w_data.len() != w_total {
        return Err(TensorError::len(
            OP,
            w,
            "weights",
            "bytes",
            w_total,
            w_data.len(),
        ));
    }
    check_acts_and_out(OP, w, rows, cols, x_q, n_tokens, out.len())?;
    let kernel = checked_kernel(OP, isa, w, wrb, xrb, cols)?;
    if rows == 0 || n_tokens == 0 {
        return Ok(());
    }

    // Prefill on AVX-512: pack 16-row groups on the fly into the interleaved
    // layout of `PackedMatrix` (each group once, reused for all tokens).
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni && n_tokens >= otf_min_tokens(w) && rows.is_multiple_of(16) {
        use crate::x86::gemm512::{K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1, K_Q8_0};
        let kind = match w {
            DType::Q8_0 => Some(K_Q8_0),
            DType::Q4_0 => Some(K_Q4_0),
            DType::Q4_1 => Some(K_Q4_1),
            DType::Q5_0 => Some(K_Q5_0),
            DType::Q5_1 => Some(K_Q5_1),
            _ => None,
        };
        if let Some(kind) = kind {
            crate::x86::packed512::matmul(
                pool,
                kind,
                w_data,
                rows,
                cols,
                x_q,
                xrb,
                n_tokens,
                out,
                Some(wrb),
            );
            return Ok(());
        }
        if w == DType::Q4_K {
            crate::x86::packed512k::matmul(pool, w_data, rows, cols, x_q, n_tokens, out, Some(wrb));
            return Ok(());
        }
        if w == DType::Q6_K {
            crate::x86::otf512q6k::matmul(pool, w_data, wrb, rows, cols, x_q, n_tokens, out);
            return Ok(());
        }
    }

    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni && n_tokens >= GEMM_MIN_TOKENS && crate::x86::gemm512::supports(w) {
        return crate::x86::gemm512::matmul(pool, w, w_data, rows, cols, x_q, n_tokens, out);
    }

    let kernel4 = row_kernel4(isa, w);
    let kernel8 = row_kernel8(isa, w);
    let out = SyncSlice::new(out);
    let n_threads = pool.n_threads();
    // Row blocks: a multiple of 16 rows each so neighbours never share an
    // output cache line in decode (rows are contiguous in `out` per token).
    let per = rows.div_ceil(n_threads).div_ceil(16) * 16;
    // Decode streams every row once from DRAM: prefetch ~8 KiB ahead (the
    // hardware prefetchers alone leave much of the bandwidth unused).
    let pf_rows = if n_tokens < 4 {
        8192usize.div_ceil(wrb)
    } else {
        0
    };
    let job = |ti: usize, nt: usize| {
        let per = if nt == n_threads { per } else { rows };
        let r0 = (ti * per).min(rows);
        let r1 = ((ti + 1) * per).min(rows);
        // Tokens in chunks whose activations fit in L2; each weight row is
        // then reused (from L1) for the whole chunk.
        let mut tc = 0;
        while tc < n_tokens {
            let tc_end = (tc + TOKEN_CHUNK).min(n_tokens);
            for r in r0..r1 {
                let wp = w_data[r * wrb..(r + 1) * wrb].as_ptr();
                if pf_rows != 0 {
                    prefetch_row(w_data, (r + pf_rows) * wrb, wrb);
                }
                let xp = |t: usize| x_q[t * xrb..(t + 1) * xrb].as_ptr();
                let mut t = tc;
                if let Some(k8) = kernel8 {
                    while t + 8 <= tc_end {
                        // SAFETY: rows validated above (lengths wrb/xrb).
                        let v = unsafe { k8(wp, core::array::from_fn(|j| xp(t + j)), cols) };
                        for (j, val) in v.iter().enumerate() {
                            // SAFETY: row r belongs to this thread only.
                            unsafe { out.write((t + j) * rows + r, *val) };
                        }
                        t += 8;
                    }
                }
                if let Some(k4) = kernel4 {
                    while t + 4 <= tc_end {
                        // SAFETY: rows validated above (lengths wrb/xrb).
                        let v = unsafe { k4(wp, [xp(t), xp(t + 1), xp(t + 2), xp(t + 3)], cols) };
                        for (j, val) in v.iter().enumerate() {
                            // SAFETY: row r belongs to this thread only.
                            unsafe { out.write((t + j) * rows + r, *val) };
                        }
                        t += 4;
                    }
                }
                while t < tc_end {
                    // SAFETY: rows validated above (lengths wrb/xrb for `cols`).
                    let v = unsafe { kernel(wp, xp(t), cols) };
                    // SAFETY: row r belongs to this thread only.
                    unsafe { out.write(t * rows + r, v) };
                    t += 1;
                }
            }
            tc = tc_end;
        }
    };
    pool.run(&job);
    Ok(())
}

/// Software-prefetches `len` bytes of `data` from `start` (ignoring what lies
/// past the end).
#[inline]
fn prefetch_row(data: &[u8], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let end = (start + len).min(data.len());
        let mut o = start;
        while o < end {
            // SAFETY: `o < data.len()`; prefetching has no architectural effect.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    data.as_ptr().add(o) as *const i8,
                )
            };
            o += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, start, len);
}

/// Checks that `x_q` holds `n_tokens` activation rows for `w` and that `out` has room for
/// `rows x n_tokens` results (shared by [`matmul`] and [`crate::matmul_packed`]).
pub(crate) fn check_acts_and_out(
    op: &'static str,
    w: DType,
    rows: usize,
    cols: usize,
    x_q: &[u8],
    n_tokens: usize,
    out_len: usize,
) -> Result<(), TensorError> {
    let vt = w.vec_dot_type();
    let xrb = vt.row_bytes_for(op, cols)?;
    let x_total = xrb.checked_mul(n_tokens).ok_or(TensorError::Overflow {
        op,
        what: "activation size",
    })?;
    if x_q.len() != x_total {
        return Err(TensorError::len(
            op,
            vt,
            "activations",
            "bytes",
            x_total,
            x_q.len(),
        ));
    }
    let o_total = rows.checked_mul(n_tokens).ok_or(TensorError::Overflow {
        op,
        what: "output size",
    })?;
    if out_len != o_total {
        return Err(TensorError::len(
            op, w, "output", "elements", o_total, out_len,
        ));
    }
    Ok(())
}
