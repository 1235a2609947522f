//! The train crate's errors.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrainError {
    /// A training record or sequence that cannot be used.
    #[error("training data: {0}")]
    Data(String),
    /// Lines of a training file that cannot be used, every one listed.
    #[error(transparent)]
    BadRecords(#[from] crate::data::BadRecords),
    /// A training setting that cannot work (LoRA rank 0, unknown target, ...).
    #[error("{0}")]
    Config(String),
    /// The loss or a gradient stopped being a finite number.
    #[error(
        "the loss became {loss} at step {step}: lower the learning rate; the last good checkpoint is kept"
    )]
    NotFinite { step: u64, loss: f64 },
    /// The run was asked to stop (a cancelled job); its checkpoint is at `step`.
    #[error("cancelled at step {step}; the checkpoint of that step is kept")]
    Cancelled { step: u64 },
    /// The base model cannot be read or written.
    #[error(transparent)]
    Model(#[from] ferrollama_model::ModelError),
    /// A weights file that does not fit the model.
    #[error("{path}: {what}")]
    Weights { path: String, what: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, TrainError>;
