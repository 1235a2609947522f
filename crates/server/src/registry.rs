//! The model registry over HTTP: `POST /v1/models` registers an id (Llama Stack's
//! register-model body), `DELETE /v1/models/{id}` removes one.
//!
//! An id names either a model already served (an alias: `provider_model_id` is a served
//! id or a loaded model's own name) or a store entry / file path, which is then loaded
//! while the server runs: the file is parsed on a blocking thread, and the engine actor
//! gives it KV memory between two steps, so running requests are not disturbed.
//!
//! Deleting an id stops new requests from using it; requests already running on it
//! finish normally, since they hold the model itself. A model loaded at runtime stays
//! loaded when its last id goes (the engine never unloads: indexes stay valid for the
//! engine's life); registering the same file again reuses it without loading it twice.
//! Any id may be deleted, the ones given at start included; a model left without ids can
//! be registered again by its own name.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrollama_engine::Model;
use ferrollama_store::StoreError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::{AppState, Registered, RegistryError};

/// Llama Stack's register-model body.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct RegisterRequest {
    /// The id requests will use.
    pub model_id: String,
    /// What the id serves: a served model id (an alias), a model in the store, or a
    /// .gguf file / model folder on the server's disk. Default: `model_id`.
    #[serde(default)]
    pub provider_model_id: Option<String>,
    /// Must be `ferrollama` when given.
    #[serde(default)]
    pub provider_id: Option<String>,
    /// `llm` (default); `embedding` is not supported yet.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Kept and returned with the model.
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// One model in a body both clients parse (OpenAI's and Llama Stack's fields together).
/// An adapter also carries vLLM's `parent` (the base model's id) and `root` (its path).
pub fn model_json(app: &AppState, r: &Registered) -> Value {
    let mut v = model_json_plain(app, r);
    if let (Some(l), Some(o)) = (&r.lora, v.as_object_mut()) {
        let parent = app
            .engine
            .model(r.model)
            .map_or_else(String::new, |m| m.name.clone());
        o.insert("parent".into(), json!(parent));
        o.insert("root".into(), json!(l.path.display().to_string()));
        o.insert(
            "lora".into(),
            json!({"rank": l.adapter.rank, "alpha": l.adapter.alpha}),
        );
    }
    v
}

fn model_json_plain(app: &AppState, r: &Registered) -> Value {
    json!({
        "id": r.id,
        "object": "model",
        "created": app.created,
        "owned_by": "ferrollama",
        "identifier": r.id,
        "provider_resource_id": r.provider_model_id,
        "provider_id": "ferrollama",
        "type": "model",
        "metadata": r.metadata,
        "model_type": "llm",
    })
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.trim().is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::invalid_param(
            "model_id",
            "model_id must be 1 to 256 characters, without control characters",
        ));
    }
    Ok(())
}

fn conflict(e: RegistryError) -> ApiError {
    ApiError {
        param: Some("model_id".into()),
        code: Some("model_exists"),
        ..ApiError::new(StatusCode::CONFLICT, "invalid_request_error", e.to_string())
    }
}

/// `POST /v1/models`.
pub async fn register(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<Response, ApiError> {
    check_id(&req.model_id)?;
    match req.model_type.as_deref() {
        None | Some("llm") => {}
        Some("embedding") => {
            // Embedding models are loaded at start; registering one that is loaded is a
            // no-op that answers its entry (what Llama Stack clients do before using it).
            let target = req.provider_model_id.as_deref().unwrap_or(&req.model_id);
            return match app.embeddings.get(target) {
                Some(m) if target == req.model_id => {
                    Ok(axum::Json(crate::embeddings::model_json(&app, m)).into_response())
                }
                _ => Err(ApiError::invalid_param(
                    "model_type",
                    format!(
                        "embedding models are loaded when the server starts (serve --embedding-model); loaded: {}",
                        app.embeddings.ids().join(", ")
                    ),
                )),
            };
        }
        Some(other) => {
            return Err(ApiError::invalid_param(
                "model_type",
                format!("model_type must be \"llm\" or \"embedding\", not {other:?}"),
            ));
        }
    }
    if let Some(p) = req.provider_id.as_deref()
        && p != "ferrollama"
    {
        return Err(ApiError::invalid_param(
            "provider_id",
            format!("this server's only provider is \"ferrollama\", not {p:?}"),
        ));
    }
    let metadata = match req.metadata {
        None | Some(Value::Null) => json!({}),
        Some(m @ Value::Object(_)) => m,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "metadata",
                "metadata must be a JSON object",
            ));
        }
    };
    if app.models.contains(&req.model_id) {
        return Err(conflict(RegistryError::Duplicate(req.model_id)));
    }
    let target = req
        .provider_model_id
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| req.model_id.clone());
    if target.len() > 4096 || target.chars().any(char::is_control) {
        return Err(ApiError::invalid_param(
            "provider_model_id",
            "provider_model_id is not a model id, store name or path",
        ));
    }
    let model = match alias_target(&app, &target) {
        Some(i) => i,
        None => load_on_demand(&app, &target).await?,
    };
    // An alias of an adapter's id serves the same adapter.
    let lora = app.models.get(&target).and_then(|r| r.lora);
    let r = Registered {
        id: req.model_id,
        model,
        provider_model_id: target,
        metadata,
        lora,
    };
    app.models.insert(r.clone()).map_err(conflict)?;
    tracing::info!(id = %r.id, model, target = %r.provider_model_id, "model registered");
    Ok(axum::Json(model_json(&app, &r)).into_response())
}

/// A served id, or the own name of a loaded model (also one whose ids were all deleted).
pub(crate) fn alias_target(app: &AppState, target: &str) -> Option<usize> {
    app.models
        .resolve(target)
        .or_else(|| app.engine.models().iter().position(|m| m.name == target))
}

/// Loads a store entry or a file into the engine (or finds it loaded already); returns
/// its index.
pub(crate) async fn load_on_demand(app: &Arc<AppState>, target: &str) -> Result<usize, ApiError> {
    let store = app.ollama.store.clone();
    let arg = PathBuf::from(target);
    let path = tokio::task::spawn_blocking(move || -> Result<PathBuf, StoreError> {
        let p = match &store {
            Some(s) => s.resolve_arg(&arg)?,
            None if arg.exists() => arg,
            None => {
                return Err(StoreError::NoSuchModel {
                    arg,
                    root: PathBuf::new(),
                    close: Vec::new(),
                });
            }
        };
        // One spelling per file, so registering it again finds the loaded model.
        Ok(std::fs::canonicalize(&p).unwrap_or(p))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| match e {
        StoreError::NoSuchModel { .. } | StoreError::UnknownModel { .. } => ApiError {
            param: Some("provider_model_id".into()),
            code: Some("model_not_found"),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("'{target}' is not a served model id, a model in the store or a file: {e}"),
            )
        },
        e => ApiError::invalid_param("provider_model_id", e.to_string()),
    })?;
    if let Some(i) = app.models.loaded_from(&path) {
        return Ok(i);
    }
    let shown = path.display().to_string();
    let p = path.clone();
    let model = tokio::task::spawn_blocking(move || Model::load(&p))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            ApiError::invalid_param("provider_model_id", format!("cannot load {shown}: {e}"))
        })?;
    tracing::info!(path = %path.display(), "loading a model at runtime");
    let engine = app.engine.clone();
    let i = tokio::task::spawn_blocking(move || engine.load(Arc::new(model)))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::unavailable(format!("cannot add the model: {e}")))?;
    app.models.note_loaded(path, i);
    Ok(i)
}

/// `DELETE /v1/models/{model_id}`.
pub async fn unregister(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::invalid("the model id in the path is not valid UTF-8"))?;
    let Some(r) = app.models.remove(&id) else {
        return Err(ApiError::model_not_found(&id, &app.models.ids()));
    };
    tracing::info!(id = %r.id, model = r.model, "model unregistered");
    Ok(axum::Json(json!({"id": r.id, "object": "model", "deleted": true})).into_response())
}
