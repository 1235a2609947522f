//! The engine crate's one error type.

/// What can go wrong turning a request into tokens.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ferrollama_model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] ferrollama_tokenizer::TokenizerError),
    #[error("chat template: {0}")]
    Template(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
