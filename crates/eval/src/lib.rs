//! Evaluation of models: how well they predict text (perplexity, as llama.cpp defines it),
//! how far a quantized model's predictions drift from its base model's (KL divergence),
//! and benchmark tasks with lm-evaluation-harness's definitions (multiple choice,
//! generation with exact match, log-likelihood, rolling perplexity) read from YAML task
//! files, run in process or against an OpenAI-compatible server.
//!
//! Also synthetic data generation ([`sdg`]): a teacher's sampled replies, shielded,
//! scored and filtered into a training set.
//!
//! Sits on the engine's `Model` (weights + tokenizer); knows nothing of serving.

pub mod backend;
pub mod dataset;
pub mod error;
pub mod filters;
pub mod harness;
pub mod judge;
pub mod local;
pub mod metrics;
pub mod openai;
pub mod perplexity;
pub mod prompt;
pub mod pyrandom;
pub mod report;
pub mod scoring;
pub mod sdg;
pub mod task;
pub mod templates;
pub mod toolcall;

pub use backend::{Backend, Context, LogLikelihood};
pub use error::{EvalError, Result};
pub use harness::{EvalOptions, run_task};
pub use local::{LocalBackend, LocalOptions};
pub use openai::OpenAiBackend;
pub use perplexity::{KlStats, PplOptions, PplResult, perplexity};
pub use report::{MetricRow, Report, SampleRecord};
pub use task::{OutputType, Task};
