//! Request bodies: read under the size cap, then parsed as JSON into the route's type. Every
//! failure is a 4xx in OpenAI's envelope (axum's own rejections would be plain text and
//! 422/415, which clients map to the wrong exceptions).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| {
                let t = t.trim();
                t.eq_ignore_ascii_case("application/json") || t.ends_with("+json")
            });
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    "the request body is too large",
                )
            } else {
                ApiError::invalid("cannot read the request body")
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses `bytes` as `T`, with a message that says where the problem is.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            "the request body is empty; send a JSON object",
        ));
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::invalid("the request body is not valid UTF-8"));
    }
    // Parsed as a value first: serde_json's recursion limit (128) then applies to every
    // field, including ones the route ignores, so deep nesting is refused everywhere.
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    }
    parse_value(v)
}

/// Reads an already parsed JSON object as `T`, with [`parse`]'s message.
pub fn parse_value<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::invalid(format!("invalid request: {e}")))
}

/// Deserializes a list whose items must be JSON objects (serde would otherwise accept an
/// array in place of a struct, reading its fields by position).
pub fn objects<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::Deserialize;
    use serde::de::Error;
    let items = Vec::<serde_json::Value>::deserialize(d)?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            if !v.is_object() {
                return Err(D::Error::custom(format!("item {i} must be an object")));
            }
            serde_json::from_value(v).map_err(|e| D::Error::custom(format!("item {i}: {e}")))
        })
        .collect()
}

/// [`objects`] for an optional list.
pub fn opt_objects<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    objects(d).map(Some)
}

/// A list of lists of objects (`messages_batch`).
pub fn object_lists<'de, D, T>(d: D) -> Result<Vec<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::Deserialize;
    use serde::de::Error;
    let lists = Vec::<Vec<serde_json::Value>>::deserialize(d)?;
    lists
        .into_iter()
        .map(|l| {
            l.into_iter()
                .map(|v| {
                    if !v.is_object() {
                        return Err(D::Error::custom("each message must be an object"));
                    }
                    serde_json::from_value(v).map_err(D::Error::custom)
                })
                .collect()
        })
        .collect()
}
