//! Ollama model names (`NAME:TAG`) to our model ids.

use super::OllamaError;
use crate::state::AppState;

/// `NAME:latest` is `NAME`; other names are taken as they are.
pub fn base_name(name: &str) -> &str {
    name.strip_suffix(":latest").unwrap_or(name)
}

/// The served model a request names: its index and the id it is registered under; a
/// model only in the store gets a 400 saying how to serve it, an unknown one Ollama's 404.
pub fn served(app: &AppState, name: &str) -> Result<(usize, String), OllamaError> {
    if name.is_empty() {
        return Err(OllamaError::invalid("model is required"));
    }
    let base = base_name(name);
    for id in [name, base] {
        if let Some(i) = app.models.resolve(id) {
            return Ok((i, id.to_string()));
        }
    }
    if in_store(app, base) {
        return Err(OllamaError::invalid(format!(
            "model \"{name}\" is in the store but not loaded by this server; register it with \
             `POST /v1/models {{\"model_id\": \"{base}\"}}` or restart with `ferrollama serve -m {base}`"
        )));
    }
    Err(OllamaError::model_not_found(name))
}

/// Whether the store holds a complete entry called `name`.
pub fn in_store(app: &AppState, name: &str) -> bool {
    app.ollama
        .store
        .as_ref()
        .is_some_and(|s| s.resolve(name).is_ok())
}
