//! Llama Stack datasets, scoring and eval: `/v1/datasets` (register, list, get,
//! unregister), `/v1/datasetio/iterrows` and `/append-rows`, `/v1/scoring-functions` (list,
//! get, register), `/v1/scoring/score` and `/score-batch`, and `/v1/eval/benchmarks`
//! (benchmarks, evaluate rows, eval jobs), in the shapes llama-stack-client 0.2.12 uses.
//!
//! Datasets are read once, when registered (local files, `data:` URLs, uploaded files;
//! see `source.rs`), and kept whole as rows: that way a malformed row is refused at
//! registration with its line number, and a later change to the file cannot change a
//! registered dataset under an evaluation. [`EvalStore`] keeps them, and the scoring
//! functions registered at runtime, in memory and (with a data folder) on disk, each
//! written atomically, so a restart keeps them. The scoring itself is the eval crate's
//! (`ferrollama_eval::scoring`); `scoring.rs` runs the judge model on this server's
//! engine. An evaluation (`evaluate.rs`) generates each row's answer with the candidate
//! model on the same engine, then scores through `scoring.rs`; `benchmarks.rs` holds the
//! eval routes and `eval_jobs.rs` the background jobs.

pub mod api;
pub mod benchmarks;
pub mod eval_jobs;
pub mod evaluate;
pub mod parse;
pub mod scoring;
pub mod source;
pub mod store;

pub use store::{Benchmark, Dataset, EvalStore, StoreError};
