//! The Ollama API (`/api/chat`, `/api/generate`, `/api/tags`, `/api/show`, `/api/ps`,
//! `/api/pull`, `/api/delete`, `/api/version`, `/`), so tools written for Ollama (its
//! Python/JS clients, Open WebUI, editor plugins) talk to `ferrollama serve` unchanged.
//!
//! Generation goes through the same job layer as the OpenAI routes (`job.rs`): Ollama's
//! `options` become sampling settings, `format` becomes the constrained-decoding schema,
//! `tools` the tool prompt and call parsing. Streams are NDJSON (Ollama streams by
//! default). Errors use Ollama's shape `{"error": "message"}`.
//!
//! Model names: Ollama's `NAME:TAG` maps to our model ids (the file stem of a served model,
//! the entry name in the store): `NAME` and `NAME:latest` are `NAME`; any other tag must be
//! part of the id itself. Every id of the registry (`state::ModelRegistry`) is served,
//! aliases included; a model that is only in the store (for example just pulled) is listed
//! by `/api/tags` but answering with it needs it registered first (`POST /v1/models`, which
//! loads it into the running engine) or a restart with `-m NAME`.

mod body;
mod error;
mod generate;
mod models;
mod names;
mod options;
mod pull;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use ferrollama_store::{PullOptions, Store};

pub use body::OllamaBody;
pub use error::OllamaError;
pub use generate::{ChatRequest, GenerateRequest, chat, generate};
pub use models::{DeleteRequest, ShowRequest, delete, ps, root, show, tags, version};
pub use names::base_name;
pub use options::Options;
pub use pull::{PullRequest, pull};

/// What the Ollama routes need beyond the engine: the store, how to pull, and where the
/// served models came from.
#[derive(Debug, Default)]
pub struct OllamaState {
    /// The local model store (`/api/tags`, `/api/pull`, `/api/delete`); none: those routes
    /// list only served models and refuse pulls and deletes.
    pub store: Option<Store>,
    /// Hub and PyPI settings for `/api/pull`.
    pub pull: Option<PullOptions>,
    /// The file or folder each served model was loaded from, by model index.
    pub model_paths: Vec<Option<PathBuf>>,
    /// Per served model: when its last `keep_alive` ends (Unix seconds; `None`: never).
    /// Models stay loaded regardless; this is what `/api/ps` reports.
    expires: Mutex<HashMap<usize, Option<u64>>>,
}

impl OllamaState {
    pub fn new(
        store: Option<Store>,
        pull: Option<PullOptions>,
        model_paths: Vec<Option<PathBuf>>,
    ) -> OllamaState {
        OllamaState {
            store,
            pull,
            model_paths,
            expires: Mutex::new(HashMap::new()),
        }
    }

    fn set_expiry(&self, model: usize, at: Option<u64>) {
        if let Ok(mut m) = self.expires.lock() {
            m.insert(model, at);
        }
    }

    fn expiry(&self, model: usize) -> Option<u64> {
        self.expires
            .lock()
            .ok()
            .and_then(|m| m.get(&model).copied())
            .flatten()
    }
}

/// Now as RFC 3339 UTC, Ollama's `created_at`.
fn now_rfc3339() -> String {
    ferrollama_store::manifest::rfc3339(crate::job::unix_now())
}
