//! Llama Stack datasets and scoring: `/v1/datasets` (register, list, get, unregister),
//! `/v1/datasetio/iterrows` and `/append-rows`, `/v1/scoring-functions` (list, get,
//! register) and `/v1/scoring/score` and `/score-batch`, in the shapes
//! llama-stack-client 0.2.12 uses.
//!
//! Datasets are read once, when registered (local files, `data:` URLs, uploaded files;
//! see `source.rs`), and kept whole as rows: that way a malformed row is refused at
//! registration with its line number, and a later change to the file cannot change a
//! registered dataset under an evaluation. [`EvalStore`] keeps them, and the scoring
//! functions registered at runtime, in memory and (with a data folder) on disk, each
//! written atomically, so a restart keeps them. The scoring itself is the eval crate's
//! (`ferrollama_eval::scoring`); `scoring.rs` runs the judge model on this server's
//! engine.

pub mod api;
pub mod parse;
pub mod scoring;
pub mod source;
pub mod store;

pub use store::{Dataset, EvalStore, StoreError};
