//! [`PackedF32`] / [`matmul_f32_packed`]: f32 weights times f32 activations for prefill-
//! shaped work (encoder models such as DeBERTa run every token through every matrix).
//!
//! The row kernels of [`crate::matmul`] dot one weight row with a few tokens and reduce
//! horizontally per output; here the weights are repacked once into panels of 32 rows
//! stored column-major (`[cols][32]`), so a 6-token x 32-row block of outputs lives in
//! twelve AVX-512 registers and each step over `k` is two panel loads, six broadcasts and
//! twelve FMAs, with no reductions. Plain Rust compiled inside `#[target_feature]` wrappers
//! (LLVM vectorizes the fixed-size loops), like `attn.rs`. Work is split across the pool
//! by panels, so threads write disjoint output columns.

use crate::isa::{Isa, best_isa};
use crate::{SyncSlice, TensorError, ThreadPool};

/// Rows per panel.
const NR: usize = 32;
/// Tokens per micro-tile.
const MR: usize = 6;

/// An f32 matrix `[rows, cols]` repacked for [`matmul_f32_packed`].
#[derive(Clone)]
pub struct PackedF32 {
    rows: usize,
    cols: usize,
    /// Panels of `NR` rows, each `[cols][NR]`; rows past `rows` are zero.
    data: Vec<f32>,
}

impl std::fmt::Debug for PackedF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedF32")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

impl PackedF32 {
    /// Repacks row-major `w` (`rows * cols` values).
    pub fn pack(w: &[f32], rows: usize, cols: usize) -> Result<PackedF32, TensorError> {
        let want = rows.checked_mul(cols).ok_or(TensorError::Overflow {
            op: "PackedF32::pack",
            what: "matrix size",
        })?;
        if w.len() != want || cols == 0 {
            return Err(TensorError::len(
                "PackedF32::pack",
                crate::DType::F32,
                "weights",
                "elements",
                want,
                w.len(),
            ));
        }
        let panels = rows.div_ceil(NR);
        let mut data = vec![0.0; panels * cols * NR];
        for (r, row) in w.chunks_exact(cols).enumerate() {
            let base = (r / NR) * cols * NR + r % NR;
            for (k, &v) in row.iter().enumerate() {
                data[base + k * NR] = v;
            }
        }
        Ok(PackedF32 { rows, cols, data })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// `out[t * rows + r] = Σ_k W[r][k] · x[t * cols + k]` for `t < n_tokens`.
pub fn matmul_f32_packed(
    pool: &ThreadPool,
    w: &PackedF32,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), TensorError> {
    const OP: &str = "matmul_f32_packed";
    let (rows, cols) = (w.rows, w.cols);
    let need_x = n_tokens.checked_mul(cols);
    let need_out = n_tokens.checked_mul(rows);
    if need_x.is_none_or(|n| x.len() < n) {
        return Err(TensorError::len(
            OP,
            crate::DType::F32,
            "activations",
            "elements",
            need_x.unwrap_or(usize::MAX),
            x.len(),
        ));
    }
    if need_out.is_none_or(|n| out.len() < n) {
        return Err(TensorError::len(
            OP,
            crate::DType::F32,
            "output",
            "elements",
            need_out.unwrap_or(usize::MAX),
            out.len(),
        ));
    }
    if n_tokens == 0 || rows == 0 {
        return Ok(());
    }
    let panels = rows.div_ceil(NR);
    let out = SyncSlice::new(&mut out[..n_tokens * rows]);
    let isa = best_isa();
    pool.run(&|t, nt| {
        let (p0, p1) = (panels * t / nt, panels * (t + 1) / nt);
        for p in p0..p1 {
            let panel = &w.data[p * cols * NR..(p + 1) * cols * NR];
            let r0 = p * NR;
            let valid = (rows - r0).min(NR);
            let mut tok = 0;
            while tok < n_tokens {
                let m = (n_tokens - tok).min(MR);
                let mut acc = [[0f32; NR]; MR];
                let xs = &x[tok * cols..(tok + m) * cols];
                tile(isa, panel, xs, cols, m, &mut acc);
                for (i, a) in acc.iter().take(m).enumerate() {
                    // SAFETY: this thread owns panel p, i.e. output columns
                    // r0..r0 + valid of every token; no other thread touches them.
                    let dst = unsafe { out.slice_mut((tok + i) * rows + r0, valid) };
                    dst.copy_from_slice(&a[..valid]);
                }
                tok += m;
            }
        }
    });
    Ok(())
}

fn tile(isa: Isa, panel: &[f32], xs: &[f32], cols: usize, m: usize, acc: &mut [[f32; NR]; MR]) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the tier was detected at run time.
        Isa::Avx512Vnni => return unsafe { tile_avx512(panel, xs, cols, m, acc) },
        Isa::Avx2 => return unsafe { tile_avx2(panel, xs, cols, m, acc) },
        _ => {}
    }
    let _ = isa;
    tile_generic::<false>(panel, xs, cols, m, acc);
}

/// `FMA`: fused multiply-add (only where the target has it: `mul_add` is a libm call
/// otherwise).
#[inline(always)]
fn tile_generic<const FMA: bool>(
    panel: &[f32],
    xs: &[f32],
    cols: usize,
    m: usize,
    acc: &mut [[f32; NR]; MR],
) {
    match m {
        6 => tile_m::<6, FMA>(panel, xs, cols, acc),
        5 => tile_m::<5, FMA>(panel, xs, cols, acc),
        4 => tile_m::<4, FMA>(panel, xs, cols, acc),
        3 => tile_m::<3, FMA>(panel, xs, cols, acc),
        2 => tile_m::<2, FMA>(panel, xs, cols, acc),
        _ => tile_m::<1, FMA>(panel, xs, cols, acc),
    }
}

#[inline(always)]
fn tile_m<const M: usize, const FMA: bool>(
    panel: &[f32],
    xs: &[f32],
    cols: usize,
    out: &mut [[f32; NR]; MR],
) {
    let mut acc = [[0f32; NR]; M];
    let x: [&[f32]; M] = std::array::from_fn(|i| &xs[i * cols..(i + 1) * cols]);
    for (k, w) in panel.chunks_exact(NR).take(cols).enumerate() {
        for i in 0..M {
            let xv = x[i][k];
            for (a, &wj) in acc[i].iter_mut().zip(w) {
                *a = if FMA {
                    xv.mul_add(wj, *a)
                } else {
                    *a + xv * wj
                };
            }
        }
    }
    out[..M].copy_from_slice(&acc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn tile_avx512(panel: &[f32], xs: &[f32], cols: usize, m: usize, acc: &mut [[f32; NR]; MR]) {
    tile_generic::<true>(panel, xs, cols, m, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(panel: &[f32], xs: &[f32], cols: usize, m: usize, acc: &mut [[f32; NR]; MR]) {
    tile_generic::<true>(panel, xs, cols, m, acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_plain_dot_products() {
        let pool = ThreadPool::new(2);
        for (rows, cols, n) in [(1, 1, 1), (33, 7, 5), (64, 96, 9), (70, 130, 4)] {
            let f = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 31.0;
            let w: Vec<f32> = (0..rows * cols).map(f).collect();
            let x: Vec<f32> = (0..n * cols).map(|i| f(i + 11)).collect();
            let p = PackedF32::pack(&w, rows, cols).expect("pack");
            let mut out = vec![f32::NAN; n * rows];
            matmul_f32_packed(&pool, &p, &x, n, &mut out).expect("matmul");
            for t in 0..n {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|k| w[r * cols + k] * x[t * cols + k]).sum();
                    let got = out[t * rows + r];
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{rows}x{cols} t{t} r{r}"
                    );
                }
            }
        }
        assert!(PackedF32::pack(&[1.0; 3], 2, 2).is_err());
    }
}
