//! Stored chat completions: OpenAI's `"store": true` on `/v1/chat/completions`, and Llama
//! Stack's inference store, which records every completion of
//! `/v1/openai/v1/chat/completions` (llama-stack 0.2.12's router stores them all, streamed
//! ones once the stream ends).
//!
//! A completion is kept as the ChatCompletion object the client received (a streamed one
//! assembled as the non-streaming answer would have been), plus `metadata` when the request
//! sent it, with the request's messages as its `input_messages`. The routes below list, get,
//! update (metadata), delete them and page through their messages; every list is OpenAI's
//! `{"object": "list", data, first_id, last_id, has_more}`, which is also Llama Stack's
//! `ListOpenAIChatCompletionResponse`. Recording never fails the request it records: a
//! database error is logged and the client still gets its answer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrollama_agents::db::{ChatCompletionRow, DbError, ListQuery, MAX_LIMIT, Order, Page};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// OpenAI's limits on `metadata`: at most 16 pairs, keys up to 64 and values up to 512
/// characters, all strings.
const MAX_METADATA_PAIRS: usize = 16;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;

/// What a chat request will record once it has its answer: the request's messages and
/// metadata, and where to put them.
#[derive(Debug, Clone)]
pub struct Recorder {
    app: Arc<AppState>,
    input_messages: Vec<Value>,
    metadata: Option<Value>,
}

/// The recorder for a chat request (`body` is its JSON object), or None when the request is
/// not to be stored: on the OpenAI route unless `"store": true` (OpenAI's default is not to
/// store), on the Llama Stack route always (its inference store records every completion).
/// A `store` or `metadata` of the wrong shape is a 400, checked before any generation.
pub fn recorder(
    app: &Arc<AppState>,
    body: &Value,
    always: bool,
) -> Result<Option<Recorder>, ApiError> {
    let store = match body.get("store") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "store",
                "`store` must be a boolean",
            ));
        }
    };
    let metadata = match body.get("metadata") {
        None | Some(Value::Null) => None,
        Some(m) => Some(check_metadata(m)?),
    };
    if !(store || always) {
        return Ok(None);
    }
    // The body is then parsed as a ChatRequest, which refuses `messages` other than a list of
    // objects before anything is generated (and so recorded).
    let input_messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(Some(Recorder {
        app: app.clone(),
        input_messages,
        metadata,
    }))
}

impl Recorder {
    /// Stores `completion` (a ChatCompletion object as returned to the client). A failure is
    /// logged, never returned: the client already has, or is about to get, its answer.
    pub async fn record(self, completion: &Value) {
        let (Some(id), Some(model)) = (
            completion.get("id").and_then(Value::as_str),
            completion.get("model").and_then(Value::as_str),
        ) else {
            tracing::warn!("not storing a chat completion without an id and a model");
            return;
        };
        let (id, model) = (id.to_owned(), model.to_owned());
        let created = completion
            .get("created")
            .and_then(Value::as_i64)
            .unwrap_or_default();
        let mut stored = completion.clone();
        if let (Some(m), Some(obj)) = (self.metadata, stored.as_object_mut()) {
            obj.insert("metadata".into(), m);
        }
        let db = self.app.agents.db.clone();
        let messages = self.input_messages;
        // SQLite calls block; keep them off the async workers.
        let res = tokio::task::spawn_blocking(move || {
            db.put_chat_completion(&id, created, &model, &stored, &messages)
                .map(|()| id)
        })
        .await;
        match res {
            Ok(Ok(id)) => tracing::debug!(%id, "stored chat completion"),
            Ok(Err(e)) => tracing::warn!("could not store a chat completion: {e}"),
            Err(e) => tracing::warn!("could not store a chat completion: {e}"),
        }
    }
}

/// `metadata` as OpenAI accepts it: an object of at most 16 string values.
fn check_metadata(m: &Value) -> Result<Value, ApiError> {
    let bad = |msg: String| ApiError::invalid_param("metadata", msg);
    let Some(obj) = m.as_object() else {
        return Err(bad("`metadata` must be an object of strings".into()));
    };
    if obj.len() > MAX_METADATA_PAIRS {
        return Err(bad(format!(
            "`metadata` has {} keys; at most {MAX_METADATA_PAIRS} are allowed",
            obj.len()
        )));
    }
    for (k, v) in obj {
        if k.chars().count() > MAX_METADATA_KEY {
            return Err(bad(format!(
                "metadata keys are at most {MAX_METADATA_KEY} characters"
            )));
        }
        match v.as_str() {
            Some(s) if s.chars().count() <= MAX_METADATA_VALUE => {}
            Some(_) => {
                return Err(bad(format!(
                    "metadata values are at most {MAX_METADATA_VALUE} characters (key '{k}')"
                )));
            }
            None => return Err(bad(format!("metadata value of '{k}' must be a string"))),
        }
    }
    Ok(m.clone())
}

/// 404 for an id that names no stored completion.
fn not_found(id: &str) -> ApiError {
    ApiError {
        code: Some("not_found"),
        ..ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("no stored chat completion with id '{id}'"),
        )
    }
}

/// A database failure while serving a stored-completion route: an unknown pagination cursor
/// is the caller's mistake (400 naming it), anything else ours (500).
fn db_error(e: DbError, cursor: &ListQuery) -> ApiError {
    match e {
        DbError::NotFound { kind, id } => {
            let param = if cursor.after.as_deref() == Some(id.as_str()) {
                "after"
            } else {
                "before"
            };
            ApiError::invalid_param(
                param,
                format!("`{param}` names no stored {kind} of this list: '{id}'"),
            )
        }
        e => ApiError::internal(e),
    }
}

/// Runs a blocking database call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DbError> + Send + 'static,
    q: &ListQuery,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| db_error(e, q))
}

/// The list query (`limit`, `order`, `after`, `before`, `model`), every bad value a 400.
/// Other parameters are ignored, as OpenAI ignores those it does not know.
fn list_query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    with_model: bool,
) -> Result<ListQuery, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))?;
    // The openai client sends a metadata filter as `metadata[key]=value`; answering it
    // unfiltered would look like a match, so it is refused until it is supported.
    if let Some(k) = q.keys().find(|k| k.starts_with("metadata")) {
        return Err(ApiError::invalid_param(
            "metadata",
            format!("filtering stored chat completions by metadata (`{k}`) is not supported"),
        ));
    }
    let limit = crate::paging::limit(&q, ferrollama_agents::db::DEFAULT_LIMIT, MAX_LIMIT)?;
    let order = if crate::paging::ascending(&q)? {
        Order::Asc
    } else {
        Order::Desc
    };
    let nonempty = |k: &str| q.get(k).filter(|s| !s.is_empty()).cloned();
    Ok(ListQuery {
        after: nonempty("after"),
        before: nonempty("before"),
        limit,
        order,
        model: if with_model { nonempty("model") } else { None },
    })
}

/// The completion id in the path.
fn path_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::invalid("the completion id in the path is not valid UTF-8"))?;
    Ok(id)
}

/// A stored completion as the list and get routes return it: the ChatCompletion plus its
/// `input_messages` (Llama Stack's `OpenAICompletionWithInputMessages`).
fn with_messages(row: ChatCompletionRow) -> Value {
    let mut v = row.completion;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("input_messages".into(), Value::Array(row.input_messages));
    }
    v
}

/// OpenAI's list object. An empty list's `first_id` / `last_id` are null (OpenAI), or ""
/// where the Llama Stack client types them as strings (as llama-stack's store answers).
fn list_json(
    data: Vec<Value>,
    first_id: Option<String>,
    last_id: Option<String>,
    has_more: bool,
    ls: bool,
) -> Response {
    let edge = |id: Option<String>| match id {
        Some(id) => Value::String(id),
        None if ls => Value::String(String::new()),
        None => Value::Null,
    };
    axum::Json(json!({
        "object": "list",
        "data": data,
        "first_id": edge(first_id),
        "last_id": edge(last_id),
        "has_more": has_more,
    }))
    .into_response()
}

/// `GET /v1/chat/completions`: stored completions, newest first by default.
pub async fn list(
    State(app): State<Arc<AppState>>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    list_with(app, q, false).await
}

/// `GET /v1/openai/v1/chat/completions`: the same list for the Llama Stack client.
pub async fn list_ls(
    State(app): State<Arc<AppState>>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    list_with(app, q, true).await
}

async fn list_with(
    app: Arc<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    ls: bool,
) -> Result<Response, ApiError> {
    let q = list_query(q, true)?;
    let db = app.agents.db.clone();
    let q2 = q.clone();
    let page: Page<ChatCompletionRow> = blocking(move || db.list_chat_completions(&q2), &q).await?;
    let data = page.data.into_iter().map(with_messages).collect();
    Ok(list_json(
        data,
        page.first_id,
        page.last_id,
        page.has_more,
        ls,
    ))
}

/// `GET /v1/chat/completions/{completion_id}`: one stored completion with its messages.
pub async fn get(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let db = app.agents.db.clone();
    let key = id.clone();
    let row = blocking(move || db.get_chat_completion(&key), &ListQuery::default()).await?;
    let row = row.ok_or_else(|| not_found(&id))?;
    Ok(axum::Json(with_messages(row)).into_response())
}

/// `GET /v1/chat/completions/{completion_id}/messages`: a page of its input messages, in
/// conversation order unless `order=desc` (OpenAI's default for this list is `asc`).
pub async fn messages(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let explicit_order = matches!(&q, Ok(Query(m)) if m.contains_key("order"));
    let mut q = list_query(q, false)?;
    if !explicit_order {
        // OpenAI lists a completion's messages in conversation order by default.
        q.order = Order::Asc;
    }
    let db = app.agents.db.clone();
    let (key, q2) = (id.clone(), q.clone());
    let (page, all) = blocking(
        move || {
            let page = db.chat_completion_messages(&key, &q2)?;
            // The whole list too, to name each message of the page by its cursor id.
            let all = db.get_chat_completion(&key)?.map(|r| r.input_messages);
            Ok((page, all))
        },
        &q,
    )
    .await?;
    let (Some(page), Some(all)) = (page, all) else {
        return Err(not_found(&id));
    };
    let data = name_messages(&id, page.data, page.first_id.as_deref(), q.order, &all);
    Ok(list_json(
        data,
        page.first_id,
        page.last_id,
        page.has_more,
        false,
    ))
}

/// Gives each message of a page the `id` OpenAI's message list carries (its cursor id):
/// its own `id` if it has one, else `{completion_id}-{position}`, as the database names it.
/// A page is a contiguous run of positions, found from the cursor id of its first message.
fn name_messages(
    parent: &str,
    mut data: Vec<Value>,
    first_id: Option<&str>,
    order: Order,
    all: &[Value],
) -> Vec<Value> {
    let cursor = |i: usize, m: &Value| match m.get("id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => format!("{parent}-{i}"),
    };
    let Some(start) =
        first_id.and_then(|f| all.iter().enumerate().position(|(i, m)| cursor(i, m) == f))
    else {
        return data;
    };
    for (k, m) in data.iter_mut().enumerate() {
        let pos = match order {
            Order::Asc => start.checked_add(k),
            Order::Desc => start.checked_sub(k),
        };
        if let (Some(pos), Some(obj)) = (pos, m.as_object_mut())
            && !obj.get("id").is_some_and(Value::is_string)
        {
            obj.insert("id".into(), Value::String(format!("{parent}-{pos}")));
        }
    }
    data
}

/// `DELETE /v1/chat/completions/{completion_id}`.
pub async fn delete(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let db = app.agents.db.clone();
    let key = id.clone();
    if !blocking(
        move || db.delete_chat_completion(&key),
        &ListQuery::default(),
    )
    .await?
    {
        return Err(not_found(&id));
    }
    Ok(
        axum::Json(json!({"id": id, "object": "chat.completion.deleted", "deleted": true}))
            .into_response(),
    )
}

/// `POST /v1/chat/completions/{completion_id}`: OpenAI's update, which can only set
/// `metadata`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct UpdateRequest {
    /// Replaces the stored metadata (up to 16 string values); null clears it.
    pub metadata: Option<Value>,
}

pub async fn update(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    JsonBody(req): JsonBody<UpdateRequest>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let metadata = match &req.metadata {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(m) => check_metadata(m)?,
    };
    let db = app.agents.db.clone();
    let key = id.clone();
    let row = blocking(
        move || {
            let Some(mut row) = db.get_chat_completion(&key)? else {
                return Ok(None);
            };
            if let Some(obj) = row.completion.as_object_mut() {
                obj.insert("metadata".into(), metadata);
            }
            // Re-putting keeps the row's place in the list (the insert updates in place).
            db.put_chat_completion(
                &row.id,
                row.created,
                &row.model,
                &row.completion,
                &row.input_messages,
            )?;
            Ok(Some(row))
        },
        &ListQuery::default(),
    )
    .await?;
    let row = row.ok_or_else(|| not_found(&id))?;
    Ok(axum::Json(with_messages(row)).into_response())
}
