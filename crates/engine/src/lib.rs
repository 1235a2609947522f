//! Requests to forward passes: sampling, stop rules, chat templates and the generation loop.
//!
//! The engine turns "this dialog, these settings" into tokens and text. It owns the sampler
//! chain, stop tokens and stop strings, chat templates and the per-sequence session (KV
//! cache and buffers). It must not know about HTTP (the server's job) or file formats (the
//! model crate's).
//!
//! Key choice: each sequence carries its own seeded sampler, so the same seed gives the same
//! tokens whatever else runs.

pub mod constrain;
pub mod embedding;
pub mod error;
pub mod generate;
pub mod lora;
pub mod metrics;
pub mod model;
pub mod paged;
pub mod sampler;
pub mod scheduler;
pub mod stop;
/// Chat templates live in the model crate (training renders data with them too).
pub use ferrollama_model::template;

pub use embedding::{Embedder, Embeddings};
pub use error::{EngineError, Result};
pub use generate::{FinishReason, GenerateParams, Generation, Session, generate};
pub use lora::Lora;
pub use model::Model;
pub use sampler::{Sampler, SamplerConfig};
pub use template::{ChatMessage, ChatTemplate, TemplateFunction, TemplateToolCall};
