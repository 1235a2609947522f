//! OpenAI's Batches API on `/v1/batches` (and `/v1/openai/v1/batches`): create from an
//! uploaded JSONL file, retrieve, list (`after`, `limit`), cancel; the `batch` object as
//! the `openai` client reads it. The work itself runs in the background ([`super::worker`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ENDPOINTS;
use super::store::{BatchRecord, Counts, Status};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::job::unix_now;
use crate::state::AppState;

/// The only completion window OpenAI offers; a batch here runs until it is done.
const WINDOW: &str = "24h";

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no batch with id '{id}'"),
    )
}

fn batch_id(id: Result<UrlPath<String>, PathRejection>) -> Result<String, ApiError> {
    id.map(|UrlPath(s)| s)
        .map_err(|_| ApiError::invalid("the batch id in the path is not valid UTF-8"))
}

fn string_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::invalid_param(name, format!("`{name}` must be a string")))
}

/// `metadata`: up to 16 string values (OpenAI's rule), or null.
fn metadata(body: &Value) -> Result<Value, ApiError> {
    match body.get("metadata") {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::Object(m)) if m.len() <= 16 && m.values().all(Value::is_string) => {
            Ok(Value::Object(m.clone()))
        }
        Some(_) => Err(ApiError::invalid_param(
            "metadata",
            "`metadata` must be an object of at most 16 string values",
        )),
    }
}

/// `POST /v1/batches`.
pub async fn create(
    State(app): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let input_file_id = string_field(&body, "input_file_id")?.to_string();
    let endpoint = string_field(&body, "endpoint")?.to_string();
    if !ENDPOINTS.contains(&endpoint.as_str()) {
        return Err(ApiError::invalid_param(
            "endpoint",
            format!("`endpoint` must be one of {ENDPOINTS:?}"),
        ));
    }
    let window = string_field(&body, "completion_window")?;
    if window != WINDOW {
        return Err(ApiError::invalid_param(
            "completion_window",
            "`completion_window` must be \"24h\"",
        ));
    }
    let metadata = metadata(&body)?;
    let store = app.files.store.clone();
    let fid = input_file_id.clone();
    let file = tokio::task::spawn_blocking(move || store.get_file(&fid))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("file store: {e}")))?;
    if file.is_none() {
        return Err(ApiError {
            param: Some("input_file_id".into()),
            ..ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!(
                    "no file with id '{input_file_id}'; upload it with POST /v1/files (purpose \"batch\")"
                ),
            )
        });
    }
    let now = unix_now();
    let record = BatchRecord {
        id: format!("batch_{:016x}", crate::openai::rand_seed()),
        input_file_id,
        endpoint,
        completion_window: WINDOW.into(),
        status: Status::Validating,
        metadata,
        created_at: now,
        expires_at: now + 86_400,
        in_progress_at: None,
        finalizing_at: None,
        completed_at: None,
        failed_at: None,
        cancelling_at: None,
        cancelled_at: None,
        output_file_id: None,
        error_file_id: None,
        request_counts: Counts::default(),
        errors: Vec::new(),
    };
    let entry = app
        .batches
        .add(record)
        .map_err(|e| ApiError::internal(format!("cannot save the batch: {e}")))?;
    super::worker::start(&app, entry.clone());
    Ok(axum::Json(entry.snapshot().to_json()).into_response())
}

/// `GET /v1/batches/{id}`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = batch_id(id)?;
    let e = app.batches.get(&id).ok_or_else(|| not_found(&id))?;
    Ok(axum::Json(e.snapshot().to_json()).into_response())
}

/// `GET /v1/batches`: newest first, `after` (a batch id) and `limit` (1 to 100, default 20).
pub async fn list(
    State(app): State<Arc<AppState>>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(format!("bad query: {e}")))?;
    let limit = crate::paging::limit(&q, 20, 100)?;
    let mut all: Vec<BatchRecord> = app.batches.list().iter().map(|e| e.snapshot()).collect();
    all.reverse();
    let start = match q.get("after") {
        None => 0,
        Some(a) => {
            all.iter().position(|r| r.id == *a).ok_or_else(|| {
                ApiError::invalid_param("after", format!("no batch with id '{a}'"))
            })? + 1
        }
    };
    let page: Vec<&BatchRecord> = all.iter().skip(start).take(limit).collect();
    let has_more = start + page.len() < all.len();
    Ok(axum::Json(json!({
        "object": "list",
        "data": page.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
        "first_id": page.first().map(|r| r.id.clone()),
        "last_id": page.last().map(|r| r.id.clone()),
        "has_more": has_more,
    }))
    .into_response())
}

/// `POST /v1/batches/{id}/cancel`: no new line starts; running ones finish, and the batch
/// ends `cancelled` with the lines done so far in its output file.
pub async fn cancel(
    State(app): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = batch_id(id)?;
    let e = app.batches.get(&id).ok_or_else(|| not_found(&id))?;
    let status = e.snapshot().status;
    if status.is_final() && status != Status::Cancelled {
        return Err(ApiError::invalid(format!(
            "batch {id} has already {} and cannot be cancelled",
            status.name()
        )));
    }
    e.cancel.store(true, Ordering::SeqCst);
    let r = e.update(|r| {
        if matches!(r.status, Status::Validating | Status::InProgress) {
            r.status = Status::Cancelling;
            r.cancelling_at = Some(unix_now());
        }
    });
    Ok(axum::Json(r.to_json()).into_response())
}
