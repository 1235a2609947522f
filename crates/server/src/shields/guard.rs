//! Guarded chat: input shields before generation, output shields while the reply is made.
//!
//! Input: every input shield judges the conversation before it is submitted; a flagged
//! conversation never reaches the chat model, and the reply is the refusal
//! ([`ferrollama_safety::REFUSAL`]) ending with [`Finish::ContentFilter`] — OpenAI clients
//! see `finish_reason: "content_filter"`, Llama Stack clients a completion message with
//! the refusal text (`stop_reason: "end_of_turn"`), Ollama clients the refusal with
//! `done_reason: "stop"`. Llama Guard input shields judge the last user message; when the
//! last message is a tool result they let it pass to the shields made for that (Prompt
//! Guard in injection mode, regex rules), which judge the last message whatever its role.
//!
//! Output: the engine's events for a reply pass through [`moderate`], which holds generated
//! text back until the output shields have judged it: after [`Window::tokens`] new tokens,
//! or at a sentence end once [`Window::min_tokens`] have come. The engine keeps generating
//! while a check runs, so a check costs the stream latency, not throughput. Text is held
//! back by at most one window; on a violation the stream ends with `content_filter`, the
//! sequence is cancelled, and nothing after the last window that passed reaches the client.
//! Non-streamed replies read the same events, so the same applies to them.

use std::sync::Arc;

use ferrollama_engine::scheduler::{Done, Engine, Event, Finish};
use ferrollama_safety::llama_guard::{Speaker, Turn as GuardTurn};
use ferrollama_safety::{REFUSAL, SafetyError, Shield, ShieldKind, Verdict};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use super::{Action, Window, guard_turns};
use crate::error::ApiError;
use crate::job::{Events, Job, Turn};
use crate::state::AppState;

/// The shields one chat request passes, and its conversation as they read it.
#[derive(Debug)]
pub struct Guard {
    pub input: Vec<Arc<Shield>>,
    pub output: Vec<Arc<Shield>>,
    /// Shields for third-party content: each tool result in the conversation is judged
    /// on its own (see [`scan_untrusted`]).
    pub tool: Vec<Arc<Shield>>,
    pub turns: Vec<GuardTurn>,
    pub window: Window,
    pub action: Action,
}

/// A shield's violation.
#[derive(Debug, Clone)]
pub struct Flag {
    pub shield: String,
    pub verdict: Verdict,
}

fn resolve(
    app: &AppState,
    ids: &[String],
    extra: &[String],
    param: &str,
) -> Result<Vec<Arc<Shield>>, ApiError> {
    let mut out: Vec<Arc<Shield>> = Vec::new();
    for id in ids.iter().chain(extra) {
        if out.iter().any(|s| &s.id == id) {
            continue;
        }
        let s = app.safety.shields.get(id).ok_or_else(|| {
            ApiError::invalid_param(
                param,
                format!(
                    "no shield '{id}'; GET /v1/shields lists them, POST /v1/shields registers one"
                ),
            )
        })?;
        out.push(s);
    }
    Ok(out)
}

/// The shield ids a chat request names itself (the `input_shields`, `output_shields` and
/// `tool_shields` fields of both chat APIs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Requested<'a> {
    pub input: &'a [String],
    pub output: &'a [String],
    pub tool: &'a [String],
}

/// The guard for a chat request: the server's shields plus the request's own. `None`
/// when no shield applies.
pub fn for_chat(
    app: &AppState,
    turns: &[Turn],
    requested: Requested<'_>,
) -> Result<Option<Arc<Guard>>, ApiError> {
    let input = resolve(app, &app.safety.input, requested.input, "input_shields")?;
    let output = resolve(app, &app.safety.output, requested.output, "output_shields")?;
    let tool = resolve(app, &app.safety.tool, requested.tool, "tool_shields")?;
    if input.is_empty() && output.is_empty() && tool.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(Guard {
        input,
        output,
        tool,
        turns: guard_turns(turns),
        window: app.safety.window,
        action: app.safety.action,
    })))
}

/// A shield failure as an HTTP error (before generation) naming the shield.
pub fn shield_error(shield: &str, e: SafetyError) -> ApiError {
    let msg = format!("shield '{shield}': {e}");
    match e {
        SafetyError::Invalid(_) | SafetyError::Unparsable(_) => ApiError::invalid(msg),
        SafetyError::NotFound(_) => ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "invalid_request_error",
            msg,
        ),
        SafetyError::Engine(m) if m.contains("busy") => ApiError::busy(msg, 2),
        SafetyError::Engine(_) => ApiError::unavailable(msg),
    }
}

/// Runs `shields` on `turns` at once; the first violation, if any.
async fn judge(
    engine: &Engine,
    shields: &[Arc<Shield>],
    turns: &[GuardTurn],
    input: bool,
) -> Result<Option<Flag>, (String, SafetyError)> {
    let last_is_tool = turns.last().is_some_and(|t| t.speaker == Speaker::Tool);
    let checks = shields.iter().map(|s| async move {
        if input && last_is_tool && matches!(s.kind, ShieldKind::LlamaGuard(_)) {
            return Ok(None);
        }
        match s.check(engine, turns).await {
            Ok(v) if v.flagged => Ok(Some(Flag {
                shield: s.id.clone(),
                verdict: v,
            })),
            Ok(_) => Ok(None),
            Err(e) => Err((s.id.clone(), e)),
        }
    });
    for r in futures_util::future::join_all(checks).await {
        if let Some(f) = r? {
            return Ok(Some(f));
        }
    }
    Ok(None)
}

/// Runs the input shields on the conversation, and the tool shields on each tool result
/// in it.
pub async fn check_input(app: &AppState, g: &Guard) -> Result<Option<Flag>, ApiError> {
    if !g.tool.is_empty() {
        for t in g.turns.iter().filter(|t| t.speaker == Speaker::Tool) {
            if let Some(f) = scan_untrusted(&app.engine, &g.tool, &t.text)
                .await
                .map_err(|(s, e)| shield_error(&s, e))?
            {
                return Ok(Some(f));
            }
        }
    }
    if g.input.is_empty() {
        return Ok(None);
    }
    judge(&app.engine, &g.input, &g.turns, true)
        .await
        .map_err(|(s, e)| shield_error(&s, e))
}

/// The hook for third-party content (a tool's output, a retrieved document, a fetched
/// page) before it reaches a model: `shields` judge `text` alone, as a tool message, the
/// way Prompt Guard's injection mode is meant to be used (spec §5.2). Chat requests run
/// it on every tool result (`--tool-shield`, `tool_shields`); agents and retrieval call
/// it on what they feed the model. The first violation, if any, or the failing shield.
pub async fn scan_untrusted(
    engine: &Engine,
    shields: &[Arc<Shield>],
    text: &str,
) -> Result<Option<Flag>, (String, SafetyError)> {
    if shields.is_empty() {
        return Ok(None);
    }
    judge(
        engine,
        shields,
        &[GuardTurn::new(Speaker::Tool, text)],
        false,
    )
    .await
}

/// The reply to a flagged conversation: the refusal, then `ContentFilter`.
pub fn refusal(job: &Job) -> Events {
    let (tx, rx) = unbounded_channel();
    let id = job
        .loaded
        .encode(REFUSAL, false, false)
        .first()
        .copied()
        .unwrap_or(0);
    let _ = tx.send(Event::Token {
        id,
        text: REFUSAL.to_string(),
        logprob: None,
    });
    let _ = tx.send(Event::Done(Done {
        finish: Finish::ContentFilter,
        text: String::new(),
        prompt_tokens: job.prompt.len(),
        cached_tokens: 0,
        completion_tokens: 0,
        prompt_logprobs: Vec::new(),
        stop_token: None,
    }));
    Events::new(rx)
}

/// The reply's events, released only as the output shields pass them (module docs).
pub fn moderate(engine: Engine, g: Arc<Guard>, inner: Events, prompt_tokens: usize) -> Events {
    let (tx, rx) = unbounded_channel();
    tokio::spawn(moderate_loop(engine, g, inner, tx, prompt_tokens));
    Events::unlogged(rx)
}

/// Whether a token's text ends a sentence.
fn ends_sentence(text: &str) -> bool {
    text.contains('\n') || text.trim_end().ends_with(['.', '!', '?', '。', '！', '？'])
}

/// The conversation with the reply so far as the assistant's last message.
fn with_reply(turns: &[GuardTurn], reply: &str) -> Vec<GuardTurn> {
    let mut t = turns.to_vec();
    match t.last_mut() {
        Some(last) if last.speaker == Speaker::Assistant => last.text.push_str(reply),
        _ => t.push(GuardTurn::new(Speaker::Assistant, reply)),
    }
    t
}

async fn moderate_loop(
    engine: Engine,
    g: Arc<Guard>,
    mut inner: Events,
    tx: UnboundedSender<Event>,
    prompt_tokens: usize,
) {
    let mut released = String::new();
    let mut released_tokens = 0usize;
    let mut held: Vec<Event> = Vec::new();
    let mut since_check = 0usize;
    let cut = |tx: &UnboundedSender<Event>, flag: &Flag, completion_tokens: usize| {
        tracing::info!(shield = %flag.shield, codes = ?flag.verdict.codes, "output shield stopped a reply");
        let _ = tx.send(Event::Done(Done {
            finish: Finish::ContentFilter,
            text: String::new(),
            prompt_tokens,
            cached_tokens: 0,
            completion_tokens,
            prompt_logprobs: Vec::new(),
            stop_token: None,
        }));
    };
    loop {
        let ev = tokio::select! {
            e = inner.recv() => e,
            () = tx.closed() => return,
        };
        let (check_now, done) = match ev {
            Some(Event::Token { id, text, logprob }) => {
                since_check += 1;
                let due = since_check >= g.window.tokens
                    || (g.window.sentences
                        && since_check >= g.window.min_tokens
                        && ends_sentence(&text));
                held.push(Event::Token { id, text, logprob });
                (due, None)
            }
            Some(Event::Done(d)) => (true, Some(d)),
            Some(Event::Error(e)) => {
                let _ = tx.send(Event::Error(e));
                return;
            }
            None => return,
        };
        if !check_now {
            continue;
        }
        let mut window_text = String::new();
        for e in &held {
            if let Event::Token { text, .. } = e {
                window_text.push_str(text);
            }
        }
        if let Some(d) = &done {
            window_text.push_str(&d.text);
        }
        if !window_text.is_empty() {
            let reply = format!("{released}{window_text}");
            match judge(&engine, &g.output, &with_reply(&g.turns, &reply), false).await {
                Ok(None) => {}
                Ok(Some(flag)) if g.action == Action::Block => {
                    cut(&tx, &flag, released_tokens);
                    return;
                }
                Ok(Some(flag)) => {
                    tracing::warn!(shield = %flag.shield, codes = ?flag.verdict.codes, "output shield flagged a reply (--shield-action log: not cut)");
                }
                Err((s, e)) => {
                    let _ = tx.send(Event::Error(format!("output shield '{s}' failed: {e}")));
                    return;
                }
            }
            released = reply;
        }
        released_tokens += held.len();
        since_check = 0;
        for e in held.drain(..) {
            let _ = tx.send(e);
        }
        if let Some(d) = done {
            let _ = tx.send(Event::Done(d));
            return;
        }
    }
}
