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
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;
