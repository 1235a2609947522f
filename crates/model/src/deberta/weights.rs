//! DeBERTa weights from a Hugging Face `model.safetensors`, under HF's own module names
//! (they are DeBERTa's reference names), and the per-layer position projections that
//! depend on weights only, computed once at load.

use std::path::Path;

use ferrollama_tensor::{ATT_TILE, ThreadPool};

use super::config::DebertaConfig;
pub use crate::encoder::{LayerNorm, Linear, WeightFormat};
use crate::encoder::{Loader, layer_norm, linear};
use crate::error::{ModelError, Result};
use crate::weights::Tensor;

/// One encoder layer (`deberta.encoder.layer.N`).
#[derive(Debug, Clone)]
pub struct DebertaLayer {
    pub query_proj: Linear,        // (hidden, hidden)
    pub key_proj: Linear,          // (hidden, hidden)
    pub value_proj: Linear,        // (hidden, hidden)
    pub attention_output: Linear,  // (hidden, hidden)  attention.output.dense
    pub attention_norm: LayerNorm, // attention.output.LayerNorm
    pub intermediate: Linear,      // (intermediate, hidden)
    pub output: Linear,            // (hidden, intermediate)
    pub output_norm: LayerNorm,    // output.LayerNorm
    /// c2p keys of the relative embeddings, `key_proj(rel)` (or `pos_key_proj`), per head
    /// as transposed tiles of 16 positions: (heads, 2 span / 16, head_dim, 16). Empty
    /// without c2p.
    pub pos_key: Vec<f32>,
    /// p2c queries `query_proj(rel)` (or `pos_query_proj`), times the score scale
    /// `1 / sqrt(head_dim * scale_factor)`, same layout. Empty without p2c.
    pub pos_query: Vec<f32>,
}

/// All weights of `DebertaV2ForSequenceClassification`.
#[derive(Debug, Clone)]
pub struct DebertaWeights {
    pub word_embeddings: Tensor,             // (vocab, hidden), as stored
    pub position_embeddings: Option<Tensor>, // (max_position, hidden), v2 only
    pub token_type: Option<Vec<f32>>,        // (hidden): row 0 (type ids are all 0)
    pub embeddings_norm: LayerNorm,
    pub layers: Vec<DebertaLayer>,
    pub pooler: Linear,     // (hidden, hidden)
    pub classifier: Linear, // (labels, hidden)
}

/// Tiles of 16 positions in the `2 span` relative rows.
pub fn pos_tiles(span: usize) -> usize {
    (2 * span).div_ceil(ATT_TILE)
}

impl DebertaWeights {
    /// Reads `model.safetensors` of an HF folder against `cfg`. F32/F16/BF16 tensors;
    /// `deberta.` prefixes as `DebertaV2ForSequenceClassification` saves them.
    pub fn load(path: &Path, cfg: &DebertaConfig, format: WeightFormat) -> Result<DebertaWeights> {
        let tensors = crate::safetensors::map_file(path)?;
        let mut ld = Loader {
            tensors: tensors.into_iter().collect(),
        };
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let n_labels = cfg.labels.len().max(1);
        let classifier_rows = match ld.tensors.get("classifier.weight") {
            Some(t) if cfg.labels.is_empty() => t.rows,
            _ => n_labels,
        };
        let word_embeddings = ld.take(
            "deberta.embeddings.word_embeddings.weight",
            cfg.vocab_size,
            h,
        )?;
        let position_embeddings = if cfg.position_biased_input {
            Some(ld.take(
                "deberta.embeddings.position_embeddings.weight",
                cfg.max_position_embeddings,
                h,
            )?)
        } else {
            None
        };
        let token_type = if cfg.type_vocab_size > 0 {
            let t = ld.take(
                "deberta.embeddings.token_type_embeddings.weight",
                cfg.type_vocab_size,
                h,
            )?;
            let mut row = vec![0.0; h];
            t.row_f32(0, &mut row)?;
            Some(row)
        } else {
            None
        };
        let embeddings_norm = ld.norm("deberta.embeddings.LayerNorm", h)?;

        // Relative embeddings, normed once (HF `get_rel_embedding`), first 2 span rows.
        let span = cfg.att_span();
        let rel = if cfg.relative_attention {
            let t = ld.take("deberta.encoder.rel_embeddings.weight", 2 * span, h)?;
            let mut rel = t.to_f32()?;
            if cfg.norm_rel_ebd {
                let n = ld.norm("deberta.encoder.LayerNorm", h)?;
                let src = rel.clone();
                layer_norm(&mut rel, &src, &n, cfg.layer_norm_eps);
            }
            Some(rel) // (2 span, hidden)
        } else {
            None
        };

        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = ThreadPool::new(threads);
        let hd = cfg.head_dim();
        let score_scale = 1.0 / ((hd * cfg.scale_factor()) as f32).sqrt();
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("deberta.encoder.layer.{i}");
            let mut layer = DebertaLayer {
                query_proj: ld.linear(&format!("{p}.attention.self.query_proj"), h, h)?,
                key_proj: ld.linear(&format!("{p}.attention.self.key_proj"), h, h)?,
                value_proj: ld.linear(&format!("{p}.attention.self.value_proj"), h, h)?,
                attention_output: ld.linear(&format!("{p}.attention.output.dense"), h, h)?,
                attention_norm: ld.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                intermediate: ld.linear(&format!("{p}.intermediate.dense"), inter, h)?,
                output: ld.linear(&format!("{p}.output.dense"), h, inter)?,
                output_norm: ld.norm(&format!("{p}.output.LayerNorm"), h)?,
                pos_key: Vec::new(),
                pos_query: Vec::new(),
            };
            if let Some(rel) = &rel {
                let (key, query) = if cfg.share_att_key {
                    (None, None)
                } else {
                    let k = format!("{p}.attention.self.pos_key_proj");
                    let q = format!("{p}.attention.self.pos_query_proj");
                    let k = if cfg.c2p && ld.has(&format!("{k}.weight")) {
                        Some(ld.linear(&k, h, h)?)
                    } else {
                        None
                    };
                    let q = if cfg.p2c {
                        Some(ld.linear(&q, h, h)?)
                    } else {
                        None
                    };
                    (k, q)
                };
                if cfg.c2p {
                    let k = match &key {
                        Some(k) => k,
                        None if cfg.share_att_key => &layer.key_proj,
                        None => {
                            return Err(ModelError::Tensor {
                                name: format!("{p}.attention.self.pos_key_proj.weight"),
                                what: "missing (share_att_key is false and c2p is on)".into(),
                            });
                        }
                    };
                    layer.pos_key = pos_tiles_of(&pool, k, rel, cfg, 1.0)?;
                }
                if cfg.p2c {
                    let q = query.as_ref().unwrap_or(&layer.query_proj);
                    layer.pos_query = pos_tiles_of(&pool, q, rel, cfg, score_scale)?;
                }
            }
            for l in [
                &mut layer.query_proj,
                &mut layer.key_proj,
                &mut layer.value_proj,
                &mut layer.attention_output,
                &mut layer.intermediate,
                &mut layer.output,
            ] {
                l.prepare(format)?;
            }
            layers.push(layer);
        }
        let pooler = ld.linear("pooler.dense", h, h)?;
        let classifier = ld.linear("classifier", classifier_rows, h)?;
        Ok(DebertaWeights {
            word_embeddings,
            position_embeddings,
            token_type,
            embeddings_norm,
            layers,
            pooler,
            classifier,
        })
    }
}

/// `proj(rel) * scale` (2 span, hidden) laid out per head as transposed 16-row tiles:
/// (heads, tiles, head_dim, 16), rows past 2 span zero.
fn pos_tiles_of(
    pool: &ThreadPool,
    proj: &Linear,
    rel: &[f32],
    cfg: &DebertaConfig,
    scale: f32,
) -> Result<Vec<f32>> {
    let (h, heads, hd) = (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim());
    let rows = rel.len() / h;
    let mut out = vec![0.0; rows * h];
    let mut acts = Vec::new();
    linear(pool, proj, rel, rows, &mut out, &mut acts)?; // (2 span, hidden)
    let tiles = rows.div_ceil(ATT_TILE);
    let mut t = vec![0.0; heads * tiles * hd * ATT_TILE];
    for (r, row) in out.chunks_exact(h).enumerate() {
        let (tile, lane) = (r / ATT_TILE, r % ATT_TILE);
        for (head, x) in row.chunks_exact(hd).enumerate() {
            let base = (head * tiles + tile) * hd * ATT_TILE;
            for (d, &v) in x.iter().enumerate() {
                t[base + d * ATT_TILE + lane] = v * scale;
            }
        }
    }
    Ok(t)
}
