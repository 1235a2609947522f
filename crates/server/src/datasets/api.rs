//! The datasets routes: `/v1/datasets` (register, list, get, unregister) and
//! `/v1/datasetio/iterrows/{id}` and `/append-rows/{id}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::store::{Dataset, StoreError};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// The purposes llama-stack-client 0.2.12 knows.
pub const PURPOSES: [&str; 3] = [
    "post-training/messages",
    "eval/question-answer",
    "eval/messages-answer",
];

/// Longest dataset id, in bytes.
const MAX_ID: usize = 256;

/// `POST /v1/datasets`.
#[derive(Debug, Deserialize)]
pub struct RegisterDataset {
    pub purpose: String,
    pub source: Value,
    #[serde(default)]
    pub dataset_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// `POST /v1/datasetio/append-rows/{id}`.
#[derive(Debug, Deserialize)]
pub struct AppendRows {
    pub rows: Vec<Value>,
}

/// 404 for a dataset id.
pub fn no_dataset(id: &str) -> ApiError {
    ApiError {
        param: Some("dataset_id".into()),
        code: Some("not_found"),
        ..ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("the dataset '{id}' does not exist; GET /v1/datasets lists the datasets"),
        )
    }
}

/// A store failure as an answer.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::DuplicateDataset(_)
        | StoreError::DuplicateFunction(_)
        | StoreError::DuplicateBenchmark(_) => ApiError {
            code: Some("already_exists"),
            ..ApiError::new(StatusCode::CONFLICT, "invalid_request_error", e.to_string())
        },
        StoreError::NoDataset(id) => no_dataset(&id),
        StoreError::Io { .. } => ApiError::internal(e),
    }
}

/// Runs a store call off the async workers (it may write a file).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
        .map_err(store_error)
}

pub(super) fn path_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::invalid("the dataset id in the path is not valid UTF-8"))?;
    Ok(id)
}

/// Checks a caller-chosen id.
pub(super) fn check_id(id: &str, param: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID || id.chars().any(char::is_control) {
        return Err(ApiError::invalid_param(
            param,
            format!("{param} must be 1 to {MAX_ID} bytes without control characters"),
        ));
    }
    Ok(())
}

/// Objects only: each item of `rows` must be a JSON object.
pub(super) fn object_rows(
    rows: Vec<Value>,
    param: &str,
) -> Result<Vec<ferrollama_eval::scoring::Row>, ApiError> {
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Value::Object(o) => Ok(o),
            _ => Err(ApiError::invalid_param(
                param,
                format!("{param}[{i}] is not a JSON object"),
            )),
        })
        .collect()
}

/// `POST /v1/datasets`: registers a dataset, reading its source now.
pub async fn register(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<RegisterDataset>,
) -> Result<Response, ApiError> {
    if !PURPOSES.contains(&req.purpose.as_str()) {
        return Err(ApiError::invalid_param(
            "purpose",
            format!("purpose must be one of {}", PURPOSES.join(", ")),
        ));
    }
    let id = match req.dataset_id {
        Some(id) => {
            check_id(&id, "dataset_id")?;
            id
        }
        None => format!("dataset-{}", crate::agents::api::new_id()),
    };
    if app.evals.get(&id).is_some() {
        return Err(store_error(StoreError::DuplicateDataset(id)));
    }
    let metadata = match req.metadata {
        None | Some(Value::Null) => json!({}),
        Some(m @ Value::Object(_)) => m,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "metadata",
                "metadata must be an object",
            ));
        }
    };
    let rows = super::source::load(&app, &req.source).await?;
    let d = Dataset {
        identifier: id,
        purpose: req.purpose,
        source: req.source,
        metadata,
        rows,
    };
    let out = d.to_json();
    let store = app.evals.clone();
    blocking(move || store.register(d)).await?;
    Ok(axum::Json(out).into_response())
}

/// `GET /v1/datasets`.
pub async fn list(State(app): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = app.evals.list().iter().map(Dataset::to_json).collect();
    axum::Json(json!({ "data": data })).into_response()
}

/// `GET /v1/datasets/{id}`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let d = app.evals.get(&id).ok_or_else(|| no_dataset(&id))?;
    Ok(axum::Json(d.to_json()).into_response())
}

/// `DELETE /v1/datasets/{id}`.
pub async fn unregister(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let store = app.evals.clone();
    let key = id.clone();
    if !blocking(move || store.unregister(&key)).await? {
        return Err(no_dataset(&id));
    }
    Ok(axum::Json(Value::Null).into_response())
}

/// An integer query parameter.
fn int_param(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    q.get(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ApiError::invalid_param(name, format!("{name} must be an integer")))
        })
        .transpose()
}

/// `GET /v1/datasetio/iterrows/{id}?start_index=&limit=` → `{data, has_more}`; no limit
/// or `-1` reads to the end.
pub async fn iterrows(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let Query(q) = q.map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))?;
    let start = match int_param(&q, "start_index")? {
        None => 0,
        Some(s) if s >= 0 => s as usize,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "start_index",
                "start_index must be 0 or more",
            ));
        }
    };
    let limit = match int_param(&q, "limit")? {
        None | Some(-1) => None,
        Some(l) if l >= 0 => Some(l as usize),
        Some(_) => {
            return Err(ApiError::invalid_param(
                "limit",
                "limit must be 0 or more, or -1 for all rows",
            ));
        }
    };
    let (data, has_more) = app
        .evals
        .rows(&id, start, limit)
        .ok_or_else(|| no_dataset(&id))?;
    Ok(axum::Json(json!({ "data": data, "has_more": has_more })).into_response())
}

/// `POST /v1/datasetio/append-rows/{id}` `{rows}`.
pub async fn append_rows(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    JsonBody(req): JsonBody<AppendRows>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let rows = object_rows(req.rows, "rows")?;
    let store = app.evals.clone();
    blocking(move || store.append(&id, rows)).await?;
    Ok(axum::Json(Value::Null).into_response())
}
