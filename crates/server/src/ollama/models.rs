//! The model routes: `/api/tags` (served models, then the rest of the store), `/api/show`,
//! `/api/ps` (served models: all are loaded), `/api/delete` (store entries),
//! `/api/version`, `/`, and `/api/embed(dings)` (not available: 501).
//!
//! Details come from the GGUF header (`ferrollama_store::info`). A digest is the sha256 of
//! the store's recorded file hashes when the model is a store entry, else of its path, size
//! and modification time (an identity, not a content hash: hashing a large file on every
//! listing is too slow).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrollama_engine::ChatTemplate;
use ferrollama_store::info::gguf_summary;
use ferrollama_store::{Entry, EntryState, StoreError};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{OllamaBody, OllamaError, base_name};
use crate::error::ApiError;
use crate::state::AppState;

/// `expires_at` of a model kept loaded forever.
const FOREVER: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z

/// A model as the listing routes describe it.
struct Described {
    name: String,
    path: Option<PathBuf>,
    entry: Option<Entry>,
}

fn rfc3339(secs: u64) -> String {
    ferrollama_store::manifest::rfc3339(secs)
}

fn mtime(p: &Path) -> u64 {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Bytes of a model file, or of the files directly in a model folder.
fn size_of(p: &Path) -> u64 {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => std::fs::read_dir(p).map_or(0, |rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        }),
        _ => 0,
    }
}

fn parameter_size(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0}M", n / 1e6)
    } else {
        format!("{:.0}K", n / 1e3)
    }
}

impl Described {
    /// A served id and its model index.
    fn served(app: &AppState, id: &str, i: usize) -> Described {
        let name = id.to_string();
        let entry = app.ollama.store.as_ref().and_then(|s| s.get(&name).ok());
        let path = app
            .ollama
            .model_paths
            .get(i)
            .cloned()
            .flatten()
            .or_else(|| app.models.path_of(i))
            .or_else(|| entry.as_ref().and_then(|e| e.model_path.clone()));
        Described { name, path, entry }
    }

    fn size(&self) -> u64 {
        match (&self.entry, &self.path) {
            (Some(e), _) => e.size,
            (None, Some(p)) => size_of(p),
            (None, None) => 0,
        }
    }

    fn modified(&self) -> String {
        rfc3339(self.path.as_deref().map_or(0, mtime))
    }

    fn digest(&self) -> String {
        let mut h = Sha256::new();
        match self.entry.as_ref().and_then(|e| e.manifest.as_ref()) {
            Some(m) => {
                for f in &m.files {
                    h.update(f.sha256.as_bytes());
                }
            }
            None => {
                let p = self.path.as_deref().unwrap_or(Path::new(&self.name));
                h.update(format!("{}:{}:{}", p.display(), self.size(), mtime(p)).as_bytes());
            }
        }
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    }

    fn gguf(&self) -> Option<ferrollama_store::info::GgufSummary> {
        let p = self.path.as_deref()?;
        if p.is_file() {
            gguf_summary(p).ok()
        } else {
            None
        }
    }

    fn details(&self) -> Value {
        let g = self.gguf();
        let family = g
            .as_ref()
            .and_then(|g| g.architecture.clone())
            .unwrap_or_else(|| "llama".into());
        json!({
            "parent_model": "",
            "format": if g.is_some() { "gguf" } else { "safetensors" },
            "family": family,
            "families": [family],
            "parameter_size": g.as_ref().map_or_else(String::new, |g| parameter_size(g.parameters)),
            "quantization_level": g.as_ref().and_then(|g| g.file_type.clone()).unwrap_or_default(),
        })
    }

    fn listing(&self) -> Value {
        json!({
            "name": format!("{}:latest", self.name),
            "model": format!("{}:latest", self.name),
            "modified_at": self.modified(),
            "size": self.size(),
            "digest": self.digest(),
            "details": self.details(),
        })
    }
}

fn store_entries(app: &AppState) -> Vec<Entry> {
    app.ollama
        .store
        .as_ref()
        .and_then(|s| s.list().ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.state != EntryState::Incomplete && e.model_path.is_some())
        .collect()
}

/// `GET /api/tags`: served models, then the store's other complete entries.
pub async fn tags(State(app): State<Arc<AppState>>) -> Result<Response, OllamaError> {
    let list = tokio::task::spawn_blocking(move || {
        let mut out: Vec<Value> = app
            .models
            .entries()
            .iter()
            .map(|r| Described::served(&app, &r.id, r.model).listing())
            .collect();
        for e in store_entries(&app) {
            if app.models.contains(&e.name) {
                continue;
            }
            let d = Described {
                name: e.name.clone(),
                path: e.model_path.clone(),
                entry: Some(e),
            };
            out.push(d.listing());
        }
        out
    })
    .await
    .map_err(|e| OllamaError(ApiError::internal(e)))?;
    Ok(axum::Json(json!({"models": list})).into_response())
}

/// `POST /api/show` body.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ShowRequest {
    #[serde(default)]
    pub model: Option<String>,
    /// Older clients' name for `model`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub verbose: Option<bool>,
}

fn requested(model: &Option<String>, name: &Option<String>) -> Result<String, OllamaError> {
    model
        .clone()
        .or_else(|| name.clone())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| OllamaError::invalid("model is required"))
}

/// `POST /api/show`: what we know of a served or stored model.
pub async fn show(
    State(app): State<Arc<AppState>>,
    OllamaBody(req): OllamaBody<ShowRequest>,
) -> Result<Response, OllamaError> {
    let name = requested(&req.model, &req.name)?;
    let base = base_name(&name).to_string();
    let v = tokio::task::spawn_blocking(move || -> Result<Value, OllamaError> {
        let served = [&base, &name]
            .into_iter()
            .find_map(|id| app.models.resolve(id).map(|i| (i, id.clone())));
        let d = match &served {
            Some((i, id)) => Described::served(&app, id, *i),
            None => {
                let e = app
                    .ollama
                    .store
                    .as_ref()
                    .and_then(|s| s.get(&base).ok())
                    .filter(|e| e.model_path.is_some())
                    .ok_or_else(|| OllamaError::model_not_found(&name))?;
                Described {
                    name: e.name.clone(),
                    path: e.model_path.clone(),
                    entry: Some(e),
                }
            }
        };
        let template = served
            .and_then(|(i, _)| app.engine.model(i))
            .map_or_else(String::new, |m| match &m.template {
                ChatTemplate::Llama31 => "Llama 3.1 prompt format (built in)".to_string(),
                ChatTemplate::Jinja { source, .. } => source.clone(),
            });
        let mut info = serde_json::Map::new();
        if let Some(g) = d.gguf() {
            let arch = g.architecture.clone().unwrap_or_else(|| "llama".into());
            info.insert("general.architecture".into(), json!(arch));
            info.insert("general.parameter_count".into(), json!(g.parameters));
            if let Some(n) = &g.model_name {
                info.insert("general.basename".into(), json!(n));
            }
            if let Some(l) = &g.llama {
                for (k, v) in [
                    ("context_length", json!(l.context_length)),
                    ("embedding_length", json!(l.dim)),
                    ("block_count", json!(l.n_layers)),
                    ("feed_forward_length", json!(l.ffn_dim)),
                    ("attention.head_count", json!(l.n_heads)),
                    ("attention.head_count_kv", json!(l.n_kv_heads)),
                    ("attention.key_length", json!(l.head_dim)),
                    ("rope.freq_base", json!(l.rope_theta)),
                    ("vocab_size", json!(l.vocab_size)),
                ] {
                    info.insert(format!("{arch}.{k}"), v);
                }
            }
        }
        let from = d
            .path
            .as_deref()
            .map_or_else(|| d.name.clone(), |p| p.display().to_string());
        Ok(json!({
            "modelfile": format!("# Modelfile generated by ferrollama\nFROM {from}\n"),
            "parameters": "temperature 0.8\ntop_k 40\ntop_p 0.9\nrepeat_penalty 1.1\nrepeat_last_n 64",
            "template": template,
            "details": d.details(),
            "model_info": info,
            "capabilities": ["completion", "tools"],
            "modified_at": d.modified(),
        }))
    })
    .await
    .map_err(|e| OllamaError(ApiError::internal(e)))??;
    Ok(axum::Json(v).into_response())
}

/// `GET /api/ps`: every served model (all stay loaded).
pub async fn ps(State(app): State<Arc<AppState>>) -> Result<Response, OllamaError> {
    let list = tokio::task::spawn_blocking(move || {
        app.models
            .entries()
            .iter()
            .map(|r| {
                let i = r.model;
                let d = Described::served(&app, &r.id, i);
                let mut v = d.listing();
                let at = app.ollama.expiry(i).unwrap_or(FOREVER);
                v["expires_at"] = json!(rfc3339(at));
                v["size_vram"] = json!(0);
                v["context_length"] = json!(app.engine.context(i).unwrap_or(0));
                v
            })
            .collect::<Vec<Value>>()
    })
    .await
    .map_err(|e| OllamaError(ApiError::internal(e)))?;
    Ok(axum::Json(json!({"models": list})).into_response())
}

/// `DELETE /api/delete` body.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct DeleteRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// `DELETE /api/delete`: removes a store entry. A served model stays loaded until restart.
pub async fn delete(
    State(app): State<Arc<AppState>>,
    OllamaBody(req): OllamaBody<DeleteRequest>,
) -> Result<Response, OllamaError> {
    let name = requested(&req.model, &req.name)?;
    let Some(store) = app.ollama.store.clone() else {
        return Err(OllamaError::not_implemented(
            "this server has no model store to delete from",
        ));
    };
    let base = base_name(&name).to_string();
    let served = app.models.contains(&base);
    let r = tokio::task::spawn_blocking(move || store.remove(&base))
        .await
        .map_err(|e| OllamaError(ApiError::internal(e)))?;
    match r {
        Ok(_) => Ok(StatusCode::OK.into_response()),
        Err(StoreError::UnknownModel { .. }) if served => Err(OllamaError::invalid(format!(
            "model \"{name}\" is served from a file outside the store; there is nothing to delete"
        ))),
        Err(StoreError::UnknownModel { .. } | StoreError::BadName { .. }) => {
            Err(OllamaError::model_not_found(&name))
        }
        Err(StoreError::Busy { .. }) => Err(OllamaError(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            format!("model \"{name}\" is being pulled or removed; try again"),
        ))),
        Err(e) => Err(OllamaError(ApiError::internal(e))),
    }
}

/// `GET /api/version`: this server's version (not an Ollama release number).
pub async fn version() -> Response {
    axum::Json(json!({"version": env!("CARGO_PKG_VERSION")})).into_response()
}

/// `GET /` (and `HEAD /`): Ollama's liveness answer.
pub async fn root() -> &'static str {
    "Ollama is running"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_sizes_read_like_ollamas() {
        assert_eq!(parameter_size(134_515_008), "135M");
        assert_eq!(parameter_size(8_030_261_248), "8.0B");
        assert_eq!(parameter_size(52_000), "52K");
    }
}
