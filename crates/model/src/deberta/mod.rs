//! DeBERTa-v2/v3 sequence classifiers (Prompt Guard is an mDeBERTa-v3-base one, spec §5.2),
//! run on the tensor crate's kernels.
//!
//! - [`config`]: `config.json` (`model_type` `deberta-v2`) with HF's defaults;
//! - [`weights`]: `model.safetensors` under HF's names, F32 or Q8_0 encoder matrices, the
//!   relative-position projections precomputed per layer;
//! - [`position`]: HF's log-bucketed relative positions;
//! - [`attention`]: disentangled attention (c2p + p2c), heads over the thread pool;
//! - [`model`]: the forward pass to logits.
//!
//! The numerics follow transformers' `modeling_deberta_v2.py`; `testdata/deberta` holds a
//! numpy port of it and golden logits.

mod attention;
pub mod config;
pub mod model;
pub mod position;
pub mod weights;

pub use config::DebertaConfig;
pub use model::Deberta;
pub use weights::{DebertaWeights, WeightFormat};
