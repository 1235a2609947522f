//! The Llama Stack agents API, in the shapes `llama-stack-client==0.2.12` sends and parses:
//! agents (`POST/GET /v1/agents`, `GET/DELETE /v1/agents/{id}`), sessions, turns (streamed
//! as `turn_start`, `step_start` / `step_progress` / `step_complete`, then `turn_complete`
//! or `turn_awaiting_input`), `resume` with client tool results, and turn / step lookup.
//!
//! A turn runs in its own task: a client that disconnects mid-stream does not lose it (the
//! turn finishes and is stored). One turn at a time per session (the session's history is
//! its input); everything — agent, sessions, turns with their steps, the history — is in
//! the database and survives a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferrollama_agents::runtime::{Executor, builtin_tool};
use ferrollama_agents::turn::client_results_step;
use ferrollama_agents::{
    Delta, Event, Message, Role, Step, StopReason, ToolCall, ToolChoice, ToolDef, ToolKind,
    ToolResponse, TurnConfig, TurnContext, TurnEnd, TurnError, run_turn,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::infer::{EngineInference, EngineShields};
use super::tools::{group, group_tools, keys, schema_of};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::openai::{frame, sse_response};
use crate::state::AppState;

/// Default `max_infer_iters` (Llama Stack's).
const DEFAULT_MAX_ITERS: usize = 10;

/// A fresh id (UUID-shaped, random).
pub fn new_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let a = crate::openai::rand_seed();
    let b = crate::openai::rand_seed() ^ N.fetch_add(1, Ordering::Relaxed).rotate_left(17);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// Now, RFC 3339 with microseconds.
pub fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = ferrollama_store::manifest::rfc3339(d.as_secs());
    format!("{}.{:06}Z", s.trim_end_matches('Z'), d.subsec_micros())
}

fn db_error(e: ferrollama_agents::db::DbError) -> ApiError {
    use ferrollama_agents::db::DbError;
    match e {
        DbError::NotFound { kind, id } => not_found(kind, &id),
        DbError::AlreadyExists { kind, id } => ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            format!("{kind} '{id}' already exists"),
        ),
        e => ApiError::internal(format!("agents database: {e}")),
    }
}

fn not_found(kind: &str, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no {kind} '{id}'"),
    )
}

// ---- agents ----

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateAgent {
    pub agent_config: Value,
}

/// `POST /v1/agents`: the config is checked now (model, tool groups, shields, client
/// tools), so a bad one is a 400 here rather than a failed turn later.
pub async fn create(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<CreateAgent>,
) -> Result<Response, ApiError> {
    let id = create_agent(&app, &req.agent_config).await?;
    tracing::info!(agent = %id, "agent created");
    Ok(axum::Json(json!({ "agent_id": id })).into_response())
}

/// Checks `config` as a turn would use it and stores a new agent with it; its id.
async fn create_agent(app: &AppState, config: &Value) -> Result<String, ApiError> {
    if !config.is_object() {
        return Err(ApiError::invalid_param(
            "agent_config",
            "agent_config must be an object with at least `model` and `instructions`",
        ));
    }
    turn_config(app, config, &[], None, false).await?;
    let id = new_id();
    app.agents
        .db
        .create_agent(&id, config, &now())
        .map_err(db_error)?;
    Ok(id)
}

fn agent_json(r: &ferrollama_agents::db::AgentRow) -> Value {
    json!({"agent_id": r.agent_id, "agent_config": r.config, "created_at": r.created_at})
}

/// `GET /v1/agents`.
pub async fn list(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let rows = app.agents.db.list_agents().map_err(db_error)?;
    let data: Vec<Value> = rows.iter().map(agent_json).collect();
    Ok(axum::Json(json!({ "data": data, "has_more": false })).into_response())
}

fn agent(app: &AppState, id: &str) -> Result<ferrollama_agents::db::AgentRow, ApiError> {
    app.agents
        .db
        .get_agent(id)
        .map_err(db_error)?
        .ok_or_else(|| not_found("agent", id))
}

/// `GET /v1/agents/{agent_id}`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(agent_json(&agent(&app, &id)?)).into_response())
}

/// `DELETE /v1/agents/{agent_id}`: with its sessions, turns and interpreter state.
pub async fn delete(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let sessions = app.agents.db.list_sessions(&id).map_err(db_error)?;
    if !app.agents.db.delete_agent(&id).map_err(db_error)? {
        return Err(not_found("agent", &id));
    }
    for s in sessions {
        app.agents.forget_session(&s.session_id);
    }
    Ok(axum::Json(Value::Null).into_response())
}

// ---- sessions ----

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateSession {
    pub session_name: String,
}

/// `POST /v1/agents/{agent_id}/session`.
pub async fn create_session(
    State(app): State<Arc<AppState>>,
    Path(agent_id): Path<String>,
    JsonBody(req): JsonBody<CreateSession>,
) -> Result<Response, ApiError> {
    let id = new_id();
    app.agents
        .db
        .create_session(&agent_id, &id, &req.session_name, &now())
        .map_err(db_error)?;
    Ok(axum::Json(json!({ "session_id": id })).into_response())
}

fn session_json(
    app: &AppState,
    s: &ferrollama_agents::db::SessionRow,
    only: Option<&[String]>,
) -> Result<Value, ApiError> {
    let turns: Vec<Value> = app
        .agents
        .db
        .list_turns(&s.session_id)
        .map_err(db_error)?
        .into_iter()
        .filter(|t| only.is_none_or(|ids| ids.contains(&t.turn_id)))
        .map(|t| t.turn)
        .collect();
    Ok(json!({
        "session_id": s.session_id,
        "session_name": s.name,
        "started_at": s.created_at,
        "turns": turns,
    }))
}

/// `GET /v1/agents/{agent_id}/sessions`.
pub async fn list_sessions(
    State(app): State<Arc<AppState>>,
    Path(agent_id): Path<String>,
) -> Result<Response, ApiError> {
    agent(&app, &agent_id)?;
    let data = app
        .agents
        .db
        .list_sessions(&agent_id)
        .map_err(db_error)?
        .iter()
        .map(|s| session_json(&app, s, None))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(json!({ "data": data, "has_more": false })).into_response())
}

fn session(
    app: &AppState,
    agent_id: &str,
    session_id: &str,
) -> Result<ferrollama_agents::db::SessionRow, ApiError> {
    agent(app, agent_id)?;
    app.agents
        .db
        .get_session(agent_id, session_id)
        .map_err(db_error)?
        .ok_or_else(|| not_found("session", session_id))
}

/// `GET /v1/agents/{agent_id}/session/{session_id}?turn_ids=`.
pub async fn get_session(
    State(app): State<Arc<AppState>>,
    Path((agent_id, session_id)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let s = session(&app, &agent_id, &session_id)?;
    let ids: Vec<String> = q
        .into_iter()
        .filter(|(k, _)| k == "turn_ids" || k == "turn_ids[]")
        .map(|(_, v)| v)
        .collect();
    let only = (!ids.is_empty()).then_some(ids.as_slice());
    Ok(axum::Json(session_json(&app, &s, only)?).into_response())
}

/// `DELETE /v1/agents/{agent_id}/session/{session_id}`: with its turns and the
/// interpreter's state.
pub async fn delete_session(
    State(app): State<Arc<AppState>>,
    Path((agent_id, session_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    agent(&app, &agent_id)?;
    if !app
        .agents
        .db
        .delete_session(&agent_id, &session_id)
        .map_err(db_error)?
    {
        return Err(not_found("session", &session_id));
    }
    app.agents.forget_session(&session_id);
    Ok(axum::Json(Value::Null).into_response())
}

// ---- the turn's configuration ----

fn strings(v: &Value, key: &str) -> Result<Vec<String>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::invalid_param(key, format!("{key} must be a list of strings"))
                })
            })
            .collect(),
        _ => Err(ApiError::invalid_param(
            key,
            format!("{key} must be a list of strings"),
        )),
    }
}

fn tool_choice(v: Option<&Value>) -> Result<Option<ToolChoice>, ApiError> {
    Ok(match v.and_then(Value::as_str) {
        None => None,
        Some("auto") => Some(ToolChoice::Auto),
        Some("required") => Some(ToolChoice::Required),
        Some("none") => Some(ToolChoice::None),
        Some(name) => Some(ToolChoice::Named(name.to_string())),
    })
}

/// The agent's config (plus a turn's extra tool groups and tool config) as the loop's.
/// `run`: resolving MCP groups' tools (asks their servers) — skipped when only checking.
async fn turn_config(
    app: &AppState,
    config: &Value,
    extra_groups: &[Value],
    turn_tool_config: Option<&Value>,
    run: bool,
) -> Result<TurnConfig, ApiError> {
    let model = config
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_param("agent_config", "agent_config.model is required"))?;
    if app.models.resolve(model).is_none() {
        return Err(ApiError::model_not_found(model, &app.models.ids()));
    }
    let instructions = config
        .get("instructions")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut tools: Vec<ToolDef> = Vec::new();
    let groups: Vec<Value> = config
        .get("toolgroups")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .chain(extra_groups.iter().cloned())
        .collect();
    for g in &groups {
        let name = match g {
            Value::String(s) => s.as_str(),
            Value::Object(o) => o.get("name").and_then(Value::as_str).unwrap_or(""),
            _ => "",
        };
        if name.is_empty() {
            return Err(ApiError::invalid_param(
                "toolgroups",
                "each tool group is a name or {\"name\": ..., \"args\": {...}}",
            ));
        }
        // "group" or "group/tool".
        let (gid, tool) = match name.split_once('/') {
            Some((g, t)) => (g, Some(t)),
            None => (name, None),
        };
        let Some(grp) = group(app, gid) else {
            return Err(ApiError::invalid_param(
                "toolgroups",
                format!(
                    "no tool group '{gid}'; GET /v1/toolgroups lists them (MCP servers are registered with POST /v1/toolgroups)"
                ),
            ));
        };
        if grp.mcp_endpoint.is_some() && !run {
            continue;
        }
        let mut defs = group_tools(app, &grp).await?;
        if gid == "builtin::rag" {
            // Llama Stack: {"name": "builtin::rag/knowledge_search", "args": {"vector_db_ids": [...]}}.
            let args = g.get("args");
            let ids: Vec<String> = args
                .and_then(|a| a.get("vector_db_ids"))
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .filter(|v: &Vec<String>| !v.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "toolgroups",
                        "builtin::rag needs args.vector_db_ids: the vector dbs to search",
                    )
                })?;
            let max_results = args
                .and_then(|a| a.get("query_config"))
                .and_then(|q| q.get("max_chunks"))
                .and_then(Value::as_u64)
                .map_or(5, |n| n.clamp(1, 50) as usize);
            for d in &mut defs {
                if let ToolKind::KnowledgeSearch { .. } = d.kind {
                    d.kind = ToolKind::KnowledgeSearch {
                        vector_store_ids: ids.clone(),
                        max_results,
                    };
                }
            }
        }
        if let Some(t) = tool {
            defs.retain(|d| d.name == t || (t == "web_search" && d.name == "brave_search"));
            if defs.is_empty() {
                return Err(ApiError::invalid_param(
                    "toolgroups",
                    format!("tool group '{gid}' has no tool '{t}'"),
                ));
            }
        }
        for d in defs {
            if !tools.iter().any(|x| x.name == d.name) {
                tools.push(d);
            }
        }
    }
    for c in config
        .get("client_tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() || name.len() > 128 {
            return Err(ApiError::invalid_param(
                "client_tools",
                "each client tool needs a name of 1 to 128 characters",
            ));
        }
        if builtin_tool(name).is_some() || tools.iter().any(|t| t.name == name) {
            return Err(ApiError::invalid_param(
                "client_tools",
                format!("client tool '{name}' has the name of another tool"),
            ));
        }
        let parameters = match c.get("parameters").or_else(|| c.get("input_schema")) {
            Some(Value::Array(ps)) => schema_of(ps),
            Some(o @ Value::Object(_)) => o.clone(),
            _ => json!({"type": "object", "properties": {}}),
        };
        tools.push(ToolDef {
            name: name.to_string(),
            description: c
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            parameters,
            kind: ToolKind::Client,
            toolgroup: None,
        });
    }
    let tc = config.get("tool_config");
    let choice = tool_choice(turn_tool_config.and_then(|t| t.get("tool_choice")))?
        .or(tool_choice(tc.and_then(|t| t.get("tool_choice")))?)
        .or(tool_choice(config.get("tool_choice"))?)
        .unwrap_or_default();
    if let ToolChoice::Named(n) = &choice
        && run
        && !tools.iter().any(|t| &t.name == n)
    {
        return Err(ApiError::invalid_param(
            "tool_choice",
            format!("tool_choice names '{n}', which is not one of the agent's tools"),
        ));
    }
    let input_shields = strings(config, "input_shields")?;
    let output_shields = strings(config, "output_shields")?;
    for s in input_shields.iter().chain(&output_shields) {
        if app.safety.shields.get(s).is_none() {
            return Err(ApiError::invalid_param(
                "agent_config",
                format!("no shield '{s}'; GET /v1/shields lists them"),
            ));
        }
    }
    let max_infer_iters = match config.get("max_infer_iters") {
        None | Some(Value::Null) => DEFAULT_MAX_ITERS,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=100).contains(&n) => n as usize,
            _ => {
                return Err(ApiError::invalid_param(
                    "max_infer_iters",
                    "max_infer_iters must be an integer from 1 to 100",
                ));
            }
        },
    };
    let sampling = config
        .get("sampling_params")
        .cloned()
        .unwrap_or(Value::Null);
    if !sampling.is_null() {
        let sp: crate::llama_stack::SamplingParams = serde_json::from_value(sampling.clone())
            .map_err(|e| ApiError::invalid_param("sampling_params", e.to_string()))?;
        crate::llama_stack::settings(&Some(sp), &None, &None)?;
    }
    Ok(TurnConfig {
        model: model.to_string(),
        instructions,
        tools,
        tool_choice: choice,
        max_infer_iters,
        input_shields,
        output_shields,
        sampling,
        max_tokens: None,
    })
}

// ---- turns ----

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateTurn {
    pub messages: Vec<Value>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub toolgroups: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_config: Option<Value>,
    #[serde(default)]
    pub documents: Option<Vec<Value>>,
}

/// Text of an InterleavedContent (a string, an item, or a list of items).
fn content_text(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Object(o) => match (o.get("type").and_then(Value::as_str), o.get("text")) {
            (Some("text"), Some(Value::String(t))) => Ok(t.clone()),
            _ => Err(ApiError::invalid_param(
                "messages",
                "only text content is supported (this server's models read text)",
            )),
        },
        Value::Array(a) => a.iter().map(content_text).collect(),
        _ => Err(ApiError::invalid_param("messages", "content must be text")),
    }
}

/// A turn's input messages: user messages and tool responses.
fn input_messages(messages: &[Value]) -> Result<Vec<Message>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must not be empty",
        ));
    }
    messages
        .iter()
        .map(|m| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            let mut text = content_text(m.get("content").unwrap_or(&Value::Null))?;
            if let Some(c) = m.get("context").filter(|c| !c.is_null()) {
                text.push_str("\n\n");
                text.push_str(&content_text(c)?);
            }
            match role {
                "user" => Ok(Message::new(Role::User, text)),
                "tool" | "ipython" => {
                    let call_id = m.get("call_id").and_then(Value::as_str).unwrap_or("");
                    let name = m.get("tool_name").and_then(Value::as_str).unwrap_or("");
                    Ok(Message::tool_result(call_id, name, text))
                }
                r => Err(ApiError::invalid_param(
                    "messages",
                    format!("a turn's messages are user or tool messages, not '{r}'"),
                )),
            }
        })
        .collect()
}

fn history(app: &AppState, session_id: &str) -> Result<Vec<Message>, ApiError> {
    let state = app
        .agents
        .db
        .get_session_state(session_id)
        .map_err(db_error)?;
    Ok(match state.and_then(|s| s.get("messages").cloned()) {
        Some(m) => serde_json::from_value(m)
            .map_err(|e| ApiError::internal(format!("session history: {e}")))?,
        None => Vec::new(),
    })
}

/// The turn object (Llama Stack's `Turn`).
struct TurnDoc {
    turn_id: String,
    session_id: String,
    input_messages: Vec<Message>,
    steps: Vec<Step>,
    started_at: String,
}

impl TurnDoc {
    fn json(&self, output: &Message, completed: bool) -> Value {
        json!({
            "turn_id": self.turn_id,
            "session_id": self.session_id,
            "input_messages": self.input_messages,
            "steps": self.steps,
            "output_message": completion_message(output),
            "output_attachments": [],
            "started_at": self.started_at,
            "completed_at": if completed { Value::String(now()) } else { Value::Null },
        })
    }
}

fn completion_message(m: &Message) -> Value {
    let calls: Vec<Value> = m.tool_calls.iter().map(call_json).collect();
    json!({
        "role": "assistant",
        "content": m.content,
        "stop_reason": m.stop_reason.unwrap_or(StopReason::EndOfTurn),
        "tool_calls": calls,
    })
}

fn call_json(c: &ToolCall) -> Value {
    json!({
        "call_id": c.call_id,
        "tool_name": c.tool_name,
        "arguments": c.arguments,
        "arguments_json": c.arguments.to_string(),
    })
}

fn step_json(s: &Step) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Some(calls) = v.get_mut("tool_calls").and_then(Value::as_array_mut) {
        for c in calls {
            if let Some(a) = c.get("arguments").map(Value::to_string) {
                c["arguments_json"] = Value::String(a);
            }
        }
    }
    if let Some(m) = v.get_mut("model_response") {
        if let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
            for c in calls {
                if let Some(a) = c.get("arguments").map(Value::to_string) {
                    c["arguments_json"] = Value::String(a);
                }
            }
        }
        if m.get("tool_calls").is_none() {
            m["tool_calls"] = json!([]);
        }
    }
    v
}

fn payload(p: Value) -> String {
    frame(&json!({"event": {"payload": p}}))
}

fn event_frame(e: &Event) -> String {
    match e {
        Event::StepStart { step_id, step_type } => payload(json!({
            "event_type": "step_start", "step_id": step_id, "step_type": step_type, "metadata": {}})),
        Event::StepProgress {
            step_id,
            step_type,
            delta,
        } => {
            let delta = match delta {
                Delta::Text(t) => json!({"type": "text", "text": t}),
                Delta::ToolCall(c) => {
                    json!({"type": "tool_call", "tool_call": call_json(c), "parse_status": "succeeded"})
                }
            };
            payload(
                json!({"event_type": "step_progress", "step_id": step_id, "step_type": step_type, "delta": delta}),
            )
        }
        Event::StepComplete(s) => payload(json!({
            "event_type": "step_complete", "step_id": s.step_id(), "step_type": s.step_type(),
            "step_details": step_json(s)})),
    }
}

/// What a turn run needs, owned (it runs in its own task).
struct Run {
    app: Arc<AppState>,
    cfg: TurnConfig,
    doc: TurnDoc,
    history: Vec<Message>,
    fresh: bool,
    keys: ferrollama_tools::ProviderKeys,
    /// Client tool results to record first (resume).
    resume: Option<(Vec<ToolCall>, Vec<ToolResponse>)>,
}

impl Run {
    /// A new turn of `session_id` on `input`, run over `history` (the session's messages,
    /// then `input`).
    fn new_turn(
        app: &Arc<AppState>,
        cfg: TurnConfig,
        session_id: String,
        input: Vec<Message>,
        history: Vec<Message>,
        keys: ferrollama_tools::ProviderKeys,
    ) -> Run {
        Run {
            app: app.clone(),
            cfg,
            doc: TurnDoc {
                turn_id: new_id(),
                session_id,
                input_messages: input,
                steps: Vec::new(),
                started_at: now(),
            },
            history,
            fresh: true,
            keys,
            resume: None,
        }
    }
}

/// Runs the turn, stores it, and returns the turn object; events (and the final payload)
/// go to `tx` as SSE frames when streaming.
async fn run(mut r: Run, tx: Option<mpsc::Sender<String>>) -> Result<Value, ApiError> {
    let lock = r.app.agents.session_lock(&r.doc.session_id);
    let _guard = lock.lock().await;
    let send = |f: String| {
        let tx = tx.clone();
        async move {
            if let Some(tx) = tx {
                let _ = tx.send(f).await;
            }
        }
    };
    send(payload(
        json!({"event_type": "turn_start", "turn_id": r.doc.turn_id}),
    ))
    .await;
    let (etx, mut erx) = mpsc::unbounded_channel::<Event>();
    let infer = EngineInference {
        app: r.app.clone(),
        response_format: None,
    };
    let shields = EngineShields { app: r.app.clone() };
    let exec = Executor {
        runtime: r.app.agents.runtime.clone(),
        keys: r.keys.clone(),
    };
    let session_id = r.doc.session_id.clone();
    let turn_id = r.doc.turn_id.clone();
    let clock = now;
    let ids = new_id;
    let forward = async {
        while let Some(e) = erx.recv().await {
            send(event_frame(&e)).await;
        }
    };
    let work = async {
        let ctx = TurnContext {
            session_id: &session_id,
            turn_id: &turn_id,
            events: Some(&etx),
            clock: &clock,
            new_id: &ids,
        };
        let mut pre = Vec::new();
        if let Some((calls, responses)) = r.resume.take() {
            pre.push(client_results_step(&ctx, &mut r.history, &calls, responses));
        }
        let out = run_turn(
            (&infer, &shields, &exec),
            &r.cfg,
            &ctx,
            &mut r.history,
            r.fresh,
        )
        .await;
        drop(etx);
        out.map(|o| (pre, o))
    };
    let (result, ()) = tokio::join!(work, forward);
    let (pre, outcome) = match result {
        Ok(x) => x,
        Err(e) => {
            let err = match e {
                TurnError::Inference(m) => ApiError::invalid(format!("inference failed: {m}")),
                TurnError::Shield(m) => ApiError::invalid(m),
            };
            send(frame(&json!({"error": {"message": err.message}}))).await;
            return Err(err);
        }
    };
    r.doc.steps.extend(pre);
    r.doc.steps.extend(outcome.steps);
    let (status, output, event_type) = match outcome.end {
        TurnEnd::Complete(m) => ("complete", m, "turn_complete"),
        TurnEnd::AwaitingInput(mut m) => {
            // Only the calls the client runs: the others already ran here.
            m.tool_calls.retain(|c| {
                r.cfg
                    .tools
                    .iter()
                    .any(|t| t.name == c.tool_name && t.kind == ToolKind::Client)
            });
            m.stop_reason = Some(StopReason::EndOfMessage);
            ("awaiting_input", m, "turn_awaiting_input")
        }
    };
    let mut turn = r.doc.json(&output, status == "complete");
    if let Some(steps) = turn.get_mut("steps").and_then(Value::as_array_mut) {
        for (s, step) in steps.iter_mut().zip(&r.doc.steps) {
            *s = step_json(step);
        }
    }
    let db = &r.app.agents.db;
    db.put_session_state(&r.doc.session_id, &json!({"messages": r.history}))
        .and_then(|()| {
            db.put_turn(
                &r.doc.session_id,
                &r.doc.turn_id,
                status,
                &turn,
                &r.doc.started_at,
            )
        })
        .map_err(db_error)?;
    send(payload(json!({"event_type": event_type, "turn": turn}))).await;
    Ok(turn)
}

/// Starts the run in its own task; streams it or waits for the turn object.
async fn respond(r: Run, stream: bool) -> Result<Response, ApiError> {
    if stream {
        let (tx, body) = mpsc::channel::<String>(256);
        tokio::spawn(async move {
            if let Err(e) = run(r, Some(tx)).await {
                tracing::info!(error = %e, "agent turn failed");
            }
        });
        return Ok(sse_response(body));
    }
    let turn = tokio::spawn(run(r, None))
        .await
        .map_err(ApiError::internal)??;
    Ok(axum::Json(turn).into_response())
}

/// `POST /v1/agents/{agent_id}/session/{session_id}/turn`.
pub async fn create_turn(
    State(app): State<Arc<AppState>>,
    Path((agent_id, session_id)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CreateTurn>,
) -> Result<Response, ApiError> {
    let a = agent(&app, &agent_id)?;
    session(&app, &agent_id, &session_id)?;
    if req.documents.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(ApiError::invalid_param(
            "documents",
            "documents need the retrieval tools, which this server does not have yet; put the text in the message",
        ));
    }
    let input = input_messages(&req.messages)?;
    let cfg = turn_config(
        &app,
        &a.config,
        req.toolgroups.as_deref().unwrap_or_default(),
        req.tool_config.as_ref(),
        true,
    )
    .await?;
    let mut hist = history(&app, &session_id)?;
    hist.extend(input.iter().cloned());
    let r = Run::new_turn(&app, cfg, session_id, input, hist, keys(&headers));
    respond(r, req.stream.unwrap_or(false)).await
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ResumeTurn {
    pub tool_responses: Vec<Value>,
    #[serde(default)]
    pub stream: Option<bool>,
}

fn turn_row(
    app: &AppState,
    agent_id: &str,
    session_id: &str,
    turn_id: &str,
) -> Result<ferrollama_agents::db::TurnRow, ApiError> {
    session(app, agent_id, session_id)?;
    app.agents
        .db
        .get_turn(session_id, turn_id)
        .map_err(db_error)?
        .ok_or_else(|| not_found("turn", turn_id))
}

/// `POST .../turn/{turn_id}/resume`: the client tools' results for a turn that is
/// `awaiting_input`; the loop continues from there.
pub async fn resume(
    State(app): State<Arc<AppState>>,
    Path((agent_id, session_id, turn_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ResumeTurn>,
) -> Result<Response, ApiError> {
    let a = agent(&app, &agent_id)?;
    let row = turn_row(&app, &agent_id, &session_id, &turn_id)?;
    if row.status != "awaiting_input" {
        return Err(ApiError::invalid(format!(
            "turn '{turn_id}' is not waiting for tool results (it is {})",
            row.status
        )));
    }
    let pending: Vec<ToolCall> =
        serde_json::from_value(row.turn["output_message"]["tool_calls"].clone())
            .map_err(|e| ApiError::internal(format!("stored turn: {e}")))?;
    let mut responses = Vec::new();
    for v in &req.tool_responses {
        let call_id = v.get("call_id").and_then(Value::as_str).unwrap_or("");
        let Some(call) = pending.iter().find(|c| c.call_id == call_id) else {
            return Err(ApiError::invalid_param(
                "tool_responses",
                format!(
                    "no pending tool call '{call_id}' in this turn (pending: {})",
                    pending
                        .iter()
                        .map(|c| c.call_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        responses.push(ToolResponse {
            call_id: call.call_id.clone(),
            tool_name: call.tool_name.clone(),
            content: content_text(v.get("content").unwrap_or(&Value::Null))?,
            metadata: v.get("metadata").cloned().unwrap_or(Value::Null),
        });
    }
    if let Some(missing) = pending
        .iter()
        .find(|c| !responses.iter().any(|r| r.call_id == c.call_id))
    {
        return Err(ApiError::invalid_param(
            "tool_responses",
            format!(
                "no result for tool call '{}' ({})",
                missing.call_id, missing.tool_name
            ),
        ));
    }
    let mut cfg = turn_config(&app, &a.config, &[], None, true).await?;
    // max_infer_iters bounds the whole turn, resumes included: a model that keeps calling
    // client tools gets one last inference without tools, so the turn ends.
    let done = row.turn["steps"].as_array().map_or(0, |s| {
        s.iter().filter(|s| s["step_type"] == "inference").count()
    });
    if done >= cfg.max_infer_iters {
        cfg.tool_choice = ToolChoice::None;
        cfg.max_infer_iters = 1;
    } else {
        cfg.max_infer_iters -= done;
    }
    let doc = TurnDoc {
        turn_id,
        session_id: session_id.clone(),
        input_messages: serde_json::from_value(row.turn["input_messages"].clone())
            .unwrap_or_default(),
        steps: serde_json::from_value(row.turn["steps"].clone())
            .map_err(|e| ApiError::internal(format!("stored turn: {e}")))?,
        started_at: row.created_at,
    };
    let r = Run {
        app: app.clone(),
        cfg,
        doc,
        history: history(&app, &session_id)?,
        fresh: false,
        keys: keys(&headers),
        resume: Some((pending, responses)),
    };
    respond(r, req.stream.unwrap_or(false)).await
}

/// `GET .../turn/{turn_id}`.
pub async fn get_turn(
    State(app): State<Arc<AppState>>,
    Path((agent_id, session_id, turn_id)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(turn_row(&app, &agent_id, &session_id, &turn_id)?.turn).into_response())
}

/// `GET .../turn/{turn_id}/step/{step_id}`.
pub async fn get_step(
    State(app): State<Arc<AppState>>,
    Path((agent_id, session_id, turn_id, step_id)): Path<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    let row = turn_row(&app, &agent_id, &session_id, &turn_id)?;
    let step = row.turn["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["step_id"] == step_id.as_str()))
        .cloned()
        .ok_or_else(|| not_found("step", &step_id))?;
    Ok(axum::Json(json!({ "step": step })).into_response())
}

// ---- evaluation (the eval API's agent candidates) ----

/// Creates an agent for an evaluation of `config` (checked as `POST /v1/agents` checks
/// it): llama-stack's eval provider creates one agent per evaluation and one session per
/// row, kept afterwards, so how each answer was reached (steps, tool calls) can be read
/// back through the agents API.
pub(crate) async fn create_for_eval(app: &AppState, config: &Value) -> Result<String, ApiError> {
    let id = create_agent(app, config).await?;
    tracing::info!(agent = %id, "agent created for an evaluation");
    Ok(id)
}

/// Checks an evaluated row's messages as a turn's input (`at` names the row).
pub(crate) fn check_eval_input(messages: &[Value], at: &str) -> Result<(), ApiError> {
    input_messages(messages).map(|_| ()).map_err(|e| ApiError {
        message: format!("{at}: {}", e.message),
        ..e
    })
}

/// Runs one turn of the agent `agent_id` on `messages` in a new session named `name`,
/// to its end, and returns the reply's text. A turn that stops for client tools has no
/// answer: its text so far is returned (the evaluation cannot run client tools).
pub(crate) async fn eval_turn(
    app: &Arc<AppState>,
    agent_id: &str,
    name: &str,
    messages: &[Value],
) -> Result<String, ApiError> {
    let a = agent(app, agent_id)?;
    let input = input_messages(messages)?;
    let cfg = turn_config(app, &a.config, &[], None, true).await?;
    let session_id = new_id();
    app.agents
        .db
        .create_session(agent_id, &session_id, name, &now())
        .map_err(db_error)?;
    let history = input.clone();
    let r = Run::new_turn(
        app,
        cfg,
        session_id,
        input,
        history,
        ferrollama_tools::ProviderKeys::default(),
    );
    let turn = run(r, None).await?;
    Ok(match &turn["output_message"]["content"] {
        Value::String(s) => s.clone(),
        v => content_text(v).unwrap_or_default(),
    })
}
