//! The OpenAI API: `/v1/chat/completions`, `/v1/completions`, `/v1/models` (also served
//! under `/v1/openai/v1/` for the Llama Stack client, without the `[DONE]` terminator its
//! stream parser cannot read).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ferrollama_engine::SamplerConfig;
use ferrollama_engine::constrain::Schema;
use ferrollama_engine::scheduler::{Event, TokenLogprob};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::job::{
    self, Call, Job, Output, Role, Settings, ToolChoice, ToolSpec, Turn, token_text, unix_now,
};
use crate::state::AppState;

/// `stop`: one string or several.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StopSpec {
    One(String),
    Many(Vec<String>),
}

/// Message content: a string, or a list of parts.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ContentSpec {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct FunctionCall {
    pub name: String,
    /// A JSON string (OpenAI) or an object.
    #[serde(default)]
    pub arguments: Value,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ToolCallIn {
    pub id: Option<String>,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ChatMessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Option<ContentSpec>,
    #[serde(default, deserialize_with = "crate::body::opt_objects")]
    pub tool_calls: Option<Vec<ToolCallIn>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ToolDef {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Sampling fields shared by chat and completions.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct Sampling {
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Extension (llama.cpp, vLLM).
    pub top_k: Option<u32>,
    /// Extension.
    pub min_p: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    /// Extension.
    pub repetition_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<StopSpec>,
    pub n: Option<u32>,
    /// Extension: keep generating past end-of-turn tokens (benchmarks).
    pub ignore_eos: Option<bool>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
}

/// `POST /v1/chat/completions`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ChatRequest {
    pub model: String,
    #[serde(deserialize_with = "crate::body::objects")]
    pub messages: Vec<ChatMessageIn>,
    #[serde(default, deserialize_with = "crate::body::opt_objects")]
    pub tools: Option<Vec<ToolDef>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `prompt`: a string or a list of strings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PromptSpec {
    One(String),
    Many(Vec<String>),
}

/// `POST /v1/completions`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptSpec,
    #[serde(default)]
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub echo: Option<bool>,
    /// Not supported (answered 400 when given).
    #[serde(default)]
    pub suffix: Option<Value>,
    /// Not supported (answered 400 when given).
    #[serde(default)]
    pub best_of: Option<Value>,
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

impl Sampling {
    fn settings(&self) -> Result<Settings, ApiError> {
        let d = SamplerConfig::default();
        let seed = self.seed.map_or_else(rand_seed, |s| s as u64);
        let sampler = SamplerConfig {
            // OpenAI's default temperature is 1.
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0) as usize,
            top_p: self.top_p.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            penalty_last_n: d.penalty_last_n,
            seed,
        };
        if !(0.0..=2.0).contains(&sampler.temperature) {
            return Err(ApiError::invalid_param(
                "temperature",
                "temperature must be between 0 and 2",
            ));
        }
        for (name, v) in [
            ("frequency_penalty", sampler.frequency_penalty),
            ("presence_penalty", sampler.presence_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(ApiError::invalid_param(
                    name,
                    format!("{name} must be between -2 and 2"),
                ));
            }
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopSpec::One(s)) => vec![s.clone()],
            Some(StopSpec::Many(v)) => v.clone(),
        };
        if stop.len() > 4 {
            return Err(ApiError::invalid_param("stop", "at most 4 stop sequences"));
        }
        let max = self.max_completion_tokens.or(self.max_tokens);
        if max == Some(0) {
            return Err(ApiError::invalid_param(
                "max_tokens",
                "max_tokens must be at least 1",
            ));
        }
        Ok(Settings {
            max_tokens: max.map(|m| m as usize),
            sampler,
            stop,
            ignore_eos: self.ignore_eos.unwrap_or(false),
            logprobs: None,
            n: self.n.unwrap_or(1) as usize,
            response_format: None,
        })
    }
}

/// A seed for requests that give none.
fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(unix_now());
    h.finish()
}

/// Text of a content field; parts other than text get a 400.
pub fn content_text(c: &Option<ContentSpec>, field: &str) -> Result<String, ApiError> {
    match c {
        None => Ok(String::new()),
        Some(ContentSpec::Text(s)) => Ok(s.clone()),
        Some(ContentSpec::Parts(parts)) => {
            let mut s = String::new();
            for p in parts {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => s.push_str(t),
                    ("text", None) => {
                        return Err(ApiError::invalid_param(field, "a text part has no `text`"));
                    }
                    (k, _) => {
                        return Err(ApiError::invalid_param(
                            field,
                            format!(
                                "content parts of type '{k}' are not supported: this model takes text only"
                            ),
                        ));
                    }
                }
            }
            Ok(s)
        }
    }
}

/// `response_format` of OpenAI: `text`, `json_object`, `json_schema` (`{json_schema: {schema}}`).
fn response_format(v: &Option<Value>) -> Result<Option<Arc<Schema>>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let kind = v.get("type").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid_param("response_format", "response_format needs a `type`")
    })?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(Arc::new(Schema::any_object()))),
        "json_schema" => {
            let schema = v
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "response_format",
                        "json_schema needs `json_schema.schema`",
                    )
                })?;
            job::compile_schema(schema, "response_format").map(Some)
        }
        k => Err(ApiError::invalid_param(
            "response_format",
            format!("unknown response_format type '{k}' (text, json_object, json_schema)"),
        )),
    }
}

fn tool_choice(v: &Option<Value>) -> Result<ToolChoice, ApiError> {
    match v {
        None => Ok(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(ApiError::invalid_param(
                "tool_choice",
                format!("unknown tool_choice '{other}' (auto, none, required, or a function)"),
            )),
        },
        Some(o) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Named(n.to_string()))
            .ok_or_else(|| {
                ApiError::invalid_param(
                    "tool_choice",
                    "tool_choice must be a string or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                )
            }),
    }
}

fn turns(messages: &[ChatMessageIn]) -> Result<Vec<Turn>, ApiError> {
    messages
        .iter()
        .map(|m| {
            let role = Role::parse(&m.role)?;
            let text = content_text(&m.content, "messages")?;
            if role == Role::User && m.content.is_none() {
                return Err(ApiError::invalid_param(
                    "messages",
                    "a user message needs `content`",
                ));
            }
            let tool_calls = m
                .tool_calls
                .iter()
                .flatten()
                .map(|c| Call {
                    id: c.id.clone().unwrap_or_default(),
                    name: c.function.name.clone(),
                    arguments: job::arguments_value(&c.function.arguments),
                })
                .collect();
            Ok(Turn {
                role,
                text,
                tool_calls,
            })
        })
        .collect()
}

fn tools(defs: &Option<Vec<ToolDef>>) -> Result<Vec<ToolSpec>, ApiError> {
    defs.iter()
        .flatten()
        .map(|t| {
            if t.kind != "function" {
                return Err(ApiError::invalid_param(
                    "tools",
                    format!("tool type '{}' is not supported (function)", t.kind),
                ));
            }
            if let Some(p) = &t.function.parameters
                && !p.is_object()
            {
                return Err(ApiError::invalid_param(
                    "tools",
                    "function.parameters must be a JSON Schema object",
                ));
            }
            Ok(ToolSpec {
                name: t.function.name.clone(),
                description: t.function.description.clone().unwrap_or_default(),
                parameters: t.function.parameters.clone().unwrap_or(Value::Null),
            })
        })
        .collect()
}

/// Which stream terminator to send.
#[derive(Debug, Clone, Copy)]
pub struct Flavor {
    pub done_marker: bool,
}

pub async fn chat(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<ChatRequest>,
) -> Result<Response, ApiError> {
    chat_with(app, req, Flavor { done_marker: true }).await
}

pub async fn chat_ls(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<ChatRequest>,
) -> Result<Response, ApiError> {
    chat_with(app, req, Flavor { done_marker: false }).await
}

async fn chat_with(
    app: Arc<AppState>,
    req: ChatRequest,
    flavor: Flavor,
) -> Result<Response, ApiError> {
    let mut settings = req.sampling.settings()?;
    settings.response_format = response_format(&req.response_format)?;
    if req.logprobs == Some(true) {
        let top = req.top_logprobs.unwrap_or(0);
        if top > 20 {
            return Err(ApiError::invalid_param(
                "top_logprobs",
                "top_logprobs must be at most 20",
            ));
        }
        settings.logprobs = Some(top as usize);
    }
    let turns = turns(&req.messages)?;
    let tools = tools(&req.tools)?;
    let choice = tool_choice(&req.tool_choice)?;
    if tools.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Named(_)) {
        return Err(ApiError::invalid_param(
            "tool_choice",
            "tool_choice requires `tools`",
        ));
    }
    let job = job::prepare(&app, &req.model, &turns, tools, choice, settings)?;
    let rxs = job::submit_all(&app, &job)?;
    let id = format!("chatcmpl-{:x}", rand_seed());
    let include_usage = req
        .sampling
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    if req.sampling.stream.unwrap_or(false) {
        return Ok(stream_chat(app, job, rxs, id, include_usage, flavor));
    }
    let mut choices = Vec::new();
    let (mut pt, mut ct, mut cached) = (0, 0, 0);
    for (i, rx) in rxs.into_iter().enumerate() {
        let out = job::collect(&app, &job, rx).await?;
        pt = out.prompt_tokens;
        cached = out.cached_tokens.max(cached);
        ct += out.completion_tokens;
        choices.push(chat_choice(&app, &job, i, &out));
    }
    Ok(axum::Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": job.model_id,
        "choices": choices,
        "usage": usage(pt, ct, cached),
        "system_fingerprint": null,
    }))
    .into_response())
}

fn usage(pt: usize, ct: usize, cached: usize) -> Value {
    json!({
        "prompt_tokens": pt,
        "completion_tokens": ct,
        "total_tokens": pt + ct,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

fn tool_calls_json(calls: &[Call]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments.to_string()},
                })
            })
            .collect(),
    )
}

fn chat_choice(app: &AppState, job: &Job, i: usize, out: &Output) -> Value {
    let mut message = json!({"role": "assistant", "content": out.text, "refusal": null});
    if !out.calls.is_empty() {
        message["content"] = Value::Null;
        message["tool_calls"] = tool_calls_json(&out.calls);
    }
    let logprobs = if job.seq.logprobs.is_some() {
        json!({"content": logprob_list(app, job, &out.logprobs), "refusal": null})
    } else {
        Value::Null
    };
    json!({
        "index": i,
        "message": message,
        "finish_reason": out.openai_finish(),
        "logprobs": logprobs,
    })
}

fn logprob_list(app: &AppState, job: &Job, lps: &[(u32, TokenLogprob)]) -> Vec<Value> {
    let model = &app.engine.models()[job.model];
    let entry = |id: u32, lp: f32| {
        let (t, b) = token_text(model, id);
        json!({"token": t, "logprob": lp, "bytes": b})
    };
    lps.iter()
        .map(|(id, lp)| {
            let mut e = entry(*id, lp.logprob);
            e["top_logprobs"] = Value::Array(lp.top.iter().map(|&(t, l)| entry(t, l)).collect());
            e
        })
        .collect()
}

/// SSE frames as a response body; the pump task ends (and the engine cancels the sequence)
/// when the client goes away.
pub fn sse_response(rx: mpsc::Receiver<String>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|s| (Ok::<Bytes, Infallible>(Bytes::from(s)), rx))
    });
    let mut r = Body::from_stream(stream).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub fn frame(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// Merges the receivers of `n` choices into one, tagged with the choice index.
pub fn merge(
    rxs: Vec<tokio::sync::mpsc::UnboundedReceiver<Event>>,
) -> mpsc::Receiver<(usize, Event)> {
    let (tx, rx) = mpsc::channel(64);
    for (i, mut r) in rxs.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(e) = r.recv().await {
                let last = matches!(e, Event::Done(_) | Event::Error(_));
                if tx.send((i, e)).await.is_err() || last {
                    break;
                }
            }
        });
    }
    rx
}

fn stream_chat(
    app: Arc<AppState>,
    job: Job,
    rxs: Vec<tokio::sync::mpsc::UnboundedReceiver<Event>>,
    id: String,
    include_usage: bool,
    flavor: Flavor,
) -> Response {
    let (tx, out) = mpsc::channel::<String>(64);
    let n = rxs.len();
    let mut events = merge(rxs);
    tokio::spawn(async move {
        let created = unix_now();
        let chunk = |choices: Value| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created,
                   "model": job.model_id, "choices": choices})
        };
        for i in 0..n {
            let c = chunk(
                json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
            );
            if tx.send(frame(&c)).await.is_err() {
                return;
            }
        }
        // With tools, output is held until it is known not to be a call.
        let tools = !job.tools.is_empty();
        let mut outs: Vec<Output> = (0..n).map(|_| empty_output(&job)).collect();
        let mut sent = vec![0usize; n];
        let mut open = n;
        let (mut pt, mut ct, mut cached) = (job.prompt.len(), 0, 0);
        while open > 0 {
            let Some((i, ev)) = events.recv().await else {
                break;
            };
            match ev {
                Event::Token {
                    id: tid,
                    text,
                    logprob,
                } => {
                    let o = &mut outs[i];
                    o.ids.push(tid);
                    o.text.push_str(&text);
                    let lp = logprob.map(|l| (tid, l));
                    if tools && maybe_call(&o.text, job.tool_choice != ToolChoice::Auto) {
                        if let Some(l) = lp {
                            o.logprobs.push(l);
                        }
                        continue;
                    }
                    let fresh = o.text[sent[i]..].to_string();
                    sent[i] = o.text.len();
                    let mut choice =
                        json!({"index": i, "delta": {"content": fresh}, "finish_reason": null});
                    if let Some(l) = lp {
                        choice["logprobs"] =
                            json!({"content": logprob_list(&app, &job, std::slice::from_ref(&l))});
                    }
                    if (fresh.is_empty() && choice.get("logprobs").is_none())
                        || tx.send(frame(&chunk(json!([choice])))).await.is_ok()
                    {
                        continue;
                    }
                    return;
                }
                Event::Done(d) => {
                    open -= 1;
                    let o = &mut outs[i];
                    job::finish_output(&app, &job, o, d);
                    pt = o.prompt_tokens;
                    cached = cached.max(o.cached_tokens);
                    ct += o.completion_tokens;
                    let mut frames = Vec::new();
                    if !o.calls.is_empty() {
                        for (k, c) in o.calls.iter().enumerate() {
                            frames.push(chunk(json!([{"index": i, "delta": {"tool_calls": [
                                {"index": k, "id": c.id, "type": "function",
                                 "function": {"name": c.name, "arguments": ""}}]}, "finish_reason": null}])));
                            frames.push(chunk(json!([{"index": i, "delta": {"tool_calls": [
                                {"index": k, "function": {"arguments": c.arguments.to_string()}}]},
                                "finish_reason": null}])));
                        }
                    } else if sent[i] < o.text.len() {
                        let rest = o.text[sent[i]..].to_string();
                        frames.push(chunk(json!([{"index": i, "delta": {"content": rest}, "finish_reason": null}])));
                    }
                    frames.push(chunk(
                        json!([{"index": i, "delta": {}, "finish_reason": o.openai_finish()}]),
                    ));
                    for f in frames {
                        if tx.send(frame(&f)).await.is_err() {
                            return;
                        }
                    }
                }
                Event::Error(e) => {
                    let err = job::engine_error(e);
                    let _ = tx.send(frame(&err.body())).await;
                    return;
                }
            }
        }
        if include_usage {
            let mut c = chunk(json!([]));
            c["usage"] = usage(pt, ct, cached);
            if tx.send(frame(&c)).await.is_err() {
                return;
            }
        }
        if flavor.done_marker {
            let _ = tx.send("data: [DONE]\n\n".to_string()).await;
        }
    });
    sse_response(out)
}

/// Whether streamed text may be (the start of) a tool call and must be held back.
fn maybe_call(text: &str, forced: bool) -> bool {
    if forced {
        return true;
    }
    let t = text.trim_start();
    t.is_empty()
        || t.starts_with('{')
        || t.starts_with('[')
        || t.starts_with("<function")
        || t.starts_with("<|python_tag|>")
        || "<function".starts_with(t)
}

pub async fn completions(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> Result<Response, ApiError> {
    completions_with(app, req, Flavor { done_marker: true }).await
}

pub async fn completions_ls(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> Result<Response, ApiError> {
    completions_with(app, req, Flavor { done_marker: false }).await
}

async fn completions_with(
    app: Arc<AppState>,
    req: CompletionRequest,
    flavor: Flavor,
) -> Result<Response, ApiError> {
    for (name, v) in [("suffix", &req.suffix), ("best_of", &req.best_of)] {
        if v.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid_param(
                name,
                format!("`{name}` is not supported"),
            ));
        }
    }
    let mut settings = req.sampling.settings()?;
    settings.response_format = response_format(&req.response_format)?;
    if let Some(lp) = req.logprobs {
        if lp > 5 {
            return Err(ApiError::invalid_param(
                "logprobs",
                "logprobs must be at most 5",
            ));
        }
        settings.logprobs = Some(lp as usize);
    }
    let prompt = match &req.prompt {
        PromptSpec::One(s) => s.clone(),
        PromptSpec::Many(v) if v.len() == 1 => v[0].clone(),
        PromptSpec::Many(_) => {
            return Err(ApiError::invalid_param(
                "prompt",
                "send one prompt per request (use /v1/inference/batch-completion for batches)",
            ));
        }
    };
    let job = job::prepare_completion(&app, &req.model, &prompt, settings)?;
    let rxs = job::submit_all(&app, &job)?;
    let id = format!("cmpl-{:x}", rand_seed());
    let echo = if req.echo.unwrap_or(false) {
        prompt
    } else {
        String::new()
    };
    if req.sampling.stream.unwrap_or(false) {
        let (tx, out) = mpsc::channel::<String>(64);
        let include_usage = req
            .sampling
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let n = rxs.len();
        let mut events = merge(rxs);
        tokio::spawn(async move {
            let created = unix_now();
            let chunk = |i: usize, text: &str, finish: Value| {
                json!({"id": id, "object": "text_completion", "created": created, "model": job.model_id,
                       "choices": [{"index": i, "text": text, "finish_reason": finish, "logprobs": null}]})
            };
            if !echo.is_empty() {
                for i in 0..n {
                    if tx.send(frame(&chunk(i, &echo, Value::Null))).await.is_err() {
                        return;
                    }
                }
            }
            let (mut open, mut ct, mut pt) = (n, 0, job.prompt.len());
            while open > 0 {
                let Some((i, ev)) = events.recv().await else {
                    break;
                };
                let f = match ev {
                    Event::Token { text, .. } if text.is_empty() => continue,
                    Event::Token { text, .. } => chunk(i, &text, Value::Null),
                    Event::Done(d) => {
                        open -= 1;
                        ct += d.completion_tokens;
                        pt = d.prompt_tokens;
                        let mut o = empty_output(&job);
                        o.finish = d.finish;
                        chunk(i, &d.text, json!(o.openai_finish()))
                    }
                    Event::Error(e) => job::engine_error(e).body(),
                };
                if tx.send(frame(&f)).await.is_err() {
                    return;
                }
            }
            if include_usage {
                let c = json!({"id": id, "object": "text_completion", "created": created,
                    "model": job.model_id, "choices": [], "usage": usage(pt, ct, 0)});
                if tx.send(frame(&c)).await.is_err() {
                    return;
                }
            }
            if flavor.done_marker {
                let _ = tx.send("data: [DONE]\n\n".to_string()).await;
            }
        });
        return Ok(sse_response(out));
    }
    let model = &app.engine.models()[job.model];
    let mut choices = Vec::new();
    let (mut pt, mut ct, mut cached) = (0, 0, 0);
    for (i, rx) in rxs.into_iter().enumerate() {
        let out = job::collect(&app, &job, rx).await?;
        pt = out.prompt_tokens;
        ct += out.completion_tokens;
        cached = cached.max(out.cached_tokens);
        let logprobs = if job.seq.logprobs.is_some() {
            let mut offset = echo.len();
            let (mut tokens, mut lps, mut tops, mut offs) = (vec![], vec![], vec![], vec![]);
            for (id, lp) in &out.logprobs {
                let (t, _) = token_text(model, *id);
                offs.push(offset);
                offset += t.len();
                tokens.push(t);
                lps.push(lp.logprob);
                let top: serde_json::Map<String, Value> = lp
                    .top
                    .iter()
                    .map(|&(t, l)| (token_text(model, t).0, json!(l)))
                    .collect();
                tops.push(Value::Object(top));
            }
            json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs})
        } else {
            Value::Null
        };
        choices.push(json!({
            "index": i,
            "text": format!("{echo}{}", out.text),
            "finish_reason": out.openai_finish(),
            "logprobs": logprobs,
        }));
    }
    Ok(axum::Json(json!({
        "id": id,
        "object": "text_completion",
        "created": unix_now(),
        "model": job.model_id,
        "choices": choices,
        "usage": usage(pt, ct, cached),
    }))
    .into_response())
}

pub fn empty_output(job: &Job) -> Output {
    Output {
        text: String::new(),
        ids: Vec::new(),
        logprobs: Vec::new(),
        finish: ferrollama_engine::scheduler::Finish::Timeout,
        prompt_tokens: job.prompt.len(),
        cached_tokens: 0,
        completion_tokens: 0,
        calls: Vec::new(),
    }
}

/// One model in a body both clients parse (OpenAI's and Llama Stack's fields together).
pub fn model_json(app: &AppState, id: &str) -> Value {
    json!({
        "id": id,
        "object": "model",
        "created": app.created,
        "owned_by": "ferrollama",
        "identifier": id,
        "provider_resource_id": id,
        "provider_id": "ferrollama",
        "type": "model",
        "metadata": {},
        "model_type": "llm",
    })
}

pub async fn models(State(app): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = app.model_ids.iter().map(|m| model_json(&app, m)).collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

pub async fn model(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::invalid("the model id in the path is not valid UTF-8"))?;
    job::resolve_model(&app, &id)?;
    Ok(axum::Json(model_json(&app, &id)).into_response())
}
