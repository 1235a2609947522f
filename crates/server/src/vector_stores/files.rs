//! A vector store's files: attach (ingestion starts), list, retrieve, content, update
//! attributes, detach.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use ferrollama_rag::NewStoreFile;
use ferrollama_rag::vector_stores::FileStatus;
use serde_json::{Value, json};

use super::stores::{QueryMapArg, check_id, existing_files, query_map};
use super::{
    db, file_json, ingestor, list_query, no_file, no_store, page_json, parse_attributes,
    parse_chunking,
};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// `POST /v1/vector_stores/{id}/files`: `file_id`, `attributes`, `chunking_strategy`.
pub async fn attach(
    State(app): State<Arc<AppState>>,
    Path(vs): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    check_id(&vs)?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("the body must be a JSON object"))?;
    let file_id = obj
        .get("file_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_param("file_id", "file_id is required"))?
        .to_string();
    let attributes = parse_attributes(obj.get("attributes"), "attributes")?;
    let chunking = parse_chunking(obj.get("chunking_strategy"))?;
    let key = vs.clone();
    if db(&app, move |db| db.get_vector_store(&key))
        .await?
        .is_none()
    {
        return Err(no_store(&vs));
    }
    let (file_id, filename) = existing_files(&app, &[file_id])
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("file lookup returned nothing"))?;
    let (k, fid) = (vs.clone(), file_id.clone());
    let f = db(&app, move |db| {
        db.add_file(
            &k,
            NewStoreFile {
                file_id: fid,
                filename,
                attributes,
                chunking,
            },
        )
    })
    .await?;
    if f.status == FileStatus::InProgress {
        ingestor(&app).submit(&vs, &file_id);
    }
    Ok(axum::Json(file_json(&f)).into_response())
}

/// `GET /v1/vector_stores/{id}/files` (`filter`: in_progress, completed, failed, cancelled).
pub async fn list(
    State(app): State<Arc<AppState>>,
    Path(vs): Path<String>,
    q: QueryMapArg,
) -> Result<Response, ApiError> {
    check_id(&vs)?;
    let q = query_map(q)?;
    let status = match q.get("filter").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(FileStatus::parse(s).ok_or_else(|| {
            ApiError::invalid_param(
                "filter",
                format!("filter must be in_progress, completed, failed or cancelled, not {s:?}"),
            )
        })?),
    };
    let lq = list_query(&q)?;
    let key = vs.clone();
    let page = db(&app, move |db| {
        if db.get_vector_store(&key)?.is_none() {
            return Err(ferrollama_rag::StoreError::NotFound {
                kind: "vector store",
                id: key.clone(),
            });
        }
        db.list_store_files(&key, &lq, status)
    })
    .await?;
    Ok(axum::Json(page_json(&page, file_json)).into_response())
}

/// `GET /v1/vector_stores/{id}/files/{file_id}`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    Path((vs, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_id(&vs)?;
    let (k, f) = (vs.clone(), file.clone());
    let got = db(&app, move |db| db.get_store_file(&k, &f))
        .await?
        .ok_or_else(|| no_file(&vs, &file))?;
    Ok(axum::Json(file_json(&got)).into_response())
}

/// `GET /v1/vector_stores/{id}/files/{file_id}/content`: the file's chunks as text parts.
pub async fn content(
    State(app): State<Arc<AppState>>,
    Path((vs, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_id(&vs)?;
    let (k, f) = (vs.clone(), file.clone());
    let (meta, chunks) = db(&app, move |db| {
        let meta = db.get_store_file(&k, &f)?;
        let chunks = db.file_chunks(&k, &f)?;
        Ok((meta, chunks))
    })
    .await?;
    let meta = meta.ok_or_else(|| no_file(&vs, &file))?;
    let data: Vec<Value> = chunks
        .iter()
        .map(|t| json!({"type": "text", "text": t}))
        .collect();
    Ok(axum::Json(json!({
        "object": "vector_store.file_content.page",
        "file_id": meta.id,
        "filename": meta.filename,
        "attributes": meta.attributes,
        "data": data,
        "content": data,
        "has_more": false,
        "next_page": null,
    }))
    .into_response())
}

/// `POST /v1/vector_stores/{id}/files/{file_id}`: new `attributes`.
pub async fn update(
    State(app): State<Arc<AppState>>,
    Path((vs, file)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    check_id(&vs)?;
    if body.get("attributes").is_none() {
        return Err(ApiError::invalid_param(
            "attributes",
            "attributes is required",
        ));
    }
    let attributes = parse_attributes(body.get("attributes"), "attributes")?;
    let (k, f) = (vs.clone(), file.clone());
    let got = db(&app, move |db| {
        db.update_file_attributes(&k, &f, attributes)
    })
    .await?
    .ok_or_else(|| no_file(&vs, &file))?;
    Ok(axum::Json(file_json(&got)).into_response())
}

/// `DELETE /v1/vector_stores/{id}/files/{file_id}`: detaches the file and drops its chunks
/// (the file itself stays in /v1/files).
pub async fn delete(
    State(app): State<Arc<AppState>>,
    Path((vs, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_id(&vs)?;
    let (k, f) = (vs.clone(), file.clone());
    if !db(&app, move |db| db.remove_store_file(&k, &f)).await? {
        return Err(no_file(&vs, &file));
    }
    Ok(
        axum::Json(json!({"id": file, "object": "vector_store.file.deleted", "deleted": true}))
            .into_response(),
    )
}
