//! What every handler shares: the engine handle, the model registry, limits and request
//! counters. All of it is read-only, atomic or behind a short lock never held across an
//! await (the registry); the engine's state lives in its actor.

use std::path::PathBuf;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use ferrollama_engine::scheduler::Engine;

/// Service limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_body: usize,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
    /// Upper clamp of `max_tokens`.
    pub max_tokens: usize,
    /// Largest `n`.
    pub max_n: usize,
    /// Most requests in one batch call.
    pub max_batch: usize,
    pub request_timeout: Duration,
    /// Largest uploaded file, bytes (`POST /v1/files`; enforced while the upload streams
    /// to disk, in place of `max_body`).
    pub max_file_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 4 << 20,
            default_max_tokens: 1024,
            max_tokens: 8192,
            max_n: 8,
            max_batch: 64,
            request_timeout: Duration::from_secs(600),
            max_file_size: 512 << 20,
        }
    }
}

/// Shared server state.
#[derive(Debug)]
pub struct AppState {
    pub engine: Engine,
    /// The ids requests name models by (`POST /v1/models` adds, `DELETE` removes).
    pub models: ModelRegistry,
    pub api_key: Option<String>,
    /// Browser origin allowed by CORS (`*` for any); none means no CORS headers at all.
    pub cors_origin: Option<String>,
    pub limits: Limits,
    pub created: u64,
    pub requests: RequestCounters,
    /// The Ollama routes' store, pull settings and model files.
    pub ollama: crate::ollama::OllamaState,
    /// Shields and the serve-wide guard policy.
    pub safety: crate::shields::Safety,
    /// Agents, tools, Responses and stored chat completions (see [`crate::agents`]).
    pub agents: crate::agents::AgentsState,
    /// The embedding models (see [`crate::embeddings`]); the first is the default.
    pub embeddings: crate::embeddings::EmbeddingModels,
    /// Uploaded files (see [`crate::files`]).
    pub files: crate::files::FilesState,
    /// Fine-tuning jobs (see [`crate::fine_tuning`]).
    pub fine_tuning: std::sync::Arc<crate::fine_tuning::FineTuning>,
    /// Batches of the Batches API (see [`crate::batch::api`]).
    pub batches: crate::batch::store::Batches,
    /// Llama Stack datasets and registered scoring functions (see [`crate::datasets`]).
    pub evals: std::sync::Arc<crate::datasets::EvalStore>,
}

/// `ferrollama_requests_total{route,status}`: one counter per (route, status), fixed at
/// start so counting never locks.
#[derive(Debug)]
pub struct RequestCounters {
    pub routes: Vec<&'static str>,
    counts: Vec<AtomicU64>,
}

/// Statuses we count separately; others fall in the last slot as their class.
const STATUSES: [u16; 12] = [200, 400, 401, 404, 405, 408, 413, 415, 422, 429, 500, 503];

impl RequestCounters {
    pub fn new(routes: Vec<&'static str>) -> RequestCounters {
        let n = (routes.len() + 1) * (STATUSES.len() + 1);
        RequestCounters {
            routes,
            counts: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn index(&self, route: &str, status: u16) -> usize {
        let r = self
            .routes
            .iter()
            .position(|&x| x == route)
            .unwrap_or(self.routes.len());
        let s = STATUSES
            .iter()
            .position(|&x| x == status)
            .unwrap_or(STATUSES.len());
        r * (STATUSES.len() + 1) + s
    }

    pub fn record(&self, route: &str, status: u16) {
        let i = self.index(route, status);
        self.counts[i].fetch_add(1, Relaxed);
    }

    /// (route, status label, count) for every non-zero counter.
    pub fn snapshot(&self) -> Vec<(&'static str, String, u64)> {
        let mut out = Vec::new();
        for (ri, route) in self
            .routes
            .iter()
            .copied()
            .chain(std::iter::once("other"))
            .enumerate()
        {
            for si in 0..=STATUSES.len() {
                let n = self.counts[ri * (STATUSES.len() + 1) + si].load(Relaxed);
                if n > 0 {
                    let label = STATUSES
                        .get(si)
                        .map_or_else(|| "other".to_string(), |s| s.to_string());
                    out.push((route, label, n));
                }
            }
        }
        out
    }
}

/// One id a model is served under.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub id: String,
    /// Index into the engine's models.
    pub model: usize,
    /// What the id was registered for (the aliased id, store name or path); for the
    /// models given at start, the id itself.
    pub provider_model_id: String,
    /// The caller's metadata, returned as given.
    pub metadata: serde_json::Value,
    /// A LoRA adapter on the model (`serve --lora`, `POST /v1/load_lora_adapter`): requests
    /// naming this id run the model with it. Requests hold their own `Arc`, so removing the
    /// id never pulls the adapter from under a running request.
    pub lora: Option<std::sync::Arc<ferrollama_engine::Lora>>,
}

/// Model ids → engine model indexes, shared by every handler.
///
/// Several ids may name one model (aliases). Ids are removed with `DELETE /v1/models/{id}`;
/// the engine never unloads a model (its index stays valid for requests already running,
/// and registering the same file again reuses it), so removing an id only stops new
/// requests from using it. The lock is held for lookups and inserts only, never across an
/// await or a model load.
#[derive(Debug, Default)]
pub struct ModelRegistry {
    inner: RwLock<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    /// In registration order (listings keep it).
    entries: Vec<Registered>,
    /// Files loaded at runtime, by model index: registering one again reuses the model.
    loaded: Vec<(PathBuf, usize)>,
}

/// Why an id could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "the model id '{0}' is already registered; DELETE /v1/models/{0} first or pick another id"
    )]
    Duplicate(String),
}

impl ModelRegistry {
    /// Model `i` under `ids[i]` (the models given at start).
    pub fn new(ids: Vec<String>) -> ModelRegistry {
        let entries = ids
            .into_iter()
            .enumerate()
            .map(|(model, id)| Registered {
                provider_model_id: id.clone(),
                id,
                model,
                metadata: serde_json::Value::Object(Default::default()),
                lora: None,
            })
            .collect();
        ModelRegistry {
            inner: RwLock::new(RegistryInner {
                entries,
                loaded: Vec::new(),
            }),
        }
    }

    /// These registrations (ids must be distinct; the caller checks).
    pub fn with_entries(entries: Vec<Registered>) -> ModelRegistry {
        ModelRegistry {
            inner: RwLock::new(RegistryInner {
                entries,
                loaded: Vec::new(),
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RegistryInner> {
        // A panic elsewhere while holding the lock leaves consistent data (every write is
        // one push or remove), so a poisoned lock is still used.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RegistryInner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The model index of `id`.
    pub fn resolve(&self, id: &str) -> Option<usize> {
        self.read()
            .entries
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.model)
    }

    /// The model index of `id` and the adapter it runs with, if any.
    pub fn resolve_lora(
        &self,
        id: &str,
    ) -> Option<(usize, Option<std::sync::Arc<ferrollama_engine::Lora>>)> {
        self.read()
            .entries
            .iter()
            .find(|e| e.id == id)
            .map(|e| (e.model, e.lora.clone()))
    }

    /// The registration of `id`.
    pub fn get(&self, id: &str) -> Option<Registered> {
        self.read().entries.iter().find(|e| e.id == id).cloned()
    }

    /// Every id, in registration order.
    pub fn ids(&self) -> Vec<String> {
        self.read().entries.iter().map(|e| e.id.clone()).collect()
    }

    /// Every registration, in order.
    pub fn entries(&self) -> Vec<Registered> {
        self.read().entries.clone()
    }

    /// Whether `id` is registered.
    pub fn contains(&self, id: &str) -> bool {
        self.resolve(id).is_some()
    }

    /// Adds `r`; 409-worthy when its id is taken.
    pub fn insert(&self, r: Registered) -> Result<(), RegistryError> {
        let mut g = self.write();
        if g.entries.iter().any(|e| e.id == r.id) {
            return Err(RegistryError::Duplicate(r.id));
        }
        g.entries.push(r);
        Ok(())
    }

    /// Removes `id`, returning what it was.
    pub fn remove(&self, id: &str) -> Option<Registered> {
        let mut g = self.write();
        let i = g.entries.iter().position(|e| e.id == id)?;
        Some(g.entries.remove(i))
    }

    /// The model loaded at runtime from `path`, if any.
    pub fn loaded_from(&self, path: &std::path::Path) -> Option<usize> {
        self.read()
            .loaded
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, i)| *i)
    }

    /// Notes that model `model` was loaded at runtime from `path`.
    pub fn note_loaded(&self, path: PathBuf, model: usize) {
        self.write().loaded.push((path, model));
    }

    /// The file a runtime-loaded model came from.
    pub fn path_of(&self, model: usize) -> Option<PathBuf> {
        self.read()
            .loaded
            .iter()
            .find(|(_, i)| *i == model)
            .map(|(p, _)| p.clone())
    }
}
