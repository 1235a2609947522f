//! The one place where file-format tensor names meet the reference names.
//!
//! Reference names are Meta's (`tok_embeddings`, `layers.N.attention.wq`, `feed_forward.w1`,
//! ...), so Meta's own checkpoints (`consolidated.NN.pth`) use them as they are. GGUF
//! (llama.cpp) and Hugging Face name the same tensors differently; loaders ask this table
//! and nothing else.

/// Per-layer tensors: (reference, GGUF, Hugging Face) suffixes.
pub const LAYER: [(&str, &str, &str); 9] = [
    ("attention_norm", "attn_norm", "input_layernorm"),
    ("attention.wq", "attn_q", "self_attn.q_proj"),
    ("attention.wk", "attn_k", "self_attn.k_proj"),
    ("attention.wv", "attn_v", "self_attn.v_proj"),
    ("attention.wo", "attn_output", "self_attn.o_proj"),
    ("ffn_norm", "ffn_norm", "post_attention_layernorm"),
    ("feed_forward.w1", "ffn_gate", "mlp.gate_proj"),
    ("feed_forward.w2", "ffn_down", "mlp.down_proj"),
    ("feed_forward.w3", "ffn_up", "mlp.up_proj"),
];

/// Optional per-layer biases (Qwen2's q/k/v projections): (reference, GGUF, Hugging Face)
/// stems, named `<stem>.bias` in files. Meta's checkpoints have none.
pub const LAYER_BIAS: [(&str, &str, &str); 3] = [
    ("attention.bq", "attn_q", "self_attn.q_proj"),
    ("attention.bk", "attn_k", "self_attn.k_proj"),
    ("attention.bv", "attn_v", "self_attn.v_proj"),
];

/// Whole-model tensors: (reference, GGUF, Hugging Face).
pub const GLOBAL: [(&str, &str, &str); 4] = [
    ("tok_embeddings", "token_embd", "model.embed_tokens"),
    ("norm", "output_norm", "model.norm"),
    ("output", "output", "lm_head"),
    ("rope_freqs", "rope_freqs", ""),
];

/// Which file format's names to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gguf,
    HuggingFace,
    /// Meta's `consolidated.NN.pth`: `layers.N.<reference>.weight`, `<reference>.weight`.
    Meta,
}

/// The file's name of reference tensor `name` (`"attention.wq"`) in `layer`, or of a
/// whole-model tensor when `layer` is `None`.
pub fn file_name(format: Format, layer: Option<usize>, name: &str) -> Option<String> {
    let pick = |row: &(&'static str, &'static str, &'static str)| match format {
        Format::Gguf => row.1,
        Format::HuggingFace => row.2,
        // Meta checkpoints have no rope_freqs tensor (the scaling is `use_scaled_rope`).
        Format::Meta if row.0 == "rope_freqs" => "",
        Format::Meta => row.0,
    };
    let layer_name = |l: usize, stem: &str, suffix: &str| match format {
        Format::Gguf => format!("blk.{l}.{stem}.{suffix}"),
        Format::HuggingFace => format!("model.layers.{l}.{stem}.{suffix}"),
        Format::Meta => format!("layers.{l}.{stem}.{suffix}"),
    };
    match layer {
        Some(_) if format == Format::Meta && LAYER_BIAS.iter().any(|r| r.0 == name) => None,
        Some(l) => match LAYER.iter().find(|r| r.0 == name) {
            Some(r) => Some(layer_name(l, pick(r), "weight")),
            None => LAYER_BIAS
                .iter()
                .find(|r| r.0 == name)
                .map(|r| layer_name(l, pick(r), "bias")),
        },
        None => GLOBAL
            .iter()
            .find(|r| r.0 == name && !pick(r).is_empty())
            .map(|r| format!("{}.weight", pick(r))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_reference_names() {
        assert_eq!(
            file_name(Format::Gguf, Some(3), "attention.wq").as_deref(),
            Some("blk.3.attn_q.weight")
        );
        assert_eq!(
            file_name(Format::HuggingFace, Some(0), "feed_forward.w2").as_deref(),
            Some("model.layers.0.mlp.down_proj.weight")
        );
        assert_eq!(
            file_name(Format::Gguf, None, "tok_embeddings").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(file_name(Format::HuggingFace, None, "rope_freqs"), None);
        // Meta's names are the reference names (spec §3.5).
        assert_eq!(
            file_name(Format::Meta, Some(7), "feed_forward.w3").as_deref(),
            Some("layers.7.feed_forward.w3.weight")
        );
        assert_eq!(
            file_name(Format::Meta, None, "tok_embeddings").as_deref(),
            Some("tok_embeddings.weight")
        );
        assert_eq!(file_name(Format::Meta, None, "rope_freqs"), None);
        assert_eq!(
            file_name(Format::Gguf, Some(2), "attention.bk").as_deref(),
            Some("blk.2.attn_k.bias")
        );
        assert_eq!(
            file_name(Format::HuggingFace, Some(0), "attention.bq").as_deref(),
            Some("model.layers.0.self_attn.q_proj.bias")
        );
        assert_eq!(file_name(Format::Meta, Some(0), "attention.bv"), None);
    }
}
