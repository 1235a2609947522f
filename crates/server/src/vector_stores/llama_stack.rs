//! Llama Stack's retrieval APIs on the same vector stores: `/v1/vector-dbs` (register, list,
//! get, unregister) and `/v1/vector-io/insert` and `/query` (chunks with metadata,
//! precomputed embeddings accepted). The RAG tool is in `rag_tool.rs`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use ferrollama_rag::vector_stores::{NewChunk, SearchMode};
use ferrollama_rag::{ListQuery, NewVectorStore};
use serde_json::{Map, Value, json};

use super::search::{Search, run};
use super::stores::check_id;
use super::{db, no_store};
use crate::body::JsonBody;
use crate::embeddings::{EmbeddingModel, Inputs, embed};
use crate::error::ApiError;
use crate::state::AppState;

fn vector_db_json(v: &ferrollama_rag::vector_stores::VectorStore) -> Value {
    json!({
        "identifier": v.id,
        "provider_resource_id": v.id,
        "provider_id": "ferrollama",
        "type": "vector_db",
        "embedding_model": v.embedding_model,
        "embedding_dimension": v.embedding_dimension,
        "vector_db_name": v.name,
    })
}

pub(super) fn str_field<'a>(body: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::invalid_param(key, format!("{key} is required (a string)")))
}

/// `POST /v1/vector-dbs`: `vector_db_id`, `embedding_model`, `embedding_dimension`.
pub async fn register(
    State(app): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let id = str_field(&body, "vector_db_id")?.to_string();
    check_id(&id)?;
    let model = match body.get("embedding_model").and_then(Value::as_str) {
        Some(m) => app.embeddings.find(&app, m)?.clone(),
        None => app.embeddings.default_model().cloned().ok_or_else(|| {
            ApiError::unavailable("no embedding model is loaded (serve --embedding-model)")
        })?,
    };
    let dim = model.embedder.dimension();
    if let Some(d) = body.get("embedding_dimension").and_then(Value::as_u64)
        && d as usize != dim
    {
        return Err(ApiError::invalid_param(
            "embedding_dimension",
            format!("{} gives {dim}-dimension vectors, not {d}", model.id),
        ));
    }
    let new = NewVectorStore {
        name: body
            .get("vector_db_name")
            .and_then(Value::as_str)
            .unwrap_or(&id)
            .to_string(),
        metadata: Map::new(),
        expires_after: None,
        embedding_model: model.id.clone(),
        embedding_dimension: dim,
        id: Some(id.clone()),
    };
    // Registering an id that exists with the same model is idempotent, as in Llama Stack.
    let key = id.clone();
    let existing = db(&app, move |db| db.get_vector_store(&key)).await?;
    let vs = match existing {
        Some(vs) if vs.embedding_model == model.id => vs,
        Some(vs) => {
            return Err(ApiError::invalid_param(
                "vector_db_id",
                format!(
                    "{id} exists with the embedding model {}",
                    vs.embedding_model
                ),
            ));
        }
        None => db(&app, move |db| db.create_vector_store(new)).await?,
    };
    Ok(axum::Json(vector_db_json(&vs)).into_response())
}

/// `GET /v1/vector-dbs`: every store (OpenAI-created ones too), `{"data": [...]}`.
pub async fn list(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let all = db(&app, |db| {
        let mut out = Vec::new();
        let mut q = ListQuery {
            limit: 100,
            order: ferrollama_rag::Order::Asc,
            ..ListQuery::default()
        };
        loop {
            let page = db.list_vector_stores(&q)?;
            out.extend(page.data);
            if !page.has_more {
                return Ok(out);
            }
            q.after = page.last_id;
        }
    })
    .await?;
    Ok(
        axum::Json(json!({"data": all.iter().map(vector_db_json).collect::<Vec<_>>()}))
            .into_response(),
    )
}

/// `GET /v1/vector-dbs/{id}`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let vs = super::store_or_404(&app, &id).await?;
    Ok(axum::Json(vector_db_json(&vs)).into_response())
}

/// `DELETE /v1/vector-dbs/{id}`.
pub async fn unregister(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let key = id.clone();
    if !db(&app, move |db| db.delete_vector_store(&key)).await? {
        return Err(no_store(&id));
    }
    Ok(axum::Json(Value::Null).into_response())
}

/// Text of an `InterleavedContent`: a string, a text item, or a list (joined by spaces, as
/// Llama Stack's `interleaved_content_as_str`); images are refused.
pub fn content_text(v: &Value, field: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("text") => Ok(o
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()),
            Some(other) => Err(ApiError::invalid_param(
                field,
                format!("{field}: {other} content cannot be indexed; only text"),
            )),
            None => Err(ApiError::invalid_param(
                field,
                format!("{field}: a content item needs a \"type\""),
            )),
        },
        Value::Array(items) => Ok(items
            .iter()
            .map(|i| content_text(i, field))
            .collect::<Result<Vec<_>, _>>()?
            .join(" ")),
        _ => Err(ApiError::invalid_param(
            field,
            format!("{field} must be text content"),
        )),
    }
}

pub(super) fn store_model(
    app: &AppState,
    vs: &ferrollama_rag::vector_stores::VectorStore,
) -> Result<EmbeddingModel, ApiError> {
    app.embeddings.get(&vs.embedding_model).cloned().ok_or_else(|| {
        ApiError::unavailable(format!(
            "vector db {} uses the embedding model {}, which is not loaded (serve --embedding-model)",
            vs.id, vs.embedding_model
        ))
    })
}

pub(super) fn group_id() -> String {
    format!(
        "chunks-{}",
        ferrollama_rag::files::new_file_id().trim_start_matches("file-")
    )
}

/// `POST /v1/vector-io/insert`: `{vector_db_id, chunks: [{content, metadata, embedding?}]}`.
pub async fn insert(
    State(app): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let id = str_field(&body, "vector_db_id")?.to_string();
    let chunks = body
        .get("chunks")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid_param("chunks", "chunks is required (a list)"))?;
    if chunks.is_empty() {
        return Err(ApiError::invalid_param(
            "chunks",
            "chunks must not be empty",
        ));
    }
    let vs = super::store_or_404(&app, &id).await?;
    let mut texts = Vec::with_capacity(chunks.len());
    let mut metas = Vec::with_capacity(chunks.len());
    let mut given: Vec<Option<Vec<f32>>> = Vec::with_capacity(chunks.len());
    for (i, c) in chunks.iter().enumerate() {
        let field = format!("chunks[{i}]");
        let text = content_text(c.get("content").unwrap_or(&Value::Null), &field)?;
        if text.trim().is_empty() {
            return Err(ApiError::invalid_param(
                "chunks",
                format!("{field}.content is empty"),
            ));
        }
        texts.push(text);
        metas.push(match c.get("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err(ApiError::invalid_param(
                    "chunks",
                    format!("{field}.metadata must be an object"),
                ));
            }
        });
        given.push(match c.get("embedding") {
            None | Some(Value::Null) => None,
            Some(e) => {
                let v: Vec<f32> = serde_json::from_value(e.clone())
                    .map_err(|_| ApiError::invalid_param("chunks", format!("{field}.embedding must be a list of numbers")))?;
                if v.len() != vs.embedding_dimension {
                    return Err(ApiError::invalid_param(
                        "chunks",
                        format!(
                            "{field}.embedding has {} dimensions; vector db {id} holds {}-dimension vectors ({})",
                            v.len(),
                            vs.embedding_dimension,
                            vs.embedding_model
                        ),
                    ));
                }
                Some(v)
            }
        });
    }
    let missing: Vec<usize> = (0..texts.len()).filter(|&i| given[i].is_none()).collect();
    let mut computed = None;
    if !missing.is_empty() {
        let m = store_model(&app, &vs)?;
        let t: Vec<String> = missing.iter().map(|&i| texts[i].clone()).collect();
        computed = Some(embed(&m, Inputs::Texts(t)).await?);
    }
    let mut out = Vec::with_capacity(texts.len());
    let mut k = 0;
    for (i, text) in texts.into_iter().enumerate() {
        let embedding = match given[i].take() {
            Some(v) => v,
            None => {
                let row = computed.as_ref().map_or(Vec::new(), |e| e.row(k).to_vec());
                k += 1;
                row
            }
        };
        let tokens = metas[i]
            .get("token_count")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        out.push(NewChunk {
            text,
            tokens,
            embedding,
            metadata: std::mem::take(&mut metas[i]),
        });
    }
    // The entry's name: the chunks' document_id when they share one.
    let doc = |c: &NewChunk| {
        c.metadata
            .get("document_id")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let first = doc(&out[0]);
    let name = match first {
        Some(d) if out.iter().all(|c| doc(c).as_deref() == Some(d.as_str())) => d,
        _ => "chunks".to_string(),
    };
    let group = group_id();
    db(&app, move |db| db.insert_chunks(&id, &group, &name, &out)).await?;
    Ok(axum::Json(Value::Null).into_response())
}

/// `params`: `max_chunks` (default 3, as Llama Stack), `score_threshold`, `mode`.
pub(super) fn query_params(p: Option<&Value>) -> Result<(usize, f32, SearchMode), ApiError> {
    let p = p.filter(|v| !v.is_null());
    let max = match p.and_then(|p| p.get("max_chunks")) {
        None | Some(Value::Null) => 3,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=1000).contains(n))
            .map(|n| n as usize)
            .ok_or_else(|| {
                ApiError::invalid_param(
                    "params",
                    "max_chunks must be a whole number from 1 to 1000",
                )
            })?,
    };
    let threshold = match p.and_then(|p| p.get("score_threshold")) {
        None | Some(Value::Null) => 0.0,
        Some(v) => v
            .as_f64()
            .filter(|t| (0.0..=1.0).contains(t))
            .ok_or_else(|| {
                ApiError::invalid_param("params", "score_threshold must be a number from 0 to 1")
            })? as f32,
    };
    let mode = match p.and_then(|p| p.get("mode")).and_then(Value::as_str) {
        None => SearchMode::Vector,
        Some(m) => SearchMode::parse(m).ok_or_else(|| {
            ApiError::invalid_param(
                "params",
                format!("mode must be vector, keyword or hybrid, not {m:?}"),
            )
        })?,
    };
    Ok((max, threshold, mode))
}

pub(super) fn check_query(text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid_param("query", "query must not be empty"));
    }
    if text.chars().count() > super::search::MAX_QUERY_CHARS {
        return Err(ApiError::invalid_param(
            "query",
            format!(
                "the query is over {} characters",
                super::search::MAX_QUERY_CHARS
            ),
        ));
    }
    Ok(())
}

/// `POST /v1/vector-io/query`: `{chunks: [{content, metadata}], scores: [...]}`.
pub async fn query(
    State(app): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let id = str_field(&body, "vector_db_id")?.to_string();
    check_id(&id)?;
    let text = content_text(body.get("query").unwrap_or(&Value::Null), "query")?;
    check_query(&text)?;
    let (max, threshold, mode) = query_params(body.get("params"))?;
    let s = Search {
        queries: vec![text],
        max_results: max,
        filter: None,
        score_threshold: threshold,
        mode,
    };
    let hits = run(&app, &id, &s).await?;
    let chunks: Vec<Value> = hits
        .iter()
        .map(|h| json!({"content": h.text, "metadata": h.metadata}))
        .collect();
    let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
    Ok(axum::Json(json!({"chunks": chunks, "scores": scores})).into_response())
}
