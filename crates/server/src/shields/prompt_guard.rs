//! Prompt Guard shields: a model folder loaded once per server (several shields, e.g. one
//! per mode, share it), with each shield's mode and threshold.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::StatusCode;
use ferrollama_safety::prompt_guard::{Mode, PromptGuard, WeightFormat};
use ferrollama_safety::prompt_guard_shield::PromptGuardShield;
use ferrollama_safety::{SafetyError, Shield, ShieldKind};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// Whether `dir` looks like a Prompt Guard (DeBERTa-v2/v3) folder: a `config.json` whose
/// `model_type` is `deberta-v2`.
pub fn is_prompt_guard_dir(dir: &Path) -> bool {
    std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v.get("model_type").and_then(Value::as_str) == Some("deberta-v2"))
}

/// The model in `dir`, loaded now or taken from the server's cache.
pub async fn load(
    app: &AppState,
    dir: &Path,
    format: WeightFormat,
) -> Result<Arc<PromptGuard>, SafetyError> {
    let key: PathBuf = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let cache_key = (key.clone(), format == WeightFormat::Q8_0);
    if let Some(m) = app
        .safety
        .prompt_guards
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&cache_key)
    {
        return Ok(m.clone());
    }
    let m = tokio::task::spawn_blocking(move || PromptGuard::load_with(&key, format))
        .await
        .map_err(|e| SafetyError::Engine(format!("loading Prompt Guard failed: {e}")))??;
    let m = Arc::new(m);
    app.safety
        .prompt_guards
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(cache_key)
        .or_insert_with(|| m.clone());
    Ok(m)
}

/// The shield's settings from registration params `{"mode", "threshold", "weights"}`.
pub fn settings(params: &Value) -> Result<(Mode, Option<f32>, WeightFormat), ApiError> {
    let mode = match params.get("mode") {
        None | Some(Value::Null) => Mode::Jailbreak,
        Some(v) => v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
            ApiError::invalid_param(
                "params.mode",
                format!("expected \"jailbreak\" or \"injection\", got {v}"),
            )
        })?,
    };
    let threshold = match params.get("threshold") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|t| (0.0..=1.0).contains(t))
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "params.threshold",
                        format!("expected a number in [0, 1], got {v}"),
                    )
                })? as f32,
        ),
    };
    let format = match params.get("weights").and_then(Value::as_str) {
        None | Some("f32") => WeightFormat::F32,
        Some("q8_0") => WeightFormat::Q8_0,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "params.weights",
                format!("expected \"f32\" or \"q8_0\", got {other:?}"),
            ));
        }
    };
    Ok((mode, threshold, format))
}

/// A Prompt Guard shield named `id` on the model folder `target`.
pub async fn shield(
    app: &Arc<AppState>,
    id: &str,
    target: &str,
    params: Value,
) -> Result<Shield, ApiError> {
    let (mode, threshold, format) = settings(&params)?;
    let dir = Path::new(target);
    if !dir.is_dir() {
        return Err(ApiError::invalid_param(
            "provider_shield_id",
            format!(
                "Prompt Guard model folder '{target}' does not exist on the server (give the folder holding config.json, model.safetensors and tokenizer.json)"
            ),
        ));
    }
    let model = load(app, dir, format).await.map_err(|e| match e {
        SafetyError::NotFound(m) | SafetyError::Invalid(m) => {
            ApiError::invalid_param("provider_shield_id", m)
        }
        other => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
            other.to_string(),
        ),
    })?;
    let mut s = PromptGuardShield::new(model, mode);
    if let Some(t) = threshold {
        s = s
            .with_threshold(t)
            .map_err(|e| ApiError::invalid_param("params.threshold", e.to_string()))?;
    }
    Ok(record(id, target, s, format))
}

/// The registry entry of Prompt Guard shield `s` named `id` on the folder `target`, with
/// the params it reports (`mode`, `threshold`, `weights`).
pub fn record(id: &str, target: &str, s: PromptGuardShield, format: WeightFormat) -> Shield {
    let params = json!({"mode": s.mode.name(), "threshold": s.threshold,
                        "weights": if format == WeightFormat::Q8_0 { "q8_0" } else { "f32" }});
    Shield {
        id: id.to_string(),
        provider_id: "prompt-guard".into(),
        provider_resource_id: target.to_string(),
        params,
        kind: ShieldKind::PromptGuard(s),
    }
}
