//! Reading trainable parameters from a safetensors file with Meta's tensor names
//! (`tok_embeddings.weight`, `layers.N.attention.wq.weight`, ...): the initial weights of
//! the PyTorch-pinned tests, and later checkpoints.

use std::path::Path;

use ferrollama_model::{LlamaConfig, Weights};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Result, TrainError};
use crate::params::Params;

/// Loads every tensor of `Params` for `cfg` from `path` (F32, F16 or BF16 tensors). The
/// model is tied when the file has no `output.weight`. Missing tensors, wrong shapes and
/// tensors the model does not have are errors.
pub fn load_params(path: &Path, cfg: &LlamaConfig) -> Result<Params<f32>> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| TrainError::Io {
        path: shown.clone(),
        source,
    })?;
    let err = |what: String| TrainError::Weights {
        path: shown.clone(),
        what,
    };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| err(format!("not safetensors: {e}")))?;
    let tied = !st.names().contains(&"output.weight");
    let mut p = Params::<f32>::zeros(cfg, tied);
    let names: Vec<String> = p.tensors().into_iter().map(|t| t.0).collect();
    for name in st.names() {
        if !names.iter().any(|n| n == name) {
            return Err(err(format!(
                "tensor {name} is not a parameter of this model"
            )));
        }
    }
    for (name, dst) in p.tensors_mut() {
        *dst = tensor_f32(&st, &name, dst.len()).map_err(err)?;
    }
    Ok(p)
}

/// Tensor `name` of `st` widened to f32 (F32, F16 or BF16), checked to hold `n` values.
/// The error says what is wrong, for the caller to attach the file's path.
pub(crate) fn tensor_f32(
    st: &SafeTensors<'_>,
    name: &str,
    n: usize,
) -> std::result::Result<Vec<f32>, String> {
    let t = st
        .tensor(name)
        .map_err(|_| format!("tensor {name} is missing"))?;
    let count: usize = t.shape().iter().product();
    if count != n {
        return Err(format!(
            "tensor {name} has shape {:?}: {count} values, the model needs {n}",
            t.shape()
        ));
    }
    let d = t.data();
    Ok(match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(format!(
                "tensor {name} is {other:?}; F32, F16 or BF16 expected"
            ));
        }
    })
}

/// A loaded model's weights (any dtype the engine reads: F16, BF16, Q8_0, Q4_K, ...)
/// widened to f32 trainable parameters, and the RoPE divisors to train with (the GGUF's
/// `rope_freqs`, else the config's Llama 3.1 scaling). Full fine-tuning keeps these as its
/// f32 master weights. Models with q/k/v biases (Qwen2) are refused for now.
pub fn params_from_weights(w: &Weights, cfg: &LlamaConfig) -> Result<(Params<f32>, Vec<f32>)> {
    let err = |what: String| TrainError::Weights {
        path: "model".into(),
        what,
    };
    let f = |t: &ferrollama_model::Tensor, name: &str| {
        t.to_f32()
            .map_err(|e| err(format!("{name}: cannot widen to f32: {e}")))
    };
    let tied = w.output.same_data(&w.tok_embeddings);
    let mut p = Params::<f32>::zeros(cfg, tied);
    p.tok_embeddings = f(&w.tok_embeddings, "tok_embeddings")?;
    for (i, (dst, l)) in p.layers.iter_mut().zip(&w.layers).enumerate() {
        if l.bq.is_some() || l.bk.is_some() || l.bv.is_some() {
            return Err(err(format!(
                "layer {i} has q/k/v biases (Qwen2): training them is not supported yet"
            )));
        }
        dst.attention_norm = l.attention_norm.clone();
        dst.wq = f(&l.wq, "wq")?;
        dst.wk = f(&l.wk, "wk")?;
        dst.wv = f(&l.wv, "wv")?;
        dst.wo = f(&l.wo, "wo")?;
        dst.ffn_norm = l.ffn_norm.clone();
        dst.w1 = f(&l.w1, "w1")?;
        dst.w2 = f(&l.w2, "w2")?;
        dst.w3 = f(&l.w3, "w3")?;
    }
    p.norm = w.norm.clone();
    if !tied {
        p.output = Some(f(&w.output, "output")?);
    }
    // Shapes must be what the config says (a loader bug would show here, not as garbage).
    let want = Params::<f32>::zeros(cfg, tied);
    for ((name, a), (_, b)) in p.tensors().into_iter().zip(want.tensors()) {
        if a.len() != b.len() {
            return Err(err(format!(
                "{name}: {} values, the config needs {}",
                a.len(),
                b.len()
            )));
        }
    }
    let divisors = match (&w.rope_freqs, cfg.rope_scaling) {
        (Some(f), _) => f.clone(),
        (None, Some(s)) => s.freq_divisors(cfg.rope_dims, cfg.rope_theta),
        (None, None) => Vec::new(),
    };
    Ok((p, divisors))
}

/// `w` with every matrix (embeddings, output, projections) stored as `dtype`, each
/// dequantized row by row and quantized again with the ggml reference quantizers
/// (`quantize_row`), rows split across `pool`: a model in another base type without
/// writing a file (the frozen-base tests and benchmarks; `ferrollama quantize` writes
/// the mixtures llama.cpp uses). A matrix whose rows are not whole blocks of `dtype`
/// takes llama.cpp's fallback type instead (`export::fallback`: Q4_K → Q5_0 for
/// SmolLM2's 576-wide rows). A tied output stays tied. Norms are unchanged.
pub fn convert_weights(
    w: &Weights,
    dtype: ferrollama_tensor::DType,
    pool: &ferrollama_tensor::ThreadPool,
) -> Result<Weights> {
    use ferrollama_model::Tensor;
    use ferrollama_tensor::{SyncSlice, quantize_row};
    let err = |what: String| TrainError::Weights {
        path: "model".into(),
        what,
    };
    let convert = |t: &Tensor| -> Result<Tensor> {
        // Rows that are not whole blocks of `dtype` fall back as llama.cpp's quantizer does.
        let dtype = match dtype.row_bytes(t.cols) {
            Some(_) => dtype,
            None => ferrollama_model::export::fallback(dtype, t.cols),
        };
        let rb = dtype.row_bytes(t.cols).ok_or_else(|| {
            err(format!(
                "rows of {} values are not a whole number of {dtype} blocks",
                t.cols
            ))
        })?;
        let mut data = vec![0u8; rb * t.rows];
        let failed = std::sync::Mutex::new(None);
        {
            let out = SyncSlice::new(&mut data);
            pool.run(&|i, n| {
                let mut row = vec![0f32; t.cols];
                for r in t.rows * i / n..t.rows * (i + 1) / n {
                    // SAFETY: rows t.rows·i/n .. t.rows·(i+1)/n are this thread's alone.
                    let dst = unsafe { out.slice_mut(r * rb, rb) };
                    let done = t
                        .row_f32(r, &mut row)
                        .map_err(|e| e.to_string())
                        .and_then(|()| quantize_row(dtype, &row, dst).map_err(|e| e.to_string()));
                    if let Err(e) = done {
                        *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return;
                    }
                }
            });
        }
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(err(format!("converting to {dtype}: {e}")));
        }
        Tensor::owned(dtype, t.rows, t.cols, data).map_err(|e| err(e.to_string()))
    };
    let tied = w.output.same_data(&w.tok_embeddings);
    let mut out = w.clone();
    out.tok_embeddings = convert(&w.tok_embeddings)?;
    out.output = if tied {
        out.tok_embeddings.clone()
    } else {
        convert(&w.output)?
    };
    for (dst, l) in out.layers.iter_mut().zip(&w.layers) {
        dst.wq = convert(&l.wq)?;
        dst.wk = convert(&l.wk)?;
        dst.wv = convert(&l.wv)?;
        dst.wo = convert(&l.wo)?;
        dst.w1 = convert(&l.w1)?;
        dst.w2 = convert(&l.w2)?;
        dst.w3 = convert(&l.w3)?;
    }
    Ok(out)
}
