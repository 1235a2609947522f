//! The DeBERTa-v2/v3 sequence classifier forward pass (HF
//! `DebertaV2ForSequenceClassification`, inference: dropout off, one unpadded sequence).

use std::path::Path;

use ferrollama_tensor::ThreadPool;

use super::attention::{Shape, attention};
use super::config::DebertaConfig;
use super::position::RelIndex;
use super::weights::DebertaWeights;
use crate::encoder::{WeightFormat, add, add_norm, gelu, layer_norm, linear, linear_act};
use crate::error::{ModelError, Result};

/// A loaded DeBERTa classifier.
#[derive(Debug)]
pub struct Deberta {
    pub config: DebertaConfig,
    pub weights: DebertaWeights,
    pub format: WeightFormat,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Deberta {
    /// Loads an HF folder: `config.json` (`model_type` `deberta-v2`) and
    /// `model.safetensors`.
    pub fn load(dir: &Path, format: WeightFormat) -> Result<Deberta> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
        let config = DebertaConfig::from_json(&text)
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", cfg_path.display())))?;
        let weights = DebertaWeights::load(&dir.join("model.safetensors"), &config, format)?;
        Ok(Deberta {
            config,
            weights,
            format,
        })
    }

    /// Class names in logit order (`id2label`; empty when the config has none).
    pub fn labels(&self) -> &[String] {
        &self.config.labels
    }

    /// Number of logits the classifier gives.
    pub fn n_labels(&self) -> usize {
        self.weights.classifier.weight.rows
    }

    /// Logits of one sequence `ids` (with its own `[CLS]` .. `[SEP]`).
    pub fn forward(&self, ids: &[u32], pool: &ThreadPool) -> Result<Vec<f32>> {
        let cfg = &self.config;
        let w = &self.weights;
        let n = ids.len();
        if n == 0 {
            return Err(ModelError::Invalid("DeBERTa: empty input".into()));
        }
        if n > cfg.max_position_embeddings {
            return Err(ModelError::Invalid(format!(
                "DeBERTa: {n} tokens exceed max_position_embeddings {}",
                cfg.max_position_embeddings
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            return Err(ModelError::Invalid(format!(
                "DeBERTa: token id {bad} is outside the vocabulary of {}",
                cfg.vocab_size
            )));
        }
        let (h, inter, heads, hd) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_attention_heads,
            cfg.head_dim(),
        );
        let eps = cfg.layer_norm_eps;

        // Embeddings: word (+ absolute position, + token type 0 in v2), LayerNorm.
        let mut x = vec![0.0f32; n * h]; // (n, hidden)
        let mut tmp = vec![0.0f32; n * h.max(inter)];
        for (i, &id) in ids.iter().enumerate() {
            let row = &mut tmp[i * h..(i + 1) * h];
            w.word_embeddings.row_f32(id as usize, row)?;
            if let Some(pe) = &w.position_embeddings {
                let mut p = vec![0.0; h];
                pe.row_f32(i, &mut p)?;
                add(row, &p);
            }
            if let Some(tt) = &w.token_type {
                add(row, tt);
            }
        }
        layer_norm(&mut x, &tmp[..n * h], &w.embeddings_norm, eps); // (n, hidden)

        let rel = cfg.relative_attention.then(|| {
            let buckets = cfg.position_buckets;
            RelIndex::new(n, cfg.att_span(), buckets, cfg.max_relative() as i64)
        });
        let scale = 1.0 / ((hd * cfg.scale_factor()) as f32).sqrt();
        let mut q = vec![0.0f32; n * h]; // (n, hidden)
        let mut k = vec![0.0f32; n * h]; // (n, hidden)
        let mut v = vec![0.0f32; n * h]; // (n, hidden)
        let mut ctx = vec![0.0f32; n * h]; // (n, hidden)
        let mut a = vec![0.0f32; n * h]; // (n, hidden)
        let mut ff = vec![0.0f32; n * inter]; // (n, intermediate)
        let mut acts = Vec::new();
        let n_layers = w.layers.len();
        for (li, layer) in w.layers.iter().enumerate() {
            // The pooler reads only [CLS]: the last layer's queries and everything after
            // attention are needed for token 0 only.
            let nq = if li + 1 == n_layers { 1 } else { n };
            linear(pool, &layer.query_proj, &x, nq, &mut q, &mut acts)?; // (nq, hidden)
            linear(pool, &layer.key_proj, &x, n, &mut k, &mut acts)?; // (n, hidden)
            linear(pool, &layer.value_proj, &x, n, &mut v, &mut acts)?; // (n, hidden)
            q[..nq * h].iter_mut().for_each(|e| *e *= scale);
            let sh = Shape {
                nq,
                n,
                hidden: h,
                heads,
                hd,
            };
            attention(pool, cfg, layer, rel.as_ref(), sh, &q, &k, &v, &mut ctx); // (nq, hidden)
            linear(pool, &layer.attention_output, &ctx, nq, &mut tmp, &mut acts)?; // (nq, hidden)
            add_norm(pool, &mut a, &tmp, &x, nq, &layer.attention_norm, eps); // (nq, hidden)
            linear_act(pool, &layer.intermediate, &a, nq, &mut ff, &mut acts, true)?; // gelu (nq, intermediate)
            linear(pool, &layer.output, &ff, nq, &mut tmp, &mut acts)?; // (nq, hidden)
            add_norm(pool, &mut x, &tmp, &a, nq, &layer.output_norm, eps); // (nq, hidden)
        }

        // ContextPooler: [CLS] → dense → gelu; classifier → logits.
        let mut pooled = vec![0.0f32; h]; // (hidden)
        linear(pool, &w.pooler, &x[..h], 1, &mut pooled, &mut acts)?;
        pooled.iter_mut().for_each(|e| *e = gelu(*e));
        let mut logits = vec![0.0f32; w.classifier.weight.rows]; // (labels)
        linear(pool, &w.classifier, &pooled, 1, &mut logits, &mut acts)?;
        Ok(logits)
    }
}
