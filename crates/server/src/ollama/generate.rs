//! `POST /api/chat` and `POST /api/generate`: one engine sequence each, answered as one
//! JSON object (`"stream": false`) or as NDJSON lines (the default), the last with
//! `done: true`, `done_reason` and Ollama's counts and durations (nanoseconds).
//!
//! Not supported: `images` (the served models take text only), `suffix` (fill-in-the-middle)
//! and a custom `template` on `/api/generate` (prompts use the model's chat template, or none
//! with `raw`); each is refused with a 400. `context` (Ollama's token-state continuation) is
//! accepted and ignored, and not returned: send the conversation to `/api/chat` instead.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ferrollama_engine::FinishReason;
use ferrollama_engine::scheduler::{Event, Finish};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::options::{format_schema, keep_alive};
use super::{OllamaBody, OllamaError, Options, names, now_rfc3339};
use crate::error::ApiError;
use crate::job::{self, Call, Job, Output, Role, ToolChoice, Turn};
use crate::openai::{FunctionCall, ToolDef};
use crate::state::AppState;

/// A tool call in a message: `{"function": {"name", "arguments": {...}}}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ToolCallIn {
    pub function: FunctionCall,
}

/// One message of `/api/chat`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct MessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Option<String>,
    /// Not supported (text-only models); refused when not empty.
    #[serde(default)]
    pub images: Option<Vec<Value>>,
    #[serde(default, deserialize_with = "crate::body::opt_objects")]
    pub tool_calls: Option<Vec<ToolCallIn>>,
    /// The tool a `tool` message answers (accepted; the prompt carries the content).
    #[serde(default)]
    pub tool_name: Option<String>,
}

/// `POST /api/chat`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ChatRequest {
    pub model: String,
    #[serde(default, deserialize_with = "crate::body::objects")]
    pub messages: Vec<MessageIn>,
    #[serde(default, deserialize_with = "crate::body::opt_objects")]
    pub tools: Option<Vec<ToolDef>>,
    /// `"json"` or a JSON schema.
    #[serde(default)]
    pub format: Option<Value>,
    #[serde(default)]
    pub options: Option<Options>,
    /// Default true.
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub keep_alive: Option<Value>,
    /// Accepted, ignored (no thinking models).
    #[serde(default)]
    pub think: Option<Value>,
}

/// `POST /api/generate`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct GenerateRequest {
    pub model: String,
    #[serde(default)]
    pub prompt: Option<String>,
    /// Not supported; refused when not empty.
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    /// Not supported; refused when not empty.
    #[serde(default)]
    pub template: Option<String>,
    /// Accepted, ignored.
    #[serde(default)]
    pub context: Option<Vec<i64>>,
    #[serde(default)]
    pub raw: Option<bool>,
    #[serde(default)]
    pub format: Option<Value>,
    #[serde(default)]
    pub options: Option<Options>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub keep_alive: Option<Value>,
    #[serde(default)]
    pub images: Option<Vec<Value>>,
    #[serde(default)]
    pub think: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Generate,
}

/// What a request shares once parsed: the name it used, its model, streaming, and timing.
struct Run {
    api: Api,
    name: String,
    stream: bool,
    start: Instant,
}

fn no_images(images: &Option<Vec<Value>>) -> Result<(), OllamaError> {
    if images.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(OllamaError::invalid(
            "images are not supported: the served models take text only",
        ));
    }
    Ok(())
}

/// Records `keep_alive` for `/api/ps`.
fn note_keep_alive(app: &AppState, model: usize, v: &Option<Value>) -> Result<(), OllamaError> {
    let Some(v) = v else { return Ok(()) };
    let at = keep_alive(v)?.map(|d| crate::job::unix_now().saturating_add(d.as_secs()));
    app.ollama.set_expiry(model, at);
    Ok(())
}

pub async fn chat(
    State(app): State<Arc<AppState>>,
    OllamaBody(req): OllamaBody<ChatRequest>,
) -> Result<Response, OllamaError> {
    let start = Instant::now();
    let (mi, id) = names::served(&app, &req.model)?;
    note_keep_alive(&app, mi, &req.keep_alive)?;
    let run = Run {
        api: Api::Chat,
        name: req.model.clone(),
        stream: req.stream.unwrap_or(true),
        start,
    };
    if req.messages.is_empty() {
        return Ok(loaded(&run));
    }
    let mut turns = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        no_images(&m.images)?;
        let role = Role::parse(&m.role).map_err(OllamaError)?;
        turns.push(Turn {
            role,
            text: m.content.clone().unwrap_or_default(),
            name: m.tool_name.clone(),
            tool_call_id: None,
            tool_calls: m
                .tool_calls
                .iter()
                .flatten()
                .map(|c| Call {
                    id: String::new(),
                    name: c.function.name.clone(),
                    arguments: job::arguments_value(&c.function.arguments),
                })
                .collect(),
        });
    }
    let tools = crate::openai::tool_specs(&req.tools)?;
    let options = req.options.clone().unwrap_or_default();
    let mut settings = options.settings(&app)?;
    settings.response_format = format_schema(&req.format)?;
    let mut job = job::prepare(&app, &id, &turns, tools, ToolChoice::Auto, settings)?;
    job.guard = crate::shields::guard::for_chat(&app, &turns, Default::default())?;
    bound(&mut job, &options)?;
    respond(app, job, run).await
}

pub async fn generate(
    State(app): State<Arc<AppState>>,
    OllamaBody(req): OllamaBody<GenerateRequest>,
) -> Result<Response, OllamaError> {
    let start = Instant::now();
    let (mi, id) = names::served(&app, &req.model)?;
    note_keep_alive(&app, mi, &req.keep_alive)?;
    no_images(&req.images)?;
    for (name, v) in [("suffix", &req.suffix), ("template", &req.template)] {
        if v.as_ref().is_some_and(|s| !s.is_empty()) {
            let why = if name == "suffix" {
                "fill-in-the-middle is not supported"
            } else {
                "prompts use the model's own chat template (or none with \"raw\": true)"
            };
            return Err(OllamaError::invalid(format!(
                "`{name}` is not supported: {why}"
            )));
        }
    }
    let run = Run {
        api: Api::Generate,
        name: req.model.clone(),
        stream: req.stream.unwrap_or(true),
        start,
    };
    let prompt = req.prompt.clone().unwrap_or_default();
    if prompt.is_empty() {
        return Ok(loaded(&run));
    }
    let options = req.options.clone().unwrap_or_default();
    let mut settings = options.settings(&app)?;
    settings.response_format = format_schema(&req.format)?;
    let mut job = if req.raw.unwrap_or(false) {
        job::prepare_completion(&app, &id, &prompt, settings)?
    } else {
        let mut turns = Vec::new();
        if let Some(s) = req.system.as_ref().filter(|s| !s.is_empty()) {
            turns.push(Turn::plain(Role::System, s.clone()));
        }
        turns.push(Turn::plain(Role::User, prompt));
        job::prepare(&app, &id, &turns, Vec::new(), ToolChoice::None, settings)?
    };
    bound(&mut job, &options)?;
    respond(app, job, run).await
}

/// Applies `num_ctx` to the reply's length.
fn bound(job: &mut Job, options: &Options) -> Result<(), OllamaError> {
    if let Some(room) = options.room(job.prompt.len())? {
        job.seq.max_tokens = job.seq.max_tokens.min(room).max(1);
    }
    Ok(())
}

/// Ollama's answer to a request without a prompt: the model is loaded (ours always are).
fn loaded(run: &Run) -> Response {
    let mut v = json!({"model": run.name, "created_at": now_rfc3339(), "done": true,
                       "done_reason": "load"});
    match run.api {
        Api::Chat => v["message"] = json!({"role": "assistant", "content": ""}),
        Api::Generate => v["response"] = json!(""),
    }
    if run.stream {
        ndjson_lines(one_line(&v))
    } else {
        axum::Json(v).into_response()
    }
}

fn line(v: &Value) -> String {
    format!("{v}\n")
}

fn one_line(v: &Value) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(line(v));
    rx
}

/// NDJSON lines as a streaming body; the pump ends (and the engine cancels the sequence)
/// when the client goes away.
pub(super) fn ndjson_lines(rx: mpsc::Receiver<String>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|s| (Ok::<Bytes, Infallible>(Bytes::from(s)), rx))
    });
    let mut r = Body::from_stream(stream).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// Submits the job and answers as one object or a stream.
async fn respond(app: Arc<AppState>, job: Job, run: Run) -> Result<Response, OllamaError> {
    let rx = job::submit_guarded(&app, &job)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| OllamaError::invalid("no sequence was submitted"))?;
    if !run.stream {
        let (out, t) = drive(&app, &job, &run, rx, None)
            .await
            .map_err(|e| e.unwrap_or_else(|| OllamaError::invalid("the request was cancelled")))?;
        return Ok(axum::Json(final_object(&run, &out, &t, true)).into_response());
    }
    let (tx, body) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        match drive(&app, &job, &run, rx, Some(&tx)).await {
            Ok((out, t)) => {
                let _ = tx.send(line(&final_object(&run, &out, &t, false))).await;
            }
            Err(Some(e)) => {
                let _ = tx.send(line(&e.body())).await;
            }
            Err(None) => {}
        }
    });
    Ok(ndjson_lines(body))
}

/// When the prompt was read and when the reply ended.
struct Timing {
    first_token: Option<Instant>,
    end: Instant,
}

/// Reads the sequence's events; when streaming, sends each piece of text as it comes (text
/// that may be a tool call is held until the end). `Err(None)`: the client went away.
async fn drive(
    app: &AppState,
    job: &Job,
    run: &Run,
    mut rx: crate::job::Events,
    tx: Option<&mpsc::Sender<String>>,
) -> Result<(Output, Timing), Option<OllamaError>> {
    let mut out = crate::openai::empty_output(job);
    out.finish = Finish::Generation(FinishReason::Stop);
    let mut first_token = None;
    let mut sent = 0usize;
    let tools = !job.tools.is_empty();
    // Hermes/JSON-format calls are streamed as each completes (one line per call, as
    // Ollama does); Llama 3.1's when the reply ends.
    let mut stream = job::CallStream::for_job(job).filter(|_| run.api == Api::Chat);
    loop {
        match rx.recv().await {
            Some(Event::Token { id, text, .. }) => {
                first_token.get_or_insert_with(Instant::now);
                out.ids.push(id);
                out.text.push_str(&text);
                let Some(tx) = tx else { continue };
                if let Some(cs) = &mut stream {
                    for l in release_lines(run, cs.push(&text)) {
                        if tx.send(line(&l)).await.is_err() {
                            return Err(None);
                        }
                    }
                    continue;
                }
                if tools && crate::openai::maybe_call(&out.text, false) {
                    continue;
                }
                if sent < out.text.len() {
                    let piece = out.text[sent..].to_string();
                    sent = out.text.len();
                    if tx.send(line(&chunk(run, &piece))).await.is_err() {
                        return Err(None);
                    }
                }
            }
            Some(Event::Done(d)) => {
                let end = Instant::now();
                if let (Some(tx), Some(mut cs)) = (tx, stream.take()) {
                    let rest = d.text.clone();
                    job::apply_done(&mut out, d);
                    let mut rel = cs.push(&rest);
                    rel.extend(cs.finish());
                    cs.into_output(&mut out);
                    for l in release_lines(run, rel) {
                        if tx.send(line(&l)).await.is_err() {
                            return Err(None);
                        }
                    }
                    return Ok((out, Timing { first_token, end }));
                }
                job::finish_output(app, job, &mut out, d);
                if let Some(tx) = tx {
                    let mut last = None;
                    if !out.calls.is_empty() && run.api == Api::Chat {
                        let mut c = chunk(run, "");
                        c["message"]["tool_calls"] = tool_calls_json(&out.calls);
                        last = Some(c);
                    } else if sent < out.text.len() {
                        last = Some(chunk(run, &out.text[sent..]));
                    }
                    if let Some(c) = last
                        && tx.send(line(&c)).await.is_err()
                    {
                        return Err(None);
                    }
                }
                return Ok((out, Timing { first_token, end }));
            }
            Some(Event::Error(e)) => return Err(Some(OllamaError(job::engine_error(e)))),
            None => {
                return Err(Some(OllamaError(ApiError::internal(
                    "the engine dropped a sequence",
                ))));
            }
        }
    }
}

/// Stream lines for what a call stream released: text, and each call in its own line.
fn release_lines(run: &Run, rel: Vec<job::Release>) -> Vec<Value> {
    rel.into_iter()
        .map(|r| match r {
            job::Release::Text(t) => chunk(run, &t),
            job::Release::Call(_, c) => {
                let mut l = chunk(run, "");
                l["message"]["tool_calls"] = tool_calls_json(std::slice::from_ref(&c));
                l
            }
        })
        .collect()
}

/// One streamed piece of text.
fn chunk(run: &Run, text: &str) -> Value {
    let mut v = json!({"model": run.name, "created_at": now_rfc3339(), "done": false});
    match run.api {
        Api::Chat => v["message"] = json!({"role": "assistant", "content": text}),
        Api::Generate => v["response"] = json!(text),
    }
    v
}

fn tool_calls_json(calls: &[Call]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| json!({"function": {"name": c.name, "arguments": c.arguments}}))
            .collect(),
    )
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The last object: the whole reply when not streamed (`whole`), counts and durations.
fn final_object(run: &Run, out: &Output, t: &Timing, whole: bool) -> Value {
    let done_reason = match out.finish {
        Finish::Generation(FinishReason::Length | FinishReason::ContextFull)
        | Finish::Timeout
        | Finish::Shutdown => "length",
        // Ollama has no content-filter reason; the refusal text says what happened.
        Finish::Generation(_) | Finish::ContentFilter => "stop",
    };
    let first = t.first_token.unwrap_or(t.end);
    let mut v = json!({
        "model": run.name,
        "created_at": now_rfc3339(),
        "done": true,
        "done_reason": done_reason,
        "total_duration": nanos(t.end.duration_since(run.start)),
        "load_duration": 0,
        "prompt_eval_count": out.prompt_tokens,
        "prompt_eval_duration": nanos(first.duration_since(run.start)),
        "eval_count": out.completion_tokens,
        "eval_duration": nanos(t.end.duration_since(first)),
    });
    let text = match (whole, out.calls.is_empty()) {
        (false, _) => "",
        (true, true) => out.text.as_str(),
        (true, false) => out.content.as_str(),
    };
    match run.api {
        Api::Chat => {
            let mut m = json!({"role": "assistant", "content": text});
            if whole && !out.calls.is_empty() {
                m["tool_calls"] = tool_calls_json(&out.calls);
            }
            v["message"] = m;
        }
        Api::Generate => v["response"] = json!(text),
    }
    v
}
