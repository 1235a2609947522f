//! BERT weights from a `model.safetensors` under transformers' module names.

use std::path::Path;

use super::config::BertConfig;
use crate::encoder::{LayerNorm, Linear, Loader, WeightFormat, f32_tensor};
use crate::error::Result;
use crate::weights::Tensor;

/// One encoder layer (`encoder.layer.N`).
#[derive(Debug, Clone)]
pub struct BertLayer {
    /// `attention.self.{query,key,value}` stacked: one GEMM per layer instead of three.
    pub qkv: Linear, // (3 hidden, hidden)
    pub attention_output: Linear, // (hidden, hidden)  attention.output.dense
    pub attention_norm: LayerNorm, // attention.output.LayerNorm
    pub intermediate: Linear,     // (intermediate, hidden)
    pub output: Linear,           // (hidden, intermediate)
    pub output_norm: LayerNorm,   // output.LayerNorm
}

/// All weights of a `BertModel` (the pooler, unused by sentence embeddings, is not read).
#[derive(Debug, Clone)]
pub struct BertWeights {
    pub word_embeddings: Tensor,     // (vocab, hidden), as stored
    pub position_embeddings: Tensor, // (max_position, hidden), as stored
    /// Token type 0's row (every sentence is one segment); zeros without token types.
    pub token_type: Vec<f32>, // (hidden)
    pub embeddings_norm: LayerNorm,
    pub layers: Vec<BertLayer>,
}

impl BertWeights {
    /// Reads `model.safetensors` against `cfg` (F32/F16/BF16; integer buffers such as
    /// `position_ids` are skipped), names with or without the `bert.`/`roberta.` prefix.
    pub fn load(path: &Path, cfg: &BertConfig, format: WeightFormat) -> Result<BertWeights> {
        let tensors = crate::safetensors::map_file_floats(path)?;
        let mut ld = Loader {
            tensors: tensors.into_iter().collect(),
        };
        let p = if ld.has(&format!(
            "{}embeddings.word_embeddings.weight",
            cfg.prefix()
        )) {
            cfg.prefix()
        } else {
            ""
        };
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let word_embeddings = ld.take(
            &format!("{p}embeddings.word_embeddings.weight"),
            cfg.vocab_size,
            h,
        )?;
        let position_embeddings = ld.take(
            &format!("{p}embeddings.position_embeddings.weight"),
            cfg.max_position_embeddings,
            h,
        )?;
        let mut token_type = vec![0.0; h];
        if cfg.type_vocab_size > 0 {
            let t = ld.take(
                &format!("{p}embeddings.token_type_embeddings.weight"),
                cfg.type_vocab_size,
                h,
            )?;
            t.row_f32(0, &mut token_type)?;
        }
        let embeddings_norm = ld.norm(&format!("{p}embeddings.LayerNorm"), h)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = format!("{p}encoder.layer.{i}");
            let (q, k, v) = (
                ld.linear(&format!("{l}.attention.self.query"), h, h)?,
                ld.linear(&format!("{l}.attention.self.key"), h, h)?,
                ld.linear(&format!("{l}.attention.self.value"), h, h)?,
            );
            let mut w = q.weight.to_f32()?;
            w.extend(k.weight.to_f32()?);
            w.extend(v.weight.to_f32()?);
            let mut layer = BertLayer {
                qkv: Linear {
                    weight: f32_tensor(3 * h, h, &w)?,
                    bias: [q.bias, k.bias, v.bias].concat(),
                    panels: None,
                },
                attention_output: ld.linear(&format!("{l}.attention.output.dense"), h, h)?,
                attention_norm: ld.norm(&format!("{l}.attention.output.LayerNorm"), h)?,
                intermediate: ld.linear(&format!("{l}.intermediate.dense"), inter, h)?,
                output: ld.linear(&format!("{l}.output.dense"), h, inter)?,
                output_norm: ld.norm(&format!("{l}.output.LayerNorm"), h)?,
            };
            for lin in [
                &mut layer.qkv,
                &mut layer.attention_output,
                &mut layer.intermediate,
                &mut layer.output,
            ] {
                lin.prepare(format)?;
            }
            layers.push(layer);
        }
        Ok(BertWeights {
            word_embeddings,
            position_embeddings,
            token_type,
            embeddings_norm,
            layers,
        })
    }
}
