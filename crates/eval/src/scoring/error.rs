//! Why a scoring call cannot be answered. Every variant is about the caller's input (the
//! server answers them 400), never a fault of ours.

/// What can go wrong scoring rows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoringError {
    /// A row lacks a column the scoring function reads.
    #[error("row {row}: missing column '{column}' (the scoring function '{function}' reads it)")]
    MissingColumn {
        row: usize,
        column: &'static str,
        function: String,
    },
    /// A column holds a value of a type the scoring function cannot use.
    #[error("row {row}: column '{column}' must be {expected} for '{function}'")]
    ColumnType {
        row: usize,
        column: &'static str,
        expected: &'static str,
        function: String,
    },
    /// A regular expression that does not compile, or that cannot run on an input.
    #[error("regex {pattern:?}: {message}")]
    Regex { pattern: String, message: String },
    /// Parameters that do not fit the scoring function.
    #[error("{0}")]
    Params(String),
    /// An aggregation that cannot be computed over these scores.
    #[error("aggregation '{function}': {message}")]
    Aggregate {
        function: &'static str,
        message: String,
    },
}
