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
        Self::pack_impl(None, w, rows, cols)
    }

    /// [`PackedF32::pack`] with the panels spread over `pool`: a training pass repacks
    /// weights that change every step, and a serial pack is time the other threads wait.
    pub fn pack_on(
        pool: &ThreadPool,
        w: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<PackedF32, TensorError> {
        Self::pack_impl(Some(pool), w, rows, cols)
    }

    fn pack_impl(
        pool: Option<&ThreadPool>,
        w: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<PackedF32, TensorError> {
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
        by_panels(pool, &mut data, panels, cols, &|p0, dst| {
            let r_end = (dst.len() / (cols * NR) + p0) * NR;
            for r in p0 * NR..r_end.min(rows) {
                let row = &w[r * cols..(r + 1) * cols];
                let base = (r / NR - p0) * cols * NR + r % NR;
                for (k, &v) in row.iter().enumerate() {
                    dst[base + k * NR] = v;
                }
            }
        });
        Ok(PackedF32 { rows, cols, data })
    }

    /// Packs the transpose of row-major `a` (`a_rows * a_cols` values): the matrix
    /// `[a_cols, a_rows]` with `M[r][k] = a[k][r]`. Products with a transposed operand
    /// (a backward pass's `dY · W`, `dYᵀ · X`) need no separate transposed copy: a panel's
    /// step `k` is 32 consecutive values of `a`'s row `k`.
    pub fn pack_transposed(
        a: &[f32],
        a_rows: usize,
        a_cols: usize,
    ) -> Result<PackedF32, TensorError> {
        Self::pack_transposed_impl(None, a, a_rows, a_cols)
    }

    /// [`PackedF32::pack_transposed`] with the panels spread over `pool`.
    pub fn pack_transposed_on(
        pool: &ThreadPool,
        a: &[f32],
        a_rows: usize,
        a_cols: usize,
    ) -> Result<PackedF32, TensorError> {
        Self::pack_transposed_impl(Some(pool), a, a_rows, a_cols)
    }

    fn pack_transposed_impl(
        pool: Option<&ThreadPool>,
        a: &[f32],
        a_rows: usize,
        a_cols: usize,
    ) -> Result<PackedF32, TensorError> {
        let want = a_rows.checked_mul(a_cols).ok_or(TensorError::Overflow {
            op: "PackedF32::pack_transposed",
            what: "matrix size",
        })?;
        if a.len() != want || a_rows == 0 {
            return Err(TensorError::len(
                "PackedF32::pack_transposed",
                crate::DType::F32,
                "matrix",
                "elements",
                want,
                a.len(),
            ));
        }
        let (rows, cols) = (a_cols, a_rows);
        let panels = rows.div_ceil(NR);
        let mut data = vec![0.0; panels * cols * NR];
        by_panels(pool, &mut data, panels, cols, &|p0, dst| {
            let p1 = p0 + dst.len() / (cols * NR);
            for (k, arow) in a.chunks_exact(a_cols).enumerate() {
                for p in p0..p1 {
                    let src = &arow[p * NR..((p + 1) * NR).min(a_cols)];
                    let base = (p - p0) * cols * NR + k * NR;
                    dst[base..base + src.len()].copy_from_slice(src);
                }
            }
        });
        Ok(PackedF32 { rows, cols, data })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Runs `f(first_panel, panels' data)` on contiguous ranges of the `panels` panels of
/// `data` (each `cols * NR` values), one range per pool thread, or all on the caller
/// without a pool. Panels are independent, so the result does not depend on the split.
fn by_panels(
    pool: Option<&ThreadPool>,
    data: &mut [f32],
    panels: usize,
    cols: usize,
    f: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    let Some(pool) = pool else {
        f(0, data);
        return;
    };
    let ds = SyncSlice::new(data);
    pool.run(&|t, nt| {
        let (p0, p1) = (panels * t / nt, panels * (t + 1) / nt);
        if p0 < p1 {
            // SAFETY: the panel ranges of different threads are disjoint.
            let dst = unsafe { ds.slice_mut(p0 * cols * NR, (p1 - p0) * cols * NR) };
            f(p0, dst);
        }
    });
}

/// What [`matmul_f32_packed_with`] does to each output before storing it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Added per output column (`rows` values).
    pub bias: Option<&'a [f32]>,
    /// Then the exact GELU ([`crate::gelu_erf`]).
    pub gelu: bool,
    /// Add the result to what `out` holds instead of overwriting it (gradients
    /// accumulate; this saves a temporary the size of the output and a pass over it).
    pub accumulate: bool,
}

/// `out[t * rows + r] = Σ_k W[r][k] · x[t * cols + k]` for `t < n_tokens`.
pub fn matmul_f32_packed(
    pool: &ThreadPool,
    w: &PackedF32,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), TensorError> {
    matmul_f32_packed_with(pool, w, x, n_tokens, out, Epilogue::default())
}

/// Tokens per work item: a block of activations (up to 48 x 1536 floats, 295 KB) that
/// stays in L2 while every panel of the weight passes over it.
const TOKEN_BLOCK: usize = 48;

/// [`matmul_f32_packed`], then `epi` applied to every output (bias, activation) while
/// the tile is still in registers / L1 and on the pool's threads, instead of as separate
/// single-threaded passes over the whole output.
pub fn matmul_f32_packed_with(
    pool: &ThreadPool,
    w: &PackedF32,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    epi: Epilogue<'_>,
) -> Result<(), TensorError> {
    matmul_isa(best_isa(), pool, w, x, n_tokens, out, epi)
}

fn matmul_isa(
    isa: Isa,
    pool: &ThreadPool,
    w: &PackedF32,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    epi: Epilogue<'_>,
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
    if let Some(b) = epi.bias
        && b.len() != rows
    {
        return Err(TensorError::len(
            OP,
            crate::DType::F32,
            "bias",
            "elements",
            rows,
            b.len(),
        ));
    }
    if n_tokens == 0 || rows == 0 {
        return Ok(());
    }
    let panels = rows.div_ceil(NR);
    let blocks = n_tokens.div_ceil(TOKEN_BLOCK);
    let items = blocks * panels;
    let out = SyncSlice::new(&mut out[..n_tokens * rows]);
    pool.run(&|t, nt| {
        XPACK.with_borrow_mut(|xp| {
            let mut acc = [[0f32; NR]; MR];
            let mut packed = usize::MAX;
            // Items in token-block-major order, contiguous per thread: a thread keeps its
            // activation block hot and walks the weight's panels over it.
            for item in items * t / nt..items * (t + 1) / nt {
                let (b, p) = (item / panels, item % panels);
                let panel = &w.data[p * cols * NR..(p + 1) * cols * NR];
                let r0 = p * NR;
                let valid = (rows - r0).min(NR);
                let bias = epi.bias.map(|b| &b[r0..r0 + valid]);
                let (start, end) = (b * TOKEN_BLOCK, ((b + 1) * TOKEN_BLOCK).min(n_tokens));
                if isa == Isa::Avx2 && packed != b {
                    pack_block(&x[start * cols..end * cols], cols, xp);
                    packed = b;
                }
                let mut tok = start;
                while tok < end {
                    let m = (end - tok).min(MR);
                    let xs = if isa == Isa::Avx2 {
                        let ti = (tok - start) / MR;
                        &xp[ti * cols * MR..(ti + 1) * cols * MR]
                    } else {
                        &x[tok * cols..(tok + m) * cols]
                    };
                    tile(isa, panel, xs, cols, m, valid, &mut acc);
                    if bias.is_some() || epi.gelu {
                        finish(isa, &mut acc, m, valid, bias, epi.gelu);
                    }
                    for (i, a) in acc.iter().take(m).enumerate() {
                        // SAFETY: items are disjoint (token block, panel) pairs, each
                        // handled by one thread, so output rows start..end, columns
                        // r0..r0 + valid are written by this thread only.
                        let dst = unsafe { out.slice_mut((tok + i) * rows + r0, valid) };
                        // A fixed-size copy for whole panels: `copy_from_slice` of a
                        // run-time length is a libc call.
                        if epi.accumulate {
                            for (d, &v) in dst.iter_mut().zip(a) {
                                *d += v;
                            }
                        } else if let Ok(d) = <&mut [f32; NR]>::try_from(&mut *dst) {
                            *d = *a;
                        } else {
                            dst.copy_from_slice(&a[..valid]);
                        }
                    }
                    tok += m;
                }
            }
        })
    });
    Ok(())
}

std::thread_local! {
    /// A pool thread's packed activation block, kept between calls so the GEMM does not
    /// allocate once warm.
    static XPACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Repacks a block of token rows (`x` is `[tokens][cols]`) as micro-tiles of `MR`
/// tokens, each `[cols][MR]` (missing tokens of the last tile zero): the AVX2 kernel's
/// six broadcasts per step then come from one pointer and stride, instead of six rows
/// `cols` apart, which cost an address computation each.
fn pack_block(x: &[f32], cols: usize, xp: &mut Vec<f32>) {
    let tokens = x.len() / cols;
    let tiles = tokens.div_ceil(MR);
    xp.clear();
    xp.resize(tiles * cols * MR, 0.0);
    // Written in order, read from the tile's (at most six) rows at once.
    for (rows, dst) in x.chunks(cols * MR).zip(xp.chunks_exact_mut(cols * MR)) {
        let m = rows.len() / cols;
        for (k, d) in dst.chunks_exact_mut(MR).enumerate() {
            for (i, d) in d.iter_mut().take(m).enumerate() {
                *d = rows[i * cols + k];
            }
        }
    }
}

/// `acc[i][j] = Σ_k panel[k][j] · x_i[k]` for `i < m`, `j < NR` (at least `valid`); `xs`
/// is `m` token rows, or on AVX2 one packed micro-tile.
fn tile(
    isa: Isa,
    panel: &[f32],
    xs: &[f32],
    cols: usize,
    m: usize,
    valid: usize,
    acc: &mut [[f32; NR]; MR],
) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the tier was detected at run time.
        Isa::Avx512Vnni => return unsafe { tile_avx512(panel, xs, cols, m, acc) },
        Isa::Avx2 => {
            // SAFETY: as above; `panel` holds `cols` steps of NR floats and `xs` one
            // packed micro-tile, `[cols][MR]`.
            for half in 0..valid.div_ceil(HALF) {
                unsafe { tile_avx2(panel, half, xs, cols, m, acc) };
            }
            return;
        }
        _ => {}
    }
    let _ = (isa, valid);
    tile_generic::<false>(panel, xs, cols, m, acc);
}

/// Bias and activation on a finished tile, in place: one vectorized pass over its `m`
/// rows (columns past `valid` are computed too and never stored).
fn finish(
    isa: Isa,
    acc: &mut [[f32; NR]; MR],
    m: usize,
    valid: usize,
    bias: Option<&[f32]>,
    gelu: bool,
) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the tier was detected at run time.
        Isa::Avx512Vnni => return unsafe { finish_avx512(acc, m, valid, bias, gelu) },
        Isa::Avx2 => return unsafe { finish_avx2(acc, m, valid, bias, gelu) },
        _ => {}
    }
    let _ = isa;
    finish_generic::<false>(acc, m, valid, bias, gelu);
}

#[inline(always)]
fn finish_generic<const FMA: bool>(
    acc: &mut [[f32; NR]; MR],
    m: usize,
    valid: usize,
    bias: Option<&[f32]>,
    gelu: bool,
) {
    if let Some(b) = bias {
        for a in acc.iter_mut().take(m) {
            for (v, &b) in a[..valid].iter_mut().zip(b) {
                *v += b;
            }
        }
    }
    if gelu {
        for v in &mut acc.as_flattened_mut()[..m * NR] {
            *v = crate::activation::gelu_impl::<FMA>(*v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn finish_avx512(
    acc: &mut [[f32; NR]; MR],
    m: usize,
    valid: usize,
    bias: Option<&[f32]>,
    gelu: bool,
) {
    finish_generic::<true>(acc, m, valid, bias, gelu)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn finish_avx2(
    acc: &mut [[f32; NR]; MR],
    m: usize,
    valid: usize,
    bias: Option<&[f32]>,
    gelu: bool,
) {
    finish_generic::<true>(acc, m, valid, bias, gelu)
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

/// Columns of an AVX2 micro-tile: half a panel.
const HALF: usize = 16;

/// The AVX2 micro-kernel: 6 tokens x 16 panel rows (`half` picks which 16 of the panel's
/// 32) in twelve ymm accumulators, two panel loads and six broadcasts per step over `k`
/// (the BLIS Haswell shape). A 6 x 32 tile as on AVX-512 would need 24 accumulators,
/// more than AVX2's 16 registers, and LLVM then spills them to the stack every step.
/// `xs` is one micro-tile of tokens packed `[cols][MR]` by [`pack_block`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(
    panel: &[f32],
    half: usize,
    xs: &[f32],
    cols: usize,
    m: usize,
    acc: &mut [[f32; NR]; MR],
) {
    // SAFETY (all arms): the caller passes `panel.len() >= cols * NR`, `xs.len() >= MR * cols`
    // and `half < NR / HALF`; the kernel reads only within those.
    unsafe {
        match m {
            6 => kernel_avx2::<6>(panel, half, xs, cols, acc),
            5 => kernel_avx2::<5>(panel, half, xs, cols, acc),
            4 => kernel_avx2::<4>(panel, half, xs, cols, acc),
            3 => kernel_avx2::<3>(panel, half, xs, cols, acc),
            2 => kernel_avx2::<2>(panel, half, xs, cols, acc),
            _ => kernel_avx2::<1>(panel, half, xs, cols, acc),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn kernel_avx2<const M: usize>(
    panel: &[f32],
    half: usize,
    xs: &[f32],
    cols: usize,
    acc: &mut [[f32; NR]; MR],
) {
    use std::arch::x86_64::*;
    debug_assert!(panel.len() >= cols * NR && xs.len() >= MR * cols && half * HALF < NR);
    let w = panel.as_ptr().wrapping_add(half * HALF);
    let x = xs.as_ptr();
    let mut c0 = [_mm256_setzero_ps(); M];
    let mut c1 = [_mm256_setzero_ps(); M];
    for k in 0..cols {
        // SAFETY: k < cols, so w + k*NR + 16 <= panel's end and x + k*MR + i < xs's end.
        unsafe {
            let w0 = _mm256_loadu_ps(w.add(k * NR));
            let w1 = _mm256_loadu_ps(w.add(k * NR + 8));
            for i in 0..M {
                let xv = _mm256_broadcast_ss(&*x.add(k * MR + i));
                c0[i] = _mm256_fmadd_ps(xv, w0, c0[i]);
                c1[i] = _mm256_fmadd_ps(xv, w1, c1[i]);
            }
        }
    }
    for i in 0..M {
        let dst = &mut acc[i][half * HALF..(half + 1) * HALF];
        // SAFETY: dst holds 16 floats.
        unsafe {
            _mm256_storeu_ps(dst.as_mut_ptr(), c0[i]);
            _mm256_storeu_ps(dst.as_mut_ptr().add(8), c1[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::available_isas;
    use proptest::prelude::*;

    fn reference(w: &[f32], x: &[f32], rows: usize, cols: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; n * rows];
        for t in 0..n {
            for r in 0..rows {
                out[t * rows + r] = (0..cols)
                    .map(|k| f64::from(w[r * cols + k]) * f64::from(x[t * cols + k]))
                    .sum();
            }
        }
        out
    }

    /// Every tier this CPU has against an f64 reference, with and without the epilogue.
    fn check(rows: usize, cols: usize, n: usize, seed: u64, threads: usize) {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2001) as f32 / 1000.0 - 1.0
        };
        let w: Vec<f32> = (0..rows * cols).map(|_| rnd()).collect();
        let x: Vec<f32> = (0..n * cols).map(|_| rnd()).collect();
        let bias: Vec<f32> = (0..rows).map(|_| rnd()).collect();
        let p = PackedF32::pack(&w, rows, cols).expect("pack");
        let want = reference(&w, &x, rows, cols, n);
        let pool = ThreadPool::new(threads);
        for isa in available_isas() {
            for epi in [
                Epilogue::default(),
                Epilogue {
                    bias: Some(&bias),
                    gelu: true,
                    accumulate: false,
                },
                Epilogue {
                    accumulate: true,
                    ..Epilogue::default()
                },
            ] {
                let mut out = vec![f32::NAN; n * rows + 3];
                if epi.accumulate {
                    out[..n * rows].fill(0.5);
                }
                matmul_isa(isa, &pool, &p, &x, n, &mut out, epi).expect("matmul");
                for (i, (&got, &y)) in out.iter().zip(&want).enumerate() {
                    let mut y = y;
                    if epi.accumulate {
                        y += 0.5;
                    }
                    if epi.gelu {
                        y = crate::gelu_erf_ref(y + f64::from(bias[i % rows]));
                    }
                    let tol = 1e-5 * (cols as f64).sqrt() * (1.0 + y.abs());
                    assert!(
                        (f64::from(got) - y).abs() < tol,
                        "{} {rows}x{cols} n{n} out[{i}] = {got}, want {y} (gelu {})",
                        isa.name(),
                        epi.gelu
                    );
                }
                assert!(
                    out[n * rows..].iter().all(|v| v.is_nan()),
                    "wrote past the output"
                );
            }
        }
    }

    #[test]
    fn matches_plain_dot_products() {
        for (rows, cols, n) in [
            (1, 1, 1),
            (33, 7, 5),
            (64, 96, 9),
            (70, 130, 4),
            (48, 20, 101),
        ] {
            check(rows, cols, n, 7, 2);
        }
        assert!(PackedF32::pack(&[1.0; 3], 2, 2).is_err());
        assert!(PackedF32::pack_transposed(&[1.0; 3], 2, 2).is_err());
    }

    #[test]
    fn transposed_packing_is_packing_the_transpose() {
        for (a_rows, a_cols) in [(1, 1), (3, 70), (40, 33), (7, 64), (100, 200)] {
            let a: Vec<f32> = (0..a_rows * a_cols).map(|i| i as f32 * 0.5 - 3.0).collect();
            let mut t = vec![0.0; a.len()];
            for r in 0..a_rows {
                for c in 0..a_cols {
                    t[c * a_rows + r] = a[r * a_cols + c];
                }
            }
            let want = PackedF32::pack(&t, a_cols, a_rows).expect("pack");
            let got = PackedF32::pack_transposed(&a, a_rows, a_cols).expect("pack_transposed");
            assert_eq!((got.rows, got.cols), (want.rows, want.cols));
            assert_eq!(got.data, want.data, "{a_rows}x{a_cols}");
            // Packing on a pool gives the same panels.
            for threads in [2, 3] {
                let pool = ThreadPool::new(threads);
                let on = PackedF32::pack_transposed_on(&pool, &a, a_rows, a_cols).expect("on");
                assert_eq!(on.data, want.data, "{a_rows}x{a_cols}, {threads} threads");
                let on = PackedF32::pack_on(&pool, &t, a_cols, a_rows).expect("on");
                assert_eq!(on.data, want.data, "{a_rows}x{a_cols}, {threads} threads");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn tiers_match_reference(rows in 1usize..80, cols in 1usize..70, n in 1usize..110,
                                 seed in any::<u64>(), threads in 1usize..4) {
            check(rows, cols, n, seed, threads);
        }
    }

    #[test]
    fn bias_of_the_wrong_length_is_an_error() {
        let p = PackedF32::pack(&[1.0; 6], 2, 3).expect("pack");
        let mut out = [0.0; 2];
        let epi = Epilogue {
            bias: Some(&[1.0]),
            ..Epilogue::default()
        };
        let pool = ThreadPool::new(1);
        assert!(matmul_f32_packed_with(&pool, &p, &[1.0; 3], 1, &mut out, epi).is_err());
    }
}
