//! Building blocks shared by the encoder networks (DeBERTa for Prompt Guard, BERT for
//! sentence embeddings): biased linear layers held as f32 panels or Q8_0, LayerNorm, the
//! exact GELU, and a safetensors loader that checks names and shapes.

use std::collections::HashMap;

use ferrollama_tensor::{
    DType, Epilogue, PackedF32, SyncSlice, ThreadPool, gelu_inplace, matmul,
    matmul_f32_packed_with, matmul_packed, quantize_acts, quantize_row,
};

use crate::error::{ModelError, Result};
use crate::weights::Tensor;

/// How the linear layers of the encoder are held. Embeddings, norms, biases, the pooler
/// and the classifier stay f32 in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// Every matrix as f32 (F16/BF16 files are widened): the reference numerics.
    F32,
    /// Encoder matrices quantized to ggml Q8_0 at load (8-bit, one f16 scale per 32),
    /// activations to Q8_0 per token: the VNNI integer kernels, about 4x less memory.
    Q8_0,
}

/// `y = x · weightᵀ + bias`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor, // (out, in)
    pub bias: Vec<f32>, // (out)
    /// F32 format: the weight repacked into 32-row panels for the f32 GEMM kernel, which
    /// the forward pass then uses instead of `weight`.
    pub panels: Option<PackedF32>,
}

/// Affine LayerNorm parameters.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Vec<f32>, // (hidden)
    pub bias: Vec<f32>,   // (hidden)
}

/// Tensors of one safetensors file by name, taken one by one with their shapes checked.
pub(crate) struct Loader {
    pub(crate) tensors: HashMap<String, Tensor>,
}

impl Loader {
    pub(crate) fn take(&mut self, name: &str, rows: usize, cols: usize) -> Result<Tensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| ModelError::Tensor {
                name: name.into(),
                what: "missing from model.safetensors".into(),
            })?;
        if (t.rows, t.cols) != (rows, cols) {
            return Err(ModelError::Tensor {
                name: name.into(),
                what: format!("shape [{}, {}], expected [{rows}, {cols}]", t.rows, t.cols),
            });
        }
        Ok(t)
    }

    pub(crate) fn vec(&mut self, name: &str, n: usize) -> Result<Vec<f32>> {
        self.take(name, 1, n)?.to_f32()
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A linear layer, weight widened to f32 (quantized later if asked).
    pub(crate) fn linear(&mut self, prefix: &str, out: usize, inp: usize) -> Result<Linear> {
        let w = self.take(&format!("{prefix}.weight"), out, inp)?;
        Ok(Linear {
            weight: to_f32(w)?,
            bias: self.vec(&format!("{prefix}.bias"), out)?,
            panels: None,
        })
    }

    pub(crate) fn norm(&mut self, prefix: &str, n: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.vec(&format!("{prefix}.weight"), n)?,
            bias: self.vec(&format!("{prefix}.bias"), n)?,
        })
    }
}

fn to_f32(t: Tensor) -> Result<Tensor> {
    if t.dtype == DType::F32 {
        return Ok(t);
    }
    let data = t.to_f32()?;
    Tensor::owned(DType::F32, t.rows, t.cols, f32_bytes(&data))
}

/// An owned f32 matrix.
pub(crate) fn f32_tensor(rows: usize, cols: usize, v: &[f32]) -> Result<Tensor> {
    Tensor::owned(DType::F32, rows, cols, f32_bytes(v))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Quantizes an f32 matrix to Q8_0 and adds the kernels' packed layout. Matrices whose
/// rows are not a whole number of 32-blocks stay f32.
fn quantize(l: &mut Linear) -> Result<()> {
    let (rows, cols) = (l.weight.rows, l.weight.cols);
    let Some(rb) = DType::Q8_0.row_bytes(cols) else {
        return Ok(());
    };
    let f = l.weight.to_f32()?;
    let mut data = vec![0u8; rb * rows];
    for (src, dst) in f.chunks_exact(cols).zip(data.chunks_exact_mut(rb)) {
        quantize_row(DType::Q8_0, src, dst)?;
    }
    let mut t = Tensor::owned(DType::Q8_0, rows, cols, data)?;
    t.pack()?;
    l.weight = t;
    Ok(())
}

impl Linear {
    /// Puts the weight in the form `format` runs on: f32 panels or Q8_0 packed.
    pub(crate) fn prepare(&mut self, format: WeightFormat) -> Result<()> {
        match format {
            WeightFormat::Q8_0 => quantize(self),
            WeightFormat::F32 => {
                let (rows, cols) = (self.weight.rows, self.weight.cols);
                self.panels = Some(PackedF32::pack(&self.weight.to_f32()?, rows, cols)?);
                Ok(())
            }
        }
    }
}

/// `out (n, rows) = x (n, cols) · weightᵀ + bias`: the f32 panel GEMM when the weight was
/// repacked, else activations quantized to the weight's dot format and the matmul kernels.
pub fn linear(
    pool: &ThreadPool,
    l: &Linear,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    acts: &mut Vec<u8>,
) -> Result<()> {
    linear_act(pool, l, x, n, out, acts, false)
}

/// [`linear`], then the exact GELU when `gelu` (fused into the GEMM's epilogue on the
/// f32 path).
pub fn linear_act(
    pool: &ThreadPool,
    l: &Linear,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    acts: &mut Vec<u8>,
    gelu: bool,
) -> Result<()> {
    let w = &l.weight;
    let out = &mut out[..n * w.rows];
    if let Some(p) = &l.panels {
        let epi = Epilogue {
            bias: Some(&l.bias),
            gelu,
            accumulate: false,
        };
        matmul_f32_packed_with(pool, p, &x[..n * w.cols], n, out, epi)?;
        return Ok(());
    }
    quantize_acts(w.dtype, &x[..n * w.cols], w.cols, acts)?;
    match &w.packed {
        Some(p) => matmul_packed(pool, p, acts, n, out)?,
        None => matmul(pool, w.dtype, w.data(), w.rows, w.cols, acts, n, out)?,
    }
    for row in out.chunks_exact_mut(w.rows) {
        add(row, &l.bias);
    }
    if gelu {
        gelu_inplace(out);
    }
    Ok(())
}

/// LayerNorm per row of `x` into `out`: `(x - mean) / sqrt(var + eps) * weight + bias`,
/// biased variance as torch.
pub fn layer_norm(out: &mut [f32], x: &[f32], norm: &LayerNorm, eps: f32) {
    let d = norm.weight.len();
    for (o, xr) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        norm_row(o, xr, None, norm, eps);
    }
}

/// The post-LN residual step `out = LayerNorm(y + residual)` over `n` rows, rows spread
/// over the pool (for a batch of long texts this is millions of elements per layer).
pub fn add_norm(
    pool: &ThreadPool,
    out: &mut [f32],
    y: &[f32],
    residual: &[f32],
    n: usize,
    norm: &LayerNorm,
    eps: f32,
) {
    let d = norm.weight.len();
    let (y, residual) = (&y[..n * d], &residual[..n * d]);
    let out = SyncSlice::new(&mut out[..n * d]);
    pool.run(&|t, nt| {
        let mut sum = vec![0.0f32; d];
        for r in n * t / nt..n * (t + 1) / nt {
            // SAFETY: rows are split disjointly between threads.
            let o = unsafe { out.slice_mut(r * d, d) };
            norm_row(
                o,
                &y[r * d..(r + 1) * d],
                Some((&residual[r * d..(r + 1) * d], &mut sum)),
                norm,
                eps,
            );
        }
    });
}

/// One row of LayerNorm of `x` (plus `residual`, summed into the scratch row first);
/// mean and variance accumulated in f64.
fn norm_row(
    o: &mut [f32],
    x: &[f32],
    residual: Option<(&[f32], &mut Vec<f32>)>,
    norm: &LayerNorm,
    eps: f32,
) {
    let d = norm.weight.len();
    let xr: &[f32] = match residual {
        Some((res, sum)) => {
            for ((s, &a), &b) in sum.iter_mut().zip(x).zip(res) {
                *s = a + b;
            }
            sum
        }
        None => x,
    };
    let mean = sum_f64(xr, 0.0, false) / d as f64;
    let var = sum_f64(xr, mean, true) / d as f64;
    let inv = 1.0 / (var + f64::from(eps)).sqrt();
    let (mean, inv) = (mean as f32, inv as f32);
    for (((o, &v), &g), &b) in o.iter_mut().zip(xr).zip(&norm.weight).zip(&norm.bias) {
        *o = (v - mean) * inv * g + b;
    }
}

/// `Σ (x - center)`, or its squares, in f64: in eight independent lanes, because a single
/// running float sum is a serial chain LLVM may not reorder.
fn sum_f64(x: &[f32], center: f64, square: bool) -> f64 {
    const L: usize = 8;
    let mut lanes = [0f64; L];
    let term = |v: f32| {
        let d = f64::from(v) - center;
        if square { d * d } else { d }
    };
    let mut chunks = x.chunks_exact(L);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += term(v);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| term(v)).sum();
    lanes.iter().sum::<f64>() + tail
}

pub fn add(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// transformers' `gelu`: the exact form `x/2 · (1 + erf(x/√2))` (the tensor crate's
/// vectorizable version).
pub use ferrollama_tensor::gelu_erf as gelu;
