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

use crate::body::{self, JsonBody};
use crate::error::ApiError;
use crate::job::{
    self, Call, Job, Output, Role, Settings, ToolChoice, ToolSpec, Turn, token_text, unix_now,
};
use crate::state::AppState;

mod completions;
pub mod responses;
mod sse;
pub mod stored;
mod types;
pub use completions::{completions, completions_ls};
pub use sse::{frame, merge, sse_response};
pub use types::*;
pub(crate) use types::{rand_seed, tools as tool_specs};
use types::{response_format, tool_choice, tools, turns};

/// Which stream terminator to send.
#[derive(Debug, Clone, Copy)]
pub struct Flavor {
    pub done_marker: bool,
}

pub async fn chat(
    State(app): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    // Read as a value first: a stored completion keeps the messages exactly as sent (and
    // `store` / `metadata` errors name their field).
    let record = stored::recorder(&app, &body, false)?;
    let req: ChatRequest = body::parse_value(body)?;
    chat_with(app, req, Flavor { done_marker: true }, record).await
}

pub async fn chat_ls(
    State(app): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    // Llama Stack's inference store records every chat completion of this route.
    let record = stored::recorder(&app, &body, true)?;
    let req: ChatRequest = body::parse_value(body)?;
    chat_with(app, req, Flavor { done_marker: false }, record).await
}

async fn chat_with(
    app: Arc<AppState>,
    req: ChatRequest,
    flavor: Flavor,
    record: Option<stored::Recorder>,
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
    let mut job = job::prepare(&app, &req.model, &turns, tools, choice, settings)?;
    job.guard = crate::shields::guard::for_chat(
        &app,
        &turns,
        crate::shields::guard::Requested {
            input: req.input_shields.as_deref().unwrap_or_default(),
            output: req.output_shields.as_deref().unwrap_or_default(),
            tool: req.tool_shields.as_deref().unwrap_or_default(),
        },
    )?;
    let rxs = job::submit_guarded(&app, &job).await?;
    let id = format!("chatcmpl-{:x}", rand_seed());
    let include_usage = req
        .sampling
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    if req.sampling.stream.unwrap_or(false) {
        return Ok(stream_chat(
            app,
            job,
            rxs,
            id,
            include_usage,
            flavor,
            record,
        ));
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
    let completion = chat_completion(&id, unix_now(), &job, choices, usage(pt, ct, cached));
    if let Some(r) = record {
        r.record(&completion).await;
    }
    Ok(axum::Json(completion).into_response())
}

/// The ChatCompletion object (also what a finished stream is stored as).
fn chat_completion(id: &str, created: u64, job: &Job, choices: Vec<Value>, usage: Value) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": job.model_id,
        "choices": choices,
        "usage": usage,
        "system_fingerprint": null,
    })
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
        // Text around the calls, or null when there is none (as OpenAI answers calls).
        message["content"] = if out.content.trim().is_empty() {
            Value::Null
        } else {
            json!(out.content)
        };
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

fn logprob_list(_app: &AppState, job: &Job, lps: &[(u32, TokenLogprob)]) -> Vec<Value> {
    let model = &job.loaded;
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

fn stream_chat(
    app: Arc<AppState>,
    job: Job,
    rxs: Vec<job::Events>,
    id: String,
    include_usage: bool,
    flavor: Flavor,
    record: Option<stored::Recorder>,
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
        // With tools, output is held until it is known not to be a call: for Llama 3.1
        // models the whole reply (Meta's calls are parsed at the end), otherwise only text
        // that may open a call, each call being sent once complete.
        let tools = !job.tools.is_empty();
        let mut streams: Vec<Option<job::CallStream>> =
            (0..n).map(|_| job::CallStream::for_job(&job)).collect();
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
                    if let Some(cs) = &mut streams[i] {
                        let lps = lp
                            .as_ref()
                            .map(|l| logprob_list(&app, &job, std::slice::from_ref(l)));
                        if let Some(l) = lp {
                            o.logprobs.push(l);
                        }
                        let rel = cs.push(&text);
                        for c in release_choices(i, rel, lps) {
                            if tx.send(frame(&chunk(json!([c])))).await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
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
                    let mut frames = Vec::new();
                    if let Some(mut cs) = streams[i].take() {
                        let rest = d.text.clone();
                        job::apply_done(o, d);
                        let mut rel = cs.push(&rest);
                        rel.extend(cs.finish());
                        frames.extend(
                            release_choices(i, rel, None)
                                .into_iter()
                                .map(|c| chunk(json!([c]))),
                        );
                        cs.into_output(o);
                    } else {
                        job::finish_output(&app, &job, o, d);
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
                    }
                    pt = o.prompt_tokens;
                    cached = cached.max(o.cached_tokens);
                    ct += o.completion_tokens;
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
        // Stored before the stream's last frames, so a client that lists right after the
        // stream ends finds it; only a stream that finished (no error, no hang-up) is.
        if let Some(r) = record
            && open == 0
        {
            let choices = (0..n)
                .map(|i| chat_choice(&app, &job, i, &outs[i]))
                .collect();
            let completion = chat_completion(&id, created, &job, choices, usage(pt, ct, cached));
            r.record(&completion).await;
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

/// Stream choices (`{"index", "delta", "finish_reason": null}`) for what a call stream
/// released: text as content deltas (the first carrying the token's log-probabilities), each
/// call as two `tool_calls` deltas (id and name, then the arguments), indexed per call.
fn release_choices(
    i: usize,
    rel: Vec<job::Release>,
    mut logprobs: Option<Vec<Value>>,
) -> Vec<Value> {
    let mut out = Vec::new();
    for r in rel {
        match r {
            job::Release::Text(t) => {
                let mut c = json!({"index": i, "delta": {"content": t}, "finish_reason": null});
                if let Some(l) = logprobs.take() {
                    c["logprobs"] = json!({"content": l});
                }
                out.push(c);
            }
            job::Release::Call(k, call) => {
                out.push(json!({"index": i, "delta": {"tool_calls": [
                    {"index": k, "id": call.id, "type": "function",
                     "function": {"name": call.name, "arguments": ""}}]}, "finish_reason": null}));
                out.push(json!({"index": i, "delta": {"tool_calls": [
                    {"index": k, "function": {"arguments": call.arguments.to_string()}}]},
                    "finish_reason": null}));
            }
        }
    }
    out
}

/// Whether streamed text may be (the start of) a tool call and must be held back.
pub(crate) fn maybe_call(text: &str, forced: bool) -> bool {
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

pub fn empty_output(job: &Job) -> Output {
    Output {
        text: String::new(),
        ids: Vec::new(),
        logprobs: Vec::new(),
        prompt_logprobs: Vec::new(),
        stop_token: None,
        finish: ferrollama_engine::scheduler::Finish::Timeout,
        prompt_tokens: job.prompt.len(),
        cached_tokens: 0,
        completion_tokens: 0,
        calls: Vec::new(),
        content: String::new(),
    }
}

pub async fn models(State(app): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = app
        .models
        .entries()
        .iter()
        .map(|r| crate::registry::model_json(&app, r))
        .chain(
            app.embeddings
                .models
                .iter()
                .map(|m| crate::embeddings::model_json(&app, m)),
        )
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

pub async fn model(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::invalid("the model id in the path is not valid UTF-8"))?;
    if let Some(m) = app.embeddings.get(&id) {
        return Ok(axum::Json(crate::embeddings::model_json(&app, m)).into_response());
    }
    let r = app.models.get(&id).ok_or_else(|| {
        let mut known = app.models.ids();
        known.extend(app.embeddings.ids());
        ApiError::model_not_found(&id, &known)
    })?;
    Ok(axum::Json(crate::registry::model_json(&app, &r)).into_response())
}

#[cfg(test)]
mod hermes_tests {
    use ferrollama_engine::ChatTemplate;

    use super::*;

    fn testdata(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/qwen2.5")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// OpenAI requests with tools, calls and results, rendered through the Hermes path and
    /// Qwen2.5's templates, are byte for byte what llama.cpp's `/apply-template` renders
    /// (`testdata/qwen2.5/make_reference.py`).
    #[test]
    fn qwen_templates_render_tools_as_llama_cpp_does() {
        let dialogs: Vec<Value> =
            serde_json::from_str(&testdata("dialogs.json")).expect("dialogs.json");
        for model in [
            "qwen2.5-coder-0.5b-instruct",
            "qwen2.5-coder-1.5b-instruct-q4_k_m",
        ] {
            let source = testdata(&format!("{model}.jinja"));
            let template = ChatTemplate::detect(Some(&source), "<|endoftext|>", "<|im_end|>");
            assert!(template.knows_tools(), "{model}");
            for (i, d) in dialogs.iter().enumerate() {
                let mut body = d.clone();
                body["model"] = json!("m");
                let req: ChatRequest = serde_json::from_value(body).expect("a chat request");
                let turns = turns(&req.messages).expect("turns");
                let tools = tools(&req.tools).expect("tools");
                let (messages, tool_values) = job::hermes_dialog(&turns, &tools);
                let got = ChatTemplate::render_jinja(
                    &source,
                    "<|endoftext|>",
                    "<|im_end|>",
                    &messages,
                    &tool_values,
                    true,
                )
                .expect("renders");
                let want = testdata(&format!("{model}.{i}.txt"));
                assert_eq!(got, want, "{model} dialog {i}");
            }
        }
    }
}
