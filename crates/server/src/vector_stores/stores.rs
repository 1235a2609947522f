//! Vector stores themselves: create (optionally with files), list, retrieve, update,
//! delete.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use ferrollama_rag::vector_stores::{Anchor, ExpiresAfter, is_vector_store_id};
use ferrollama_rag::{NewStoreFile, NewVectorStore, VectorStoreUpdate};
use serde_json::{Value, json};

use super::{
    db, ingestor, list_query, no_store, page_json, parse_attributes, parse_chunking, store_json,
};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

pub(crate) type QueryMapArg =
    Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

pub(crate) fn query_map(q: QueryMapArg) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))
}

fn expires_after(v: Option<&Value>) -> Result<Option<ExpiresAfter>, ApiError> {
    let bad = |m: &str| ApiError::invalid_param("expires_after", m);
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            if v.get("anchor").and_then(Value::as_str) != Some("last_active_at") {
                return Err(bad("expires_after.anchor must be \"last_active_at\""));
            }
            let days = v
                .get("days")
                .and_then(Value::as_u64)
                .filter(|d| (1..=365).contains(d))
                .ok_or_else(|| bad("expires_after.days must be a whole number from 1 to 365"))?;
            Ok(Some(ExpiresAfter {
                anchor: Anchor::LastActiveAt,
                days: u32::try_from(days).unwrap_or(365),
            }))
        }
    }
}

fn name_of(v: Option<&Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= 256 => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid_param(
            "name",
            "name must be a string of at most 256 characters",
        )),
    }
}

/// Checks that every id names an uploaded file; returns (id, filename).
pub(crate) async fn existing_files(
    app: &AppState,
    ids: &[String],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let f = app
            .files
            .get(id)
            .await
            .map_err(|e| ApiError::internal(format!("file store: {e}")))?
            .ok_or_else(|| {
                ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    format!("no file with id '{id}'; upload it with POST /v1/files first"),
                )
            })?;
        out.push((f.id, f.filename));
    }
    Ok(out)
}

/// `POST /v1/vector_stores`.
pub async fn create(
    State(app): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("the body must be a JSON object"))?;
    let name = name_of(obj.get("name"))?.unwrap_or_default();
    let metadata = parse_attributes(obj.get("metadata"), "metadata")?;
    let expires_after = expires_after(obj.get("expires_after"))?;
    let chunking = parse_chunking(obj.get("chunking_strategy"))?;
    let file_ids: Vec<String> = match obj.get("file_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            ApiError::invalid_param("file_ids", "file_ids must be a list of file ids")
        })?,
    };
    if file_ids.len() > 500 {
        return Err(ApiError::invalid_param(
            "file_ids",
            "at most 500 file_ids at creation; attach more with POST .../files",
        ));
    }
    let model = match obj.get("embedding_model").and_then(Value::as_str) {
        Some(id) => app.embeddings.find(&app, id)?.clone(),
        None => app.embeddings.default_model().cloned().ok_or_else(|| {
            ApiError::unavailable(
                "no embedding model is loaded: start serve with --embedding-model (default all-MiniLM-L6-v2)",
            )
        })?,
    };
    let dim = model.embedder.dimension();
    if let Some(d) = obj.get("embedding_dimension").and_then(Value::as_u64)
        && d as usize != dim
    {
        return Err(ApiError::invalid_param(
            "embedding_dimension",
            format!("{} gives {dim}-dimension vectors, not {d}", model.id),
        ));
    }
    let files = existing_files(&app, &file_ids).await?;
    let new = NewVectorStore {
        name,
        metadata,
        expires_after,
        embedding_model: model.id.clone(),
        embedding_dimension: dim,
        id: None,
    };
    let vs = db(&app, move |db| {
        let vs = db.create_vector_store(new)?;
        for (file_id, filename) in files {
            db.add_file(
                &vs.id,
                NewStoreFile {
                    file_id,
                    filename,
                    attributes: Default::default(),
                    chunking,
                },
            )?;
        }
        Ok(db.get_vector_store(&vs.id)?.unwrap_or(vs))
    })
    .await?;
    let ing = ingestor(&app);
    for id in &file_ids {
        ing.submit(&vs.id, id);
    }
    Ok(axum::Json(store_json(&vs)).into_response())
}

/// `GET /v1/vector_stores`.
pub async fn list(State(app): State<Arc<AppState>>, q: QueryMapArg) -> Result<Response, ApiError> {
    let q = list_query(&query_map(q)?)?;
    let page = db(&app, move |db| db.list_vector_stores(&q)).await?;
    Ok(axum::Json(page_json(&page, store_json)).into_response())
}

pub(crate) fn check_id(id: &str) -> Result<(), ApiError> {
    if is_vector_store_id(id)
        || (id.len() <= 128 && !id.is_empty() && !id.contains(char::is_control))
    {
        Ok(())
    } else {
        Err(no_store(id))
    }
}

/// `GET /v1/vector_stores/{id}`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let vs = super::store_or_404(&app, &id).await?;
    Ok(axum::Json(store_json(&vs)).into_response())
}

/// `POST /v1/vector_stores/{id}`: `name`, `metadata`, `expires_after` (null removes it).
pub async fn update(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("the body must be a JSON object"))?;
    let u = VectorStoreUpdate {
        name: name_of(obj.get("name"))?,
        metadata: match obj.get("metadata") {
            None => None,
            v => Some(parse_attributes(v, "metadata")?),
        },
        expires_after: match obj.get("expires_after") {
            None => None,
            v => Some(expires_after(v)?),
        },
    };
    let key = id.clone();
    let vs = db(&app, move |db| db.update_vector_store(&key, u))
        .await?
        .ok_or_else(|| no_store(&id))?;
    Ok(axum::Json(store_json(&vs)).into_response())
}

/// `DELETE /v1/vector_stores/{id}`.
pub async fn delete(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let key = id.clone();
    if !db(&app, move |db| db.delete_vector_store(&key)).await? {
        return Err(no_store(&id));
    }
    Ok(
        axum::Json(json!({"id": id, "object": "vector_store.deleted", "deleted": true}))
            .into_response(),
    )
}
