//! Synthetic data generation (Llama Stack's `synthetic_data_generation`, `ferrollama sdg`):
//! seed prompts (or topics) → N sampled replies each from a teacher model, batched through
//! the engine → a Llama Guard shield drops unsafe pairs → a judge's score or the teacher's
//! reward → a filtering function → chat records in the format `finetune --data` reads, each
//! with its provenance (model, seed, scores, shield verdict).
//!
//! - [`seeds`]: the seed prompts file;
//! - [`pipeline`]: generation, shield, score, filter ([`pipeline::run`]);
//! - [`filter`]: the six filtering functions, defined (Meta's API only names them);
//! - [`journal`]: the dataset file and its journal, resumable after a crash.
//!
//! Key choice: each (prompt, generation) has its own sampling seed and filters are
//! deterministic, so a resumed run ends with the same records as one that never stopped
//! (scores equal to float rounding, which depends on how sequences shared engine steps).

pub mod filter;
pub mod journal;
pub mod pipeline;
pub mod seeds;

pub use filter::{Filter, FilterKind};
pub use journal::{Journal, Resumed, journal_path};
pub use pipeline::{
    Collect, DEFAULT_JUDGE_TEMPLATE, DEFAULT_SCORE_REGEX, Generation, Judge, Key, SdgConfig, Sink,
    Stats, Teacher, check_judge_template, run,
};
pub use seeds::{DEFAULT_TOPIC_TEMPLATE, Seed, parse_seeds};
