//! Trained parameters back into the model crate's [`Weights`], so the model crate's GGUF
//! writer (`ferrollama_model::export::write_gguf`) writes the fine-tuned model with the same
//! tensor names, layout and metadata the engine loads: training never writes its own GGUF.

use ferrollama_model::{Layer, LlamaConfig, Tensor, Weights};
use ferrollama_tensor::DType;

use crate::error::{Result, TrainError};
use crate::params::Params;

/// `p` as owned F32 [`Weights`] shaped by `cfg`. `rope_freqs` is the base model's (kept as
/// loaded: training does not change RoPE). A tied model stays tied: `output` shares the
/// embedding tensor, which the writer recognizes and does not store twice.
pub fn to_weights(
    p: &Params<f32>,
    cfg: &LlamaConfig,
    rope_freqs: Option<Vec<f32>>,
) -> Result<Weights> {
    let m = |name: &str, v: &[f32], rows: usize, cols: usize| -> Result<Tensor> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::owned(DType::F32, rows, cols, bytes).map_err(|e| TrainError::Weights {
            path: "trained model".into(),
            what: format!("{name}: {e}"),
        })
    };
    let (d, q, kv, ff, vocab) = (
        cfg.dim,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.ffn_dim,
        cfg.vocab_size,
    );
    let tok_embeddings = m("tok_embeddings", &p.tok_embeddings, vocab, d)?;
    let mut layers = Vec::with_capacity(p.layers.len());
    for l in &p.layers {
        layers.push(Layer {
            attention_norm: l.attention_norm.clone(),
            wq: m("wq", &l.wq, q, d)?,
            wk: m("wk", &l.wk, kv, d)?,
            wv: m("wv", &l.wv, kv, d)?,
            wo: m("wo", &l.wo, d, q)?,
            ffn_norm: l.ffn_norm.clone(),
            w1: m("w1", &l.w1, ff, d)?,
            w2: m("w2", &l.w2, d, ff)?,
            w3: m("w3", &l.w3, ff, d)?,
            bq: None,
            bk: None,
            bv: None,
        });
    }
    let output = match &p.output {
        Some(o) => m("output", o, vocab, d)?,
        None => tok_embeddings.clone(),
    };
    Ok(Weights {
        tok_embeddings,
        layers,
        norm: p.norm.clone(),
        output,
        rope_freqs,
    })
}
