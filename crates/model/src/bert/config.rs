//! BERT-family `config.json` (transformers' `BertConfig` / `RobertaConfig`), checked at load.

use serde::Deserialize;

use crate::error::{ModelError, Result};

/// The keys the forward pass reads, with transformers' defaults for absent ones.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// `bert`, `roberta` or `xlm-roberta`.
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    /// First position id: 0 for BERT; RoBERTa counts positions from `pad_token_id + 1`.
    pub position_offset: usize,
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
    #[serde(default = "d2")]
    type_vocab_size: usize,
    #[serde(default = "deps")]
    layer_norm_eps: f32,
    #[serde(default)]
    pad_token_id: Option<usize>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn d512() -> usize {
    512
}
fn d2() -> usize {
    2
}
fn deps() -> f32 {
    1e-12
}

impl BertConfig {
    /// Parses and checks a `config.json`.
    pub fn from_json(text: &str) -> Result<BertConfig> {
        let raw: Raw = serde_json::from_str(text)
            .map_err(|e| ModelError::Invalid(format!("BERT config.json: {e}")))?;
        let bad = |what: String| Err(ModelError::Invalid(format!("BERT config.json: {what}")));
        let model_type = raw.model_type.unwrap_or_else(|| "bert".into());
        let position_offset = match model_type.as_str() {
            "bert" => 0,
            "roberta" | "xlm-roberta" => raw.pad_token_id.unwrap_or(1) + 1,
            other => {
                return bad(format!(
                    "model_type {other:?} is not supported (bert, roberta, xlm-roberta are)"
                ));
            }
        };
        if let Some(act) = raw.hidden_act.as_deref()
            && act != "gelu"
        {
            return bad(format!("hidden_act {act:?} is not supported (gelu is)"));
        }
        if let Some(p) = raw.position_embedding_type.as_deref()
            && p != "absolute"
        {
            return bad(format!(
                "position_embedding_type {p:?} is not supported (absolute is)"
            ));
        }
        if raw.hidden_size == 0
            || raw.num_attention_heads == 0
            || !raw.hidden_size.is_multiple_of(raw.num_attention_heads)
        {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                raw.hidden_size, raw.num_attention_heads
            ));
        }
        if raw.num_hidden_layers == 0 || raw.intermediate_size == 0 || raw.vocab_size == 0 {
            return bad("num_hidden_layers, intermediate_size and vocab_size must be > 0".into());
        }
        if raw.max_position_embeddings <= position_offset {
            return bad(format!(
                "max_position_embeddings {} leaves no positions after the offset {position_offset}",
                raw.max_position_embeddings
            ));
        }
        if !(raw.layer_norm_eps.is_finite() && raw.layer_norm_eps > 0.0) {
            return bad(format!("layer_norm_eps {} must be > 0", raw.layer_norm_eps));
        }
        Ok(BertConfig {
            model_type,
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            vocab_size: raw.vocab_size,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps,
            position_offset,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The longest sequence the position table allows.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings - self.position_offset
    }

    /// The prefix the weights are saved under in a `*ForMaskedLM`-style checkpoint.
    pub fn prefix(&self) -> &'static str {
        if self.model_type == "bert" {
            "bert."
        } else {
            "roberta."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = r#"{"architectures":["BertModel"],"hidden_act":"gelu","hidden_size":384,
      "intermediate_size":1536,"layer_norm_eps":1e-12,"max_position_embeddings":512,
      "model_type":"bert","num_attention_heads":12,"num_hidden_layers":6,"pad_token_id":0,
      "position_embedding_type":"absolute","type_vocab_size":2,"vocab_size":30522}"#;

    #[test]
    fn reads_minilm_config() {
        let c = BertConfig::from_json(MINILM).unwrap();
        assert_eq!(
            (c.hidden_size, c.head_dim(), c.max_tokens()),
            (384, 32, 512)
        );
        assert_eq!(c.prefix(), "bert.");
    }

    #[test]
    fn roberta_positions_start_after_padding() {
        let text = MINILM
            .replace("\"bert\"", "\"xlm-roberta\"")
            .replace("\"pad_token_id\":0", "\"pad_token_id\":1");
        let c = BertConfig::from_json(&text).unwrap();
        assert_eq!((c.position_offset, c.max_tokens()), (2, 510));
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        for (from, to, want) in [
            ("\"bert\"", "\"gpt2\"", "model_type"),
            ("\"gelu\"", "\"relu\"", "hidden_act"),
            (
                "\"absolute\"",
                "\"relative_key\"",
                "position_embedding_type",
            ),
            (
                "\"num_attention_heads\":12",
                "\"num_attention_heads\":7",
                "multiple",
            ),
            (
                "\"hidden_size\":384",
                "\"hidden_size\":\"x\"",
                "config.json",
            ),
        ] {
            let err = BertConfig::from_json(&MINILM.replace(from, to)).unwrap_err();
            assert!(err.to_string().contains(want), "{to}: {err}");
        }
    }
}
