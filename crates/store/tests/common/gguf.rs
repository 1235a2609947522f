//! A tiny Llama-shaped GGUF file for tests (header and a few F32 tensors, no tokenizer).
#![allow(dead_code, clippy::unwrap_used)]

use ferrollama_model::gguf::{GgufWriter, Value};
use ferrollama_tensor::DType;

/// Tensor element count of [`tiny_gguf`]: 16×8 embeddings + two 8-long norms.
pub const TINY_PARAMS: u64 = 16 * 8 + 8 + 8;

/// A GGUF with Llama metadata (dim 8, 1 layer, 2 heads, 1 KV head, vocab 16) and
/// `TINY_PARAMS` F32 elements. `salt` changes the weights, so two files differ.
pub fn tiny_gguf(salt: u8) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("general.name", Value::String("tiny".into()));
    w.set("general.file_type", Value::U32(0));
    w.set("llama.embedding_length", Value::U32(8));
    w.set("llama.block_count", Value::U32(1));
    w.set("llama.attention.head_count", Value::U32(2));
    w.set("llama.attention.head_count_kv", Value::U32(1));
    w.set("llama.feed_forward_length", Value::U32(16));
    w.set("llama.vocab_size", Value::U32(16));
    w.set("llama.context_length", Value::U32(64));
    let f32s = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| ((i as f32) * 0.01 + f32::from(salt)).to_le_bytes())
            .collect()
    };
    w.add_tensor("token_embd.weight", &[8, 16], DType::F32, f32s(128))
        .unwrap();
    w.add_tensor("output_norm.weight", &[8], DType::F32, f32s(8))
        .unwrap();
    w.add_tensor("blk.0.attn_norm.weight", &[8], DType::F32, f32s(8))
        .unwrap();
    w.to_bytes()
}
