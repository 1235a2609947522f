//! Evaluation of models: how well they predict text (perplexity, as llama.cpp defines it)
//! and how far a quantized model's predictions drift from its base model's (KL divergence).
//!
//! Sits on the engine's `Model` (weights + tokenizer); knows nothing of serving.

pub mod error;
pub mod perplexity;
pub mod scoring;

pub use error::{EvalError, Result};
pub use perplexity::{KlStats, PplOptions, PplResult, perplexity};
