//! Opening any supported model source (GGUF file, Hugging Face folder, Meta checkpoint)
//! for the commands that rewrite models.

use std::path::Path;

use anyhow::{Context, Result};
use ferrollama_model::gguf::Value;
use ferrollama_model::{LlamaConfig, Weights};
use ferrollama_tensor::DType;

/// A model read for conversion.
#[derive(Debug)]
pub struct Source {
    pub config: LlamaConfig,
    pub weights: Weights,
    pub tokenizer: Vec<(String, Value)>,
    pub name: Option<String>,
}

impl Source {
    /// Names of the quantized (non-float) types among the source's matrices.
    pub fn quantized_types(&self) -> Vec<String> {
        let w = &self.weights;
        let mut all = vec![w.tok_embeddings.dtype, w.output.dtype];
        for l in &w.layers {
            all.extend([
                l.wq.dtype, l.wk.dtype, l.wv.dtype, l.wo.dtype, l.w1.dtype, l.w2.dtype, l.w3.dtype,
            ]);
        }
        let mut names: Vec<String> = all
            .into_iter()
            .filter(|d| !matches!(d, DType::F32 | DType::F16 | DType::BF16))
            .map(|d| d.name().to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

pub fn open_source(path: &Path) -> Result<Source> {
    let m = ferrollama_model::import::open(path)
        .with_context(|| format!("cannot read model {}", path.display()))?;
    tracing::info!(kind = ?m.kind, path = %path.display(), "opened model");
    Ok(Source {
        config: m.config,
        weights: m.weights,
        tokenizer: m.tokenizer,
        name: m
            .name
            .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned())),
    })
}
