//! [`IntActs`] / [`matmul_int`]: f32 activations times a weight matrix whose 32-value
//! blocks are integers with a scale (and a min), in integer arithmetic, for
//! prefill-shaped work whose activations change every call: a training pass through a
//! frozen base (`x · Wᵀ` over the stored matrix, `dy · W` over a transposed copy).
//!
//! ```text
//! out (T, rows) (+)= x (T, cols) · Wᵀ
//! ```
//!
//! The weights ([`IntWeights`]) are
//! - a ggml matrix read exactly ([`int_weights`]): block value `= d · q + m` with `q` in
//!   i8 range (Q8_0 `q`, Q4_0 `q − 8`, Q5_0 `q − 16`, Q4_1 / Q5_1 `q` with `m`, Q4_K
//!   sub-block `j`: `d · scⱼ`, `q`, `−dmin · mⱼ`), the formulas of
//!   [`crate::dequantize_row`];
//! - a ggml matrix of F32, F16, BF16 or Q6_K, each block rounded on the fly to 12-bit
//!   integers (`|q| ≤ 2047`, `d = max|w| / 2047`: within 1/4094 of the block's largest
//!   magnitude, finer than F16's or BF16's own rounding of small blocks' neighbours);
//! - a [`WideMatrix`]: 12-bit blocks made once (a transposed copy of a stored matrix).
//!
//! Activations are quantized per call to 16-bit integers in blocks of 32 along the
//! reduction ([`IntActs`]: `x ≈ dₓ · q`, `dₓ = max|x| / 32767`). Rounding moves a value by
//! at most `dₓ / 2`, 1.5e-5 of its block's largest: 2⁷ times finer than the 8-bit
//! activations of inference's kernels (ggml's Q8_0/Q8_1/Q8_K), so a product over
//! integer-stored weights is within about 1e-5 relative of the f32 product.
//!
//! Each output is one f32 chain over the blocks, `acc = fma(Σⱼ q_w q_x, d_w · dₓ, acc)`
//! and, for formats with a min, `acc = fma(m, sₓ, acc)` (`sₓ = dₓ · Σ q_x`), from 0 or
//! from `out`'s value. The integer sum is exact: `|Σ| ≤ 32 · 2047 · 32767 < 2³¹`, so
//! every tier (scalar, AVX2) gives the same bits, and neither the thread count nor the
//! chunking of the reduction changes a result (tested).
//!
//! Why 16-bit activations times (up to) 12-bit weights through `vpmaddwd` rather than 8
//! × 8 bits through `vpmaddubsw`: on AVX2 both take two multiply µops per 32 products
//! (`vpmaddubsw` needs `vpmaddwd` after it to widen), and the 16-bit form needs no
//! unsigned operand (no sign trick, no saturation) and is far finer. Inference's AVX2
//! kernels dot one row with one token and reduce horizontally per output; at training's
//! sequence lengths this register-blocked GEMM is 1.5-4 times faster
//! (`crates/train/examples/frozen_bench.rs`).
//!
//! Layout: weights are repacked per call, per thread, into panels of [`NR`] = 16 rows and
//! up to [`KC_BLOCKS`] blocks: for each block, 16 steps of two `__m256i`, step `p` holding
//! `q[row][2p], q[row][2p + 1]` as i16 pairs for rows 0..8 and 8..16, then the 16 rows'
//! `d` and `m`. A micro-tile is 16 rows × 4 tokens: each step is two panel loads, four
//! broadcasts of a token's value pair, eight `vpmaddwd` and eight `vpaddd` into integer
//! accumulators; the f32 chains are updated once per block. Panels are packed 8 at a
//! time and tokens run through them 64 at a time, so both stay in L2.

use std::cell::RefCell;

use crate::blocks::{QK_K, get_scale_min_k4, q5_value};
use crate::isa::{Isa, best_isa};
use crate::{DType, SyncSlice, TensorError, ThreadPool};

const OP: &str = "matmul_int";

/// Values per block, of the weights and of the quantized activations.
pub const INT_BLOCK: usize = 32;
/// Rows per panel.
pub(crate) const NR: usize = 16;
/// Tokens per micro-tile.
const MR: usize = 4;
/// Blocks of the reduction per chunk (512 values): a panel is 16 KiB and stays in L1
/// while every token runs through it; a token's chunk is 1 KiB.
pub const KC_BLOCKS: usize = 16;
/// Panels packed together (128 rows, 128 KiB): they stay in L2 while a block of tokens
/// runs through them.
const GROUP: usize = 8;
/// Tokens whose chunks stay in L2 while a group of panels runs through them (64 KiB).
const TOKEN_BLOCK: usize = 64;
/// Largest quantized activation.
const QMAX: f32 = 32767.0;
/// Largest 12-bit weight: `32 · 2047 · 32767 < 2³¹`, so a block's integer sum fits i32.
const WMAX: f32 = 2047.0;
/// i16 values of one block of a 16-row panel.
pub(crate) const PANEL_BLOCK: usize = NR * INT_BLOCK;

/// Activations `x (T, k)` as 16-bit integers in blocks of 32 along `k`: value
/// `j` of block `b` of token `t` is `d[t][b] · q[t][32 b + j]`; `s[t][b] = d · Σⱼ q`.
/// A block holding a NaN or an infinity has `d = s = NaN` (and `q = 0`), so every
/// product it enters is NaN; a block whose largest value is below ~1e-34 is zero.
#[derive(Debug, Default, Clone)]
pub struct IntActs {
    t: usize,
    nb: usize,
    q: Vec<i16>,
    d: Vec<f32>,
    s: Vec<f32>,
}

impl IntActs {
    /// Tokens held.
    pub fn tokens(&self) -> usize {
        self.t
    }

    /// Blocks per token.
    pub fn blocks(&self) -> usize {
        self.nb
    }

    /// Token `t`'s quantized values, scales and scaled sums (tests, references).
    pub fn token(&self, t: usize) -> Option<(&[i16], &[f32], &[f32])> {
        if t >= self.t {
            return None;
        }
        let k = self.nb * INT_BLOCK;
        Some((
            &self.q[t * k..(t + 1) * k],
            &self.d[t * self.nb..(t + 1) * self.nb],
            &self.s[t * self.nb..(t + 1) * self.nb],
        ))
    }

    /// Quantizes columns `k0..k0 + kl` of `x (T, k)` (`kl` a multiple of 32), reusing
    /// the buffers. Tokens are spread over `pool`.
    pub fn quantize(
        &mut self,
        pool: &ThreadPool,
        x: &[f32],
        k: usize,
        k0: usize,
        kl: usize,
    ) -> Result<(), TensorError> {
        self.quantize_with(best_isa(), pool, x, k, k0, kl)
    }

    /// [`IntActs::quantize`] on an explicit tier (unavailable tiers fall back to scalar).
    pub fn quantize_with(
        &mut self,
        isa: Isa,
        pool: &ThreadPool,
        x: &[f32],
        k: usize,
        k0: usize,
        kl: usize,
    ) -> Result<(), TensorError> {
        const QOP: &str = "IntActs::quantize";
        if k == 0 || !x.len().is_multiple_of(k) {
            return Err(TensorError::len(
                QOP,
                DType::F32,
                "activations",
                "elements",
                k,
                x.len(),
            ));
        }
        if !kl.is_multiple_of(INT_BLOCK) || k0.checked_add(kl).is_none_or(|e| e > k) {
            return Err(TensorError::NotBlockAligned {
                op: QOP,
                dtype: DType::F32,
                n: kl,
                block_len: INT_BLOCK,
            });
        }
        let t = x.len() / k;
        let nb = kl / INT_BLOCK;
        self.t = t;
        self.nb = nb;
        resize(&mut self.q, t * kl, 0);
        resize(&mut self.d, t * nb, 0.0);
        resize(&mut self.s, t * nb, 0.0);
        let isa = if isa.is_available() { isa } else { Isa::Scalar };
        let (q, d, s) = (
            SyncSlice::new(&mut self.q),
            SyncSlice::new(&mut self.d),
            SyncSlice::new(&mut self.s),
        );
        pool.run(&|ti, nt| {
            for tt in t * ti / nt..t * (ti + 1) / nt {
                let src = &x[tt * k + k0..tt * k + k0 + kl];
                // SAFETY: token `tt` belongs to this thread alone.
                let (qt, dt, st) = unsafe {
                    (
                        q.slice_mut(tt * kl, kl),
                        d.slice_mut(tt * nb, nb),
                        s.slice_mut(tt * nb, nb),
                    )
                };
                quantize_blocks(isa, src, qt, dt, st);
            }
        });
        Ok(())
    }
}

fn resize<T: Copy>(v: &mut Vec<T>, n: usize, zero: T) {
    if v.len() != n {
        v.clear();
        v.resize(n, zero);
    }
}

/// The blocks of one token's chunk on `isa`: `x` and `q` hold `d.len()` blocks.
fn quantize_blocks(isa: Isa, x: &[f32], q: &mut [i16], d: &mut [f32], s: &mut [f32]) {
    let nb = d.len();
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni)
        && x.len() == nb * INT_BLOCK
        && q.len() == nb * INT_BLOCK
        && s.len() == nb
    {
        // SAFETY: AVX2 + FMA are available (the tier was checked); the lengths just were.
        unsafe { crate::x86::gemm_int_avx2::quantize_blocks(x, q, d, s, QMAX) };
        return;
    }
    let _ = isa;
    for (b, (xb, qb)) in x
        .chunks_exact(INT_BLOCK)
        .zip(q.chunks_exact_mut(INT_BLOCK))
        .take(nb)
        .enumerate()
    {
        (d[b], s[b]) = quantize_block_scalar(xb, qb);
    }
}

/// The scale of a block whose largest magnitude is `amax` for integers up to `qmax`, its
/// inverse, or `None` for a block that is all zeros in effect (the inverse would
/// overflow).
pub(crate) fn block_scale(amax: f32, qmax: f32) -> Option<(f32, f32)> {
    let id = qmax / amax;
    (amax > 0.0 && id.is_finite()).then(|| (amax / qmax, id))
}

/// The reference activation quantizer: `q = round_half_even(x · (32767 / max|x|))`;
/// returns `(d, s)`.
pub fn quantize_block_scalar(x: &[f32], q: &mut [i16]) -> (f32, f32) {
    quantize_block_ref(x, q, QMAX)
}

/// The reference block quantizer for integers up to `qmax` (32767 or 2047).
fn quantize_block_ref(x: &[f32], q: &mut [i16], qmax: f32) -> (f32, f32) {
    if x.iter().any(|v| !v.is_finite()) {
        q.fill(0);
        return (f32::NAN, f32::NAN);
    }
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let Some((d, id)) = block_scale(amax, qmax) else {
        q.fill(0);
        return (0.0, 0.0);
    };
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        // |v · id| ≤ qmax (+ one rounding), so the cast does not saturate.
        let r = (v * id).round_ties_even() as i32;
        sum += r;
        *o = r as i16;
    }
    (d, d * sum as f32)
}

/// Whether [`matmul_int`] reads `dtype`'s blocks as integers, exactly.
pub fn int_weights(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q4_K
    )
}

/// Whether [`matmul_int`] takes a `dtype` matrix at all: the exact formats and those it
/// rounds to 12-bit blocks on the fly (F32, F16, BF16, Q6_K).
pub fn int_readable(dtype: DType) -> bool {
    int_weights(dtype) || matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::Q6_K)
}

/// Whether `dtype`'s blocks have a min (`value = d · q + m`).
fn has_min(dtype: DType) -> bool {
    matches!(dtype, DType::Q4_1 | DType::Q5_1 | DType::Q4_K)
}

/// A weight matrix `[rows, cols]` as [`matmul_int`] reads it.
#[derive(Debug, Clone, Copy)]
pub enum IntWeights<'a> {
    /// A ggml matrix of an [`int_readable`] type, row-major blocks.
    Blocks { dtype: DType, data: &'a [u8] },
    /// 12-bit blocks made once.
    Wide(&'a WideMatrix),
}

/// A matrix in 12-bit blocks of 32 values along its rows: value `j` of block `b` of row
/// `r` is `d[r][b] · q[r][32 b + j]` with `|q| ≤ 2047`, each block within 1/4094 of its
/// largest magnitude of the values it was made from. Two bytes per value and one f32
/// per block (2.125 bytes per value).
#[derive(Clone, Default)]
pub struct WideMatrix {
    rows: usize,
    cols: usize,
    d: Vec<f32>,
    q: Vec<i16>,
}

impl std::fmt::Debug for WideMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WideMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

impl WideMatrix {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        4 * self.d.len() + 2 * self.q.len()
    }

    /// Rounds the row-major f32 matrix `w` (`rows · cols` values, `cols` a multiple of 32).
    pub fn from_f32(w: &[f32], rows: usize, cols: usize) -> Result<WideMatrix, TensorError> {
        const WOP: &str = "WideMatrix::from_f32";
        check_block_aligned(WOP, cols)?;
        let n = rows.checked_mul(cols).ok_or(TensorError::Overflow {
            op: WOP,
            what: "matrix size",
        })?;
        if w.len() != n {
            return Err(TensorError::len(
                WOP,
                DType::F32,
                "matrix",
                "elements",
                n,
                w.len(),
            ));
        }
        let mut m = WideMatrix {
            rows,
            cols,
            d: vec![0.0; n / INT_BLOCK],
            q: vec![0; n],
        };
        for ((x, q), d) in w
            .chunks_exact(INT_BLOCK)
            .zip(m.q.chunks_exact_mut(INT_BLOCK))
            .zip(m.d.iter_mut())
        {
            *d = quantize_block_ref(x, q, WMAX).0;
        }
        Ok(m)
    }

    /// The transpose `[cols, rows]` of the ggml matrix `data` (`rows × cols` of `dtype`,
    /// `rows` a multiple of 32): block `b` of row `c` is column `c` of rows
    /// `32 b..32 b + 32`. Strips of 32 rows are widened to f32 and rounded on `pool`.
    pub fn transposed(
        pool: &ThreadPool,
        dtype: DType,
        data: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<WideMatrix, TensorError> {
        const WOP: &str = "WideMatrix::transposed";
        check_block_aligned(WOP, rows)?;
        let wrb = check_matrix(WOP, dtype, data, rows, cols)?;
        let n = rows * cols;
        let nb = rows / INT_BLOCK;
        let mut m = WideMatrix {
            rows: cols,
            cols: rows,
            d: vec![0.0; n / INT_BLOCK],
            q: vec![0; n],
        };
        let failed = std::sync::Mutex::new(None);
        {
            let (qs, ds) = (SyncSlice::new(&mut m.q), SyncSlice::new(&mut m.d));
            pool.run(&|ti, nt| {
                let mut strip = vec![0f32; INT_BLOCK * cols];
                let mut col = [0f32; INT_BLOCK];
                for b in nb * ti / nt..nb * (ti + 1) / nt {
                    for (i, row) in strip.chunks_exact_mut(cols).enumerate() {
                        let r = b * INT_BLOCK + i;
                        if let Err(e) =
                            crate::dequantize_row(dtype, &data[r * wrb..(r + 1) * wrb], row)
                        {
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            return;
                        }
                    }
                    for c in 0..cols {
                        for (i, v) in col.iter_mut().enumerate() {
                            *v = strip[i * cols + c];
                        }
                        // SAFETY: block `b` of every row belongs to this thread alone.
                        let (q, d) = unsafe {
                            (
                                qs.slice_mut(c * rows + b * INT_BLOCK, INT_BLOCK),
                                ds.slice_mut(c * nb + b, 1),
                            )
                        };
                        d[0] = quantize_block_ref(&col, q, WMAX).0;
                    }
                }
            });
        }
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        Ok(m)
    }

    /// The matrix as f32 (tests).
    pub fn to_f32(&self) -> Vec<f32> {
        self.q
            .chunks_exact(INT_BLOCK)
            .zip(&self.d)
            .flat_map(|(q, &d)| q.iter().map(move |&v| d * f32::from(v)))
            .collect()
    }
}

fn check_block_aligned(op: &'static str, n: usize) -> Result<(), TensorError> {
    if n == 0 || !n.is_multiple_of(INT_BLOCK) {
        return Err(TensorError::NotBlockAligned {
            op,
            dtype: DType::F32,
            n,
            block_len: INT_BLOCK,
        });
    }
    Ok(())
}

/// Checks a ggml matrix's byte count; returns its row bytes.
fn check_matrix(
    op: &'static str,
    dtype: DType,
    data: &[u8],
    rows: usize,
    cols: usize,
) -> Result<usize, TensorError> {
    let wrb = dtype.row_bytes_for(op, cols)?;
    let total = wrb.checked_mul(rows).ok_or(TensorError::Overflow {
        op,
        what: "matrix size",
    })?;
    if data.len() != total {
        return Err(TensorError::len(
            op,
            dtype,
            "weights",
            "bytes",
            total,
            data.len(),
        ));
    }
    Ok(wrb)
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Block `b` (values `32 b..32 b + 32`) of a row of `dtype` (one of [`int_weights`]) as
/// `(d, m)` and integers `q`: value `j` is `d · q[j] + m`, as `dequantize_row` computes it.
/// The row's length was checked by the caller.
fn int_block(dtype: DType, row: &[u8], b: usize, q: &mut [i16; INT_BLOCK]) -> (f32, f32) {
    let blk = |bytes: usize| &row[b * bytes..(b + 1) * bytes];
    match dtype {
        DType::Q8_0 => {
            let x = blk(34);
            for (o, &v) in q.iter_mut().zip(&x[2..34]) {
                *o = i16::from(v as i8);
            }
            (f16_at(x, 0), 0.0)
        }
        DType::Q4_0 | DType::Q4_1 => {
            let (x, off) = if dtype == DType::Q4_0 {
                (blk(18), 2)
            } else {
                (blk(20), 4)
            };
            let sub = if dtype == DType::Q4_0 { 8 } else { 0 };
            let (lo, hi) = q.split_at_mut(16);
            for ((l, h), &v) in lo.iter_mut().zip(hi).zip(&x[off..off + 16]) {
                *l = i16::from(v & 0x0f) - sub;
                *h = i16::from(v >> 4) - sub;
            }
            let m = if dtype == DType::Q4_1 {
                f16_at(x, 2)
            } else {
                0.0
            };
            (f16_at(x, 0), m)
        }
        DType::Q5_0 | DType::Q5_1 => {
            // Q5_0: d, qh (4), qs (16); Q5_1: d, m, qh, qs.
            let (x, off) = if dtype == DType::Q5_0 {
                (blk(22), 2)
            } else {
                (blk(24), 4)
            };
            let mut qh = [0u8; 4];
            qh.copy_from_slice(&x[off..off + 4]);
            let mut qs = [0u8; 16];
            qs.copy_from_slice(&x[off + 4..off + 20]);
            let sub = if dtype == DType::Q5_0 { 16 } else { 0 };
            for (j, o) in q.iter_mut().enumerate() {
                *o = i16::from(q5_value(&qh, &qs, j)) - sub;
            }
            let m = if dtype == DType::Q5_1 {
                f16_at(x, 2)
            } else {
                0.0
            };
            (f16_at(x, 0), m)
        }
        DType::Q4_K => {
            // d (f16), dmin (f16), scales (12), qs (128); sub-block j of 32 values.
            let bb = 144;
            let sb = b * INT_BLOCK / QK_K;
            let x = &row[sb * bb..(sb + 1) * bb];
            let mut scales = [0u8; 12];
            scales.copy_from_slice(&x[4..16]);
            let j = b % (QK_K / INT_BLOCK);
            let (sc, mn) = get_scale_min_k4(j, &scales);
            let qs = &x[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32];
            let shift = 4 * (j % 2);
            for (o, &v) in q.iter_mut().zip(qs) {
                *o = i16::from((v >> shift) & 0xf);
            }
            (f16_at(x, 0) * sc as f32, -(f16_at(x, 2) * mn as f32))
        }
        _ => {
            q.fill(0);
            (f32::NAN, f32::NAN)
        }
    }
}

/// Block `b` of a row of a float type (F32, F16, BF16) or Q6_K, widened to f32 (exactly,
/// as `dequantize_row`).
fn float_block(dtype: DType, row: &[u8], b: usize, out: &mut [f32; INT_BLOCK]) {
    match dtype {
        DType::F32 => {
            for (o, c) in out
                .iter_mut()
                .zip(row[b * 128..(b + 1) * 128].chunks_exact(4))
            {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            use half::slice::HalfFloatSliceExt;
            let mut h = [half::f16::ZERO; INT_BLOCK];
            for (d, c) in h.iter_mut().zip(row[b * 64..(b + 1) * 64].chunks_exact(2)) {
                *d = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]]));
            }
            // F16C where the CPU has it: the same values as one at a time.
            h.convert_to_f32_slice(out);
        }
        DType::BF16 => {
            for (o, c) in out
                .iter_mut()
                .zip(row[b * 64..(b + 1) * 64].chunks_exact(2))
            {
                *o = crate::bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        DType::Q6_K => {
            let sb = b * INT_BLOCK / QK_K;
            let mut all = [0f32; QK_K];
            let bb = DType::Q6_K.block_bytes();
            if crate::dequantize_row(DType::Q6_K, &row[sb * bb..(sb + 1) * bb], &mut all).is_err() {
                out.fill(f32::NAN);
                return;
            }
            let j = b % (QK_K / INT_BLOCK);
            out.copy_from_slice(&all[j * INT_BLOCK..(j + 1) * INT_BLOCK]);
        }
        _ => out.fill(f32::NAN),
    }
}

/// Where a panel's blocks come from.
#[derive(Clone, Copy)]
enum Source<'a> {
    Exact {
        dtype: DType,
        data: &'a [u8],
        wrb: usize,
    },
    Float {
        dtype: DType,
        data: &'a [u8],
        wrb: usize,
    },
    Wide(&'a WideMatrix),
}

impl Source<'_> {
    /// Block `b` of row `r`: `(d, m)` and `q`.
    fn block(&self, isa: Isa, r: usize, b: usize, q: &mut [i16; INT_BLOCK]) -> (f32, f32) {
        match *self {
            Source::Exact { dtype, data, wrb } => {
                int_block(dtype, &data[r * wrb..(r + 1) * wrb], b, q)
            }
            Source::Float { dtype, data, wrb } => {
                let mut x = [0f32; INT_BLOCK];
                float_block(dtype, &data[r * wrb..(r + 1) * wrb], b, &mut x);
                (quantize_block(isa, &x, q, WMAX).0, 0.0)
            }
            Source::Wide(m) => {
                let nb = m.cols / INT_BLOCK;
                q.copy_from_slice(
                    &m.q[r * m.cols + b * INT_BLOCK..r * m.cols + (b + 1) * INT_BLOCK],
                );
                (m.d[r * nb + b], 0.0)
            }
        }
    }
}

/// One block of 32 values at `x` into `q` on `isa`, integers up to `qmax`.
fn quantize_block(
    isa: Isa,
    x: &[f32; INT_BLOCK],
    q: &mut [i16; INT_BLOCK],
    qmax: f32,
) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) {
        // SAFETY: AVX2 + FMA are available (the tier was checked); both hold a block.
        return unsafe {
            crate::x86::gemm_int_avx2::quantize_block(x.as_ptr(), q.as_mut_ptr(), qmax)
        };
    }
    let _ = isa;
    quantize_block_ref(x, q, qmax)
}

/// A thread's panel: rows `r0..r0 + 16` (rows past the matrix are zero), blocks
/// `b0..b0 + nb`, in the layout of the module comment.
#[derive(Default)]
pub(crate) struct Panel {
    pub(crate) q: Vec<i16>,
    pub(crate) d: Vec<f32>,
    pub(crate) m: Vec<f32>,
}

impl Panel {
    #[allow(clippy::too_many_arguments)]
    fn fill(&mut self, isa: Isa, src: &Source<'_>, rows: usize, r0: usize, b0: usize, nb: usize) {
        resize(&mut self.q, nb * PANEL_BLOCK, 0);
        resize(&mut self.d, nb * NR, 0.0);
        resize(&mut self.m, nb * NR, 0.0);
        let mut q = [[0i16; INT_BLOCK]; 8];
        for b in 0..nb {
            for v in 0..NR / 8 {
                for (lane, ql) in q.iter_mut().enumerate() {
                    let (i, r) = (v * 8 + lane, r0 + v * 8 + lane);
                    let (d, m) = if r < rows {
                        src.block(isa, r, b0 + b, ql)
                    } else {
                        ql.fill(0);
                        (0.0, 0.0)
                    };
                    self.d[b * NR + i] = d;
                    self.m[b * NR + i] = m;
                }
                let dst = &mut self.q[b * PANEL_BLOCK..(b + 1) * PANEL_BLOCK];
                interleave(isa, &q, dst, v);
            }
        }
    }
}

/// Eight rows' block `q` into a panel block's vector `v`: step `p`, lane `i` holds
/// `q[i][2p], q[i][2p + 1]` at `dst[(2p + v) · 16 + 2i ..]`.
fn interleave(isa: Isa, q: &[[i16; INT_BLOCK]; 8], dst: &mut [i16], v: usize) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) && dst.len() == PANEL_BLOCK && v < NR / 8 {
        // SAFETY: AVX2 available (tier checked); `dst` is a whole panel block.
        unsafe { crate::x86::gemm_int_avx2::interleave(q, dst.as_mut_ptr().add(16 * v)) };
        return;
    }
    let _ = isa;
    for (lane, ql) in q.iter().enumerate() {
        for p in 0..INT_BLOCK / 2 {
            let at = (p * 2 + v) * 16 + lane * 2;
            dst[at] = ql[2 * p];
            dst[at + 1] = ql[2 * p + 1];
        }
    }
}

/// One token's chunk: quantized values, scales and scaled sums.
#[derive(Clone, Copy)]
pub(crate) struct TokenChunk<'a> {
    pub(crate) q: &'a [i16],
    pub(crate) d: &'a [f32],
    pub(crate) s: &'a [f32],
}

/// The reference micro-kernel: `acc[t][i]` continues its chain over the panel's `nb`
/// blocks for panel row `i` and token `x[t]` (from zero where `first`).
pub(crate) fn tile_scalar<const M: usize>(
    p: &Panel,
    nb: usize,
    min: bool,
    first: bool,
    x: [TokenChunk<'_>; M],
    acc: [&mut [f32; NR]; M],
) {
    for (xt, at) in x.iter().zip(acc) {
        if first {
            at.fill(0.0);
        }
        for (i, a) in at.iter_mut().enumerate() {
            let (v, lane) = (i / 8, i % 8);
            for b in 0..nb {
                let pq = &p.q[b * PANEL_BLOCK..(b + 1) * PANEL_BLOCK];
                let xq = &xt.q[b * INT_BLOCK..(b + 1) * INT_BLOCK];
                let mut sum = 0i32;
                for pp in 0..INT_BLOCK / 2 {
                    let at = (pp * 2 + v) * 16 + lane * 2;
                    sum += i32::from(pq[at]) * i32::from(xq[2 * pp])
                        + i32::from(pq[at + 1]) * i32::from(xq[2 * pp + 1]);
                }
                *a = (sum as f32).mul_add(p.d[b * NR + i] * xt.d[b], *a);
                if min {
                    *a = p.m[b * NR + i].mul_add(xt.s[b], *a);
                }
            }
        }
    }
}

/// Runs the micro-kernel of `isa` on `M` tokens.
fn tile<const M: usize>(
    isa: Isa,
    p: &Panel,
    nb: usize,
    min: bool,
    first: bool,
    x: [TokenChunk<'_>; M],
    acc: [&mut [f32; NR]; M],
) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni)
        && p.q.len() >= nb * PANEL_BLOCK
        && p.d.len() >= nb * NR
        && p.m.len() >= nb * NR
        && x.iter()
            .all(|t| t.q.len() >= nb * INT_BLOCK && t.d.len() >= nb && t.s.len() >= nb)
    {
        use crate::x86::gemm_int_avx2::tile as t;
        // SAFETY: AVX2 + FMA available (tier checked by the caller); every length the
        // kernel reads was checked just above.
        unsafe {
            if min {
                t::<M, true>(p, nb, first, &x, acc);
            } else {
                t::<M, false>(p, nb, first, &x, acc);
            }
        }
        return;
    }
    let _ = isa;
    tile_scalar(p, nb, min, first, x, acc);
}

std::thread_local! {
    /// A thread's panels of one group, kept between calls so a warm pass does not
    /// allocate.
    static PANELS: RefCell<Vec<Panel>> = const { RefCell::new(Vec::new()) };
}

/// `out (T, rows) (+)= x (T, cols) · Wᵀ` for `W (rows, cols)` in `w` (`cols` a multiple
/// of 32): `x` is quantized into `acts` a chunk of the reduction at a time (the buffers
/// are reused between calls). With `accumulate` each output's chain starts from `out`'s
/// value, else from 0.
#[allow(clippy::too_many_arguments)]
pub fn matmul_int(
    pool: &ThreadPool,
    w: IntWeights<'_>,
    rows: usize,
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    accumulate: bool,
    acts: &mut IntActs,
) -> Result<(), TensorError> {
    matmul_int_with(best_isa(), pool, w, rows, cols, x, out, accumulate, acts)
}

/// [`matmul_int`] on an explicit tier (unavailable tiers fall back to scalar).
#[allow(clippy::too_many_arguments)]
pub fn matmul_int_with(
    isa: Isa,
    pool: &ThreadPool,
    w: IntWeights<'_>,
    rows: usize,
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    accumulate: bool,
    acts: &mut IntActs,
) -> Result<(), TensorError> {
    check_block_aligned(OP, cols)?;
    let (src, min) = match w {
        IntWeights::Blocks { dtype, data } => {
            if !int_readable(dtype) {
                return Err(TensorError::Unsupported { op: OP, dtype });
            }
            let wrb = check_matrix(OP, dtype, data, rows, cols)?;
            if int_weights(dtype) {
                (Source::Exact { dtype, data, wrb }, has_min(dtype))
            } else {
                (Source::Float { dtype, data, wrb }, false)
            }
        }
        IntWeights::Wide(m) => {
            if (m.rows, m.cols) != (rows, cols) {
                return Err(TensorError::len(
                    OP,
                    DType::F32,
                    "wide matrix",
                    "elements",
                    rows * cols,
                    m.rows * m.cols,
                ));
            }
            (Source::Wide(m), false)
        }
    };
    if !x.len().is_multiple_of(cols) {
        return Err(TensorError::len(
            OP,
            DType::F32,
            "activations",
            "elements",
            cols,
            x.len(),
        ));
    }
    let t = x.len() / cols;
    let o_total = t.checked_mul(rows).ok_or(TensorError::Overflow {
        op: OP,
        what: "output size",
    })?;
    if out.len() != o_total {
        return Err(TensorError::len(
            OP,
            DType::F32,
            "output",
            "elements",
            o_total,
            out.len(),
        ));
    }
    if t == 0 || rows == 0 {
        return Ok(());
    }
    let isa = if isa.is_available() { isa } else { Isa::Scalar };
    let panels = rows.div_ceil(NR);
    let nbk = cols / INT_BLOCK;
    let out = SyncSlice::new(out);
    for c0 in (0..nbk).step_by(KC_BLOCKS) {
        let nb = (c0 + KC_BLOCKS).min(nbk) - c0;
        acts.quantize_with(isa, pool, x, cols, c0 * INT_BLOCK, nb * INT_BLOCK)?;
        let acts = &*acts;
        let first = c0 == 0 && !accumulate;
        pool.run(&|ti, nt| {
            PANELS.with_borrow_mut(|ps| {
                let (p0, p1) = (panels * ti / nt, panels * (ti + 1) / nt);
                for g0 in (p0..p1).step_by(GROUP) {
                    let g1 = (g0 + GROUP).min(p1);
                    if ps.len() < g1 - g0 {
                        ps.resize_with(g1 - g0, Panel::default);
                    }
                    for (pi, p) in (g0..g1).zip(ps.iter_mut()) {
                        p.fill(isa, &src, rows, pi * NR, c0, nb);
                    }
                    for tb in (0..t).step_by(TOKEN_BLOCK) {
                        let te = (tb + TOKEN_BLOCK).min(t);
                        for (pi, p) in (g0..g1).zip(ps.iter()) {
                            let r0 = pi * NR;
                            let valid = (rows - r0).min(NR);
                            let mut t0 = tb;
                            while t0 < te {
                                let m = (te - t0).min(MR);
                                match m {
                                    4 => run_tile::<4>(
                                        isa, p, nb, min, acts, t0, rows, r0, valid, first, &out,
                                    ),
                                    3 => run_tile::<3>(
                                        isa, p, nb, min, acts, t0, rows, r0, valid, first, &out,
                                    ),
                                    2 => run_tile::<2>(
                                        isa, p, nb, min, acts, t0, rows, r0, valid, first, &out,
                                    ),
                                    _ => run_tile::<1>(
                                        isa, p, nb, min, acts, t0, rows, r0, valid, first, &out,
                                    ),
                                }
                                t0 += m;
                            }
                        }
                    }
                }
            });
        });
    }
    Ok(())
}

/// Tokens `t0..t0 + M` against the panel at row `r0`: the kernel continues the chains in
/// `out` (from zero where `first`) for the panel's `valid` rows, in place when the panel
/// is whole, else through a copy.
#[allow(clippy::too_many_arguments)]
fn run_tile<const M: usize>(
    isa: Isa,
    p: &Panel,
    nb: usize,
    min: bool,
    acts: &IntActs,
    t0: usize,
    rows: usize,
    r0: usize,
    valid: usize,
    first: bool,
    out: &SyncSlice<'_, f32>,
) {
    let x: [TokenChunk<'_>; M] = std::array::from_fn(|i| {
        let (q, d, s) = acts.token(t0 + i).unwrap_or((&[], &[], &[]));
        TokenChunk { q, d, s }
    });
    if valid == NR {
        // SAFETY: the panel's rows belong to this thread alone, and the M ranges are
        // disjoint (one per token).
        let mut o: [&mut [f32]; M] =
            std::array::from_fn(|i| unsafe { out.slice_mut((t0 + i) * rows + r0, NR) });
        let acc: [&mut [f32; NR]; M] = std::array::from_fn(|i| {
            let s: &mut [f32] = std::mem::take(&mut o[i]);
            <&mut [f32; NR]>::try_from(s).unwrap_or_else(|_| unreachable!("NR values"))
        });
        tile(isa, p, nb, min, first, x, acc);
        return;
    }
    let mut tmp = [[0f32; NR]; M];
    for (i, a) in tmp.iter_mut().enumerate() {
        // SAFETY: as above.
        let o = unsafe { out.slice_mut((t0 + i) * rows + r0, valid) };
        a[..valid].copy_from_slice(o);
    }
    {
        let mut it = tmp.iter_mut();
        let acc: [&mut [f32; NR]; M] =
            std::array::from_fn(|_| it.next().unwrap_or_else(|| unreachable!("M arrays")));
        tile(isa, p, nb, min, first, x, acc);
    }
    for (i, a) in tmp.iter().enumerate() {
        // SAFETY: as above.
        let o = unsafe { out.slice_mut((t0 + i) * rows + r0, valid) };
        o.copy_from_slice(&a[..valid]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dequantize_row, quantize_row};

    #[test]
    fn int_blocks_are_dequantize_row_exactly() {
        let mut s = 9u64;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 20001) as f32 / 10000.0 - 1.0
        };
        for dtype in [
            DType::Q8_0,
            DType::Q4_0,
            DType::Q4_1,
            DType::Q5_0,
            DType::Q5_1,
            DType::Q4_K,
        ] {
            let n = 512;
            let src: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let mut row = vec![0u8; dtype.row_bytes(n).unwrap_or(0)];
            quantize_row(dtype, &src, &mut row).expect("quantize");
            let mut want = vec![0f32; n];
            dequantize_row(dtype, &row, &mut want).expect("dequantize");
            let mut q = [0i16; INT_BLOCK];
            for b in 0..n / INT_BLOCK {
                let (d, m) = int_block(dtype, &row, b, &mut q);
                for j in 0..INT_BLOCK {
                    let got = d * f32::from(q[j]) + m;
                    let w = want[b * INT_BLOCK + j];
                    // The reference's operations in its order (Q4_K: `d1 · q − m1`).
                    assert!(got == w, "{dtype} block {b} value {j}: {got} vs {w}");
                }
            }
        }
    }
}
