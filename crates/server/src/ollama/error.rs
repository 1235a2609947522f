//! Errors in Ollama's shape: `{"error": "message"}` with the status that says why.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;

/// An [`ApiError`] answered in Ollama's shape.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct OllamaError(pub ApiError);

impl From<ApiError> for OllamaError {
    fn from(e: ApiError) -> OllamaError {
        OllamaError(e)
    }
}

impl OllamaError {
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// 400.
    pub fn invalid(message: impl Into<String>) -> OllamaError {
        OllamaError(ApiError::invalid(message))
    }

    /// 404 in Ollama's wording, which its clients and users recognise.
    pub fn model_not_found(name: &str) -> OllamaError {
        OllamaError(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("model \"{name}\" not found, try pulling it first"),
        ))
    }

    /// 501: a route of Ollama's that this server does not implement.
    pub fn not_implemented(message: impl Into<String>) -> OllamaError {
        OllamaError(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "server_error",
            message,
        ))
    }

    /// The JSON body (also one NDJSON line when a stream fails part-way).
    pub fn body(&self) -> serde_json::Value {
        json!({"error": self.0.message})
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let mut r = (self.0.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.0.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}
