//! The tokenizer crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong loading a vocabulary, decoding ids or formatting a dialog.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read tokenizer file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tokenizer file line {line}: {what}")]
    BadLine { line: usize, what: String },
    #[error("tokenizer vocabulary is unusable: {0}")]
    BadVocab(String),
    #[error("token id {id} is out of range (vocabulary has {n_words} ids)")]
    UnknownId { id: u32, n_words: u32 },
    #[error("unknown special token {0:?}")]
    UnknownSpecial(String),
    #[error("invalid message: {0}")]
    InvalidMessage(String),
}

pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;
