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

/// An f32 matrix `[rows, cols]` repacked for [`matmul_f32_packed`]. The default is an
/// empty matrix to [`PackedF32::repack_on`] into.
#[derive(Clone, Default)]
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
        let mut p = PackedF32::default();
        p.pack_impl(None, w, rows, cols)?;
        Ok(p)
    }

    /// [`PackedF32::pack`] with the panels spread over `pool`: a training pass repacks
    /// weights that change every step, and a serial pack is time the other threads wait.
    pub fn pack_on(
        pool: &ThreadPool,
        w: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<PackedF32, TensorError> {
        let mut p = PackedF32::default();
        p.pack_impl(Some(pool), w, rows, cols)?;
        Ok(p)
    }

    /// [`PackedF32::pack_on`] into this matrix's storage, reused (grown when too small):
    /// a training pass repacks every weight twice a step, and fresh storage costs a page
    /// fault per 4 KiB written (113 MB for SmolLM2's tied embedding, each time). On an
    /// error the matrix is left empty.
    pub fn repack_on(
        &mut self,
        pool: &ThreadPool,
        w: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<(), TensorError> {
        self.pack_impl(Some(pool), w, rows, cols)
    }

    fn pack_impl(
        &mut self,
        pool: Option<&ThreadPool>,
        w: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<(), TensorError> {
        (self.rows, self.cols) = (0, 0);
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
        // Every value is written below but the last panel's rows past `rows`, zeroed
        // there: reused storage holds an earlier matrix.
        self.data.resize(panels * cols * NR, 0.0);
        by_panels(pool, &mut self.data, panels, cols, &|p0, dst| {
            for (pi, panel) in dst.chunks_exact_mut(cols * NR).enumerate() {
                let r0 = (p0 + pi) * NR;
                let valid = (rows - r0).min(NR);
                // Steps in chunks of 16: the chunk's 16 x 32 destination (2 KB) and its
                // 32 source row pieces stay in L1, where a whole row at a time scattered
                // its writes over the panel's every line.
                for k0 in (0..cols).step_by(16) {
                    let k1 = (k0 + 16).min(cols);
                    for j in 0..valid {
                        let src = &w[(r0 + j) * cols + k0..(r0 + j) * cols + k1];
                        for (k, &v) in (k0..k1).zip(src) {
                            panel[k * NR + j] = v;
                        }
                    }
                    if valid < NR {
                        for k in k0..k1 {
                            panel[k * NR + valid..(k + 1) * NR].fill(0.0);
                        }
                    }
                }
            }
        });
        (self.rows, self.cols) = (rows, cols);
        Ok(())
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
        let mut p = PackedF32::default();
        p.pack_transposed_impl(None, a, a_rows, a_cols)?;
        Ok(p)
    }

    /// [`PackedF32::pack_transposed`] with the panels spread over `pool`.
    pub fn pack_transposed_on(
        pool: &ThreadPool,
        a: &[f32],
        a_rows: usize,
        a_cols: usize,
    ) -> Result<PackedF32, TensorError> {
        let mut p = PackedF32::default();
        p.pack_transposed_impl(Some(pool), a, a_rows, a_cols)?;
        Ok(p)
    }

    /// [`PackedF32::pack_transposed_on`] into this matrix's storage, reused as by
    /// [`PackedF32::repack_on`].
    pub fn repack_transposed_on(
        &mut self,
        pool: &ThreadPool,
        a: &[f32],
        a_rows: usize,
        a_cols: usize,
    ) -> Result<(), TensorError> {
        self.pack_transposed_impl(Some(pool), a, a_rows, a_cols)
    }

    fn pack_transposed_impl(
        &mut self,
        pool: Option<&ThreadPool>,
        a: &[f32],
        a_rows: usize,
        a_cols: usize,
    ) -> Result<(), TensorError> {
        (self.rows, self.cols) = (0, 0);
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
        self.data.resize(panels * cols * NR, 0.0);
        by_panels(pool, &mut self.data, panels, cols, &|p0, dst| {
            let p1 = p0 + dst.len() / (cols * NR);
            for (k, arow) in a.chunks_exact(a_cols).enumerate() {
                for p in p0..p1 {
                    let src = &arow[p * NR..((p + 1) * NR).min(a_cols)];
                    let base = (p - p0) * cols * NR + k * NR;
                    dst[base..base + src.len()].copy_from_slice(src);
                    // Rows past the matrix's: reused storage holds an earlier matrix.
                    dst[base + src.len()..base + NR].fill(0.0);
                }
            }
        });
        (self.rows, self.cols) = (rows, cols);
        Ok(())
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

/// Tokens per work item, at most: a block of activations (up to 48 x 1024 floats, 196
/// KB) that stays in L2 while the weight's panels pass over it.
const TOKEN_BLOCK: usize = 48;

/// Reduction steps per kernel call: a 16-row half panel's chunk (16 KB) then stays in L1
/// while every micro-tile of the token block passes over it, instead of the whole half
/// panel (98 KB at 1536 columns) streaming from L2 once per micro-tile.
const KC: usize = 256;

/// Reductions longer than this run in chunks of [`KS`] steps, one pool section each,
/// with the partial sums kept between chunks: a chunk of the weight (`KS x rows`) then
/// stays in cache for every token block, where a whole token block of a vocabulary-long
/// reduction (the output projection's `dX = dlogits · E`, 49152 steps) would not even
/// fit in L2.
const KS_MAX: usize = 2048;
const KS: usize = 1024;

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
    matmul_isa(best_isa(), pool, w, Part::ALL, x, false, n_tokens, out, epi)
}

/// [`matmul_f32_packed_with`] with the matrix's first `rows` rows and its first `cols`
/// columns only (`x` then has `cols` columns and `out` `rows`): one packing of a matrix
/// for products with its leading blocks, as causal attention has per row block (keys
/// `0..w` of a key matrix packed once for every query block and head that reads it).
#[allow(clippy::too_many_arguments)]
pub fn matmul_f32_packed_part_with(
    pool: &ThreadPool,
    w: &PackedF32,
    rows: usize,
    cols: usize,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    epi: Epilogue<'_>,
) -> Result<(), TensorError> {
    if rows > w.rows || cols > w.cols || cols == 0 {
        return Err(TensorError::len(
            "matmul_f32_packed_part_with",
            crate::DType::F32,
            "matrix part",
            "rows x columns at most",
            w.rows * w.cols,
            rows * cols,
        ));
    }
    let part = Part { rows, cols };
    matmul_isa(best_isa(), pool, w, part, x, false, n_tokens, out, epi)
}

/// The leading block of a packed matrix a product uses; `usize::MAX` is all of it.
#[derive(Clone, Copy)]
struct Part {
    rows: usize,
    cols: usize,
}

impl Part {
    const ALL: Part = Part {
        rows: usize::MAX,
        cols: usize::MAX,
    };
}

/// [`matmul_f32_packed_with`] with the activations stored transposed: `xt` is
/// `[cols][n_tokens]` row-major, token `t`'s step `k` at `xt[k * n_tokens + t]`. A weight
/// gradient `dW = dYᵀ X` has `dYᵀ` as its token operand, which the backward holds as
/// `dY`: read this way it needs no transposed copy (the packing of each token block
/// reads it as it is, six consecutive values per step).
pub fn matmul_f32_packed_xt_with(
    pool: &ThreadPool,
    w: &PackedF32,
    xt: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    epi: Epilogue<'_>,
) -> Result<(), TensorError> {
    matmul_isa(best_isa(), pool, w, Part::ALL, xt, true, n_tokens, out, epi)
}

/// The token operand of a product: `x (n_tokens, cols)` row-major, or its transpose.
#[derive(Clone, Copy)]
struct XOperand<'a> {
    data: &'a [f32],
    transposed: bool,
    n_tokens: usize,
    cols: usize,
}

impl XOperand<'_> {
    /// `x[t][k]`.
    #[inline(always)]
    fn at(&self, t: usize, k: usize) -> f32 {
        if self.transposed {
            self.data[k * self.n_tokens + t]
        } else {
            self.data[t * self.cols + k]
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn matmul_isa(
    isa: Isa,
    pool: &ThreadPool,
    w: &PackedF32,
    part: Part,
    x: &[f32],
    x_transposed: bool,
    n_tokens: usize,
    out: &mut [f32],
    epi: Epilogue<'_>,
) -> Result<(), TensorError> {
    const OP: &str = "matmul_f32_packed";
    let (rows, cols) = (w.rows.min(part.rows), w.cols.min(part.cols));
    // Panels are `w.cols` steps long; a part reads the first `cols` of each.
    let stride = w.cols;
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
    let x = XOperand {
        data: x,
        transposed: x_transposed,
        n_tokens,
        cols,
    };
    let panels = rows.div_ceil(NR);
    // Blocks of equal size (a multiple of MR): 64 tokens are two blocks of 32, not 48 and
    // 16, which would leave one of two threads idle three quarters of the time.
    let blocks = n_tokens.div_ceil(TOKEN_BLOCK);
    let block = n_tokens.div_ceil(blocks).next_multiple_of(MR);
    let blocks = n_tokens.div_ceil(block);
    let items = blocks * panels;
    // A weight much larger than the activations (an output projection's vocabulary) is
    // walked once, each panel meeting every token block while it is in cache; otherwise
    // each token block stays in L2 while the panels pass.
    let panel_major = rows > 2 * n_tokens;
    let chunks: Vec<(usize, usize)> = if cols <= KS_MAX {
        vec![(0, cols)]
    } else {
        (0..cols)
            .step_by(KS)
            .map(|k| (k, (k + KS).min(cols)))
            .collect()
    };
    // Partial sums between reduction chunks.
    let mut partial = if chunks.len() > 1 {
        vec![0f32; n_tokens * rows]
    } else {
        Vec::new()
    };
    let partial = SyncSlice::new(&mut partial);
    let out = SyncSlice::new(&mut out[..n_tokens * rows]);
    // Each thread's run of items, of about equal arithmetic: an item's cost is its
    // token count (the last block may be short, which a split by item count ignored).
    let mid = |i: usize| {
        let (b, p) = if panel_major {
            (i % blocks, i / blocks)
        } else {
            (i / panels, i % panels)
        };
        let len = ((b + 1) * block).min(n_tokens) - b * block;
        let before = if panel_major {
            p * n_tokens + b * block
        } else {
            b * block * panels + p * len
        };
        2 * before + len
    };
    let total = n_tokens * panels;
    // The first item whose midpoint reaches thread t's share.
    let bound = |t: usize, nt: usize| {
        if t >= nt {
            return items;
        }
        let target = 2 * total * t / nt;
        let (mut lo, mut hi) = (0, items);
        while lo < hi {
            let m = (lo + hi) / 2;
            if mid(m) < target {
                lo = m + 1;
            } else {
                hi = m;
            }
        }
        lo
    };
    for (ci, &(k0, k1)) in chunks.iter().enumerate() {
        let (first, last) = (ci == 0, ci + 1 == chunks.len());
        let klen = k1 - k0;
        pool.run(&|t, nt| {
            XPACK.with_borrow_mut(|xp| {
                let mut cbuf = [[0f32; NR]; TOKEN_BLOCK];
                // The token block `xp` holds (all of them when walking panel-major).
                let mut packed = usize::MAX;
                for item in bound(t, nt)..bound(t + 1, nt) {
                    let (b, p) = if panel_major {
                        (item % blocks, item / blocks)
                    } else {
                        (item / panels, item % panels)
                    };
                    let (start, end) = (b * block, ((b + 1) * block).min(n_tokens));
                    // Packed activations: micro-tiles on AVX2; token rows where the rows
                    // of `x` cannot be read in place (transposed, or a reduction chunk).
                    let direct = isa != Isa::Avx2 && !x.transposed && chunks.len() == 1;
                    let (xs_base, ldx) = if direct {
                        (&x.data[start * cols..], cols)
                    } else {
                        let (p_start, p_end, tag) = if panel_major {
                            (0, n_tokens, 0)
                        } else {
                            (start, end, b)
                        };
                        if packed != tag {
                            pack_x(isa, &x, p_start, p_end, k0, k1, xp);
                            packed = tag;
                        }
                        let off = (start - p_start) * klen;
                        (&xp[off..], klen)
                    };
                    let panel = &w.data[p * stride * NR..(p * stride + cols) * NR];
                    let r0 = p * NR;
                    let valid = (rows - r0).min(NR);
                    let n_tok = end - start;
                    let acc = &mut cbuf[..n_tok.next_multiple_of(MR)];
                    if !first {
                        for (i, a) in acc.iter_mut().take(n_tok).enumerate() {
                            // SAFETY: item (b, p) is this thread's alone; see below.
                            let src = unsafe { partial.slice_mut((start + i) * rows + r0, valid) };
                            a[..valid].copy_from_slice(src);
                        }
                    }
                    block_product(
                        isa, panel, xs_base, ldx, k0, klen, n_tok, valid, !first, acc,
                    );
                    for (i, a) in acc.chunks_exact_mut(MR).enumerate() {
                        let tok = start + i * MR;
                        let m = (end - tok).min(MR);
                        let a: &mut [[f32; NR]; MR] = match a.try_into() {
                            Ok(a) => a,
                            Err(_) => continue,
                        };
                        if last && (epi.bias.is_some() || epi.gelu) {
                            let bias = epi.bias.map(|b| &b[r0..r0 + valid]);
                            finish(isa, a, m, valid, bias, epi.gelu);
                        }
                        for (i, a) in a.iter().take(m).enumerate() {
                            // SAFETY: items are disjoint (token block, panel) pairs, each
                            // handled by one thread, so output rows start..end, columns
                            // r0..r0 + valid (of `out`, and of `partial`) are written by
                            // this thread only.
                            let dst = unsafe {
                                if last {
                                    out.slice_mut((tok + i) * rows + r0, valid)
                                } else {
                                    partial.slice_mut((tok + i) * rows + r0, valid)
                                }
                            };
                            // A fixed-size copy for whole panels: `copy_from_slice` of a
                            // run-time length is a libc call.
                            if last && epi.accumulate {
                                for (d, &v) in dst.iter_mut().zip(a) {
                                    *d += v;
                                }
                            } else if let Ok(d) = <&mut [f32; NR]>::try_from(&mut *dst) {
                                *d = *a;
                            } else {
                                dst.copy_from_slice(&a[..valid]);
                            }
                        }
                    }
                }
            })
        });
    }
    Ok(())
}

/// Packs tokens `t0..t1`, reduction steps `k0..k1` of `x` into `xp` as this tier's
/// kernel reads them: micro-tiles of `MR` tokens, each `[k1 - k0][MR]` (missing tokens
/// of the last tile zero) on AVX2, whose six broadcasts per step then come from one
/// pointer and stride; token rows `[t1 - t0][k1 - k0]` elsewhere.
fn pack_x(
    isa: Isa,
    x: &XOperand<'_>,
    t0: usize,
    t1: usize,
    k0: usize,
    k1: usize,
    xp: &mut Vec<f32>,
) {
    let klen = k1 - k0;
    let tiles = (t1 - t0).div_ceil(MR);
    xp.clear();
    if isa == Isa::Avx2 {
        xp.resize(tiles * klen * MR, 0.0);
        for (ti, dst) in xp.chunks_exact_mut(klen * MR).enumerate() {
            let tok = t0 + ti * MR;
            let m = (t1 - tok).min(MR);
            if x.transposed {
                // Step k's six tokens are consecutive in `x`.
                for (k, d) in (k0..k1).zip(dst.chunks_exact_mut(MR)) {
                    let src = &x.data[k * x.n_tokens + tok..][..m];
                    d[..m].copy_from_slice(src);
                }
            } else {
                // Written in order, read from the tile's (at most six) rows at once.
                let rows = &x.data[tok * x.cols..(tok + m) * x.cols];
                for (k, d) in (k0..k1).zip(dst.chunks_exact_mut(MR)) {
                    for (i, d) in d.iter_mut().take(m).enumerate() {
                        *d = rows[i * x.cols + k];
                    }
                }
            }
        }
    } else {
        xp.resize(tiles * MR * klen, 0.0);
        for (t, dst) in (t0..t1).zip(xp.chunks_exact_mut(klen)) {
            if x.transposed {
                for (k, d) in (k0..k1).zip(dst.iter_mut()) {
                    *d = x.at(t, k);
                }
            } else {
                dst.copy_from_slice(&x.data[t * x.cols + k0..t * x.cols + k1]);
            }
        }
    }
}

/// One (token block, panel) item over reduction steps `k0..k0 + klen`: `acc[t][j]`
/// (+)= `Σ_k panel[k][j] · x_t[k]` for the block's `n_tok` tokens, continuing from the
/// values in `acc` when `init` (the same chain of fused multiply-adds as one pass over
/// the whole reduction, so chunking changes no bit). `xs` holds the block's tokens as
/// [`pack_x`] left them (AVX2: micro-tiles `[klen][MR]`), or as rows `ldx` apart starting
/// at step `k0` elsewhere. Steps go in chunks of [`KC`]: on AVX2 each 16-row half panel's
/// chunk stays in L1 while the block's micro-tiles pass over it.
#[allow(clippy::too_many_arguments)]
fn block_product(
    isa: Isa,
    panel: &[f32],
    xs: &[f32],
    ldx: usize,
    k0: usize,
    klen: usize,
    n_tok: usize,
    valid: usize,
    init: bool,
    acc: &mut [[f32; NR]],
) {
    let tiles = n_tok.div_ceil(MR);
    for kc in (0..klen).step_by(KC) {
        let kl = (klen - kc).min(KC);
        let chained = init || kc > 0;
        let pc = &panel[(k0 + kc) * NR..(k0 + kc + kl) * NR];
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx2 {
            for half in 0..valid.div_ceil(HALF) {
                for ti in 0..tiles {
                    let m = (n_tok - ti * MR).min(MR);
                    let xt = &xs[(ti * klen + kc) * MR..(ti * klen + kc + kl) * MR];
                    let a: &mut [[f32; NR]; MR] =
                        match (&mut acc[ti * MR..(ti + 1) * MR]).try_into() {
                            Ok(a) => a,
                            Err(_) => return,
                        };
                    // SAFETY: the tier was detected at run time; `pc` holds `kl` steps of
                    // NR floats and `xt` one packed micro-tile chunk, `[kl][MR]`.
                    unsafe { tile_avx2(pc, half, xt, kl, m, chained, a) };
                }
            }
            continue;
        }
        for ti in 0..tiles {
            let m = (n_tok - ti * MR).min(MR);
            let xt = &xs[ti * MR * ldx + kc..];
            let a: &mut [[f32; NR]; MR] = match (&mut acc[ti * MR..(ti + 1) * MR]).try_into() {
                Ok(a) => a,
                Err(_) => return,
            };
            tile(isa, pc, xt, ldx, kl, m, valid, chained, a);
        }
    }
}

/// Rows per panel of [`PackedF32`] and of [`matmul_f32_panels`].
pub const PANEL_ROWS: usize = NR;

/// Activations packed once for any number of [`matmul_f32_panels`] calls (each thread's
/// share of a matrix's panels reads the same copy): a column range `k0..k0 + cols` of
/// `x (n_tokens, ·)`, one chunk of the caller's split of the reduction, in the layout
/// this CPU's micro-kernel reads: micro-tiles of 6 tokens, `[cols][6]`, on AVX2 (see
/// `pack_block`), rows `[6][cols]` elsewhere. Keep one and [`PackedActs::pack`] into it
/// again: the allocation is reused.
#[derive(Debug, Clone, Default)]
pub struct PackedActs {
    isa: Option<Isa>,
    n_tokens: usize,
    cols: usize,
    data: Vec<f32>,
}

impl PackedActs {
    /// Packs columns `k0..k0 + cols` of `x`, `n_tokens` rows `ld_x` apart, the tiles
    /// split across `pool`.
    pub fn pack(
        &mut self,
        pool: &ThreadPool,
        x: &[f32],
        n_tokens: usize,
        ld_x: usize,
        k0: usize,
        cols: usize,
    ) -> Result<(), TensorError> {
        self.pack_isa(best_isa(), pool, x, n_tokens, ld_x, k0, cols)
    }

    #[allow(clippy::too_many_arguments)]
    fn pack_isa(
        &mut self,
        isa: Isa,
        pool: &ThreadPool,
        x: &[f32],
        n_tokens: usize,
        ld_x: usize,
        k0: usize,
        cols: usize,
    ) -> Result<(), TensorError> {
        const OP: &str = "PackedActs::pack";
        let tiles = n_tokens.div_ceil(MR);
        let ovf = || TensorError::Overflow {
            op: OP,
            what: "activation size",
        };
        let size = tiles
            .checked_mul(MR)
            .and_then(|n| n.checked_mul(cols))
            .ok_or_else(ovf)?;
        let need = match n_tokens.checked_sub(1) {
            None => 0,
            Some(last) => last
                .checked_mul(ld_x)
                .and_then(|n| n.checked_add(k0 + cols))
                .ok_or_else(ovf)?,
        };
        if cols == 0 || k0 + cols > ld_x || x.len() < need {
            return Err(TensorError::len(
                OP,
                crate::DType::F32,
                "activations",
                "elements",
                need.max(k0 + cols),
                x.len(),
            ));
        }
        self.data.clear();
        self.data.resize(size, 0.0);
        self.isa = Some(isa);
        self.n_tokens = n_tokens;
        self.cols = cols;
        let data = SyncSlice::new(&mut self.data);
        pool.run(&|ti, nt| {
            for tile in tiles * ti / nt..tiles * (ti + 1) / nt {
                // SAFETY: tiles are split between threads, and tile `tile` is the
                // `MR * cols` values from `tile * MR * cols`, so no two threads share one.
                let dst = unsafe { data.slice_mut(tile * MR * cols, MR * cols) };
                let m = (n_tokens - tile * MR).min(MR);
                for i in 0..m {
                    let t = tile * MR + i;
                    let row = &x[t * ld_x + k0..t * ld_x + k0 + cols];
                    if isa == Isa::Avx2 {
                        for (k, &v) in row.iter().enumerate() {
                            dst[k * MR + i] = v;
                        }
                    } else {
                        dst[i * cols..(i + 1) * cols].copy_from_slice(row);
                    }
                }
            }
        });
        Ok(())
    }

    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// Columns packed (the reduction's length in [`matmul_f32_panels`]).
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// The GEMM of [`matmul_f32_packed`] on panels the caller builds, single-threaded: for a
/// matrix that is never held whole in f32 (a quantized weight decoded a few panels at a
/// time into a small buffer), the caller splits its panels across threads and calls this
/// on each thread's share, all reading one [`PackedActs`].
///
/// `out[t * ld_out + r] (+)= Σ_{k < cols} M[r][k] · x[t][k]` for every token `t` of `x`
/// and `r < rows`, where `x` holds `cols` columns (a chunk of a longer reduction, whose
/// chunks the caller sums with `accumulate`) and `panels` holds `rows.div_ceil(PANEL_ROWS)`
/// panels one after the other, each `[cols][PANEL_ROWS]` (step `k` of panel `p` is
/// `M[p · 32 + j][k]`, `j < 32`; rows past `rows` are read and never stored), the layout
/// of a [`PackedF32`] panel. `ld_out` lets `out` be a column range of a wider output;
/// only `rows` columns of each token row are written.
pub fn matmul_f32_panels(
    panels: &[f32],
    rows: usize,
    x: &PackedActs,
    out: &mut [f32],
    ld_out: usize,
    accumulate: bool,
) -> Result<(), TensorError> {
    const OP: &str = "matmul_f32_panels";
    let f32s = crate::DType::F32;
    let (n_tokens, cols) = (x.n_tokens, x.cols);
    let Some(isa) = x.isa else {
        return Err(TensorError::len(OP, f32s, "activations", "packs", 1, 0));
    };
    if n_tokens == 0 || rows == 0 {
        return Ok(());
    }
    let n_panels = rows.div_ceil(NR);
    let need_w = n_panels * cols * NR;
    let need_out = (n_tokens - 1)
        .checked_mul(ld_out)
        .and_then(|n| n.checked_add(rows))
        .ok_or(TensorError::Overflow {
            op: OP,
            what: "output size",
        })?;
    if panels.len() < need_w {
        return Err(TensorError::len(
            OP,
            f32s,
            "panels",
            "elements",
            need_w,
            panels.len(),
        ));
    }
    if ld_out < rows || out.len() < need_out {
        return Err(TensorError::len(
            OP,
            f32s,
            "output",
            "elements",
            need_out,
            out.len(),
        ));
    }
    let mut acc = [[0f32; NR]; MR];
    // Token blocks outermost: a block of activations stays in L2 while the panels pass.
    for start in (0..n_tokens).step_by(TOKEN_BLOCK) {
        let end = (start + TOKEN_BLOCK).min(n_tokens);
        for (p, panel) in panels.chunks_exact(cols * NR).take(n_panels).enumerate() {
            let r0 = p * NR;
            let valid = (rows - r0).min(NR);
            for tok in (start..end).step_by(MR) {
                let m = (end - tok).min(MR);
                // TOKEN_BLOCK is a multiple of MR, so `tok` starts a micro-tile.
                let xs = &x.data[tok * cols..(tok + MR) * cols];
                tile(isa, panel, xs, cols, cols, m, valid, false, &mut acc);
                for (i, a) in acc.iter().take(m).enumerate() {
                    let o = (tok + i) * ld_out + r0;
                    let dst = &mut out[o..o + valid];
                    if accumulate {
                        for (d, &v) in dst.iter_mut().zip(a) {
                            *d += v;
                        }
                    } else {
                        dst.copy_from_slice(&a[..valid]);
                    }
                }
            }
        }
    }
    Ok(())
}

const _: () = assert!(TOKEN_BLOCK.is_multiple_of(MR));

std::thread_local! {
    /// A pool thread's packed activation block, kept between calls so the GEMM does not
    /// allocate once warm.
    static XPACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `acc[i][j] (+)= Σ_{k < klen} panel[k][j] · x_i[k]` for `i < m`, `j < NR` (at least
/// `valid`), continuing the chain from `acc` when `init`; `xs` is `m` token rows `ldx`
/// apart, or on AVX2 one packed micro-tile `[klen][MR]`.
#[allow(clippy::too_many_arguments)]
fn tile(
    isa: Isa,
    panel: &[f32],
    xs: &[f32],
    ldx: usize,
    klen: usize,
    m: usize,
    valid: usize,
    init: bool,
    acc: &mut [[f32; NR]; MR],
) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the tier was detected at run time.
        Isa::Avx512Vnni => return unsafe { tile_avx512(panel, xs, ldx, klen, m, init, acc) },
        Isa::Avx2 => {
            for half in 0..valid.div_ceil(HALF) {
                // SAFETY: as above; `panel` holds `klen` steps of NR floats and `xs` one
                // packed micro-tile, `[klen][MR]`.
                unsafe { tile_avx2(panel, half, xs, klen, m, init, acc) };
            }
            return;
        }
        _ => {}
    }
    let _ = (isa, valid);
    tile_generic::<false>(panel, xs, ldx, klen, m, init, acc);
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
    ldx: usize,
    klen: usize,
    m: usize,
    init: bool,
    acc: &mut [[f32; NR]; MR],
) {
    match m {
        6 => tile_m::<6, FMA>(panel, xs, ldx, klen, init, acc),
        5 => tile_m::<5, FMA>(panel, xs, ldx, klen, init, acc),
        4 => tile_m::<4, FMA>(panel, xs, ldx, klen, init, acc),
        3 => tile_m::<3, FMA>(panel, xs, ldx, klen, init, acc),
        2 => tile_m::<2, FMA>(panel, xs, ldx, klen, init, acc),
        _ => tile_m::<1, FMA>(panel, xs, ldx, klen, init, acc),
    }
}

#[inline(always)]
fn tile_m<const M: usize, const FMA: bool>(
    panel: &[f32],
    xs: &[f32],
    ldx: usize,
    klen: usize,
    init: bool,
    out: &mut [[f32; NR]; MR],
) {
    let mut acc = [[0f32; NR]; M];
    if init {
        acc.copy_from_slice(&out[..M]);
    }
    let x: [&[f32]; M] = std::array::from_fn(|i| &xs[i * ldx..i * ldx + klen]);
    for (k, w) in panel.chunks_exact(NR).take(klen).enumerate() {
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
unsafe fn tile_avx512(
    panel: &[f32],
    xs: &[f32],
    ldx: usize,
    klen: usize,
    m: usize,
    init: bool,
    acc: &mut [[f32; NR]; MR],
) {
    tile_generic::<true>(panel, xs, ldx, klen, m, init, acc)
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
    klen: usize,
    m: usize,
    init: bool,
    acc: &mut [[f32; NR]; MR],
) {
    // SAFETY (all arms): the caller passes `panel.len() >= klen * NR`, `xs.len() >= MR *
    // klen` and `half < NR / HALF`; the kernel reads only within those.
    unsafe {
        match m {
            6 => kernel_avx2::<6>(panel, half, xs, klen, init, acc),
            5 => kernel_avx2::<5>(panel, half, xs, klen, init, acc),
            4 => kernel_avx2::<4>(panel, half, xs, klen, init, acc),
            3 => kernel_avx2::<3>(panel, half, xs, klen, init, acc),
            2 => kernel_avx2::<2>(panel, half, xs, klen, init, acc),
            _ => kernel_avx2::<1>(panel, half, xs, klen, init, acc),
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
    klen: usize,
    init: bool,
    acc: &mut [[f32; NR]; MR],
) {
    use std::arch::x86_64::*;
    debug_assert!(panel.len() >= klen * NR && xs.len() >= MR * klen && half * HALF < NR);
    let w = panel.as_ptr().wrapping_add(half * HALF);
    let x = xs.as_ptr();
    let mut c0 = [_mm256_setzero_ps(); M];
    let mut c1 = [_mm256_setzero_ps(); M];
    if init {
        for i in 0..M {
            let src = &acc[i][half * HALF..(half + 1) * HALF];
            // SAFETY: src holds 16 floats.
            unsafe {
                c0[i] = _mm256_loadu_ps(src.as_ptr());
                c1[i] = _mm256_loadu_ps(src.as_ptr().add(8));
            }
        }
    }
    for k in 0..klen {
        // SAFETY: k < klen, so w + k*NR + 16 <= panel's end and x + k*MR + i < xs's end.
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
                matmul_isa(isa, &pool, &p, Part::ALL, &x, false, n, &mut out, epi).expect("matmul");
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

    /// Repacking into storage that held another matrix (larger, with other values in
    /// what is now padding) gives the panels of a fresh pack.
    #[test]
    fn repacking_reused_storage_is_a_fresh_pack() {
        let pool = ThreadPool::new(2);
        let mut p = PackedF32::default();
        let mut q = PackedF32::default();
        for (rows, cols) in [(100, 70), (33, 7), (64, 96), (1, 1), (70, 130), (5, 3)] {
            let w: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.25 - 7.0).collect();
            let want = PackedF32::pack(&w, rows, cols).expect("pack");
            p.repack_on(&pool, &w, rows, cols).expect("repack");
            assert_eq!((p.rows, p.cols), (rows, cols));
            assert_eq!(&p.data[..want.data.len()], &want.data[..], "{rows}x{cols}");
            let wt = PackedF32::pack_transposed(&w, rows, cols).expect("pack");
            q.repack_transposed_on(&pool, &w, rows, cols)
                .expect("repack");
            assert_eq!((q.rows, q.cols), (cols, rows));
            assert_eq!(
                &q.data[..wt.data.len()],
                &wt.data[..],
                "{rows}x{cols} transposed"
            );
        }
        assert!(p.repack_on(&pool, &[1.0; 3], 2, 2).is_err());
        assert_eq!((p.rows, p.cols), (0, 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn tiers_match_reference(rows in 1usize..80, cols in 1usize..70, n in 1usize..110,
                                 seed in any::<u64>(), threads in 1usize..4) {
            check(rows, cols, n, seed, threads);
        }
    }

    /// Every tier against the f64 reference: panels of each column chunk of the
    /// reduction, summed into a column range of a wider output (the frozen-weight GEMM's
    /// use).
    fn check_panels(rows: usize, cols: usize, n: usize, kc: usize, seed: u64, threads: usize) {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2001) as f32 / 1000.0 - 1.0
        };
        let ld_out = rows + 3;
        let w: Vec<f32> = (0..rows * cols).map(|_| rnd()).collect();
        let x: Vec<f32> = (0..n * cols).map(|_| rnd()).collect();
        let want = reference(&w, &x, rows, cols, n);
        let pool = ThreadPool::new(threads);
        for isa in available_isas() {
            let mut xp = PackedActs::default();
            let mut out = vec![0.25f32; n * ld_out];
            for k0 in (0..cols).step_by(kc) {
                let kl = (k0 + kc).min(cols) - k0;
                xp.pack_isa(isa, &pool, &x, n, cols, k0, kl).expect("pack");
                assert_eq!((xp.n_tokens(), xp.cols()), (n, kl));
                let cw: Vec<f32> = w
                    .chunks_exact(cols)
                    .flat_map(|r| r[k0..k0 + kl].to_vec())
                    .collect();
                let p = PackedF32::pack(&cw, rows, kl).expect("pack");
                matmul_f32_panels(&p.data, rows, &xp, &mut out[1..], ld_out, k0 > 0)
                    .expect("panels");
            }
            for t in 0..n {
                for c in 0..ld_out {
                    let got = out[t * ld_out + c];
                    let r = c.wrapping_sub(1);
                    if r >= rows {
                        assert_eq!(got, 0.25, "{} wrote outside its columns", isa.name());
                        continue;
                    }
                    let y = want[t * rows + r];
                    let tol = 1e-5 * (cols as f64).sqrt() * (1.0 + y.abs());
                    assert!(
                        (f64::from(got) - y).abs() < tol,
                        "{} {rows}x{cols} n{n} kc{kc} [{t}, {r}] = {got}, want {y}",
                        isa.name()
                    );
                }
            }
        }
    }

    #[test]
    fn caller_built_panels_match_plain_dot_products() {
        for (rows, cols, n, kc) in [
            (1, 1, 1, 1),
            (33, 7, 5, 3),
            (64, 96, 9, 96),
            (70, 130, 53, 64),
        ] {
            check_panels(rows, cols, n, kc, 11, 2);
        }
        let pool = ThreadPool::new(1);
        let mut xp = PackedActs::default();
        let mut out = [0.0; 4];
        assert!(matmul_f32_panels(&[0.0; 64], 1, &xp, &mut out, 1, false).is_err());
        assert!(xp.pack(&pool, &[1.0; 3], 2, 2, 0, 2).is_err());
        assert!(xp.pack(&pool, &[1.0; 4], 2, 2, 1, 2).is_err());
        assert!(xp.pack(&pool, &[1.0; 4], 2, 2, 0, 0).is_err());
        xp.pack(&pool, &[1.0; 4], 2, 2, 0, 2).expect("pack");
        assert!(matmul_f32_panels(&[0.0; 63], 1, &xp, &mut out, 1, false).is_err());
        assert!(matmul_f32_panels(&[0.0; 64], 2, &xp, &mut out, 1, false).is_err());
        assert!(matmul_f32_panels(&[0.0; 64], 1, &xp, &mut out[..1], 1, false).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn caller_built_panels_match_reference(rows in 1usize..80, cols in 1usize..70,
                                               n in 1usize..110, kc in 1usize..80,
                                               seed in any::<u64>(), threads in 1usize..4) {
            check_panels(rows, cols, n, kc, seed, threads);
        }
    }

    /// `x` transposed, `(cols, n)`.
    fn transpose(x: &[f32], n: usize, cols: usize) -> Vec<f32> {
        let mut t = vec![0.0; x.len()];
        for i in 0..n {
            for k in 0..cols {
                t[k * n + i] = x[i * cols + k];
            }
        }
        t
    }

    /// The blocked driver (any token blocks, reduction chunks, thread count, transposed
    /// activations) against one uninterrupted chain per output: `matmul_f32_panels` on
    /// one thread over the whole reduction, plus the same epilogue. Bit for bit.
    fn check_bits(rows: usize, cols: usize, n: usize, seed: u64, threads: usize) {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2001) as f32 / 1000.0 - 1.0
        };
        let w: Vec<f32> = (0..rows * cols).map(|_| rnd()).collect();
        let x: Vec<f32> = (0..n * cols).map(|_| rnd()).collect();
        let xt = transpose(&x, n, cols);
        let start: Vec<f32> = (0..n * rows).map(|_| rnd()).collect();
        let p = PackedF32::pack(&w, rows, cols).expect("pack");
        let pool = ThreadPool::new(threads);
        let one = ThreadPool::new(1);
        for isa in available_isas() {
            let mut xp = PackedActs::default();
            xp.pack_isa(isa, &one, &x, n, cols, 0, cols).expect("pack");
            let mut chain = vec![0.0f32; n * rows];
            matmul_f32_panels(&p.data, rows, &xp, &mut chain, rows, false).expect("panels");
            for accumulate in [false, true] {
                let epi = Epilogue {
                    accumulate,
                    ..Epilogue::default()
                };
                let want: Vec<f32> = if accumulate {
                    start.iter().zip(&chain).map(|(a, b)| a + b).collect()
                } else {
                    chain.clone()
                };
                for (transposed, xs) in [(false, &x), (true, &xt)] {
                    let mut out = start.clone();
                    let part = Part::ALL;
                    matmul_isa(isa, &pool, &p, part, xs, transposed, n, &mut out, epi)
                        .expect("gemm");
                    let same = out
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{} {rows}x{cols} n{n}, {threads} threads, transposed {transposed}, \
                         accumulate {accumulate}",
                        isa.name()
                    );
                }
            }
        }
    }

    /// A leading block of a packed matrix gives the bits of that block packed alone.
    #[test]
    fn a_matrix_part_is_the_part_packed_alone() {
        let (rows, cols, n) = (100, 90, 37);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 31) % 17) as f32 * 0.1 - 0.8)
            .collect();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6)
            .collect();
        let full = PackedF32::pack(&w, rows, cols).expect("pack");
        let pool = ThreadPool::new(2);
        for (r, c) in [(100, 90), (64, 90), (33, 40), (1, 1), (96, 64)] {
            let wp: Vec<f32> = (0..r)
                .flat_map(|i| w[i * cols..i * cols + c].to_vec())
                .collect();
            let alone = PackedF32::pack(&wp, r, c).expect("pack");
            let xp: Vec<f32> = (0..n)
                .flat_map(|t| x[t * cols..t * cols + c].to_vec())
                .collect();
            let mut want = vec![0.0f32; n * r];
            matmul_f32_packed(&pool, &alone, &xp, n, &mut want).expect("gemm");
            let mut got = vec![f32::NAN; n * r];
            let epi = Epilogue::default();
            matmul_f32_packed_part_with(&pool, &full, r, c, &xp, n, &mut got, epi).expect("part");
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{r}x{c}"
            );
        }
        let mut out = vec![0.0f32; n * 101];
        let epi = Epilogue::default();
        assert!(matmul_f32_packed_part_with(&pool, &full, 101, 90, &x, n, &mut out, epi).is_err());
        assert!(matmul_f32_packed_part_with(&pool, &full, 10, 91, &x, n, &mut out, epi).is_err());
    }

    #[test]
    fn blocking_and_transposed_activations_change_no_bit() {
        // Token counts that split into unequal 48-token blocks before; reductions of one
        // and several KC chunks, and longer than KS_MAX (chunked with partial sums).
        for (rows, cols, n, threads) in [
            (33, 7, 5, 2),
            (64, 300, 64, 2),
            (70, 600, 101, 3),
            (40, 2500, 50, 2),
            (200, 40, 7, 2),
            (32, KS_MAX + 1, 13, 1),
        ] {
            check_bits(rows, cols, n, 5, threads);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn blocked_driver_is_one_chain(rows in 1usize..100, cols in 1usize..700,
                                       n in 1usize..130, seed in any::<u64>(),
                                       threads in 1usize..4) {
            check_bits(rows, cols, n, seed, threads);
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
