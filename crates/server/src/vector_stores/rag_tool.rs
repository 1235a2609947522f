//! Llama Stack's RAG tool: `/v1/tool-runtime/rag-tool/insert` (documents as text, data
//! URLs, file ids or http(s) URLs fetched with size and time limits; extracted, chunked
//! with a quarter overlap, embedded, stored) and `/query` (Llama Stack's context format,
//! `chunk_template` checked, `max_tokens_in_context`), and the same search behind
//! `knowledge_search` in the agent loop ([`RagRetriever`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ferrollama_rag::vector_stores::{NewChunk, SearchMode};
use serde_json::{Map, Value, json};

use super::db;
use super::llama_stack::{
    check_query, content_text, group_id, query_params, store_model, str_field,
};
use super::search::{Search, run};
use super::stores::check_id;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// A fetched document's size limit.
const MAX_FETCH_BYTES: u64 = 16 << 20;
/// A fetched document's time limit.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Llama Stack's default `chunk_template`.
pub const DEFAULT_TEMPLATE: &str =
    "Result {index}\nContent: {chunk.content}\nMetadata: {metadata}\n";

/// A document's bytes: a `data:` URL, an http(s) URL (fetched with size and time limits),
/// an uploaded file id, or the text itself.
async fn document_bytes(
    app: &AppState,
    v: &Value,
    field: &str,
) -> Result<(Vec<u8>, Option<String>), ApiError> {
    let uri = match v {
        Value::Object(o) if o.get("uri").is_some() => o.get("uri").and_then(Value::as_str),
        Value::String(s)
            if s.starts_with("data:") || s.starts_with("http://") || s.starts_with("https://") =>
        {
            Some(s.as_str())
        }
        Value::String(s) if ferrollama_rag::files::is_file_id(s) => {
            let bytes = app
                .files
                .read_bytes(s)
                .await
                .map_err(|e| ApiError::internal(format!("file store: {e}")))?
                .ok_or_else(|| {
                    ApiError::invalid_param(field, format!("{field}: no file with id '{s}'"))
                })?;
            return Ok((bytes, None));
        }
        _ => None,
    };
    let Some(uri) = uri else {
        return Ok((
            content_text(v, field)?.into_bytes(),
            Some("text/plain".into()),
        ));
    };
    if let Some(rest) = uri.strip_prefix("data:") {
        let (head, data) = rest.split_once(',').ok_or_else(|| {
            ApiError::invalid_param(field, format!("{field}: a data URL needs a comma"))
        })?;
        let mime = head
            .split(';')
            .next()
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        let bytes = if head.ends_with(";base64") {
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| {
                    ApiError::invalid_param(
                        field,
                        format!("{field}: bad base64 in the data URL: {e}"),
                    )
                })?
        } else {
            percent_decode(data)
        };
        return Ok((bytes, mime));
    }
    if uri.starts_with("http://") || uri.starts_with("https://") {
        let url = uri.to_string();
        let f = field.to_string();
        return tokio::task::spawn_blocking(move || fetch(&url, &f))
            .await
            .map_err(ApiError::internal)?;
    }
    Err(ApiError::invalid_param(
        field,
        format!("{field}: unsupported URI {uri:?} (data:, http:, https:)"),
    ))
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn fetch(url: &str, field: &str) -> Result<(Vec<u8>, Option<String>), ApiError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(FETCH_TIMEOUT))
        .build()
        .into();
    let mut resp = agent
        .get(url)
        .call()
        .map_err(|e| ApiError::invalid_param(field, format!("{field}: cannot fetch {url}: {e}")))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(ApiError::invalid_param(
            field,
            format!("{field}: {url} answered HTTP {status}"),
        ));
    }
    let mime = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(MAX_FETCH_BYTES)
        .read_to_vec()
        .map_err(|e| {
            ApiError::invalid_param(
                field,
                format!("{field}: reading {url}: {e} (limit {MAX_FETCH_BYTES} bytes)"),
            )
        })?;
    Ok((bytes, mime))
}

/// `POST /v1/tool-runtime/rag-tool/insert`: `{documents, vector_db_id,
/// chunk_size_in_tokens}`; chunks overlap by a quarter, as Llama Stack's.
pub async fn rag_insert(
    State(app): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let id = str_field(&body, "vector_db_id")?.to_string();
    check_id(&id)?;
    let size = match body.get("chunk_size_in_tokens") {
        None | Some(Value::Null) => 512,
        Some(v) => v
            .as_u64()
            .filter(|n| (16..=8192).contains(n))
            .map(|n| n as usize)
            .ok_or_else(|| {
                ApiError::invalid_param(
                    "chunk_size_in_tokens",
                    "chunk_size_in_tokens must be a whole number from 16 to 8192",
                )
            })?,
    };
    let docs = body
        .get("documents")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid_param("documents", "documents is required (a list)"))?
        .clone();
    if docs.is_empty() {
        return Err(ApiError::invalid_param(
            "documents",
            "documents must not be empty",
        ));
    }
    let vs = super::store_or_404(&app, &id).await?;
    let model = store_model(&app, &vs)?;
    for (i, d) in docs.iter().enumerate() {
        let field = format!("documents[{i}]");
        let doc_id = d
            .get("document_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::invalid_param("documents", format!("{field}.document_id is required"))
            })?
            .to_string();
        let meta = match d.get("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err(ApiError::invalid_param(
                    "documents",
                    format!("{field}.metadata must be an object"),
                ));
            }
        };
        let (bytes, mime) =
            document_bytes(&app, d.get("content").unwrap_or(&Value::Null), &field).await?;
        let mime = d
            .get("mime_type")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(mime);
        let embedder = model.embedder.clone();
        let (f2, doc2) = (field.clone(), doc_id.clone());
        let chunks = tokio::task::spawn_blocking(move || -> Result<Vec<NewChunk>, ApiError> {
            use ferrollama_rag::extract::{Limits, detect, extract};
            let bad = |e: ferrollama_rag::ExtractError| {
                ApiError::invalid_param("documents", format!("{f2} ({doc2}): {e}"))
            };
            let format = detect(&doc2, mime.as_deref(), &bytes).map_err(bad)?;
            let text = extract(&bytes, format, &Limits::default())
                .map_err(bad)?
                .text;
            let offsets = embedder
                .token_offsets(&text)
                .map_err(|e| ApiError::invalid_param("documents", e.to_string()))?;
            let c = ferrollama_rag::vector_stores::Chunking {
                max_chunk_size_tokens: size,
                chunk_overlap_tokens: size / 4,
                auto: false,
            };
            let pieces = ferrollama_rag::chunking::chunk(&text, &offsets, &c);
            let texts: Vec<&str> = pieces.iter().map(|p| p.text.as_str()).collect();
            if texts.is_empty() {
                return Err(ApiError::invalid_param(
                    "documents",
                    format!("{f2} ({doc2}) has no text"),
                ));
            }
            let e = embedder.embed_texts(&texts).map_err(ApiError::internal)?;
            Ok(pieces
                .iter()
                .enumerate()
                .map(|(k, p)| {
                    let mut m = meta.clone();
                    m.insert("document_id".into(), json!(doc2));
                    m.insert("token_count".into(), json!(p.tokens));
                    NewChunk {
                        text: p.text.clone(),
                        tokens: p.tokens,
                        embedding: e.row(k).to_vec(),
                        metadata: m,
                    }
                })
                .collect())
        })
        .await
        .map_err(ApiError::internal)??;
        let (k, group) = (id.clone(), group_id());
        db(&app, move |db| {
            db.insert_chunks(&k, &group, &doc_id, &chunks)
        })
        .await?;
    }
    Ok(axum::Json(Value::Null).into_response())
}

/// Checks a `chunk_template` as Llama Stack does (it must hold `{index}` and
/// `{chunk.content}`) and that it names only `{index}`, `{chunk.content}`, `{metadata}`,
/// `{chunk.metadata}` (`{{`/`}}` escape braces).
pub fn check_template(t: &str) -> Result<(), String> {
    if !t.contains("{chunk.content}") {
        return Err("chunk_template must contain {chunk.content}".into());
    }
    if !t.contains("{index}") {
        return Err("chunk_template must contain {index}".into());
    }
    render(t, 1, "", &Map::new()).map(|_| ())
}

/// Fills a checked template.
pub fn render(
    t: &str,
    index: usize,
    content: &str,
    meta: &Map<String, Value>,
) -> Result<String, String> {
    let mut out = String::with_capacity(t.len() + content.len());
    let mut rest = t;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err("chunk_template has a single '}' (write '}}')".into());
        }
        let end = tail.find('}').ok_or("chunk_template has an unclosed '{'")?;
        match &tail[1..end] {
            "index" => out.push_str(&index.to_string()),
            "chunk.content" => out.push_str(content),
            "metadata" | "chunk.metadata" => out.push_str(&python_dict(meta)),
            other => {
                return Err(format!(
                    "chunk_template names {{{other}}}; only {{index}}, {{chunk.content}}, {{metadata}} and {{chunk.metadata}} exist"
                ));
            }
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A dict as Python prints it (`{'k': 'v', 'n': 1}`), which Llama Stack's `str.format`
/// puts in the context.
fn python_dict(m: &Map<String, Value>) -> String {
    fn py(v: &Value) -> String {
        match v {
            Value::Null => "None".into(),
            Value::Bool(b) => {
                if *b {
                    "True".into()
                } else {
                    "False".into()
                }
            }
            Value::Number(n) => n.to_string(),
            Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
            Value::Array(a) => format!("[{}]", a.iter().map(py).collect::<Vec<_>>().join(", ")),
            Value::Object(o) => python_dict(o),
        }
    }
    let items: Vec<String> = m.iter().map(|(k, v)| format!("'{k}': {}", py(v))).collect();
    format!("{{{}}}", items.join(", "))
}

/// Llama Stack's RAG context: a header, each hit through `template` while the hits'
/// `token_count`s fit `max_tokens`, a footer naming the query; and the metadata
/// (`document_ids`, `chunks`, `scores`, and `results` for Responses' `file_search_call`).
pub fn format_context(
    query: &str,
    hits: &[ferrollama_rag::vector_stores::Hit],
    template: &str,
    max_tokens: usize,
) -> Result<(Vec<String>, Value), String> {
    let mut parts = vec![format!(
        "knowledge_search tool found {} chunks:\nBEGIN of knowledge_search tool results.\n",
        hits.len()
    )];
    let (mut tokens, mut used) = (0usize, 0usize);
    for (i, h) in hits.iter().enumerate() {
        tokens += h
            .metadata
            .get("token_count")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        tokens += h
            .metadata
            .get("metadata_token_count")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        if tokens > max_tokens {
            break;
        }
        let mut meta = h.metadata.clone();
        if meta.is_empty() {
            meta.insert("document_id".into(), json!(h.filename));
        }
        parts.push(render(template, i + 1, &h.text, &meta)?);
        used += 1;
    }
    parts.push("END of knowledge_search tool results.\n".into());
    parts.push(format!(
        "The above results were retrieved to help answer the user's query: \"{query}\". Use them as supporting information only in answering this query.\n"
    ));
    let doc_id = |h: &ferrollama_rag::vector_stores::Hit| {
        h.metadata
            .get("document_id")
            .and_then(Value::as_str)
            .unwrap_or(&h.filename)
            .to_string()
    };
    let used = &hits[..used];
    Ok((
        parts,
        json!({
            "document_ids": used.iter().map(doc_id).collect::<Vec<_>>(),
            "chunks": used.iter().map(|h| h.text.clone()).collect::<Vec<_>>(),
            "scores": used.iter().map(|h| h.score).collect::<Vec<_>>(),
            "results": used.iter().map(|h| json!({
                "file_id": h.file_id, "filename": doc_id(h), "score": h.score,
                "text": h.text, "attributes": h.attributes,
            })).collect::<Vec<_>>(),
        }),
    ))
}

/// `knowledge_search` for the agent loop and Responses' `file_search`: the stores
/// searched by vector with their own embedding models, the hits in Llama Stack's context
/// format.
#[derive(Debug)]
pub struct RagRetriever {
    pub db: Arc<dyn ferrollama_rag::VectorDb>,
    pub embeddings: crate::embeddings::EmbeddingModels,
}

impl ferrollama_agents::runtime::Retriever for RagRetriever {
    fn search(
        &self,
        query: &str,
        ids: &[String],
        max_results: usize,
    ) -> Result<(String, Value), String> {
        if query.trim().is_empty() {
            return Err("the query is empty".into());
        }
        if ids.is_empty() {
            return Err(
                "no vector stores to search (give vector_db_ids / vector_store_ids)".into(),
            );
        }
        let k = max_results.clamp(1, 50);
        let mut hits = Vec::new();
        // The query's vector per embedding model: stores made with the same model share it.
        let mut vectors: std::collections::HashMap<String, Vec<f32>> = Default::default();
        for id in ids {
            let vs = self
                .db
                .get_vector_store(id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no vector store with id '{id}'"))?;
            let embedding = match vectors.get(&vs.embedding_model) {
                Some(v) => v.clone(),
                None => {
                    let m = self.embeddings.get(&vs.embedding_model).ok_or_else(|| {
                        format!("the embedding model {} is not loaded", vs.embedding_model)
                    })?;
                    let e = m
                        .embedder
                        .embed_texts(&[query])
                        .map_err(|e| e.to_string())?;
                    let v = e.row(0).to_vec();
                    vectors.insert(vs.embedding_model.clone(), v.clone());
                    v
                }
            };
            let q = ferrollama_rag::SearchQuery {
                text: query.to_string(),
                embedding: Some(embedding),
                mode: SearchMode::Vector,
                max_results: k,
                filter: None,
                score_threshold: 0.0,
            };
            hits.extend(self.db.search(id, &q).map_err(|e| e.to_string())?);
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        let (parts, meta) = format_context(query, &hits, DEFAULT_TEMPLATE, 4096)?;
        Ok((parts.concat(), meta))
    }
}

/// `POST /v1/tool-runtime/rag-tool/query`: `{content, vector_db_ids, query_config}` →
/// `{content: [text items], metadata: {document_ids, chunks, scores}}`.
pub async fn rag_query(
    State(app): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let text = content_text(body.get("content").unwrap_or(&Value::Null), "content")?;
    check_query(&text)?;
    let ids: Vec<String> = body
        .get("vector_db_ids")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .ok_or_else(|| {
            ApiError::invalid_param("vector_db_ids", "vector_db_ids is required (a list of ids)")
        })?;
    if ids.is_empty() {
        return Err(ApiError::invalid_param(
            "vector_db_ids",
            "vector_db_ids must not be empty",
        ));
    }
    let qc = body.get("query_config").filter(|v| !v.is_null());
    let (max_chunks, _, mode) = query_params(qc)?;
    let max_chunks = if qc.and_then(|q| q.get("max_chunks")).is_none() {
        5
    } else {
        max_chunks
    };
    let max_tokens = match qc.and_then(|q| q.get("max_tokens_in_context")) {
        None | Some(Value::Null) => 4096,
        Some(v) => v
            .as_u64()
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| {
                ApiError::invalid_param(
                    "query_config",
                    "max_tokens_in_context must be a whole number above 0",
                )
            })?,
    };
    let template = qc
        .and_then(|q| q.get("chunk_template"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_TEMPLATE)
        .to_string();
    check_template(&template).map_err(|e| ApiError::invalid_param("query_config", e))?;
    let mut hits = Vec::new();
    for id in &ids {
        check_id(id)?;
        let s = Search {
            queries: vec![text.clone()],
            max_results: max_chunks,
            filter: None,
            score_threshold: 0.0,
            mode,
        };
        hits.extend(run(&app, id, &s).await?);
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits.truncate(max_chunks);
    let (parts, metadata) = format_context(&text, &hits, &template, max_tokens)
        .map_err(|e| ApiError::invalid_param("query_config", e))?;
    let content: Vec<Value> = parts
        .iter()
        .map(|t| json!({"type": "text", "text": t}))
        .collect();
    Ok(axum::Json(json!({"content": content, "metadata": metadata})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_like_python_format() {
        let mut m = Map::new();
        m.insert("document_id".into(), json!("d1"));
        m.insert("n".into(), json!(3));
        assert_eq!(
            render(DEFAULT_TEMPLATE, 2, "text", &m).unwrap(),
            "Result 2\nContent: text\nMetadata: {'document_id': 'd1', 'n': 3}\n"
        );
        assert_eq!(
            render("{{x}} {index}: {chunk.content}", 1, "c", &m).unwrap(),
            "{x} 1: c"
        );
        assert!(check_template("{index} only").is_err());
        assert!(check_template("{chunk.content} only").is_err());
        assert!(
            check_template("{index} {chunk.content} {chunk.secret}")
                .unwrap_err()
                .contains("chunk.secret")
        );
        assert!(check_template("{index} {chunk.content} {").is_err());
        assert!(check_template("{index} {chunk.content} }").is_err());
    }

    #[test]
    fn data_urls_decode_percent_escapes() {
        assert_eq!(percent_decode("a%20b%2Cc%"), b"a b,c%");
    }
}
