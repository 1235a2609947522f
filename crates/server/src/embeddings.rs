//! Embeddings over HTTP: OpenAI `POST /v1/embeddings` (and `/v1/openai/v1/embeddings`),
//! Llama Stack `POST /v1/inference/embeddings` and Ollama's `/api/embed` and
//! `/api/embeddings`, all on the embedding models `serve` loaded (the encoder runs on the
//! blocking pool; one batch at a time uses all the embedder's threads).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ferrollama_engine::{Embedder, Embeddings};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::ollama::{OllamaBody, OllamaError};
use crate::state::AppState;

/// Inputs per request at most (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// One loaded embedding model.
#[derive(Debug, Clone)]
pub struct EmbeddingModel {
    /// The id requests name it by (`all-MiniLM-L6-v2` for the default).
    pub id: String,
    pub embedder: Arc<Embedder>,
}

/// The embedding models `serve` loaded; the first is the default (vector stores use it
/// when a request names none).
#[derive(Debug, Clone, Default)]
pub struct EmbeddingModels {
    pub models: Vec<EmbeddingModel>,
}

impl EmbeddingModels {
    pub fn new(models: Vec<EmbeddingModel>) -> EmbeddingModels {
        EmbeddingModels { models }
    }

    pub fn get(&self, id: &str) -> Option<&EmbeddingModel> {
        self.models.iter().find(|m| m.id == id)
    }

    pub fn default_model(&self) -> Option<&EmbeddingModel> {
        self.models.first()
    }

    pub fn ids(&self) -> Vec<String> {
        self.models.iter().map(|m| m.id.clone()).collect()
    }

    /// The model `id`, or a 404 (400 when `id` is a chat model) that lists what exists.
    pub fn find(&self, app: &AppState, id: &str) -> Result<&EmbeddingModel, ApiError> {
        if let Some(m) = self.get(id) {
            return Ok(m);
        }
        if app.models.get(id).is_some() {
            return Err(ApiError::invalid_param(
                "model",
                format!(
                    "{id} is a chat model, not an embedding model; embedding models: {}",
                    list_or_none(&self.ids())
                ),
            ));
        }
        let mut e = ApiError::model_not_found(id, &self.ids());
        e.message = format!(
            "the embedding model '{id}' does not exist; embedding models: {}",
            list_or_none(&self.ids())
        );
        Err(e)
    }
}

fn list_or_none(ids: &[String]) -> String {
    if ids.is_empty() {
        "none (start serve with --embedding-model)".into()
    } else {
        ids.join(", ")
    }
}

/// The `/v1/models` entry of an embedding model (OpenAI's and Llama Stack's fields).
pub fn model_json(app: &AppState, m: &EmbeddingModel) -> Value {
    json!({
        "id": m.id,
        "object": "model",
        "created": app.created,
        "owned_by": "ferrollama",
        "identifier": m.id,
        "provider_resource_id": m.id,
        "provider_id": "ferrollama",
        "type": "model",
        "metadata": {
            "embedding_dimension": m.embedder.dimension(),
            "context_length": m.embedder.max_tokens(),
        },
        "model_type": "embedding",
    })
}

/// What to embed: texts, or the model's token ids.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

/// OpenAI's `input`: a string, a list of strings, a token array or a list of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OpenAiInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct EmbeddingRequest {
    pub model: String,
    /// A string, a list of strings, a token array or a list of token arrays.
    #[schemars(with = "OpenAiInput")]
    pub input: Value,
    /// `float` (default) or `base64` (little-endian f32, what the openai package asks for).
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Shortened vectors: refused, the models here have no Matryoshka training.
    #[serde(default)]
    pub dimensions: Option<u64>,
    #[serde(default)]
    pub user: Option<String>,
}

fn check_inputs(inputs: &Inputs) -> Result<(), ApiError> {
    let n = match inputs {
        Inputs::Texts(t) => t.len(),
        Inputs::Tokens(t) => t.len(),
    };
    if n == 0 {
        return Err(ApiError::invalid_param("input", "input must not be empty"));
    }
    if n > MAX_INPUTS {
        return Err(ApiError::invalid_param(
            "input",
            format!("at most {MAX_INPUTS} inputs per request, got {n}"),
        ));
    }
    match inputs {
        Inputs::Texts(t) => {
            if let Some(i) = t.iter().position(|s| s.trim().is_empty()) {
                return Err(ApiError::invalid_param(
                    "input",
                    format!("input {i} is an empty string; every input needs text"),
                ));
            }
        }
        Inputs::Tokens(t) => {
            if let Some(i) = t.iter().position(Vec::is_empty) {
                return Err(ApiError::invalid_param(
                    "input",
                    format!("input {i} is an empty token array"),
                ));
            }
        }
    }
    Ok(())
}

/// Runs `inputs` through `m` on the blocking pool.
pub async fn embed(m: &EmbeddingModel, inputs: Inputs) -> Result<Embeddings, ApiError> {
    check_inputs(&inputs)?;
    let embedder = m.embedder.clone();
    let out = tokio::task::spawn_blocking(move || match &inputs {
        Inputs::Texts(t) => {
            let refs: Vec<&str> = t.iter().map(String::as_str).collect();
            embedder.embed_texts(&refs)
        }
        Inputs::Tokens(t) => embedder.embed_token_ids(t),
    })
    .await
    .map_err(ApiError::internal)?;
    out.map_err(|e| match e {
        ferrollama_engine::EngineError::Invalid(msg) => ApiError::invalid_param("input", msg),
        other => ApiError::internal(other),
    })
}

/// `POST /v1/embeddings` and `/v1/openai/v1/embeddings`.
pub async fn openai(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("encoding_format must be \"float\" or \"base64\", not {other:?}"),
            ));
        }
    };
    let m = app.embeddings.find(&app, &req.model)?;
    if let Some(d) = req.dimensions {
        return Err(ApiError::invalid_param(
            "dimensions",
            format!(
                "{} does not support `dimensions` (its vectors have {} dimensions; asked for {d}); leave it out",
                m.id,
                m.embedder.dimension()
            ),
        ));
    }
    let inputs = match serde_json::from_value::<OpenAiInput>(req.input) {
        Ok(OpenAiInput::Text(s)) => Inputs::Texts(vec![s]),
        Ok(OpenAiInput::Texts(v)) => Inputs::Texts(v),
        Ok(OpenAiInput::Tokens(t)) => Inputs::Tokens(vec![t]),
        Ok(OpenAiInput::TokenLists(v)) => Inputs::Tokens(v),
        Err(_) => {
            return Err(ApiError::invalid_param(
                "input",
                "input must be a string, a list of strings, a token array (token ids) or a list of token arrays",
            ));
        }
    };
    let e = embed(m, inputs).await?;
    let data: Vec<Value> = (0..e.len())
        .map(|i| {
            let row = e.row(i);
            let embedding = if base64 {
                let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(row)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(axum::Json(json!({
        "object": "list",
        "data": data,
        "model": m.id,
        "usage": {"prompt_tokens": e.tokens, "total_tokens": e.tokens},
    }))
    .into_response())
}

/// One Llama Stack content: a string or an `InterleavedContentItem`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Item {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        text: Option<String>,
    },
}

/// `POST /v1/inference/embeddings`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct LlamaStackRequest {
    pub model_id: String,
    pub contents: Vec<Content>,
    /// `none` / `end` (default: keep the start) or `start` (keep the end).
    #[serde(default)]
    pub text_truncation: Option<String>,
    #[serde(default)]
    pub output_dimension: Option<u64>,
    /// `query` or `document`: accepted, the models here embed both alike.
    #[serde(default)]
    pub task_type: Option<String>,
}

/// `POST /v1/inference/embeddings`: `{"embeddings": [[...], ...]}`.
pub async fn llama_stack(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<LlamaStackRequest>,
) -> Result<Response, ApiError> {
    let m = app.embeddings.find(&app, &req.model_id)?;
    if let Some(d) = req.output_dimension
        && d as usize != m.embedder.dimension()
    {
        return Err(ApiError::invalid_param(
            "output_dimension",
            format!(
                "{} gives {} dimensions and cannot shorten them (asked for {d})",
                m.id,
                m.embedder.dimension()
            ),
        ));
    }
    if let Some(t) = req.task_type.as_deref()
        && !matches!(t, "query" | "document")
    {
        return Err(ApiError::invalid_param(
            "task_type",
            format!("task_type must be \"query\" or \"document\", not {t:?}"),
        ));
    }
    let keep_end = match req.text_truncation.as_deref() {
        None | Some("none") | Some("end") => false,
        Some("start") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "text_truncation",
                format!("text_truncation must be none, start or end, not {other:?}"),
            ));
        }
    };
    let mut texts = Vec::with_capacity(req.contents.len());
    for (i, c) in req.contents.into_iter().enumerate() {
        match c {
            Content::Text(s) => texts.push(s),
            Content::Item { kind, text } if kind == "text" => texts.push(text.unwrap_or_default()),
            Content::Item { kind, .. } => {
                return Err(ApiError::invalid_param(
                    "contents",
                    format!("contents[{i}] is {kind:?}; only text can be embedded"),
                ));
            }
        }
    }
    let inputs = if keep_end {
        // Truncating from the start: the last tokens that fit, wrapped in the specials.
        let mut seqs = Vec::with_capacity(texts.len());
        for t in &texts {
            seqs.push(
                m.embedder
                    .tokenize_keep_end(t)
                    .map_err(|e| ApiError::invalid_param("contents", e.to_string()))?,
            );
        }
        Inputs::Tokens(seqs)
    } else {
        Inputs::Texts(texts)
    };
    let e = embed(m, inputs).await?;
    let embeddings: Vec<&[f32]> = (0..e.len()).map(|i| e.row(i)).collect();
    Ok(axum::Json(json!({ "embeddings": embeddings })).into_response())
}

/// Ollama's `/api/embed` input: a string or a list of strings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OllamaInput {
    Text(String),
    Texts(Vec<String>),
}

/// `POST /api/embed`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct OllamaEmbedRequest {
    pub model: String,
    pub input: OllamaInput,
    #[serde(default)]
    pub truncate: Option<bool>,
}

/// `POST /api/embed`: `{"model", "embeddings", "total_duration", "prompt_eval_count"}`.
pub async fn ollama_embed(
    State(app): State<Arc<AppState>>,
    OllamaBody(req): OllamaBody<OllamaEmbedRequest>,
) -> Result<Response, OllamaError> {
    let start = std::time::Instant::now();
    let m = app.embeddings.find(&app, &req.model)?;
    let texts = match req.input {
        OllamaInput::Text(s) => vec![s],
        OllamaInput::Texts(v) => v,
    };
    if req.truncate == Some(false) {
        for (i, t) in texts.iter().enumerate() {
            let n = m
                .embedder
                .token_offsets(t)
                .map_err(|e| ApiError::invalid_param("input", e.to_string()))?
                .len();
            if n + 2 > m.embedder.max_tokens() {
                return Err(OllamaError::invalid(format!(
                    "input {i} has {n} tokens, over the model's {} (truncate is false)",
                    m.embedder.max_tokens()
                )));
            }
        }
    }
    let e = embed(m, Inputs::Texts(texts)).await?;
    let embeddings: Vec<&[f32]> = (0..e.len()).map(|i| e.row(i)).collect();
    Ok(axum::Json(json!({
        "model": m.id,
        "embeddings": embeddings,
        "total_duration": start.elapsed().as_nanos() as u64,
        "load_duration": 0,
        "prompt_eval_count": e.tokens,
    }))
    .into_response())
}

/// `POST /api/embeddings` (Ollama's older route).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct OllamaEmbeddingsRequest {
    pub model: String,
    pub prompt: String,
}

/// `POST /api/embeddings`: `{"embedding": [...]}`.
pub async fn ollama_embeddings(
    State(app): State<Arc<AppState>>,
    OllamaBody(req): OllamaBody<OllamaEmbeddingsRequest>,
) -> Result<Response, OllamaError> {
    let m = app.embeddings.find(&app, &req.model)?;
    let e = embed(m, Inputs::Texts(vec![req.prompt])).await?;
    Ok(axum::Json(json!({ "embedding": e.row(0) })).into_response())
}
