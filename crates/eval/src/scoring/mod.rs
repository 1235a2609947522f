//! Llama Stack's scoring functions, computed as llama-stack computes them: row scorers
//! (`basic::equality`, `basic::subset_of`, `basic::regex_parser_multiple_choice_answer`,
//! `basic::regex_parser_math_response`, the pure parts of `llm-as-judge::base`), the
//! Python regex and text forms their results depend on, and the aggregations.
//!
//! Pure functions over JSON rows; the server runs the judge's model and keeps datasets.

pub mod aggregate;
pub mod error;
pub mod functions;
pub mod math;
pub mod pyregex;
pub mod pystr;
pub mod rows;

pub use aggregate::aggregate;
pub use error::ScoringError;
pub use functions::{AggregationFn, Scorer, ScoringFnDef, ScoringFnParams, builtins, check_params};
pub use rows::{JudgeScorer, Row, RowScorer, check_columns};
