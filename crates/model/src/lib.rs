//! Model files and the one Llama forward pass.
//!
//! This crate owns reading and writing model files (GGUF, safetensors, Meta's PyTorch
//! checkpoints, read by a restricted unpickler that never runs code), the Llama
//! configuration and weight layout, the GGUF-embedded tokenizers, the KV cache and the
//! forward pass. It sits on the tensor crate's kernels and must not know about requests,
//! sampling or serving (the engine's job).
//!
//! Key choice: there is exactly one forward pass (`llama.rs`), written with the reference
//! names (`wq wk wv wo w1 w2 w3 attention_norm ffn_norm`); every file format is mapped onto
//! those names in one place (`names.rs`) at load time. The one other network is the
//! DeBERTa-v3 sequence classifier behind Prompt Guard ([`deberta`]): an encoder, not a
//! decoder, so it has its own small forward pass under transformers' names.

pub mod adapter;
pub mod bert;
pub mod config;
pub mod deberta;
pub mod encoder;
pub mod error;
pub mod export;
pub mod gguf;
pub mod import;
pub mod kv_cache;
pub mod llama;
pub mod meta;
pub mod names;
pub mod pth;
pub mod safetensors;
pub mod template;
pub mod vocab;
pub mod vocab_keys;
pub mod weights;

pub use adapter::{Adapter, LoraPair, Proj};
pub use config::{Arch, LlamaConfig, RopeScaling};
pub use error::{ModelError, Result};
pub use kv_cache::KV_BLOCK;
pub use kv_cache::{KvCache, KvType};
pub use llama::{Llama, Logits, SeqChunk, State};
pub use vocab::ModelTokenizer;
pub use weights::{Layer, Tensor, Weights};
