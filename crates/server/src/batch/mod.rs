//! Batch inference in OpenAI's batch format: a JSONL file of
//! `{"custom_id", "method": "POST", "url", "body"}` lines, each answered by one output line
//! `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`.
//!
//! Every line is served by the server's own router, in process ([`dispatch`]), so a body
//! means in a batch exactly what it means to `serve`, and the engine's continuous batching
//! runs many lines in each step. `ferrollama batch` runs a file offline with this; the
//! Batches API of `serve` ([`api`]) runs uploaded files in the background ([`worker`]),
//! its records kept on disk ([`store`]).
//!
//! As OpenAI does, lines answered with a 2xx status go to the output file, the others (a
//! bad body, an unknown model) and lines that cannot be read at all (bad JSON, an unknown
//! `url`) to the error file; the rest of the batch goes on.

pub mod api;
pub mod dispatch;
pub mod line;
pub mod resume;
pub mod run;
pub mod store;
pub mod worker;

pub use dispatch::dispatch;
pub use line::{
    ENDPOINTS, LineError, Request, default_model, duplicates, error_line, parse_line, result_line,
};
pub use resume::{Done, ResumeError, append};
pub use run::{Outcome, run_all};
