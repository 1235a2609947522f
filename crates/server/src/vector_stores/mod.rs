//! OpenAI vector stores over HTTP (`/v1/vector_stores` and `/v1/openai/v1/vector_stores`):
//! stores, their files (attached, ingested in the background, `in_progress` → `completed` /
//! `failed`), file content as chunks, and search (vector, keyword or hybrid, attribute
//! filters, score threshold). The storage is the rag crate's [`VectorDb`] (the files
//! database); ingestion runs on its worker thread with the server's embedding models.
//!
//! - [`stores`]: create, list, retrieve, update, delete;
//! - [`files`]: attach, list (`filter` by status), retrieve, content, update attributes,
//!   detach;
//! - [`search`]: `POST .../search`.

pub mod files;
pub mod llama_stack;
pub mod rag_tool;
pub mod search;
pub mod stores;

use std::sync::Arc;

use axum::http::StatusCode;
use ferrollama_rag::ingest::Ingestor;
use ferrollama_rag::vector_stores::{Chunking, LastError, VectorStore, VectorStoreFile};
use ferrollama_rag::{ListQuery, Order, StoreError, VectorDb};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// The database, off the async workers.
pub(crate) async fn db<T: Send + 'static>(
    app: &AppState,
    f: impl FnOnce(&dyn VectorDb) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let db = app.files.vectors.clone();
    tokio::task::spawn_blocking(move || f(db.as_ref()))
        .await
        .map_err(ApiError::internal)?
        .map_err(store_error)
}

/// A store failure as an answer: unknown ids 404, refused requests 400, the rest 500.
pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound { kind, id } => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("no {kind} with id '{id}'"),
        ),
        StoreError::Invalid(msg) => ApiError::invalid(msg),
        e => ApiError::internal(format!("vector store database: {e}")),
    }
}

/// The vector store `id`, or a 404.
pub(crate) async fn store_or_404(app: &AppState, id: &str) -> Result<VectorStore, ApiError> {
    let key = id.to_string();
    db(app, move |db| db.get_vector_store(&key))
        .await?
        .ok_or_else(|| no_store(id))
}

pub(crate) fn no_store(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no vector store with id '{id}'"),
    )
}

pub(crate) fn no_file(vs: &str, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no file with id '{id}' in vector store '{vs}'"),
    )
}

/// Starts retrieval's background parts once per server: the ingestion worker (which
/// re-queues files a previous run left `in_progress`) and `knowledge_search` for the agent
/// loop. The router calls it, so every way of serving gets it.
pub fn install(app: &Arc<AppState>) {
    if app.files.ingest.get().is_some() {
        return;
    }
    app.agents
        .runtime
        .set_retriever(Arc::new(rag_tool::RagRetriever {
            db: app.files.vectors.clone(),
            embeddings: app.embeddings.clone(),
        }));
    ingestor(app);
}

/// The ingestion worker, started (and interrupted files re-queued) on first use.
pub fn ingestor(app: &Arc<AppState>) -> Ingestor {
    app.files
        .ingest
        .get_or_init(|| {
            let models = app.embeddings.clone();
            Ingestor::start(
                app.files.vectors.clone(),
                app.files.store.clone(),
                Arc::new(move |id: &str| models.get(id).map(|m| m.embedder.clone())),
                Arc::new(extract_text),
            )
        })
        .clone()
}

/// A file's text for chunking: plain text, Markdown, HTML (visible text), JSON or PDF
/// (text layer), detected from the name and the bytes (the rag crate's `extract`, with its
/// default limits on output, pages, inflated bytes and time). Anything else fails with a
/// reason the client sees as the file's `last_error`.
pub fn extract_text(filename: &str, bytes: &[u8]) -> Result<String, LastError> {
    use ferrollama_rag::extract::{ExtractError, Limits, detect, extract};
    let fail = |e: ExtractError| LastError {
        code: match e {
            ExtractError::Unsupported(_) => "unsupported_file",
            _ => "invalid_file",
        }
        .into(),
        message: format!("{filename}: {e}"),
    };
    let format = detect(filename, None, bytes).map_err(fail)?;
    Ok(extract(bytes, format, &Limits::default())
        .map_err(fail)?
        .text)
}

/// `?limit=&order=&after=&before=` (limit 1..=100, default 20; order default desc).
pub(crate) fn list_query(
    q: &std::collections::HashMap<String, String>,
) -> Result<ListQuery, ApiError> {
    let limit = crate::paging::limit(q, 20, 100)?;
    let order = if crate::paging::ascending(q)? {
        Order::Asc
    } else {
        Order::Desc
    };
    Ok(ListQuery {
        after: q.get("after").filter(|s| !s.is_empty()).cloned(),
        before: q.get("before").filter(|s| !s.is_empty()).cloned(),
        limit,
        order,
    })
}

/// A list body (OpenAI's cursor page).
pub(crate) fn page_json<T>(p: &ferrollama_rag::Page<T>, item: impl Fn(&T) -> Value) -> Value {
    json!({
        "object": "list",
        "data": p.data.iter().map(item).collect::<Vec<_>>(),
        "first_id": p.first_id,
        "last_id": p.last_id,
        "has_more": p.has_more,
    })
}

pub(crate) fn store_json(v: &VectorStore) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    json!({
        "id": v.id,
        "object": "vector_store",
        "created_at": v.created_at,
        "name": v.name,
        "usage_bytes": v.usage_bytes,
        "file_counts": v.file_counts,
        "status": v.status(now),
        "expires_after": v.expires_after,
        "expires_at": v.expires_at(),
        "last_active_at": v.last_active_at,
        "metadata": v.metadata,
        "embedding_model": v.embedding_model,
        "embedding_dimension": v.embedding_dimension,
    })
}

pub(crate) fn chunking_json(c: &Chunking) -> Value {
    json!({
        "type": "static",
        "static": {
            "max_chunk_size_tokens": c.max_chunk_size_tokens,
            "chunk_overlap_tokens": c.chunk_overlap_tokens,
        }
    })
}

pub(crate) fn file_json(f: &VectorStoreFile) -> Value {
    json!({
        "id": f.id,
        "object": "vector_store.file",
        "usage_bytes": f.usage_bytes,
        "created_at": f.created_at,
        "vector_store_id": f.vector_store_id,
        "status": f.status.as_str(),
        "last_error": f.last_error,
        "chunking_strategy": chunking_json(&f.chunking),
        "attributes": f.attributes,
    })
}

/// `chunking_strategy`: absent or `{"type": "auto"}`, or `{"type": "static", "static":
/// {"max_chunk_size_tokens", "chunk_overlap_tokens"}}`.
pub(crate) fn parse_chunking(v: Option<&Value>) -> Result<Chunking, ApiError> {
    let bad = |m: String| ApiError::invalid_param("chunking_strategy", m);
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Chunking::AUTO);
    };
    match v.get("type").and_then(Value::as_str) {
        Some("auto") => Ok(Chunking::AUTO),
        Some("static") => {
            let s = v
                .get("static")
                .ok_or_else(|| bad("a static chunking_strategy needs \"static\": {max_chunk_size_tokens, chunk_overlap_tokens}".into()))?;
            let num = |k: &str| {
                s.get(k)
                    .and_then(Value::as_u64)
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                    .ok_or_else(|| bad(format!("static.{k} must be a whole number")))
            };
            Chunking::fixed(num("max_chunk_size_tokens")?, num("chunk_overlap_tokens")?)
                .map_err(bad)
        }
        _ => Err(bad(
            "chunking_strategy.type must be \"auto\" or \"static\"".into()
        )),
    }
}

/// `attributes` / `metadata`: an object checked by OpenAI's rules.
pub(crate) fn parse_attributes(
    v: Option<&Value>,
    field: &str,
) -> Result<Map<String, Value>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => {
            ferrollama_rag::vector_stores::check_attributes(m)
                .map_err(|e| ApiError::invalid_param(field, e))?;
            Ok(m.clone())
        }
        Some(_) => Err(ApiError::invalid_param(
            field,
            format!("{field} must be an object"),
        )),
    }
}
