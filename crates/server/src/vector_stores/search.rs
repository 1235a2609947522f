//! `POST /v1/vector_stores/{id}/search`: one or more query strings, ranked by vector
//! similarity (default), keyword (BM25) or both (`search_mode`, a Llama Stack extension),
//! with attribute `filters` and `ranking_options.score_threshold`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use ferrollama_rag::SearchQuery;
use ferrollama_rag::vector_stores::{Filter, Hit, SearchMode};
use serde_json::{Value, json};

use super::stores::check_id;
use super::{db, no_store};
use crate::body::JsonBody;
use crate::embeddings::{Inputs, embed};
use crate::error::ApiError;
use crate::state::AppState;

/// Characters per query at most (a longer one is a document, not a question).
pub const MAX_QUERY_CHARS: usize = 8192;
/// Query strings per request at most.
pub const MAX_QUERIES: usize = 16;

/// A parsed search request.
#[derive(Debug, Clone)]
pub struct Search {
    pub queries: Vec<String>,
    pub max_results: usize,
    pub filter: Option<Filter>,
    pub score_threshold: f32,
    pub mode: SearchMode,
}

impl Search {
    /// Reads OpenAI's body (`query`, `max_num_results`, `filters`, `ranking_options`,
    /// `rewrite_query`) plus `search_mode`.
    pub fn parse(body: &Value) -> Result<Search, ApiError> {
        let queries: Vec<String> = match body.get("query") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    ApiError::invalid_param("query", "query must be a string or a list of strings")
                })?,
            _ => {
                return Err(ApiError::invalid_param(
                    "query",
                    "query is required: a string or a list of strings",
                ));
            }
        };
        if queries.is_empty() || queries.iter().any(|q| q.trim().is_empty()) {
            return Err(ApiError::invalid_param("query", "query must not be empty"));
        }
        if queries.len() > MAX_QUERIES {
            return Err(ApiError::invalid_param(
                "query",
                format!("at most {MAX_QUERIES} query strings"),
            ));
        }
        if let Some(q) = queries.iter().find(|q| q.chars().count() > MAX_QUERY_CHARS) {
            return Err(ApiError::invalid_param(
                "query",
                format!(
                    "a query of {} characters is over the limit of {MAX_QUERY_CHARS}; search with a shorter question",
                    q.chars().count()
                ),
            ));
        }
        let max_results = match body.get("max_num_results") {
            None | Some(Value::Null) => 10,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=50).contains(n))
                .map(|n| n as usize)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "max_num_results",
                        "max_num_results must be a whole number from 1 to 50",
                    )
                })?,
        };
        let filter = match body.get("filters") {
            None | Some(Value::Null) => None,
            Some(f) => Some(Filter::parse(f).map_err(|e| ApiError::invalid_param("filters", e))?),
        };
        let ranking = body.get("ranking_options").filter(|v| !v.is_null());
        let score_threshold = match ranking.and_then(|r| r.get("score_threshold")) {
            None | Some(Value::Null) => 0.0,
            Some(v) => v
                .as_f64()
                .filter(|t| (0.0..=1.0).contains(t))
                .map(|t| t as f32)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "ranking_options",
                        "ranking_options.score_threshold must be a number from 0 to 1",
                    )
                })?,
        };
        if let Some(r) = ranking
            .and_then(|r| r.get("ranker"))
            .and_then(Value::as_str)
            && !matches!(r, "auto" | "default-2024-11-15" | "none")
        {
            return Err(ApiError::invalid_param(
                "ranking_options",
                format!("unknown ranker {r:?} (auto)"),
            ));
        }
        if let Some(v) = body.get("rewrite_query")
            && !(v.is_boolean() || v.is_null())
        {
            return Err(ApiError::invalid_param(
                "rewrite_query",
                "rewrite_query must be a boolean",
            ));
        }
        let mode = match body.get("search_mode").and_then(Value::as_str) {
            None => SearchMode::Vector,
            Some(m) => SearchMode::parse(m).ok_or_else(|| {
                ApiError::invalid_param(
                    "search_mode",
                    format!("search_mode must be vector, keyword or hybrid, not {m:?}"),
                )
            })?,
        };
        Ok(Search {
            queries,
            max_results,
            filter,
            score_threshold,
            mode,
        })
    }
}

/// Runs `s` over store `vs`: each query embedded (unless keyword-only) and searched; a
/// chunk found by several queries keeps its best score.
pub async fn run(app: &Arc<AppState>, vs: &str, s: &Search) -> Result<Vec<Hit>, ApiError> {
    let key = vs.to_string();
    let store = db(app, move |db| db.get_vector_store(&key))
        .await?
        .ok_or_else(|| no_store(vs))?;
    let embeddings = if s.mode == SearchMode::Keyword {
        None
    } else {
        let m = app.embeddings.get(&store.embedding_model).ok_or_else(|| {
            ApiError::unavailable(format!(
                "vector store {vs} was made with the embedding model {}, which is not loaded (start serve with --embedding-model)",
                store.embedding_model
            ))
        })?;
        Some(embed(m, Inputs::Texts(s.queries.clone())).await?)
    };
    let mut best: HashMap<i64, Hit> = HashMap::new();
    for (i, text) in s.queries.iter().enumerate() {
        let q = SearchQuery {
            text: text.clone(),
            embedding: embeddings.as_ref().map(|e| e.row(i).to_vec()),
            mode: s.mode,
            max_results: s.max_results,
            filter: s.filter.clone(),
            score_threshold: s.score_threshold,
        };
        let key = vs.to_string();
        for h in db(app, move |db| db.search(&key, &q)).await? {
            match best.get(&h.chunk_id) {
                Some(old) if old.score >= h.score => {}
                _ => {
                    best.insert(h.chunk_id, h);
                }
            }
        }
    }
    let mut hits: Vec<Hit> = best.into_values().collect();
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.chunk_id.cmp(&b.chunk_id))
    });
    hits.truncate(s.max_results);
    Ok(hits)
}

/// `POST /v1/vector_stores/{id}/search`.
pub async fn search(
    State(app): State<Arc<AppState>>,
    Path(vs): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    check_id(&vs)?;
    let s = Search::parse(&body)?;
    let hits = run(&app, &vs, &s).await?;
    let data: Vec<Value> = hits
        .iter()
        .map(|h| {
            json!({
                "file_id": h.file_id,
                "filename": h.filename,
                "score": h.score,
                "attributes": h.attributes,
                "content": [{"type": "text", "text": h.text}],
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "object": "vector_store.search_results.page",
        "search_query": s.queries,
        "data": data,
        "has_more": false,
        "next_page": null,
    }))
    .into_response())
}
