//! The model crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong reading model files or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot open {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a GGUF file (magic {0:?}); expected a .gguf model")]
    NotGguf([u8; 4]),
    #[error("GGUF version {0} is not supported (only 2 and 3)")]
    GgufVersion(u32),
    #[error("corrupt GGUF at byte {offset}: {what}")]
    Corrupt { offset: usize, what: String },
    #[error("GGUF metadata key {key:?}: {what}")]
    Metadata { key: String, what: String },
    #[error("tensor {name:?}: {what}")]
    Tensor { name: String, what: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("tokenizer: {0}")]
    Vocab(String),
    #[error(transparent)]
    Kernel(#[from] ferrollama_tensor::TensorError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
