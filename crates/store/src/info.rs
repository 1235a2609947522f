//! What `models show` says about a GGUF file, from its header alone.
//!
//! The file is memory-mapped and only its header and tensor descriptors are read, so this
//! is instant even for a large model. Parameter count is the sum of tensor element
//! counts; quantization is given twice: llama.cpp's declared `general.file_type` and the
//! actual mix of tensor types.

use std::collections::BTreeMap;
use std::path::Path;

use ferrollama_model::LlamaConfig;
use ferrollama_model::gguf::{GgufFile, MetadataExt};
use serde::Serialize;

use crate::error::Result;

/// Summary of a GGUF header.
#[derive(Debug, Clone, Serialize)]
pub struct GgufSummary {
    pub gguf_version: u32,
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub model_name: Option<String>,
    pub parameters: u64,
    /// `general.file_type` as llama.cpp names it (`Q4_K_M`, ...).
    pub file_type: Option<String>,
    /// Tensor type → number of tensors of that type.
    pub tensor_types: BTreeMap<String, usize>,
    pub tensors: usize,
    /// The Llama shape, for the architectures ferrollama runs (`llama`, `qwen2`).
    pub llama: Option<LlamaShape>,
}

/// The shape of a Llama model, from its metadata.
#[derive(Debug, Clone, Serialize)]
pub struct LlamaShape {
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rope_theta: f32,
}

/// llama.cpp's `llama_ftype` names (`general.file_type`).
fn ftype_name(t: u64) -> Option<&'static str> {
    Some(match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        _ => return None,
    })
}

/// Reads the header of the GGUF file at `path`.
pub fn gguf_summary(path: &Path) -> Result<GgufSummary> {
    let f = GgufFile::open(path)?;
    let mut tensor_types = BTreeMap::new();
    let mut parameters = 0u64;
    for t in &f.tensors {
        *tensor_types
            .entry(t.dtype.name().to_ascii_uppercase())
            .or_insert(0) += 1;
        parameters = parameters.saturating_add(t.n_elements() as u64);
    }
    let architecture = f.get_str("general.architecture")?.map(str::to_string);
    // Every architecture the forward pass runs has the Llama shape (Qwen2 included).
    let runnable = |a: &str| ferrollama_model::Arch::from_name(a).is_ok();
    let llama = if architecture.as_deref().is_none_or(runnable) {
        // Best effort: a header too incomplete for a config still gets a summary.
        LlamaConfig::from_gguf(&f).ok().map(|c| LlamaShape {
            dim: c.dim,
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            ffn_dim: c.ffn_dim,
            vocab_size: c.vocab_size,
            context_length: c.max_seq_len,
            rope_theta: c.rope_theta,
        })
    } else {
        None
    };
    Ok(GgufSummary {
        gguf_version: f.version,
        architecture,
        model_name: f.get_str("general.name")?.map(str::to_string),
        parameters,
        file_type: f
            .get_u64("general.file_type")?
            .map(|t| ftype_name(t).map_or_else(|| format!("type {t}"), str::to_string)),
        tensor_types,
        tensors: f.tensors.len(),
        llama,
    })
}
