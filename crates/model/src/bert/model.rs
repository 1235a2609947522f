//! The BERT encoder forward pass (transformers' `BertModel`, inference: dropout off), over
//! a batch of sequences laid end to end with no padding.

use std::path::Path;

use ferrollama_tensor::ThreadPool;

use super::attention::attention;
use super::config::BertConfig;
use super::weights::BertWeights;
use crate::encoder::{WeightFormat, add, add_norm, layer_norm, linear, linear_act};
use crate::error::{ModelError, Result};

/// A loaded BERT-family encoder.
#[derive(Debug)]
pub struct Bert {
    pub config: BertConfig,
    pub weights: BertWeights,
    pub format: WeightFormat,
}

impl Bert {
    /// Loads `config.json` and `model.safetensors` of an HF folder.
    pub fn load(dir: &Path, format: WeightFormat) -> Result<Bert> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| ModelError::Io {
            path: cfg_path.clone(),
            source,
        })?;
        let config = BertConfig::from_json(&text)
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", cfg_path.display())))?;
        let weights = BertWeights::load(&dir.join("model.safetensors"), &config, format)?;
        Ok(Bert {
            config,
            weights,
            format,
        })
    }

    /// The last hidden states of every token of every sequence, sequences end to end:
    /// `hidden` becomes (Σ len, hidden_size). Each sequence carries its own special tokens
    /// (`[CLS]` .. `[SEP]`); sequences do not see each other.
    pub fn forward(&self, seqs: &[&[u32]], pool: &ThreadPool, hidden: &mut Vec<f32>) -> Result<()> {
        let cfg = &self.config;
        let w = &self.weights;
        let mut spans = Vec::with_capacity(seqs.len());
        let mut total = 0;
        for ids in seqs {
            if ids.is_empty() {
                return Err(ModelError::Invalid("BERT: empty input sequence".into()));
            }
            if ids.len() > cfg.max_tokens() {
                return Err(ModelError::Invalid(format!(
                    "BERT: {} tokens exceed the model's {} positions",
                    ids.len(),
                    cfg.max_tokens()
                )));
            }
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
                return Err(ModelError::Invalid(format!(
                    "BERT: token id {bad} is outside the vocabulary of {}",
                    cfg.vocab_size
                )));
            }
            spans.push((total, ids.len()));
            total += ids.len();
        }
        let (h, inter, heads, hd) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_attention_heads,
            cfg.head_dim(),
        );
        let n = total;
        let eps = cfg.layer_norm_eps;

        // Embeddings: word + absolute position + token type 0, LayerNorm.
        let mut tmp = vec![0.0f32; n * h.max(inter)];
        let mut pos = vec![0.0f32; h];
        for (ids, &(start, _)) in seqs.iter().zip(&spans) {
            for (i, &id) in ids.iter().enumerate() {
                let row = &mut tmp[(start + i) * h..(start + i + 1) * h];
                w.word_embeddings.row_f32(id as usize, row)?;
                w.position_embeddings
                    .row_f32(cfg.position_offset + i, &mut pos)?;
                add(row, &pos);
                add(row, &w.token_type);
            }
        }
        hidden.clear();
        hidden.resize(n * h, 0.0);
        let x = hidden; // (n, hidden)
        layer_norm(x, &tmp[..n * h], &w.embeddings_norm, eps);

        let mut qkv = vec![0.0f32; n * 3 * h]; // (n, 3 hidden)
        let mut ctx = vec![0.0f32; n * h]; // (n, hidden)
        let mut a = vec![0.0f32; n * h]; // (n, hidden)
        let mut ff = vec![0.0f32; n * inter]; // (n, intermediate)
        let mut acts = Vec::new();
        for layer in &w.layers {
            linear(pool, &layer.qkv, x, n, &mut qkv, &mut acts)?; // (n, 3 hidden)
            attention(pool, &spans, heads, hd, &qkv, &mut ctx); // (n, hidden)
            linear(pool, &layer.attention_output, &ctx, n, &mut tmp, &mut acts)?; // (n, hidden)
            add_norm(pool, &mut a, &tmp, x, n, &layer.attention_norm, eps); // (n, hidden)
            linear_act(pool, &layer.intermediate, &a, n, &mut ff, &mut acts, true)?; // gelu (n, intermediate)
            linear(pool, &layer.output, &ff, n, &mut tmp, &mut acts)?; // (n, hidden)
            add_norm(pool, x, &tmp, &a, n, &layer.output_norm, eps); // (n, hidden)
        }
        Ok(())
    }
}
