//! DeBERTa-v2/v3 `config.json` (Hugging Face `DebertaV2Config`), checked at load.

use serde::Deserialize;

use crate::error::{ModelError, Result};

/// The keys of a `deberta-v2` config.json that the forward pass reads, with Hugging Face's
/// defaults for absent keys. `max_relative_positions < 1` means `max_position_embeddings`
/// (resolved by [`DebertaConfig::max_relative`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DebertaConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub relative_attention: bool,
    pub max_relative_positions: i64,
    pub position_buckets: i64,
    /// Whether the relative embeddings pass the encoder LayerNorm (`norm_rel_ebd`
    /// contains `layer_norm`).
    pub norm_rel_ebd: bool,
    pub share_att_key: bool,
    /// `pos_att_type` contains `c2p` (content to position).
    pub c2p: bool,
    /// `pos_att_type` contains `p2c` (position to content).
    pub p2c: bool,
    /// v2 adds absolute position embeddings to the input; v3 does not.
    pub position_biased_input: bool,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub pooler_hidden_size: usize,
    /// Class names, index order (`id2label`).
    pub labels: Vec<String>,
}

#[derive(Deserialize)]
struct Raw {
    model_type: Option<String>,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    vocab_size: usize,
    #[serde(default = "d512")]
    max_position_embeddings: usize,
    #[serde(default)]
    relative_attention: bool,
    #[serde(default = "dm1")]
    max_relative_positions: i64,
    #[serde(default = "dm1")]
    position_buckets: i64,
    #[serde(default)]
    norm_rel_ebd: Option<String>,
    #[serde(default)]
    share_att_key: bool,
    #[serde(default)]
    pos_att_type: Option<PosAttType>,
    #[serde(default = "dtrue")]
    position_biased_input: bool,
    #[serde(default)]
    type_vocab_size: usize,
    #[serde(default = "deps")]
    layer_norm_eps: f64,
    #[serde(default = "dgelu")]
    hidden_act: String,
    #[serde(default)]
    pooler_hidden_size: Option<usize>,
    #[serde(default = "dgelu")]
    pooler_hidden_act: String,
    #[serde(default)]
    embedding_size: Option<usize>,
    #[serde(default)]
    conv_kernel_size: usize,
    #[serde(default)]
    id2label: Option<std::collections::BTreeMap<String, String>>,
}

/// `pos_att_type` is a list in v3 configs and a `"p2c|c2p"` string in some v2 ones.
#[derive(Deserialize)]
#[serde(untagged)]
enum PosAttType {
    List(Vec<String>),
    Joined(String),
}

fn d512() -> usize {
    512
}
fn dm1() -> i64 {
    -1
}
fn dtrue() -> bool {
    true
}
fn deps() -> f64 {
    1e-7
}
fn dgelu() -> String {
    "gelu".into()
}

fn bad(what: impl Into<String>) -> ModelError {
    ModelError::Invalid(format!("DeBERTa config.json: {}", what.into()))
}

impl DebertaConfig {
    /// Parses and checks a config.json text.
    pub fn from_json(text: &str) -> Result<DebertaConfig> {
        let raw: Raw = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if let Some(t) = raw.model_type.as_deref()
            && t != "deberta-v2"
        {
            return Err(ModelError::UnsupportedArch(t.to_string()));
        }
        for (act, key) in [
            (&raw.hidden_act, "hidden_act"),
            (&raw.pooler_hidden_act, "pooler_hidden_act"),
        ] {
            if act != "gelu" {
                return Err(bad(format!("{key} {act:?} is not supported (gelu is)")));
            }
        }
        if raw.embedding_size.is_some_and(|e| e != raw.hidden_size) {
            return Err(bad(
                "embedding_size != hidden_size (embed_proj) is not supported",
            ));
        }
        if raw.conv_kernel_size > 0 {
            return Err(bad(
                "conv_kernel_size > 0 (the convolution layer) is not supported",
            ));
        }
        let dims = [
            ("hidden_size", raw.hidden_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", raw.num_attention_heads),
            ("intermediate_size", raw.intermediate_size),
            ("vocab_size", raw.vocab_size),
            ("max_position_embeddings", raw.max_position_embeddings),
        ];
        for (k, v) in dims {
            // Generous bounds: they only keep later size arithmetic far from overflow.
            if v == 0 || v > 1 << 24 {
                return Err(bad(format!("{k} = {v} is out of range")));
            }
        }
        if !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                raw.hidden_size, raw.num_attention_heads
            )));
        }
        let types: Vec<String> = match raw.pos_att_type {
            None => Vec::new(),
            Some(PosAttType::List(v)) => v,
            Some(PosAttType::Joined(s)) => s.split('|').map(|p| p.trim().to_string()).collect(),
        };
        let types: Vec<String> = types.iter().map(|t| t.to_lowercase()).collect();
        if let Some(t) = types.iter().find(|t| !matches!(t.as_str(), "c2p" | "p2c")) {
            return Err(bad(format!(
                "pos_att_type {t:?} is not supported (c2p, p2c are)"
            )));
        }
        let labels = match raw.id2label {
            None => Vec::new(),
            Some(map) => {
                let mut pairs = map
                    .into_iter()
                    .map(|(k, v)| {
                        k.parse::<usize>()
                            .map(|i| (i, v))
                            .map_err(|_| bad(format!("id2label key {k:?} is not a number")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                pairs.sort();
                if pairs.iter().enumerate().any(|(i, (k, _))| i != *k) {
                    return Err(bad("id2label keys are not 0..n"));
                }
                pairs.into_iter().map(|(_, v)| v).collect()
            }
        };
        let norm = raw.norm_rel_ebd.unwrap_or_default().to_lowercase();
        let cfg = DebertaConfig {
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            vocab_size: raw.vocab_size,
            max_position_embeddings: raw.max_position_embeddings,
            relative_attention: raw.relative_attention,
            max_relative_positions: raw.max_relative_positions,
            position_buckets: raw.position_buckets,
            norm_rel_ebd: norm.split('|').any(|p| p.trim() == "layer_norm"),
            share_att_key: raw.share_att_key,
            c2p: types.iter().any(|t| t == "c2p"),
            p2c: types.iter().any(|t| t == "p2c"),
            position_biased_input: raw.position_biased_input,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps as f32,
            pooler_hidden_size: raw.pooler_hidden_size.unwrap_or(raw.hidden_size),
            labels,
        };
        if cfg.pooler_hidden_size != cfg.hidden_size {
            return Err(bad("pooler_hidden_size must equal hidden_size"));
        }
        if cfg.relative_attention && cfg.att_span() > 1 << 20 {
            return Err(bad("relative position span is out of range"));
        }
        Ok(cfg)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// `max_relative_positions`, with values below 1 meaning `max_position_embeddings`.
    pub fn max_relative(&self) -> usize {
        usize::try_from(self.max_relative_positions)
            .ok()
            .filter(|&m| m >= 1)
            .unwrap_or(self.max_position_embeddings)
    }

    /// `att_span` (HF `pos_ebd_size`): relative positions are clamped to
    /// `[-span, span)`; `rel_embeddings` holds `2 * span` rows.
    pub fn att_span(&self) -> usize {
        usize::try_from(self.position_buckets)
            .ok()
            .filter(|&b| b > 0)
            .unwrap_or_else(|| self.max_relative())
    }

    /// `1 + ` the number of position terms: the scores are divided by
    /// `sqrt(head_dim * scale_factor)`.
    pub fn scale_factor(&self) -> usize {
        1 + usize::from(self.c2p) + usize::from(self.p2c)
    }
}
