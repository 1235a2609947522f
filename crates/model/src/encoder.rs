//! Building blocks shared by the encoder networks (DeBERTa for Prompt Guard, BERT for
//! sentence embeddings): biased linear layers held as f32 panels or Q8_0, LayerNorm, the
//! exact GELU, and a safetensors loader that checks names and shapes.

use std::collections::HashMap;

use ferrollama_tensor::{
    DType, PackedF32, ThreadPool, matmul, matmul_f32_packed, matmul_packed, quantize_acts,
    quantize_row,
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
    let w = &l.weight;
    let out = &mut out[..n * w.rows];
    if let Some(p) = &l.panels {
        matmul_f32_packed(pool, p, &x[..n * w.cols], n, out)?;
    } else {
        quantize_acts(w.dtype, &x[..n * w.cols], w.cols, acts)?;
        match &w.packed {
            Some(p) => matmul_packed(pool, p, acts, n, out)?,
            None => matmul(pool, w.dtype, w.data(), w.rows, w.cols, acts, n, out)?,
        }
    }
    for row in out.chunks_exact_mut(w.rows) {
        add(row, &l.bias);
    }
    Ok(())
}

/// LayerNorm per row of `x` into `out`: `(x - mean) / sqrt(var + eps) * weight + bias`,
/// biased variance as torch.
pub fn layer_norm(out: &mut [f32], x: &[f32], norm: &LayerNorm, eps: f32) {
    let d = norm.weight.len();
    for (o, xr) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let mean = xr.iter().map(|&v| f64::from(v)).sum::<f64>() / d as f64;
        let var = xr
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / d as f64;
        let inv = 1.0 / (var + f64::from(eps)).sqrt();
        let (mean, inv) = (mean as f32, inv as f32);
        for (((o, &v), &g), &b) in o.iter_mut().zip(xr).zip(&norm.weight).zip(&norm.bias) {
            *o = (v - mean) * inv * g + b;
        }
    }
}

pub fn add(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// transformers' `gelu`: the exact form `x/2 · (1 + erf(x/√2))`.
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf from Numerical Recipes' Chebyshev fit of erfc (fractional error below 1.2e-7),
/// evaluated in f32: enough for f32 activations, and the FFN calls it for every element.
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_2 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 { 1.0 - erfc } else { erfc - 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // erf(0.5), erf(1), erf(2) to 9 digits; odd.
        for (x, want) in [
            (0.5f32, 0.520_499_878_f64),
            (1.0, 0.842_700_793),
            (2.0, 0.995_322_265),
        ] {
            assert!(
                (f64::from(erf(x)) - want).abs() < 3e-7,
                "erf({x}) = {}",
                erf(x)
            );
            assert!((f64::from(erf(-x)) + want).abs() < 3e-7);
        }
        assert!(erf(0.0).abs() < 3e-7);
    }
}
