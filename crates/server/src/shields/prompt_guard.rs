//! Prompt Guard shields over HTTP (filled in when the classifier lands).

use std::sync::Arc;

use ferrollama_safety::Shield;
use serde_json::Value;

use crate::error::ApiError;
use crate::state::AppState;

pub async fn shield(
    _app: &Arc<AppState>,
    _id: &str,
    _target: &str,
    _params: Value,
) -> Result<Shield, ApiError> {
    Err(ApiError::invalid_param(
        "provider_id",
        "prompt-guard shields are not built yet",
    ))
}
