//! Why a shield could not give a verdict.

/// A shield's failure. Messages say what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SafetyError {
    /// The conversation cannot be classified as given (empty, roles out of order, ...).
    #[error("{0}")]
    Invalid(String),
    /// The shield or its model does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The engine refused or failed the guard request (busy, shutting down, too long).
    #[error("{0}")]
    Engine(String),
    /// The guard model answered something that is not a verdict.
    #[error("unexpected guard output {0:?}: expected 'safe' or 'unsafe\\nS1,S2,...'")]
    Unparsable(String),
}

pub type Result<T> = std::result::Result<T, SafetyError>;
