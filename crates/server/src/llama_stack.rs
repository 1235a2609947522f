//! The Llama Stack inference API, with the shapes `llama-stack-client==0.2.12` sends and
//! parses (see docs/llama-stack-wire.md): `/v1/inference/{chat-completion, completion,
//! batch-chat-completion, batch-completion}`, streamed as start/progress/complete events.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use ferrollama_engine::SamplerConfig;
use ferrollama_engine::scheduler::Event;
use ferrollama_tokenizer::chat::BuiltinTool;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::job::{self, Call, Job, Output, Role, Settings, ToolChoice, ToolSpec, Turn, token_text};
use crate::openai::{empty_output, frame, sse_response};
use crate::state::AppState;

/// InterleavedContent: a string, one item, or a list of items.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Interleaved {
    Text(String),
    Item(Item),
    Items(Vec<Item>),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Item {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

impl Interleaved {
    pub(crate) fn text(&self, field: &str) -> Result<String, ApiError> {
        let items: &[Item] = match self {
            Interleaved::Text(s) => return Ok(s.clone()),
            Interleaved::Item(i) => std::slice::from_ref(i),
            Interleaved::Items(v) => v,
        };
        let mut s = String::new();
        for i in items {
            match (i.kind.as_str(), &i.text) {
                ("text", Some(t)) => s.push_str(t),
                (k, _) => {
                    return Err(ApiError::invalid_param(
                        field,
                        format!(
                            "content items of type '{k}' are not supported: this model takes text only"
                        ),
                    ));
                }
            }
        }
        Ok(s)
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct LsToolCall {
    #[serde(default)]
    pub call_id: Option<String>,
    pub tool_name: String,
    #[serde(default)]
    pub arguments: Value,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct LsMessage {
    pub role: String,
    pub content: Interleaved,
    #[serde(default)]
    pub context: Option<Interleaved>,
    #[serde(default, deserialize_with = "crate::body::opt_objects")]
    pub tool_calls: Option<Vec<LsToolCall>>,
    /// For a tool response: the call it answers.
    #[serde(default)]
    pub call_id: Option<String>,
    /// For a tool response: the tool's name.
    #[serde(default)]
    pub tool_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Strategy {
    #[serde(rename = "type")]
    pub kind: String,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct SamplingParams {
    pub strategy: Option<Strategy>,
    pub max_tokens: Option<u32>,
    pub repetition_penalty: Option<f32>,
    pub stop: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ParamDef {
    pub param_type: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub required: Option<bool>,
    #[serde(default)]
    pub default: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct LsTool {
    pub tool_name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<std::collections::BTreeMap<String, ParamDef>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ToolConfig {
    pub tool_choice: Option<String>,
    pub tool_prompt_format: Option<String>,
    pub system_message_behavior: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct LogprobsSpec {
    pub top_k: Option<u32>,
}

/// `POST /v1/inference/chat-completion`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ChatCompletionRequest {
    pub model_id: String,
    #[serde(deserialize_with = "crate::body::objects")]
    pub messages: Vec<LsMessage>,
    pub sampling_params: Option<SamplingParams>,
    #[serde(default, deserialize_with = "crate::body::opt_objects")]
    pub tools: Option<Vec<LsTool>>,
    pub tool_choice: Option<String>,
    pub tool_prompt_format: Option<String>,
    pub tool_config: Option<ToolConfig>,
    pub response_format: Option<Value>,
    pub logprobs: Option<LogprobsSpec>,
    pub stream: Option<bool>,
    /// ferrollama: shield ids the conversation must pass before generation, besides the
    /// server's `--input-shield`s.
    #[serde(default)]
    pub input_shields: Option<Vec<String>>,
    /// ferrollama: shield ids that moderate the reply while it is generated, besides the
    /// server's `--output-shield`s.
    #[serde(default)]
    pub output_shields: Option<Vec<String>>,
    /// ferrollama: shield ids that judge each tool result in the conversation on its own
    /// before generation (Prompt Guard in injection mode), besides the server's
    /// `--tool-shield`s.
    #[serde(default)]
    pub tool_shields: Option<Vec<String>>,
}

/// `POST /v1/inference/completion`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct CompletionRequest {
    pub model_id: String,
    pub content: Interleaved,
    pub sampling_params: Option<SamplingParams>,
    pub response_format: Option<Value>,
    pub logprobs: Option<LogprobsSpec>,
    pub stream: Option<bool>,
}

/// `POST /v1/inference/batch-chat-completion`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct BatchChatRequest {
    pub model_id: String,
    #[serde(deserialize_with = "crate::body::object_lists")]
    pub messages_batch: Vec<Vec<LsMessage>>,
    pub sampling_params: Option<SamplingParams>,
    #[serde(default, deserialize_with = "crate::body::opt_objects")]
    pub tools: Option<Vec<LsTool>>,
    pub tool_config: Option<ToolConfig>,
    pub response_format: Option<Value>,
    pub logprobs: Option<LogprobsSpec>,
}

/// `POST /v1/inference/batch-completion`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct BatchCompletionRequest {
    pub model_id: String,
    pub content_batch: Vec<Interleaved>,
    pub sampling_params: Option<SamplingParams>,
    pub response_format: Option<Value>,
    pub logprobs: Option<LogprobsSpec>,
}

pub(crate) fn settings(
    sp: &Option<SamplingParams>,
    rf: &Option<Value>,
    lp: &Option<LogprobsSpec>,
) -> Result<Settings, ApiError> {
    // Llama Stack's default strategy is greedy.
    let mut sampler = SamplerConfig::greedy();
    let mut s = Settings::default();
    if let Some(sp) = sp {
        if let Some(st) = &sp.strategy {
            match st.kind.as_str() {
                "greedy" => {}
                "top_p" => {
                    sampler.temperature = st.temperature.unwrap_or(0.6);
                    sampler.top_p = st.top_p.unwrap_or(0.9);
                }
                "top_k" => {
                    sampler.temperature = st.temperature.unwrap_or(1.0);
                    sampler.top_k = st.top_k.ok_or_else(|| {
                        ApiError::invalid_param("sampling_params", "top_k strategy needs top_k")
                    })? as usize;
                }
                k => {
                    return Err(ApiError::invalid_param(
                        "sampling_params",
                        format!("unknown strategy '{k}' (greedy, top_p, top_k)"),
                    ));
                }
            }
        }
        if let Some(r) = sp.repetition_penalty {
            sampler.repetition_penalty = r;
        }
        if sp.max_tokens == Some(0) {
            // Llama Stack uses 0 for "no limit".
            s.max_tokens = None;
        } else {
            s.max_tokens = sp.max_tokens.map(|m| m as usize);
        }
        s.stop = sp.stop.clone().unwrap_or_default();
    }
    if !(0.0..=2.0).contains(&sampler.temperature) {
        return Err(ApiError::invalid_param(
            "sampling_params",
            "temperature must be between 0 and 2",
        ));
    }
    s.sampler = sampler;
    s.logprobs = lp.as_ref().map(|l| l.top_k.unwrap_or(1).min(20) as usize);
    s.response_format = match rf {
        None => None,
        Some(v) => match v.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                let schema = v.get("json_schema").ok_or_else(|| {
                    ApiError::invalid_param("response_format", "json_schema needs `json_schema`")
                })?;
                Some(job::compile_schema(schema, "response_format")?)
            }
            Some("grammar") => {
                return Err(ApiError::invalid_param(
                    "response_format",
                    "BNF grammars are not supported; use json_schema",
                ));
            }
            _ => {
                return Err(ApiError::invalid_param(
                    "response_format",
                    "response_format type must be json_schema",
                ));
            }
        },
    };
    Ok(s)
}

pub(crate) fn turns(messages: &[LsMessage]) -> Result<Vec<Turn>, ApiError> {
    messages
        .iter()
        .map(|m| {
            let role = Role::parse(&m.role)?;
            let mut text = m.content.text("messages")?;
            if let Some(c) = &m.context {
                text.push_str("\n\n");
                text.push_str(&c.text("messages")?);
            }
            let tool_calls = m
                .tool_calls
                .iter()
                .flatten()
                .map(|c| Call {
                    id: c.call_id.clone().unwrap_or_default(),
                    name: c.tool_name.clone(),
                    arguments: job::arguments_value(&c.arguments),
                })
                .collect();
            Ok(Turn {
                role,
                text,
                tool_calls,
                tool_call_id: m.call_id.clone(),
                name: m.tool_name.clone(),
            })
        })
        .collect()
}

/// Llama Stack's flat parameter map as a JSON Schema.
fn tools(defs: &Option<Vec<LsTool>>) -> Vec<ToolSpec> {
    defs.iter()
        .flatten()
        .map(|t| {
            let parameters = match &t.parameters {
                None if BuiltinTool::parse(&t.tool_name).is_some() => Value::Null,
                None => json!({"type": "object", "properties": {}}),
                Some(ps) => {
                    let mut props = Map::new();
                    let mut required = Vec::new();
                    for (name, p) in ps {
                        let ty = match p.param_type.as_str() {
                            "str" | "string" => json!({"type": "string"}),
                            "int" | "integer" => json!({"type": "integer"}),
                            "float" | "number" => json!({"type": "number"}),
                            "bool" | "boolean" => json!({"type": "boolean"}),
                            "list" | "array" => json!({"type": "array"}),
                            "dict" | "object" => json!({"type": "object"}),
                            _ => json!({}),
                        };
                        let mut ty = ty;
                        if let Some(d) = &p.description {
                            ty["description"] = json!(d);
                        }
                        props.insert(name.clone(), ty);
                        if p.required.unwrap_or(true) {
                            required.push(name.clone());
                        }
                    }
                    json!({"type": "object", "properties": props, "required": required})
                }
            };
            ToolSpec {
                name: t.tool_name.clone(),
                description: t.description.clone().unwrap_or_default(),
                parameters,
            }
        })
        .collect()
}

/// Checks the tool prompt format names (JSON definitions are used whichever is asked).
fn check_format(top: &Option<String>, cfg: &Option<ToolConfig>) -> Result<(), ApiError> {
    let given = cfg
        .as_ref()
        .and_then(|c| c.tool_prompt_format.as_ref())
        .into_iter()
        .chain(top.as_ref());
    for f in given {
        if !matches!(f.as_str(), "json" | "function_tag" | "python_list") {
            return Err(ApiError::invalid_param(
                "tool_prompt_format",
                format!("unknown tool_prompt_format '{f}' (json, function_tag, python_list)"),
            ));
        }
    }
    if let Some(b) = cfg
        .as_ref()
        .and_then(|c| c.system_message_behavior.as_deref())
        && !matches!(b, "append" | "replace")
    {
        return Err(ApiError::invalid_param(
            "tool_config",
            format!("unknown system_message_behavior '{b}' (append, replace)"),
        ));
    }
    Ok(())
}

fn choice(tool_choice: &Option<String>, cfg: &Option<ToolConfig>) -> ToolChoice {
    let c = cfg
        .as_ref()
        .and_then(|c| c.tool_choice.clone())
        .or_else(|| tool_choice.clone());
    match c.as_deref() {
        None | Some("auto") => ToolChoice::Auto,
        Some("none") => ToolChoice::None,
        Some("required") => ToolChoice::Required,
        Some(name) => ToolChoice::Named(name.to_string()),
    }
}

fn ls_calls(calls: &[Call]) -> Vec<Value> {
    calls.iter().map(ls_call).collect()
}

fn ls_call(c: &Call) -> Value {
    json!({
        "call_id": c.id,
        "tool_name": c.name,
        "arguments": c.arguments,
        "arguments_json": c.arguments.to_string(),
    })
}

/// Progress events for what a call stream released: text deltas, and per call a
/// `tool_call` delta (`started` once before the first call, then `succeeded` with it).
fn release_events(rel: Vec<job::Release>, started: &mut bool) -> Vec<Value> {
    let mut out = Vec::new();
    for r in rel {
        match r {
            job::Release::Text(t) => {
                out.push(json!({"event_type": "progress", "delta": {"type": "text", "text": t}}))
            }
            job::Release::Call(_, c) => {
                if !*started {
                    *started = true;
                    out.push(json!({"event_type": "progress", "delta":
                        {"type": "tool_call", "tool_call": "", "parse_status": "started"}}));
                }
                out.push(json!({"event_type": "progress", "delta":
                    {"type": "tool_call", "tool_call": ls_call(&c), "parse_status": "succeeded"},
                    "stop_reason": "end_of_message"}));
            }
        }
    }
    out
}

fn ls_logprobs(_app: &AppState, job: &Job, out: &Output) -> Value {
    if job.seq.logprobs.is_none() {
        return Value::Null;
    }
    let model = &job.loaded;
    Value::Array(
        out.logprobs
            .iter()
            .map(|(id, lp)| {
                let mut m = Map::new();
                for &(t, l) in &lp.top {
                    m.insert(token_text(model, t).0, json!(l));
                }
                m.entry(token_text(model, *id).0)
                    .or_insert_with(|| json!(lp.logprob));
                json!({"logprobs_by_token": m})
            })
            .collect(),
    )
}

fn metrics(out: &Output) -> Value {
    json!([
        {"metric": "prompt_tokens", "value": out.prompt_tokens, "unit": null},
        {"metric": "completion_tokens", "value": out.completion_tokens, "unit": null},
        {"metric": "total_tokens", "value": out.prompt_tokens + out.completion_tokens, "unit": null},
    ])
}

fn chat_response(app: &AppState, job: &Job, out: &Output) -> Value {
    json!({
        "completion_message": {
            "role": "assistant",
            "content": if out.calls.is_empty() { out.text.as_str() } else { out.content.as_str() },
            "stop_reason": out.stop_reason(),
            "tool_calls": ls_calls(&out.calls),
        },
        "logprobs": ls_logprobs(app, job, out),
        "metrics": metrics(out),
    })
}

fn chat_job(
    app: &AppState,
    model_id: &str,
    messages: &[LsMessage],
    settings: Settings,
    tool_defs: &Option<Vec<LsTool>>,
    tool_choice: ToolChoice,
) -> Result<Job, ApiError> {
    let turns = turns(messages)?;
    let tools = tools(tool_defs);
    if tools.is_empty() && matches!(tool_choice, ToolChoice::Required | ToolChoice::Named(_)) {
        return Err(ApiError::invalid_param(
            "tool_choice",
            "tool_choice requires `tools`",
        ));
    }
    job::prepare(app, model_id, &turns, tools, tool_choice, settings)
}

pub async fn chat_completion(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let s = settings(&req.sampling_params, &req.response_format, &req.logprobs)?;
    check_format(&req.tool_prompt_format, &req.tool_config)?;
    let c = choice(&req.tool_choice, &req.tool_config);
    let mut job = chat_job(&app, &req.model_id, &req.messages, s, &req.tools, c)?;
    job.guard = crate::shields::guard::for_chat(
        &app,
        &turns(&req.messages)?,
        crate::shields::guard::Requested {
            input: req.input_shields.as_deref().unwrap_or_default(),
            output: req.output_shields.as_deref().unwrap_or_default(),
            tool: req.tool_shields.as_deref().unwrap_or_default(),
        },
    )?;
    let mut rxs = job::submit_guarded(&app, &job).await?;
    let rx = rxs.remove(0);
    if !req.stream.unwrap_or(false) {
        let out = job::collect(&app, &job, rx).await?;
        return Ok(axum::Json(chat_response(&app, &job, &out)).into_response());
    }
    let (tx, body) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let mut rx = rx;
        let ev = |event: Value| frame(&json!({"event": event}));
        if tx
            .send(ev(
                json!({"event_type": "start", "delta": {"type": "text", "text": ""}}),
            ))
            .await
            .is_err()
        {
            return;
        }
        let mut out = empty_output(&job);
        let tools = !job.tools.is_empty();
        let forced = job.tool_choice != ToolChoice::Auto;
        let mut sent = 0;
        // Hermes/JSON-format calls are sent as each completes; Llama 3.1's at the end.
        let mut stream = job::CallStream::for_job(&job);
        let mut started = false;
        loop {
            match rx.recv().await {
                Some(Event::Token { id, text, logprob }) => {
                    out.ids.push(id);
                    out.text.push_str(&text);
                    if let Some(l) = logprob {
                        out.logprobs.push((id, l));
                    }
                    if let Some(cs) = &mut stream {
                        let rel = cs.push(&text);
                        for e in release_events(rel, &mut started) {
                            if tx.send(ev(e)).await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                    let t = out.text.trim_start();
                    if tools && (forced || t.is_empty() || t.starts_with('{') || t.starts_with('<'))
                    {
                        continue;
                    }
                    let fresh = out.text[sent..].to_string();
                    sent = out.text.len();
                    if fresh.is_empty() {
                        continue;
                    }
                    let e = ev(
                        json!({"event_type": "progress", "delta": {"type": "text", "text": fresh}}),
                    );
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                Some(Event::Done(d)) => {
                    let mut frames = Vec::new();
                    let streamed = stream.is_some();
                    if let Some(mut cs) = stream.take() {
                        let rest = d.text.clone();
                        job::apply_done(&mut out, d);
                        let mut rel = cs.push(&rest);
                        rel.extend(cs.finish());
                        frames.extend(release_events(rel, &mut started).into_iter().map(ev));
                        cs.into_output(&mut out);
                    } else {
                        job::finish_output(&app, &job, &mut out, d);
                    }
                    if streamed {
                        // All sent by the call stream.
                    } else if !out.calls.is_empty() {
                        frames.push(ev(json!({"event_type": "progress", "delta":
                            {"type": "tool_call", "tool_call": "", "parse_status": "started"}})));
                        for c in ls_calls(&out.calls) {
                            frames.push(ev(json!({"event_type": "progress", "delta":
                                {"type": "tool_call", "tool_call": c, "parse_status": "succeeded"},
                                "stop_reason": out.stop_reason()})));
                        }
                    } else if sent < out.text.len() {
                        let rest = out.text[sent..].to_string();
                        frames.push(ev(json!({"event_type": "progress", "delta": {"type": "text", "text": rest}})));
                    }
                    frames.push(frame(&json!({
                        "event": {"event_type": "complete", "delta": {"type": "text", "text": ""},
                                  "stop_reason": out.stop_reason(),
                                  "logprobs": ls_logprobs(&app, &job, &out)},
                        "metrics": metrics(&out),
                    })));
                    for f in frames {
                        if tx.send(f).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                Some(Event::Error(e)) => {
                    let _ = tx.send(frame(&job::engine_error(e).body())).await;
                    return;
                }
                None => return,
            }
        }
    });
    Ok(sse_response(body))
}

pub async fn completion(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> Result<Response, ApiError> {
    let s = settings(&req.sampling_params, &req.response_format, &req.logprobs)?;
    let text = req.content.text("content")?;
    let job = job::prepare_completion(&app, &req.model_id, &text, s)?;
    let mut rxs = job::submit_all(&app, &job)?;
    let rx = rxs.remove(0);
    if !req.stream.unwrap_or(false) {
        let out = job::collect(&app, &job, rx).await?;
        return Ok(axum::Json(completion_response(&app, &job, &out)).into_response());
    }
    let (tx, body) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let mut rx = rx;
        loop {
            let f = match rx.recv().await {
                Some(Event::Token { text, .. }) if text.is_empty() => continue,
                Some(Event::Token { text, .. }) => {
                    json!({"delta": text, "content": text, "stop_reason": null})
                }
                Some(Event::Done(d)) => {
                    let mut o = empty_output(&job);
                    o.finish = d.finish;
                    let f =
                        json!({"delta": d.text, "content": d.text, "stop_reason": o.stop_reason()});
                    let _ = tx.send(frame(&f)).await;
                    return;
                }
                Some(Event::Error(e)) => job::engine_error(e).body(),
                None => return,
            };
            if tx.send(frame(&f)).await.is_err() {
                return;
            }
        }
    });
    Ok(sse_response(body))
}

fn completion_response(app: &AppState, job: &Job, out: &Output) -> Value {
    json!({
        "content": out.text,
        "stop_reason": out.stop_reason(),
        "logprobs": ls_logprobs(app, job, out),
        "metrics": metrics(out),
    })
}

/// All sequences of a batch are submitted at once, so the engine batches them together.
pub async fn batch_chat_completion(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<BatchChatRequest>,
) -> Result<Response, ApiError> {
    check_batch(&app, req.messages_batch.len())?;
    check_format(&None, &req.tool_config)?;
    let c = choice(&None, &req.tool_config);
    let mut jobs = Vec::new();
    for msgs in &req.messages_batch {
        let s = settings(&req.sampling_params, &req.response_format, &req.logprobs)?;
        jobs.push(chat_job(
            &app,
            &req.model_id,
            msgs,
            s,
            &req.tools,
            c.clone(),
        )?);
    }
    let mut rxs = Vec::new();
    for j in &jobs {
        rxs.push(job::submit(&app, j.seq.clone())?);
    }
    let mut batch = Vec::new();
    for (j, rx) in jobs.iter().zip(rxs) {
        let out = job::collect(&app, j, rx).await?;
        batch.push(chat_response(&app, j, &out));
    }
    Ok(axum::Json(json!({"batch": batch})).into_response())
}

pub async fn batch_completion(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<BatchCompletionRequest>,
) -> Result<Response, ApiError> {
    check_batch(&app, req.content_batch.len())?;
    let mut jobs = Vec::new();
    for c in &req.content_batch {
        let s = settings(&req.sampling_params, &req.response_format, &req.logprobs)?;
        jobs.push(job::prepare_completion(
            &app,
            &req.model_id,
            &c.text("content_batch")?,
            s,
        )?);
    }
    let mut rxs = Vec::new();
    for j in &jobs {
        rxs.push(job::submit(&app, j.seq.clone())?);
    }
    let mut batch = Vec::new();
    for (j, rx) in jobs.iter().zip(rxs) {
        let out = job::collect(&app, j, rx).await?;
        batch.push(completion_response(&app, j, &out));
    }
    Ok(axum::Json(json!({"batch": batch})).into_response())
}

fn check_batch(app: &AppState, n: usize) -> Result<(), ApiError> {
    if n == 0 || n > app.limits.max_batch {
        return Err(ApiError::invalid(format!(
            "a batch holds 1 to {} requests",
            app.limits.max_batch
        )));
    }
    Ok(())
}
