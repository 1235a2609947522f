//! `POST /v1/completions`: plain-text completions of one prompt or several (strings or
//! token ids), with `echo` and `logprobs` as the legacy API has them. `echo` with
//! `logprobs` scores the prompt too (its tokens' log-probabilities come first in
//! `choices[].logprobs`, the first one null), and with `max_tokens: 0` nothing is
//! generated: what lm-evaluation-harness's `local-completions` model needs for
//! log-likelihood tasks. The scoring runs in the engine beside every other request.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use ferrollama_engine::Model;
use ferrollama_engine::scheduler::{Event, TokenLogprob};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::{CompletionRequest, Flavor, PromptSpec, empty_output, frame, merge, sse_response};
use super::{rand_seed, response_format, usage};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::job::{self, Job, Output, token_text, unix_now};
use crate::state::AppState;

/// Most prompts in one request (each is a sequence of its own in the engine).
const MAX_PROMPTS: usize = 64;

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

/// One prompt as sent.
enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

fn prompts(spec: PromptSpec) -> Result<Vec<Prompt>, ApiError> {
    let v: Vec<Prompt> = match spec {
        PromptSpec::One(s) => vec![Prompt::Text(s)],
        PromptSpec::Many(v) => v.into_iter().map(Prompt::Text).collect(),
        PromptSpec::Tokens(t) => vec![Prompt::Ids(t)],
        PromptSpec::TokenLists(v) => v.into_iter().map(Prompt::Ids).collect(),
    };
    if v.is_empty() {
        return Err(ApiError::invalid_param(
            "prompt",
            "the prompt list is empty",
        ));
    }
    if v.len() > MAX_PROMPTS {
        return Err(ApiError::invalid_param(
            "prompt",
            format!("at most {MAX_PROMPTS} prompts in one request"),
        ));
    }
    Ok(v)
}

/// The text a prompt of token ids stands for (what `echo` returns).
fn ids_text(model: &Model, ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&i| model.token_bytes(i).iter().copied())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
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
    let echo = req.echo.unwrap_or(false);
    let mut settings = req.sampling.settings_with(echo)?;
    settings.response_format = response_format(&req.response_format)?;
    if let Some(lp) = req.logprobs {
        if lp > 5 {
            return Err(ApiError::invalid_param(
                "logprobs",
                "logprobs must be at most 5",
            ));
        }
        settings.logprobs = Some(lp as usize);
        if echo {
            settings.prompt_logprobs = Some(lp as usize);
        }
    }
    let stream = req.sampling.stream.unwrap_or(false);
    let prompts = prompts(req.prompt.clone())?;
    if stream && prompts.len() > 1 {
        return Err(ApiError::invalid_param(
            "prompt",
            "a streamed completion takes one prompt",
        ));
    }
    // Every job is prepared (and so checked) before any is submitted.
    let mut jobs = Vec::with_capacity(prompts.len());
    for p in prompts {
        let (job, text) = match p {
            Prompt::Text(t) => (
                job::prepare_completion(&app, &req.model, &t, settings.clone())?,
                t,
            ),
            Prompt::Ids(ids) => {
                let job = job::prepare_completion_ids(&app, &req.model, ids, settings.clone())?;
                let text = ids_text(&job.loaded, &job.prompt);
                (job, text)
            }
        };
        jobs.push((job, if echo { text } else { String::new() }));
    }
    let mut submitted = Vec::with_capacity(jobs.len());
    for (job, echo_text) in jobs {
        let rxs = job::submit_all(&app, &job)?;
        submitted.push((job, echo_text, rxs));
    }
    let id = format!("cmpl-{:x}", rand_seed());
    if stream {
        let Some((job, echo_text, rxs)) = submitted.pop() else {
            return Err(ApiError::internal("no prompt to stream"));
        };
        let include_usage = req
            .sampling
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        return Ok(stream_completion(
            job,
            echo_text,
            rxs,
            id,
            include_usage,
            flavor,
        ));
    }
    let mut choices = Vec::new();
    let (mut pt, mut ct, mut cached) = (0, 0, 0);
    let mut model_id = String::new();
    for (job, echo_text, rxs) in submitted {
        model_id.clone_from(&job.model_id);
        // The choices of one prompt share it: its tokens count once.
        let mut prompt_tokens = job.prompt.len();
        for rx in rxs {
            let out = job::collect(&app, &job, rx).await?;
            prompt_tokens = out.prompt_tokens;
            ct += out.completion_tokens;
            cached = cached.max(out.cached_tokens);
            let logprobs = if job.seq.logprobs.is_some() {
                logprobs_json(&job, echo && job.seq.prompt_logprobs.is_some(), &out)
            } else {
                Value::Null
            };
            choices.push(json!({
                "index": choices.len(),
                "text": format!("{echo_text}{}", out.text),
                "finish_reason": out.openai_finish(),
                "logprobs": logprobs,
            }));
        }
        pt += prompt_tokens;
    }
    Ok(axum::Json(json!({
        "id": id,
        "object": "text_completion",
        "created": unix_now(),
        "model": model_id,
        "choices": choices,
        "usage": usage(pt, ct, cached),
    }))
    .into_response())
}

/// The legacy `logprobs` object: `tokens`, `token_logprobs`, `top_logprobs` (a dict per
/// token) and `text_offset` (byte offsets into the choice's `text`). With `echo` the
/// prompt's tokens come first, the first one with null entries (nothing precedes it); a
/// stop token that ended the output comes last.
fn logprobs_json(job: &Job, echoed: bool, out: &Output) -> Value {
    let model = &job.loaded;
    let mut offset = 0;
    let (mut tokens, mut lps, mut tops, mut offs) = (vec![], vec![], vec![], vec![]);
    let mut push = |id: u32, lp: Option<&TokenLogprob>| {
        tokens.push(token_text(model, id).0);
        offs.push(offset);
        offset += model.token_bytes(id).len();
        match lp {
            Some(lp) => {
                lps.push(json!(lp.logprob));
                let top: Map<String, Value> = lp
                    .top
                    .iter()
                    .map(|&(t, l)| (token_text(model, t).0, json!(l)))
                    .collect();
                tops.push(Value::Object(top));
            }
            None => {
                lps.push(Value::Null);
                tops.push(Value::Null);
            }
        }
    };
    if echoed {
        let scored = std::iter::once(None).chain(out.prompt_logprobs.iter().map(Some));
        for (&id, lp) in job.prompt.iter().zip(scored) {
            push(id, lp);
        }
    }
    for (id, lp) in &out.logprobs {
        push(*id, Some(lp));
    }
    // A stop token that ended the output is listed as generated, though it adds no text
    // (as OpenAI's legacy API and vLLM list it): lm-eval's local-completions asks
    // `max_tokens: 1` with `echo` and drops the last entry as the generated token, so
    // without it the continuation's last token would be lost.
    if let Some((id, lp)) = &out.stop_token {
        push(*id, Some(lp));
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs})
}

fn stream_completion(
    job: Job,
    echo: String,
    rxs: Vec<job::Events>,
    id: String,
    include_usage: bool,
    flavor: Flavor,
) -> Response {
    let (tx, out) = mpsc::channel::<String>(64);
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
    sse_response(out)
}
