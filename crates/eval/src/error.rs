//! The eval crate's error type.

/// What can go wrong evaluating a model.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] ferrollama_model::ModelError),
    #[error(transparent)]
    Engine(#[from] ferrollama_engine::EngineError),
    #[error("{0}")]
    Invalid(String),
    #[error("shield: {0}")]
    Safety(#[from] ferrollama_safety::SafetyError),
    /// The engine refused or failed a generation (busy, shutting down).
    #[error("generation: {0}")]
    Generate(String),
    /// A task file that cannot be used (the message names the file and field).
    #[error("task file {0}")]
    Task(String),
    /// A dataset file or row that cannot be used (the message names the file and line).
    #[error("dataset {0}")]
    Dataset(String),
    /// An OpenAI-compatible server that failed or answered something unusable.
    #[error("server: {0}")]
    Http(String),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;
