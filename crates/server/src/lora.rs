//! LoRA adapters loaded and unloaded while serving, in vLLM's request shapes (what its
//! clients already send):
//!
//! - `POST /v1/load_lora_adapter {"lora_name": NAME, "lora_path": DIR_OR_GGUF}` reads the
//!   adapter (a PEFT folder or a llama.cpp GGUF adapter) for the base model and serves it
//!   under NAME: it appears in `/v1/models` with `parent` = the base, and a request whose
//!   `model` is NAME runs the base with it, batched with every other request of the base.
//!   `base_model` (ours, optional) picks the base among several served models; default:
//!   the first model given at start.
//! - `POST /v1/unload_lora_adapter {"lora_name": NAME}` removes NAME. Requests already
//!   running on it hold the adapter (`Arc`) and finish with it; new ones get 404.
//!
//! Both answer as vLLM does: 200 with a plain-text line, 400 for a bad body or adapter (the
//! message says why), 404 for an unknown adapter.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrollama_engine::Lora;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::{AppState, Registered};

/// vLLM's load body.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct LoadLoraRequest {
    /// The id requests will use as `model`.
    pub lora_name: String,
    /// A PEFT adapter folder (adapter_config.json + adapter_model.safetensors) or a
    /// llama.cpp GGUF LoRA adapter, on the server's disk.
    pub lora_path: String,
    /// The served model id the adapter is for (default: the first model served).
    #[serde(default)]
    pub base_model: Option<String>,
}

/// vLLM's unload body.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct UnloadLoraRequest {
    pub lora_name: String,
    /// Accepted for vLLM compatibility and ignored (the name identifies the adapter).
    #[serde(default)]
    pub lora_int_id: Option<i64>,
}

fn bad(param: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid_param(param, msg)
}

/// `POST /v1/load_lora_adapter`.
pub async fn load(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<LoadLoraRequest>,
) -> Result<Response, ApiError> {
    let name = req.lora_name.trim().to_string();
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(bad(
            "lora_name",
            "lora_name must be 1 to 256 characters, without control characters",
        ));
    }
    if req.lora_path.trim().is_empty() {
        return Err(bad(
            "lora_path",
            "lora_path must name an adapter folder or .gguf file",
        ));
    }
    if app.models.contains(&name) {
        return Err(bad(
            "lora_name",
            format!(
                "the name '{name}' is already in use; unload it first \
                 (POST /v1/unload_lora_adapter) or pick another lora_name"
            ),
        ));
    }
    let base = match &req.base_model {
        Some(b) => {
            let (i, lora) = app
                .models
                .resolve_lora(b)
                .ok_or_else(|| ApiError::model_not_found(b, &app.models.ids()))?;
            if lora.is_some() {
                return Err(bad(
                    "base_model",
                    format!("'{b}' is an adapter; give the id of the model it is for"),
                ));
            }
            i
        }
        None => 0,
    };
    let model = crate::job::loaded_model(&app, base)?;
    let path = PathBuf::from(&req.lora_path);
    let n = name.clone();
    let lora = tokio::task::spawn_blocking(move || Lora::load(n, &path, &model))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| bad("lora_path", format!("cannot load the adapter: {e}")))?;
    let r = Registered {
        id: name.clone(),
        model: base,
        provider_model_id: req.lora_path.clone(),
        metadata: serde_json::json!({}),
        lora: Some(Arc::new(lora)),
    };
    app.models
        .insert(r)
        .map_err(|e| bad("lora_name", e.to_string()))?;
    tracing::info!(name = %name, path = %req.lora_path, "LoRA adapter loaded");
    Ok((
        StatusCode::OK,
        format!("Success: LoRA adapter '{name}' added successfully."),
    )
        .into_response())
}

/// `POST /v1/unload_lora_adapter`.
pub async fn unload(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<UnloadLoraRequest>,
) -> Result<Response, ApiError> {
    let name = req.lora_name.trim();
    match app.models.get(name) {
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("the LoRA adapter '{name}' cannot be found"),
        )),
        Some(r) if r.lora.is_none() => Err(bad(
            "lora_name",
            format!(
                "'{name}' is a model, not a LoRA adapter; DELETE /v1/models/{name} removes a model id"
            ),
        )),
        Some(_) => {
            app.models.remove(name);
            tracing::info!(name = %name, "LoRA adapter unloaded");
            Ok((
                StatusCode::OK,
                format!("Success: LoRA adapter '{name}' removed successfully."),
            )
                .into_response())
        }
    }
}
