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
    /// A file declaring an architecture the forward pass does not run.
    #[error(
        "unsupported architecture {0:?} (supported: {list})",
        list = crate::config::supported_arches()
    )]
    UnsupportedArch(String),
    #[error("tokenizer: {0}")]
    Vocab(String),
    #[error(transparent)]
    Kernel(#[from] ferrollama_tensor::TensorError),
    #[error("{0}")]
    Invalid(String),
    /// A chat template that does not parse or fails to render a dialog.
    #[error("chat template: {0}")]
    Template(String),
    /// A LoRA adapter that cannot be used with this model (format, shape, unsupported kind).
    #[error("LoRA adapter {}: {what}", path.display())]
    Adapter { path: PathBuf, what: String },
    /// A PyTorch zip archive that cannot be read (missing records, bad zip structure).
    #[error("PyTorch archive: {0}")]
    Archive(String),
    /// A pickle our restricted reader refuses or cannot follow.
    #[error("corrupt pickle at byte {offset}: {what}")]
    Pickle { offset: usize, what: String },
    /// A pickle naming a global outside the tensor-record allowlist (e.g. `os.system`).
    #[error(
        "pickle refers to the global {0}, which is not allowed: only PyTorch tensor records are read, and no pickled code is ever run"
    )]
    PickleGlobal(String),
    /// An error inside one file of a multi-file model (which shard, which params.json); the
    /// cause is the source, so `{:#}` prints "in PATH: CAUSE".
    #[error("in {}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<ModelError>,
    },
}

impl ModelError {
    /// Wraps `self` with the file it came from.
    pub fn in_file(self, path: &std::path::Path) -> ModelError {
        ModelError::InFile {
            path: path.to_path_buf(),
            source: Box::new(self),
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
