//! Request bodies of the Ollama routes: JSON objects parsed by the shared parser
//! (`crate::body::parse`), failures answered in Ollama's shape. Unlike the OpenAI routes no
//! `Content-Type` is required: Ollama accepts a bare body (`curl -d`), and so do we.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::OllamaError;
use crate::error::ApiError;

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct OllamaBody<T>(pub T);

impl<S, T> FromRequest<S> for OllamaBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = OllamaError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                OllamaError(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    "the request body is too large",
                ))
            } else {
                OllamaError::invalid("cannot read the request body")
            }
        })?;
        crate::body::parse(&bytes)
            .map(OllamaBody)
            .map_err(OllamaError)
    }
}
