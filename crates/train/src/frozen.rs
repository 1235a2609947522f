//! A frozen weight matrix `W (out, in)` in the type the model file stores it in (F32,
//! F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q6_K): the base under a LoRA adapter,
//! never widened to f32 as a whole (QLoRA-style: a 4-bit base stays 4-bit in memory).
//!
//! A frozen matrix needs two products, no weight gradient:
//!
//! ```text
//! forward          y  (T, out) = x (T, in) · Wᵀ
//! backward_input   dx (T, in) += dy (T, out) · W
//! ```
//!
//! Both run the tensor crate's f32 GEMM micro-kernel ([`matmul_f32_panels`]) on panels of
//! `W` decoded on the fly: each thread takes a share of the output columns and decodes,
//! a few at a time, 32-row panels of `W` (forward) or 32-column panels (backward, the
//! panels of `Wᵀ`) into a thread-local buffer of at most [`PANEL_BUDGET`] floats, then
//! runs every token through them. The reduction is split in chunks of at most
//! [`KC_MAX`] so that a panel of the 49 152-row output matrix's transpose stays small too.
//!
//! Why decode `W` to f32 instead of quantizing `x` to Q8 as inference does:
//! - the backward has no quantized kernel to use: `dy · W` walks `W` along its columns,
//!   the engine's kernels dot along rows, so it decodes `W` anyway;
//! - with both products on the same decoded `W`, the backward is the exact gradient of
//!   the forward that was computed. Quantizing `x` would add noise up to 1/254 of each
//!   32-value block's largest activation to the forward that the backward does not see,
//!   and would make the loss differ from the f32 pass over the dequantized base by that
//!   much; decoded in f32 they agree to summation order (QLoRA also dequantizes the base
//!   to its compute type rather than quantizing activations);
//! - the cost of decoding is `out · in` per call against `T · out · in` multiply-adds for
//!   the product, a few percent at training's sequence lengths (`examples/frozen_bench.rs`
//!   measures both against inference's quantized kernels).
//!
//! Decoding is bit-exact with the tensor crate's `dequantize_row` (tested), so a frozen
//! matrix computes the same function as the dequantized f32 matrix would.

use std::cell::RefCell;
use std::sync::Mutex;

use ferrollama_model::Tensor;
use ferrollama_tensor::blocks::{BlockQ6K, QK_K, get_scale_min_k4, q6k_value, read_block};
use ferrollama_tensor::{
    DType, PANEL_ROWS, PackedActs, SyncSlice, TensorError, ThreadPool, bf16_to_f32, dequantize_row,
    matmul_f32_panels,
};

use crate::error::{Result, TrainError};
use crate::frozen_int::{BaseCompute, IntCopies};

/// Most values of the reduction decoded into one panel: a panel is `KC_MAX · 32` floats
/// (128 KiB), so a few of them and a token block of activations stay in L2.
pub const KC_MAX: usize = 1024;

/// Floats of decoded panels a thread holds at once (256 KiB): the panels a token block
/// passes over before the next group is decoded.
pub const PANEL_BUDGET: usize = 64 * 1024;

/// The span every decode step produces: one 32-value block (Q8_0, Q4_*, Q5_*), one
/// sub-block of a K-quant super-block, or 32 values of a float row.
const SPAN: usize = 32;

const _: () = assert!(SPAN == PANEL_ROWS && KC_MAX.is_multiple_of(SPAN));

/// Decodes `out.len()` values of one row from column `k0` (a multiple of [`SPAN`]; a
/// whole span except at the end of a float row).
type Decode = fn(row: &[u8], k0: usize, out: &mut [f32]);

/// A weight matrix kept in its stored type, multiplied by f32 activations.
#[derive(Clone)]
pub struct FrozenMatrix {
    tensor: Tensor,
    row_bytes: usize,
    decode: Decode,
    /// The integer path's copies ([`BaseCompute::Int8`]); `None`: f32 panels.
    int: Option<Box<IntCopies>>,
}

/// The shape and type, not the bytes (an owned tensor's `Debug` prints all of them).
impl std::fmt::Debug for FrozenMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenMatrix")
            .field("dtype", &self.dtype())
            .field("rows", &self.rows())
            .field("cols", &self.cols())
            .field("bytes", &self.bytes())
            .field("compute", &self.compute())
            .finish()
    }
}

impl FrozenMatrix {
    /// Wraps a model tensor without copying or converting its bytes (a view into a
    /// memory-mapped file stays one). Formats without a decoder here (FP8, the activation
    /// types) are an error that says what to convert the model to.
    pub fn new(t: &Tensor) -> Result<FrozenMatrix> {
        let decode = decoder(t.dtype).ok_or_else(|| {
            TrainError::Config(format!(
                "a {} matrix cannot be a frozen LoRA base: convert the model with \
                 `ferrollama quantize` to f16, bf16, q8_0 or q4_k first",
                t.dtype
            ))
        })?;
        let row_bytes = t.dtype.row_bytes(t.cols).ok_or_else(|| {
            TrainError::Config(format!(
                "a [{}, {}] {} matrix is not a whole number of blocks per row",
                t.rows, t.cols, t.dtype
            ))
        })?;
        if t.data().len() != row_bytes * t.rows {
            return Err(TrainError::Config(format!(
                "a [{}, {}] {} matrix holds {} bytes, not {}",
                t.rows,
                t.cols,
                t.dtype,
                t.data().len(),
                row_bytes * t.rows
            )));
        }
        Ok(FrozenMatrix {
            tensor: t.clone(),
            row_bytes,
            decode,
            int: None,
        })
    }

    /// Switches how the products are computed. [`BaseCompute::Int8`] builds the integer
    /// path's copies (a transposed Q8_0 `Wᵀ`, and a Q8_0 `W` where the stored type is not
    /// read as integers) on `pool`; a matrix whose sides are not multiples of 32 stays on
    /// f32 ([`FrozenMatrix::compute`] says which it got). [`BaseCompute::F32`] drops them.
    pub fn set_compute(&mut self, compute: BaseCompute, pool: &ThreadPool) -> Result<()> {
        self.int = match compute {
            BaseCompute::F32 => None,
            BaseCompute::Int8 => match self.int.take() {
                Some(c) => Some(c),
                None => IntCopies::build(&self.tensor, pool)?.map(Box::new),
            },
        };
        Ok(())
    }

    /// How the products are computed.
    pub fn compute(&self) -> BaseCompute {
        if self.int.is_some() {
            BaseCompute::Int8
        } else {
            BaseCompute::F32
        }
    }

    pub fn dtype(&self) -> DType {
        self.tensor.dtype
    }

    /// Outputs (`out`).
    pub fn rows(&self) -> usize {
        self.tensor.rows
    }

    /// Inputs (`in`).
    pub fn cols(&self) -> usize {
        self.tensor.cols
    }

    /// Bytes the matrix holds: the stored matrix, and the integer path's copies.
    pub fn bytes(&self) -> usize {
        self.tensor.data().len() + self.int.as_ref().map_or(0, |c| c.bytes())
    }

    /// Whether `other` is the same stored matrix (tied embeddings).
    pub fn same_data(&self, other: &FrozenMatrix) -> bool {
        self.tensor.same_data(&other.tensor)
    }

    /// Row `r` widened to f32 into `out` (`cols` long): an embedding lookup.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let row = self
            .row(r)
            .ok_or_else(|| TrainError::Data(format!("row {r} of a {}-row matrix", self.rows())))?;
        dequantize_row(self.dtype(), row, out).map_err(kernel_error)
    }

    /// The whole matrix as f32 (tests and references only: this is what training
    /// never does to a frozen base).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        self.tensor
            .to_f32()
            .map_err(|e| TrainError::Config(format!("cannot widen the matrix: {e}")))
    }

    fn row(&self, r: usize) -> Option<&[u8]> {
        self.tensor
            .data()
            .get(r * self.row_bytes..(r + 1) * self.row_bytes)
    }

    /// Row `r`, which the caller has checked to exist.
    fn row_in_range(&self, r: usize) -> &[u8] {
        &self.tensor.data()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// `y (T, out) = x (T, in) · Wᵀ`, `T = x.len() / in`.
    pub fn forward(&self, pool: &ThreadPool, y: &mut [f32], x: &[f32]) -> Result<()> {
        match &self.int {
            Some(c) => c.forward(pool, &self.tensor, y, x),
            None => self.gemm(pool, Side::Rows, y, x, false),
        }
    }

    /// `dx (T, in) += dy (T, out) · W`, `T = dy.len() / out`.
    pub fn backward_input(&self, pool: &ThreadPool, dx: &mut [f32], dy: &[f32]) -> Result<()> {
        match &self.int {
            Some(c) => c.backward_input(pool, dx, dy),
            None => self.gemm(pool, Side::Columns, dx, dy, true),
        }
    }

    /// `out (T, n) (+)= x (T, k) · Mᵀ` for `M = W` (`Side::Rows`) or `M = Wᵀ`
    /// (`Side::Columns`), with `M`'s panels decoded per thread.
    fn gemm(
        &self,
        pool: &ThreadPool,
        side: Side,
        out: &mut [f32],
        x: &[f32],
        accumulate: bool,
    ) -> Result<()> {
        let (rows, cols) = (self.rows(), self.cols());
        let (n, k) = match side {
            Side::Rows => (rows, cols),
            Side::Columns => (cols, rows),
        };
        if k == 0 || !x.len().is_multiple_of(k) || out.len() != x.len() / k * n {
            return Err(TrainError::Config(format!(
                "a frozen [{rows}, {cols}] matrix cannot map {} inputs to {} outputs",
                x.len(),
                out.len()
            )));
        }
        let t = x.len() / k;
        if t == 0 || n == 0 {
            return Ok(());
        }
        // The reduction in equal chunks of at most KC_MAX, each a whole number of spans
        // (a forward chunk is a column range of W's rows, which decode in spans).
        let kc = k.div_ceil(k.div_ceil(KC_MAX)).div_ceil(SPAN) * SPAN;
        ACTS.with(|acts| match acts.try_borrow_mut() {
            Ok(mut xp) => self.gemm_chunks(pool, side, out, x, t, n, k, kc, accumulate, &mut xp),
            // Re-entered on this thread (a pass inside a pass): a fresh copy.
            Err(_) => {
                let mut xp = PackedActs::default();
                self.gemm_chunks(pool, side, out, x, t, n, k, kc, accumulate, &mut xp)
            }
        })
    }

    /// [`FrozenMatrix::gemm`] one chunk of the reduction at a time: the chunk of `x` is
    /// packed once (`T · kc` floats, not all of `x`: the output matrix's `dlogits` are
    /// `T · vocab`), then every thread decodes its panels of the chunk and adds their
    /// product into its columns of `out`.
    #[allow(clippy::too_many_arguments)]
    fn gemm_chunks(
        &self,
        pool: &ThreadPool,
        side: Side,
        out: &mut [f32],
        x: &[f32],
        t: usize,
        n: usize,
        k: usize,
        kc: usize,
        accumulate: bool,
        xp: &mut PackedActs,
    ) -> Result<()> {
        let panels = n.div_ceil(SPAN);
        let group = (PANEL_BUDGET / (kc.min(k) * SPAN)).clamp(1, 8);
        let failed: Mutex<Option<TensorError>> = Mutex::new(None);
        let out = SyncSlice::new(out);
        for k0 in (0..k).step_by(kc) {
            let kl = (k0 + kc).min(k) - k0;
            xp.pack(pool, x, t, k, k0, kl).map_err(kernel_error)?;
            let xp = &*xp;
            let add = accumulate || k0 > 0;
            pool.run(&|ti, nt| {
                BUFFERS.with_borrow_mut(|(wbuf, obuf)| {
                    let (p0, p1) = (panels * ti / nt, panels * (ti + 1) / nt);
                    for g0 in (p0..p1).step_by(group) {
                        let g1 = (g0 + group).min(p1);
                        let (r0, r1) = (g0 * SPAN, (g1 * SPAN).min(n));
                        let width = r1 - r0;
                        wbuf.clear();
                        wbuf.resize((g1 - g0) * kl * SPAN, 0.0);
                        match side {
                            Side::Rows => self.fill_row_panels(r0..r1, k0, kl, wbuf),
                            Side::Columns => self.fill_column_panels(r0..r1, k0, kl, wbuf),
                        }
                        // Every token's `width` values are written: no need to zero.
                        obuf.resize(t * width, 0.0);
                        let r = matmul_f32_panels(wbuf, width, xp, obuf, width, false);
                        if let Err(e) = r {
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            return;
                        }
                        for (tt, src) in obuf[..t * width].chunks_exact(width).enumerate() {
                            // SAFETY: this thread alone owns output columns r0..r1 (panels
                            // p0..p1 are its share), so the slices never overlap another's.
                            let dst = unsafe { out.slice_mut(tt * n + r0, width) };
                            if add {
                                for (d, &s) in dst.iter_mut().zip(src) {
                                    *d += s;
                                }
                            } else {
                                dst.copy_from_slice(src);
                            }
                        }
                    }
                });
            });
            if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(kernel_error(e));
            }
        }
        Ok(())
    }

    /// Panels of `M = W` for rows `rows` (whole panels from a multiple of 32) and
    /// columns `k0..k0 + kl`: panel `p`, step `kk`, lane `j` = `W[rows.start + 32p + j][k0 + kk]`.
    /// `wbuf` is zeroed; lanes past the last row stay zero.
    fn fill_row_panels(
        &self,
        rows: std::ops::Range<usize>,
        k0: usize,
        kl: usize,
        wbuf: &mut [f32],
    ) {
        let mut span = [0f32; SPAN];
        for r in rows.clone() {
            let row = self.row_in_range(r);
            let i = r - rows.start;
            let panel = &mut wbuf[i / SPAN * kl * SPAN..(i / SPAN + 1) * kl * SPAN];
            let j = i % SPAN;
            for s0 in (0..kl).step_by(SPAN) {
                let len = (kl - s0).min(SPAN);
                (self.decode)(row, k0 + s0, &mut span[..len]);
                for (kk, &v) in span[..len].iter().enumerate() {
                    panel[(s0 + kk) * SPAN + j] = v;
                }
            }
        }
    }

    /// Panels of `M = Wᵀ` for W's columns `cols` (whole panels from a multiple of 32)
    /// and W's rows `k0..k0 + kl`: panel `p`, step `kk` = `W[k0 + kk][cols.start + 32p ..][..32]`,
    /// one decoded span each. `wbuf` is zeroed; lanes past the last column stay zero.
    fn fill_column_panels(
        &self,
        cols: std::ops::Range<usize>,
        k0: usize,
        kl: usize,
        wbuf: &mut [f32],
    ) {
        for kk in 0..kl {
            let row = self.row_in_range(k0 + kk);
            for (p, c0) in cols.clone().step_by(SPAN).enumerate() {
                let len = (cols.end - c0).min(SPAN);
                let at = (p * kl + kk) * SPAN;
                (self.decode)(row, c0, &mut wbuf[at..at + len]);
            }
        }
    }
}

/// Which of `W`'s products [`FrozenMatrix::gemm`] computes.
#[derive(Debug, Clone, Copy)]
enum Side {
    /// `x · Wᵀ`: the GEMM's matrix is `W`, its panels are rows of `W`.
    Rows,
    /// `x · W`: the GEMM's matrix is `Wᵀ`, its panels are columns of `W`.
    Columns,
}

std::thread_local! {
    /// A thread's decoded panels and its share of the output, kept between calls so a
    /// warm pass does not allocate.
    static BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// The calling thread's packed activations, likewise.
    static ACTS: RefCell<PackedActs> = RefCell::new(PackedActs::default());
}

fn kernel_error(e: TensorError) -> TrainError {
    TrainError::Config(format!("frozen matrix: {e}"))
}

/// The span decoder of `dtype`, or `None` where a frozen matrix does not support it.
fn decoder(dtype: DType) -> Option<Decode> {
    Some(match dtype {
        DType::F32 => decode_f32,
        DType::F16 => decode_f16,
        DType::BF16 => decode_bf16,
        DType::Q8_0 => decode_q8_0,
        DType::Q4_0 => decode_q4_0,
        DType::Q4_1 => decode_q4_1,
        DType::Q5_0 => decode_q5_0,
        DType::Q5_1 => decode_q5_1,
        DType::Q4_K => decode_q4_k,
        DType::Q6_K => decode_q6_k,
        _ => return None,
    })
}

// The decoders below are `dequantize_row`'s formulas in its operation order, one span at
// a time (tests check them bit for bit). A row's length was checked when the matrix was
// made, so every span they read is inside it; the slicing would stop a bad caller with a
// panic, never with wrong numbers.

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn decode_f32(row: &[u8], k0: usize, out: &mut [f32]) {
    let src = &row[4 * k0..4 * (k0 + out.len())];
    for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

/// Through `half`'s slice conversion, which uses the CPU's F16C instructions where it
/// has them (`f16::to_f32` one at a time is a software conversion, several times slower).
fn decode_f16(row: &[u8], k0: usize, out: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    let src = &row[2 * k0..2 * (k0 + out.len())];
    let mut h = [half::f16::ZERO; SPAN];
    for (d, c) in h.iter_mut().zip(src.chunks_exact(2)) {
        *d = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]]));
    }
    h[..out.len()].convert_to_f32_slice(out);
}

fn decode_bf16(row: &[u8], k0: usize, out: &mut [f32]) {
    let src = &row[2 * k0..2 * (k0 + out.len())];
    for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

/// The bytes of 32-value block `k0 / 32` of a row of `dtype`.
fn block32(dtype: DType, row: &[u8], k0: usize) -> &[u8] {
    let bb = dtype.block_bytes();
    let b = k0 / SPAN;
    &row[b * bb..(b + 1) * bb]
}

fn decode_q8_0(row: &[u8], k0: usize, out: &mut [f32]) {
    // d (f16), qs (32 x i8)
    let b = block32(DType::Q8_0, row, k0);
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = q as i8 as f32 * d;
    }
}

fn decode_q4_0(row: &[u8], k0: usize, out: &mut [f32]) {
    // d (f16), qs (16 bytes: value j in the low nibble of byte j, j + 16 in the high)
    let b = block32(DType::Q4_0, row, k0);
    let d = f16_at(b, 0);
    let (lo, hi) = out.split_at_mut(16);
    for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b[2..18]) {
        *l = ((q & 0x0f) as i32 - 8) as f32 * d;
        *h = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

fn decode_q4_1(row: &[u8], k0: usize, out: &mut [f32]) {
    // d (f16), m (f16), qs (16 bytes, as Q4_0)
    let b = block32(DType::Q4_1, row, k0);
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let (lo, hi) = out.split_at_mut(16);
    for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b[4..20]) {
        *l = (q & 0x0f) as f32 * d + m;
        *h = (q >> 4) as f32 * d + m;
    }
}

/// The rarer 32-value formats through the reference decoder, one block at a time.
fn decode_block32_ref(dtype: DType, row: &[u8], k0: usize, out: &mut [f32]) {
    let r = dequantize_row(dtype, block32(dtype, row, k0), out);
    debug_assert!(r.is_ok(), "{dtype}: {r:?}");
}

fn decode_q5_0(row: &[u8], k0: usize, out: &mut [f32]) {
    decode_block32_ref(DType::Q5_0, row, k0, out);
}

fn decode_q5_1(row: &[u8], k0: usize, out: &mut [f32]) {
    decode_block32_ref(DType::Q5_1, row, k0, out);
}

/// Sub-block `(k0 % 256) / 32` of a Q4_K super-block: its own 6-bit scale and min on 32
/// nibbles (the low ones of 32 bytes for even sub-blocks, the high ones for odd).
fn decode_q4_k(row: &[u8], k0: usize, out: &mut [f32]) {
    // d (f16), dmin (f16), scales (12), qs (128)
    let bb = DType::Q4_K.block_bytes();
    let sb = k0 / QK_K;
    let b = &row[sb * bb..(sb + 1) * bb];
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let mut scales = [0u8; 12];
    scales.copy_from_slice(&b[4..16]);
    let j = (k0 % QK_K) / SPAN;
    let (sc, m) = get_scale_min_k4(j, &scales);
    let d1 = d * sc as f32;
    let m1 = dmin * m as f32;
    let qs = &b[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32];
    let shift = 4 * (j % 2);
    for (o, &q) in out.iter_mut().zip(qs) {
        *o = d1 * ((q >> shift) & 0xf) as f32 - m1;
    }
}

/// 32 values of a Q6_K super-block (two of its 16-value scale groups).
fn decode_q6_k(row: &[u8], k0: usize, out: &mut [f32]) {
    let sb = k0 / QK_K;
    let Some(b) = read_block::<BlockQ6K>(row, sb) else {
        // Past the row: a caller's bug, made loud rather than a plausible zero.
        out.fill(f32::NAN);
        return;
    };
    let d = b.d.to_f32();
    let base = k0 % QK_K;
    for (i, o) in out.iter_mut().enumerate() {
        let k = base + i;
        let q = q6k_value(&b, k) as i32 - 32;
        *o = d * b.scales[k / 16] as f32 * q as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrollama_tensor::quantize_row;
    use proptest::prelude::*;

    const TYPES: [DType; 10] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q6_K,
    ];

    fn rng(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 20001) as f32 / 10000.0 - 1.0
        }
    }

    /// A `[rows, cols]` matrix of `dtype` quantized from uniform values in ±1.
    fn matrix(dtype: DType, rows: usize, cols: usize, seed: u64) -> FrozenMatrix {
        let mut rnd = rng(seed);
        let rb = dtype.row_bytes(cols).expect("block multiple");
        let mut data = vec![0u8; rows * rb];
        let mut src = vec![0f32; cols];
        for dst in data.chunks_exact_mut(rb) {
            src.iter_mut().for_each(|v| *v = rnd());
            quantize_row(dtype, &src, dst).expect("quantize");
        }
        let t = Tensor::owned(dtype, rows, cols, data).expect("tensor");
        FrozenMatrix::new(&t).expect("frozen")
    }

    #[test]
    fn span_decoders_are_bit_exact_with_dequantize_row() {
        for dtype in TYPES {
            let cols = dtype.block_len().max(SPAN) * 3;
            let m = matrix(dtype, 3, cols, 5);
            let want = m.to_f32().expect("widen");
            for r in 0..3 {
                let row = m.row(r).expect("row");
                for k0 in (0..cols).step_by(SPAN) {
                    let mut got = [0f32; SPAN];
                    (m.decode)(row, k0, &mut got);
                    let w = &want[r * cols + k0..r * cols + k0 + SPAN];
                    assert!(
                        got.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{dtype} row {r} span {k0}: {got:?} vs {w:?}"
                    );
                }
            }
        }
    }

    /// `x · W'ᵀ` and `dy · W'` in f64 over `W' = ` the fully dequantized matrix, with
    /// `Σ |x| |w|` per output for the rounding bound.
    fn reference(
        w: &[f32],
        rows: usize,
        cols: usize,
        x: &[f32],
        dy: &[f32],
    ) -> [(Vec<f64>, Vec<f64>); 2] {
        let t = x.len() / cols;
        let (mut y, mut ya) = (vec![0.0; t * rows], vec![0.0; t * rows]);
        let (mut dx, mut dxa) = (vec![0.0; t * cols], vec![0.0; t * cols]);
        for tt in 0..t {
            for r in 0..rows {
                for c in 0..cols {
                    let wv = f64::from(w[r * cols + c]);
                    let xv = f64::from(x[tt * cols + c]);
                    let dv = f64::from(dy[tt * rows + r]);
                    y[tt * rows + r] += xv * wv;
                    ya[tt * rows + r] += (xv * wv).abs();
                    dx[tt * cols + c] += dv * wv;
                    dxa[tt * cols + c] += (dv * wv).abs();
                }
            }
        }
        [(y, ya), (dx, dxa)]
    }

    /// Both products against the f64 reference on the dequantized matrix. The frozen
    /// products are f32 sums of `k` exact-in-f32 products of the same decoded values, so
    /// they are within `γ_k · Σ|x||w|` with `γ_k = k·u / (1 - k·u)`, `u = 2⁻²⁴` (Higham,
    /// *Accuracy and Stability*, 3.1), plus the `dx` accumulation's one rounding.
    fn check(dtype: DType, rows: usize, cols: usize, t: usize, seed: u64, threads: usize) {
        let m = matrix(dtype, rows, cols, seed);
        let w = m.to_f32().expect("widen");
        let mut rnd = rng(seed ^ 0xabc);
        let x: Vec<f32> = (0..t * cols).map(|_| rnd()).collect();
        let dy: Vec<f32> = (0..t * rows).map(|_| rnd()).collect();
        let [(y, ya), (dx, dxa)] = reference(&w, rows, cols, &x, &dy);
        let pool = ThreadPool::new(threads);
        let mut got_y = vec![f32::NAN; t * rows];
        m.forward(&pool, &mut got_y, &x).expect("forward");
        let mut got_dx = vec![0.5f32; t * cols];
        m.backward_input(&pool, &mut got_dx, &dy).expect("backward");
        let u = f64::from(f32::EPSILON) / 2.0;
        let bound = |k: usize, abs: f64, v: f64| {
            let g = k as f64 * u / (1.0 - k as f64 * u);
            g * abs + 2.0 * u * (v.abs() + 0.5)
        };
        for (i, (&g, (&want, &abs))) in got_y.iter().zip(y.iter().zip(&ya)).enumerate() {
            let tol = bound(cols, abs, want);
            assert!(
                (f64::from(g) - want).abs() <= tol,
                "{dtype} forward {rows}x{cols} t{t} [{i}]: {g} vs {want} (tol {tol:e})"
            );
        }
        for (i, (&g, (&want, &abs))) in got_dx.iter().zip(dx.iter().zip(&dxa)).enumerate() {
            let want = want + 0.5;
            let tol = bound(rows + 1, abs, want);
            assert!(
                (f64::from(g) - want).abs() <= tol,
                "{dtype} backward {rows}x{cols} t{t} [{i}]: {g} vs {want} (tol {tol:e})"
            );
        }
    }

    #[test]
    fn every_type_matches_the_dequantized_product() {
        for dtype in TYPES {
            let bl = dtype.block_len();
            check(dtype, 37, bl * 2, 7, 1, 2);
            check(dtype, 70, bl.max(64), 50, 2, 1);
        }
    }

    #[test]
    fn long_reductions_are_split_and_summed() {
        // Forward and backward reductions both longer than KC_MAX, panels past 8 groups.
        check(DType::Q4_K, KC_MAX + 300, 3 * 256 + KC_MAX, 9, 3, 2);
        check(DType::F16, 2 * KC_MAX + 5, 40, 3, 4, 2);
    }

    #[test]
    fn float_rows_of_any_length_work() {
        for cols in [1, 31, 33, 95] {
            check(DType::F32, 5, cols, 4, 7, 2);
            check(DType::BF16, 33, cols, 2, 8, 1);
        }
    }

    #[test]
    fn wrong_lengths_and_formats_are_errors() {
        let m = matrix(DType::Q8_0, 4, 64, 1);
        let pool = ThreadPool::new(1);
        assert!(m.forward(&pool, &mut [0.0; 4], &[0.0; 63]).is_err());
        assert!(m.forward(&pool, &mut [0.0; 5], &[0.0; 64]).is_err());
        assert!(m.backward_input(&pool, &mut [0.0; 64], &[0.0; 5]).is_err());
        assert!(m.row_f32(4, &mut [0.0; 64]).is_err());
        let fp8 = Tensor::owned(DType::F8E4M3, 1, 4, vec![0; 8]).expect("tensor");
        let e = FrozenMatrix::new(&fp8).expect_err("fp8 refused");
        assert!(e.to_string().contains("ferrollama quantize"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn products_match_the_dequantized_reference(ti in 0usize..10, rows in 1usize..80,
                blocks in 1usize..4, t in 1usize..60, seed: u64, threads in 1usize..3) {
            let dtype = TYPES[ti];
            check(dtype, rows, dtype.block_len().max(SPAN) * blocks, t, seed, threads);
        }
    }
}
