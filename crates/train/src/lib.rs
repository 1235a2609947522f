//! Training without autograd. Every operation of the one Llama forward pass
//! (`ferrollama_model::llama`) has its forward and its backward side by side in
//! [`ops`], in the style of llm.c; [`model`] chains them into the training pass of a
//! whole model, with activation recomputation to bound memory; [`optim`] is AdamW, global
//! norm clipping and the cosine schedule, with PyTorch's arithmetic.
//!
//! Correctness is pinned two ways (tests/): every backward against central finite
//! differences in f64 on a tiny model, and the first 20 steps' losses of a tiny model
//! against a PyTorch run of the same initialization, data and optimizer
//! (`testdata/train/make_reference.py`).
//!
//! [`data`] reads training files (OpenAI chat, prompt/completion, text, preference pairs)
//! into sequences with loss masks, through the chat format inference uses.
//!
//! [`trainer`] is full fine-tuning: micro-batches, accumulation, clipping, AdamW, the
//! schedule, seeded data order, evaluation and atomic [`checkpoint`]s that resume bit for
//! bit; [`export`] hands the trained weights back to the model crate's GGUF writer, and
//! [`vocab`] picks the prompt format a model's vocabulary can be trained in. LoRA trains an
//! adapter ([`lora`], written by [`adapter`] for PEFT and llama.cpp) over the frozen model
//! with the same loop. [`job`] is a whole run from files to files, as `ferrollama finetune`
//! and the server's fine-tuning APIs start it.
//!
//! The pass reads its model through [`base::Base`]: f32/f64 [`Params`] (full fine-tuning,
//! gradient checks) or, for LoRA, a [`FrozenBase`] that keeps every projection in the
//! type the file stores ([`frozen`]: F16, BF16, Q8_0, Q4_K, ...; QLoRA-style, decoded a
//! few panels at a time inside the products, never whole).
//!
//! DPO and distillation change only the loss end: [`dpo`] weighs each sequence's
//! cross-entropy backward, [`distill`] swaps it for a teacher's soft targets
//! ([`model::Objective`]).

pub mod adapter;
pub mod base;
pub mod checkpoint;
pub mod data;
pub mod distill;
pub mod dpo;
pub mod error;
pub mod export;
pub mod float;
pub mod frozen;
pub mod frozen_base;
pub mod frozen_int;
pub mod job;
pub mod lora;
pub mod model;
pub mod ops;
pub mod optim;
pub mod params;
pub mod profile;
pub mod rng;
pub mod trainer;
pub mod vocab;
pub mod weights;

pub use base::{Base, BaseLayer, Projection};
pub use error::{Result, TrainError};
pub use float::Float;
pub use frozen::FrozenMatrix;
pub use frozen_base::{FrozenBase, FrozenLayer};
pub use frozen_int::BaseCompute;
pub use lora::{Lora, LoraConfig, LoraPair, Target};
pub use model::{
    Grads, Item, Objective, PassOptions, Sequence, Shape, forward_backward, forward_backward_lora,
    loss, loss_lora, pass, release_pass_buffers,
};
pub use optim::{AdamW, AdamWConfig, clip_grad_norm, cosine_lr};
pub use params::{LayerParams, ParamSet, Params};
pub use trainer::{Event, Examples, Length, StepRecord, TrainConfig, Trainer};
