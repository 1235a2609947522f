//! Shields: classifiers that decide whether a conversation may go on.
//!
//! Two kinds of model shield, both run in process on the engine's threads:
//! - [`llama_guard`]: Llama Guard 3, a Llama model that answers `safe` or `unsafe\nS1,S3`
//!   to Meta's classification prompt (spec §5.1). It is an ordinary model of the engine,
//!   scheduled by the same actor as the chat models, so its long fixed prompt header is
//!   served from the prefix cache.
//! - [`prompt_guard`]: Prompt Guard, an mDeBERTa-v3 sequence classifier for prompt
//!   injections and jailbreaks (spec §5.2).
//!
//! The crate sits above the engine and below the server: it knows models and tokens, not
//! HTTP.

pub mod categories;
pub mod error;
pub mod llama_guard;
pub mod prompt_guard;

pub use error::{Result, SafetyError};
pub mod prompt_guard_shield;
pub mod shield;

pub use shield::{REFUSAL, Shield, ShieldKind, ShieldRegistry, Verdict};
