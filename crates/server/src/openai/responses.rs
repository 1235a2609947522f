//! The OpenAI Responses API (`/v1/responses`, and Llama Stack's `/v1/openai/v1/responses`),
//! in the shapes the `openai` Python package parses: create (streamed or not), retrieve,
//! list, delete, and the input items of a response.
//!
//! A response is one turn of the agent loop (`ferrollama_agents::run_turn`): inference,
//! then the server-side tools it calls (web search, the code interpreter, MCP servers'
//! tools), then inference again, until the model answers or calls a client `function`
//! tool (the turn then ends with `function_call` items; the client sends their
//! `function_call_output`s in a new request with `previous_response_id`). The loop's
//! events become output items and stream events in `responses/output.rs`; the request's
//! parts are parsed in `responses/input.rs`.
//!
//! Stored responses (`store`, true by default) keep the whole conversation as the loop's
//! messages, so a chained response continues from exactly what the model saw. The
//! instructions are not part of it: as with OpenAI, each request gives its own. A response
//! runs in its own task, so a client that disconnects mid-stream does not lose it. Failed
//! responses are not stored.

mod input;
mod output;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferrollama_agents::db::{DbError, ListQuery, Order, ResponseRow};
use ferrollama_agents::runtime::Executor;
use ferrollama_agents::{
    Event, InferReply, InferRequest, Inference, Message, NoShields, Step, StopReason, TurnConfig,
    TurnContext, TurnError, run_turn,
};
use ferrollama_engine::constrain::Schema;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use self::input::Tools;
use self::output::Builder;
use super::sse_response;
use crate::agents::api::{new_id, now};
use crate::agents::infer::EngineInference;
use crate::agents::tools::keys;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// Most inference steps of one response unless the request says (Llama Stack's default).
const DEFAULT_MAX_ITERS: usize = 10;

/// `POST /v1/responses`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateResponse {
    pub model: String,
    /// A string (one user message) or a list of items: messages, `function_call`,
    /// `function_call_output`.
    pub input: Value,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Accepted; calls of one reply are returned together either way.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", ...}}`.
    #[serde(default)]
    pub text: Option<Value>,
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Llama Stack's bound on the inference steps of one response (default 10).
    #[serde(default)]
    pub max_infer_iters: Option<u64>,
}

fn db_error(e: DbError) -> ApiError {
    match e {
        DbError::NotFound { kind, id } => not_found(kind, &id),
        e => ApiError::internal(format!("responses database: {e}")),
    }
}

fn not_found(kind: &str, id: &str) -> ApiError {
    not_found_msg(format!("no {kind} '{id}'"))
}

fn not_found_msg(message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
}

/// What every Response object of one request repeats from it.
#[derive(Debug, Clone)]
struct Echo {
    id: String,
    created_at: i64,
    model: String,
    instructions: Option<String>,
    previous_response_id: Option<String>,
    tools: Vec<Value>,
    tool_choice: Value,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_output_tokens: Option<u64>,
    parallel_tool_calls: bool,
    text: Value,
    store: bool,
    metadata: Value,
}

impl Echo {
    /// The Response object.
    fn response(&self, status: &str, output: &[Value], usage: Option<(usize, usize)>) -> Value {
        let usage = usage.map_or(Value::Null, |(i, o)| {
            json!({
                "input_tokens": i,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": o,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": i + o,
            })
        });
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": self.previous_response_id,
            "store": self.store,
            "temperature": self.temperature.unwrap_or(1.0),
            "text": self.text,
            "tool_choice": self.tool_choice,
            "tools": self.tools,
            "top_p": self.top_p.unwrap_or(1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": null,
            "metadata": self.metadata,
        })
    }
}

/// A request's tool as the Response repeats it: as given, with what OpenAI's Response
/// requires filled in (a code interpreter's `container`, which this server does not use:
/// the sandbox session is the response's).
fn echo_tool(t: &Value) -> Value {
    let mut t = t.clone();
    if t.get("type").and_then(Value::as_str) == Some("code_interpreter")
        && let Some(o) = t.as_object_mut()
        && o.get("container").is_none_or(Value::is_null)
    {
        o.insert("container".into(), json!({"type": "auto"}));
    }
    t
}

/// The loop's inference on the engine, summing the token counts of its steps.
struct Counting {
    inner: EngineInference,
    usage: Mutex<Option<(usize, usize)>>,
}

impl Inference for Counting {
    async fn infer(
        &self,
        req: InferRequest,
        deltas: mpsc::UnboundedSender<String>,
    ) -> Result<InferReply, TurnError> {
        let reply = self.inner.infer(req, deltas).await?;
        if let Some((i, o)) = reply.usage
            && let Ok(mut u) = self.usage.lock()
        {
            let (si, so) = u.unwrap_or((0, 0));
            *u = Some((si + i, so + o));
        }
        Ok(reply)
    }
}

/// A response run, owned (it runs in its own task).
struct Run {
    app: Arc<AppState>,
    echo: Echo,
    cfg: TurnConfig,
    tools: Tools,
    history: Vec<Message>,
    input_items: Vec<Value>,
    format: Option<Arc<Schema>>,
    keys: ferrollama_tools::ProviderKeys,
}

/// `POST /v1/responses` (and `/v1/openai/v1/responses`).
pub async fn create(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CreateResponse>,
) -> Result<Response, ApiError> {
    if app.models.resolve(&req.model).is_none() {
        return Err(ApiError::model_not_found(&req.model, &app.models.ids()));
    }
    let sampling = input::sampling(req.temperature, req.top_p)?;
    let max_tokens = match req.max_output_tokens {
        None => None,
        Some(0) => {
            return Err(ApiError::invalid_param(
                "max_output_tokens",
                "max_output_tokens must be at least 1",
            ));
        }
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let max_infer_iters = match req.max_infer_iters {
        None => DEFAULT_MAX_ITERS,
        Some(n @ 1..=100) => n as usize,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "max_infer_iters",
                "max_infer_iters must be an integer from 1 to 100",
            ));
        }
    };
    let metadata = match &req.metadata {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(m)) if m.values().all(Value::is_string) => Value::Object(m.clone()),
        Some(_) => {
            return Err(ApiError::invalid_param(
                "metadata",
                "metadata must be an object of string values",
            ));
        }
    };
    let store = req.store.unwrap_or(true);
    let history: Vec<Message> = match &req.previous_response_id {
        None => Vec::new(),
        Some(id) => {
            let row = app
                .agents
                .db
                .get_response(id)
                .map_err(db_error)?
                .ok_or_else(|| ApiError {
                    param: Some("previous_response_id".into()),
                    ..not_found_msg(format!(
                        "no stored response '{id}' to continue (previous_response_id); a response created with store: false is not kept and cannot be continued"
                    ))
                })?;
            serde_json::from_value(row.messages)
                .map_err(|e| ApiError::internal(format!("stored response {id}: {e}")))?
        }
    };
    let format = input::text_format(req.text.as_ref())?;
    let tools = input::tools(&app, req.tools.as_deref()).await?;
    let choice = input::tool_choice(req.tool_choice.as_ref(), &tools)?;
    let new = input::input(&req.input, &history)?;
    let mut hist = history;
    hist.extend(new.messages);
    let echo = Echo {
        id: format!("resp_{}", new_id().replace('-', "")),
        created_at: i64::try_from(crate::job::unix_now()).unwrap_or(0),
        model: req.model.clone(),
        instructions: req.instructions.clone(),
        previous_response_id: req.previous_response_id.clone(),
        tools: req.tools.iter().flatten().map(echo_tool).collect(),
        tool_choice: req.tool_choice.clone().unwrap_or(json!("auto")),
        temperature: req.temperature,
        top_p: req.top_p,
        max_output_tokens: req.max_output_tokens,
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        text: req
            .text
            .clone()
            .unwrap_or_else(|| json!({"format": {"type": "text"}})),
        store,
        metadata,
    };
    let cfg = TurnConfig {
        model: req.model,
        instructions: req.instructions.unwrap_or_default(),
        tools: tools.defs.clone(),
        tool_choice: choice,
        max_infer_iters,
        input_shields: Vec::new(),
        output_shields: Vec::new(),
        sampling,
        max_tokens,
    };
    let r = Run {
        app: app.clone(),
        echo,
        cfg,
        tools,
        history: hist,
        input_items: new.items,
        format,
        keys: keys(&headers),
    };
    if req.stream.unwrap_or(false) {
        let (tx, body) = mpsc::channel::<String>(256);
        tokio::spawn(async move {
            if let Err(e) = run(r, Some(tx)).await {
                tracing::info!(error = %e, "response failed");
            }
        });
        return Ok(sse_response(body));
    }
    let v = tokio::spawn(run(r, None))
        .await
        .map_err(ApiError::internal)??;
    Ok(axum::Json(v).into_response())
}

/// Runs the turn and returns the Response object (stored when `store`); streams events to
/// `tx` when given.
async fn run(r: Run, tx: Option<mpsc::Sender<String>>) -> Result<Value, ApiError> {
    let Run {
        app,
        echo,
        cfg,
        tools,
        mut history,
        input_items,
        format,
        keys,
    } = r;
    // The code interpreter keeps state per session: one per response, closed at its end.
    let session = echo.id.clone();
    let mut b = Builder::new(tools, session.clone());
    let send = |frames: Vec<String>| {
        let tx = tx.clone();
        async move {
            if let Some(tx) = tx {
                for f in frames {
                    // A gone client does not stop the response: it is still stored.
                    let _ = tx.send(f).await;
                }
            }
        }
    };
    let started = echo.response("in_progress", &[], None);
    b.emit("response.created", json!({"response": started}));
    b.emit("response.in_progress", json!({"response": started}));
    b.list_mcp_tools();
    send(b.take_frames()).await;
    let infer = Counting {
        inner: EngineInference {
            app: app.clone(),
            response_format: format,
        },
        usage: Mutex::new(None),
    };
    let exec = Executor {
        runtime: app.agents.runtime.clone(),
        keys,
    };
    let (etx, mut erx) = mpsc::unbounded_channel::<Event>();
    let turn_id = echo.id.clone();
    let clock = now;
    let ids = new_id;
    let forward = async {
        while let Some(e) = erx.recv().await {
            b.on_event(&e);
            send(b.take_frames()).await;
        }
    };
    let work = async {
        let ctx = TurnContext {
            session_id: &session,
            turn_id: &turn_id,
            events: Some(&etx),
            clock: &clock,
            new_id: &ids,
        };
        let out = run_turn((&infer, &NoShields, &exec), &cfg, &ctx, &mut history, true).await;
        drop(etx);
        out
    };
    let (result, ()) = tokio::join!(work, forward);
    app.agents.runtime.close_session(&session);
    let usage = infer.usage.lock().ok().and_then(|u| *u);
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            let message = match e {
                TurnError::Inference(m) => format!("inference failed: {m}"),
                TurnError::Shield(m) => m,
            };
            let mut failed = echo.response("failed", &b.output, usage);
            failed["error"] = json!({"code": "server_error", "message": message});
            b.emit("response.failed", json!({"response": failed}));
            send(b.take_frames()).await;
            return Err(ApiError::invalid(message));
        }
    };
    // Cut short by max_output_tokens: OpenAI's "incomplete".
    let truncated = outcome.steps.iter().rev().find_map(|s| match s {
        Step::Inference { model_response, .. } => Some(model_response.stop_reason),
        _ => None,
    }) == Some(Some(StopReason::OutOfTokens));
    let mut resp = echo.response(
        if truncated { "incomplete" } else { "completed" },
        &b.output,
        usage,
    );
    if truncated {
        resp["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    if echo.store {
        let row = ResponseRow {
            id: echo.id.clone(),
            created_at: echo.created_at,
            model: echo.model.clone(),
            previous_response_id: echo.previous_response_id.clone(),
            response: resp.clone(),
            input_items,
            messages: serde_json::to_value(&history).map_err(ApiError::internal)?,
        };
        if let Err(e) = app.agents.db.put_response(&row) {
            let err = db_error(e);
            b.emit(
                "error",
                json!({"code": "server_error", "message": err.message, "param": null}),
            );
            send(b.take_frames()).await;
            return Err(err);
        }
    }
    b.emit(
        if truncated {
            "response.incomplete"
        } else {
            "response.completed"
        },
        json!({"response": resp}),
    );
    send(b.take_frames()).await;
    Ok(resp)
}

/// The list parameters (`limit`, `order`, `after`, `before`, `model`).
fn list_query(q: &HashMap<String, String>) -> Result<ListQuery, ApiError> {
    let mut out = ListQuery::default();
    if let Some(l) = q.get("limit") {
        out.limit = match l.parse::<usize>() {
            Ok(n @ 1..=100) => n,
            _ => {
                return Err(ApiError::invalid_param(
                    "limit",
                    "limit must be an integer from 1 to 100",
                ));
            }
        };
    }
    if let Some(o) = q.get("order") {
        out.order = match o.as_str() {
            "asc" => Order::Asc,
            "desc" => Order::Desc,
            _ => {
                return Err(ApiError::invalid_param(
                    "order",
                    "order must be asc or desc",
                ));
            }
        };
    }
    out.after = q.get("after").cloned();
    out.before = q.get("before").cloned();
    out.model = q.get("model").cloned();
    Ok(out)
}

/// A list error: an unknown cursor is a 400 naming its parameter.
fn list_error(e: DbError, q: &ListQuery) -> ApiError {
    if let DbError::NotFound { id, .. } = &e {
        for (param, v) in [("after", &q.after), ("before", &q.before)] {
            if v.as_deref() == Some(id.as_str()) {
                return ApiError::invalid_param(
                    param,
                    format!("{param}: no item '{id}' in this list"),
                );
            }
        }
    }
    db_error(e)
}

fn list_json(data: Vec<Value>, first: Option<String>, last: Option<String>, more: bool) -> Value {
    json!({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more})
}

/// `GET /v1/responses`: stored responses, newest first by default, each with its input
/// items as `input`.
pub async fn list(
    State(app): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = list_query(&q)?;
    let page = app
        .agents
        .db
        .list_responses(&q)
        .map_err(|e| list_error(e, &q))?;
    // Llama Stack's list items also carry their `input` (its client requires it).
    let data = page
        .data
        .into_iter()
        .map(|r| {
            let mut v = r.response;
            if let Some(o) = v.as_object_mut() {
                o.insert("input".into(), Value::Array(r.input_items));
            }
            v
        })
        .collect();
    Ok(axum::Json(list_json(data, page.first_id, page.last_id, page.has_more)).into_response())
}

/// `GET /v1/responses/{response_id}`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = app
        .agents
        .db
        .get_response(&id)
        .map_err(db_error)?
        .ok_or_else(|| not_found("response", &id))?;
    Ok(axum::Json(row.response).into_response())
}

/// `DELETE /v1/responses/{response_id}`.
pub async fn delete(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !app.agents.db.delete_response(&id).map_err(db_error)? {
        return Err(not_found("response", &id));
    }
    Ok(axum::Json(json!({"id": id, "object": "response", "deleted": true})).into_response())
}

/// `GET /v1/responses/{response_id}/input_items`: the items the request gave (not those of
/// earlier responses in the chain), newest first by default.
pub async fn input_items(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = list_query(&q)?;
    let page = app
        .agents
        .db
        .response_input_items(&id, &q)
        .map_err(|e| list_error(e, &q))?
        .ok_or_else(|| not_found("response", &id))?;
    Ok(axum::Json(list_json(
        page.data,
        page.first_id,
        page.last_id,
        page.has_more,
    ))
    .into_response())
}
