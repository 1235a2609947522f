//! Reading trainable parameters from a safetensors file with Meta's tensor names
//! (`tok_embeddings.weight`, `layers.N.attention.wq.weight`, ...): the initial weights of
//! the PyTorch-pinned tests, and later checkpoints.

use std::path::Path;

use ferrollama_model::LlamaConfig;
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
        let t = st
            .tensor(&name)
            .map_err(|_| err(format!("tensor {name} is missing")))?;
        let n: usize = t.shape().iter().product();
        if n != dst.len() {
            return Err(err(format!(
                "tensor {name} has shape {:?}: {} values, the model needs {}",
                t.shape(),
                n,
                dst.len()
            )));
        }
        let data = t.data();
        match t.dtype() {
            Dtype::F32 => {
                for (d, b) in dst.iter_mut().zip(data.chunks_exact(4)) {
                    *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            Dtype::F16 => {
                for (d, b) in dst.iter_mut().zip(data.chunks_exact(2)) {
                    *d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            Dtype::BF16 => {
                for (d, b) in dst.iter_mut().zip(data.chunks_exact(2)) {
                    *d = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            other => {
                return Err(err(format!(
                    "tensor {name} is {other:?}; F32, F16 or BF16 expected"
                )));
            }
        }
    }
    Ok(p)
}
