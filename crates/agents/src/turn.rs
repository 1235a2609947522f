//! The agent loop: one turn of inference, shields and tool execution.
//!
//! A turn is a sequence of steps. It starts with the input shields (a violation ends the
//! turn with the shield's message), then alternates inference and tool execution:
//!
//! 1. inference on the whole history (the agent's instructions as the system message);
//! 2. the output shields on the reply;
//! 3. no tool calls: the turn is complete. Calls of client tools: the turn pauses
//!    (`awaiting_input`) and the caller sends their results to [`resume`](run_turn)
//!    (the server-side calls of the same reply run first). Otherwise every call runs, its
//!    result joins the history as a `tool` (Meta: `ipython`) message, and the loop goes
//!    back to 1 — the model ended its message with `<|eom_id|>` to wait for exactly this.
//!
//! `max_infer_iters` bounds the inference steps of a turn; when it is reached after a tool
//! execution the turn ends with the last reply. A forced `tool_choice` (`required` or a
//! named tool) applies to the turn's first inference only: forcing every step would loop
//! until the iteration limit, since the model could never answer.
//!
//! Inference, shields and tools are traits ([`Inference`], [`Shields`], [`ToolExecutor`]):
//! the server implements them on its engine and runtimes, tests with scripted replies.

use std::future::Future;

use tokio::sync::mpsc::UnboundedSender;

use crate::types::{
    Delta, Event, Message, Role, Step, StepType, StopReason, ToolCall, ToolChoice, ToolDef,
    ToolResponse, TurnConfig, Violation,
};

/// Why a turn could not run (tool failures are not errors: they are results the model reads).
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// Inference failed: the request is bad (unknown model, too long) or the engine is down.
    #[error("inference: {0}")]
    Inference(String),
    #[error("shield: {0}")]
    Shield(String),
}

/// One inference request of the loop.
#[derive(Debug, Clone)]
pub struct InferRequest {
    pub model: String,
    /// The full dialog, the system message first when there are instructions.
    pub messages: Vec<Message>,
    pub tools: Vec<ToolDef>,
    pub tool_choice: ToolChoice,
    pub sampling: serde_json::Value,
    pub max_tokens: Option<usize>,
}

/// The model's reply: its text, the calls parsed from it, and why it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct InferReply {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub stop_reason: StopReason,
    /// Tokens read and generated (prompt, completion), when the backend counts them (the
    /// Responses API sums them into its `usage`).
    pub usage: Option<(usize, usize)>,
}

/// Runs the model. Implementations send text as it is generated to `deltas`.
pub trait Inference: Send + Sync {
    fn infer(
        &self,
        req: InferRequest,
        deltas: UnboundedSender<String>,
    ) -> impl Future<Output = Result<InferReply, TurnError>> + Send;
}

/// Runs shields over messages; `Some` is the first violation.
pub trait Shields: Send + Sync {
    fn check(
        &self,
        shields: &[String],
        messages: &[Message],
    ) -> impl Future<Output = Result<Option<Violation>, TurnError>> + Send;
}

/// Executes server-side tools. Never fails: a failure is a result with `metadata.error`.
pub trait ToolExecutor: Send + Sync {
    fn execute(
        &self,
        session_id: &str,
        tool: &ToolDef,
        call: &ToolCall,
    ) -> impl Future<Output = ToolResponse> + Send;
}

/// No shields configured.
#[derive(Debug, Clone, Copy)]
pub struct NoShields;

impl Shields for NoShields {
    async fn check(&self, _: &[String], _: &[Message]) -> Result<Option<Violation>, TurnError> {
        Ok(None)
    }
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEnd {
    /// The model answered; the message is the turn's output.
    Complete(Message),
    /// The model called client tools; the message holds the calls the caller must answer.
    AwaitingInput(Message),
}

/// A finished (or paused) turn: its steps and how it ended. The history passed in has the
/// turn's messages appended.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnOutcome {
    pub steps: Vec<Step>,
    pub end: TurnEnd,
}

/// Where a turn runs: ids for its steps, and its event stream.
pub struct TurnContext<'a> {
    pub session_id: &'a str,
    pub turn_id: &'a str,
    pub events: Option<&'a UnboundedSender<Event>>,
    /// Makes step ids and timestamps (the server: random ids, ISO times; tests: fixed).
    pub clock: &'a (dyn Fn() -> String + Send + Sync),
    pub new_id: &'a (dyn Fn() -> String + Send + Sync),
}

impl std::fmt::Debug for TurnContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnContext")
            .field("session_id", &self.session_id)
            .field("turn_id", &self.turn_id)
            .finish_non_exhaustive()
    }
}

impl TurnContext<'_> {
    fn emit(&self, e: Event) {
        if let Some(tx) = self.events {
            // A gone receiver (client disconnected) does not stop the turn: its result is
            // still stored.
            let _ = tx.send(e);
        }
    }
}

/// Runs a turn on `history` (the session's messages so far, the new input last — or, on
/// resume, the client tools' results last). `fresh` is false on resume (the input shields
/// already ran and the first inference was already forced).
pub async fn run_turn<I: Inference, S: Shields, T: ToolExecutor>(
    (infer, shields, tools): (&I, &S, &T),
    cfg: &TurnConfig,
    ctx: &TurnContext<'_>,
    history: &mut Vec<Message>,
    fresh: bool,
) -> Result<TurnOutcome, TurnError> {
    let mut steps = Vec::new();
    if fresh && !cfg.input_shields.is_empty() {
        let input: Vec<Message> = history.last().cloned().into_iter().collect();
        if let Some(v) = shield_step(shields, &cfg.input_shields, &input, ctx, &mut steps).await? {
            let m = refusal(&v);
            history.push(m.clone());
            return Ok(TurnOutcome {
                steps,
                end: TurnEnd::Complete(m),
            });
        }
    }
    let mut iters = 0;
    loop {
        let tool_choice = if fresh && iters == 0 {
            cfg.tool_choice.clone()
        } else if cfg.tool_choice == ToolChoice::None {
            ToolChoice::None
        } else {
            ToolChoice::Auto
        };
        iters += 1;
        let reply = inference_step(infer, cfg, ctx, history, tool_choice, &mut steps).await?;
        if !cfg.output_shields.is_empty()
            && !reply.content.is_empty()
            && let Some(v) = shield_step(
                shields,
                &cfg.output_shields,
                std::slice::from_ref(&reply),
                ctx,
                &mut steps,
            )
            .await?
        {
            let m = refusal(&v);
            history.push(m.clone());
            return Ok(TurnOutcome {
                steps,
                end: TurnEnd::Complete(m),
            });
        }
        history.push(reply.clone());
        if reply.tool_calls.is_empty() {
            return Ok(TurnOutcome {
                steps,
                end: TurnEnd::Complete(reply),
            });
        }
        let (server, client): (Vec<&ToolCall>, Vec<&ToolCall>) = reply
            .tool_calls
            .iter()
            .partition(|c| find_tool(cfg, &c.tool_name).is_none_or(|t| t.kind.server_side()));
        if !server.is_empty() {
            tool_step(tools, cfg, ctx, history, &server, &mut steps).await;
        }
        if !client.is_empty() {
            return Ok(TurnOutcome {
                steps,
                end: TurnEnd::AwaitingInput(reply),
            });
        }
        if iters >= cfg.max_infer_iters.max(1) {
            tracing::info!(turn = ctx.turn_id, iters, "max_infer_iters reached");
            return Ok(TurnOutcome {
                steps,
                end: TurnEnd::Complete(reply),
            });
        }
    }
}

fn find_tool<'a>(cfg: &'a TurnConfig, name: &str) -> Option<&'a ToolDef> {
    cfg.tools.iter().find(|t| t.name == name)
}

/// The message a refused turn ends with.
fn refusal(v: &Violation) -> Message {
    Message {
        stop_reason: Some(StopReason::EndOfTurn),
        ..Message::new(Role::Assistant, v.user_message.clone())
    }
}

async fn shield_step<S: Shields>(
    shields: &S,
    names: &[String],
    messages: &[Message],
    ctx: &TurnContext<'_>,
    steps: &mut Vec<Step>,
) -> Result<Option<Violation>, TurnError> {
    let step_id = (ctx.new_id)();
    let started_at = (ctx.clock)();
    ctx.emit(Event::StepStart {
        step_id: step_id.clone(),
        step_type: StepType::ShieldCall,
    });
    let violation = shields.check(names, messages).await?;
    let step = Step::ShieldCall {
        turn_id: ctx.turn_id.to_string(),
        step_id,
        started_at,
        completed_at: (ctx.clock)(),
        violation: violation.clone(),
    };
    ctx.emit(Event::StepComplete(step.clone()));
    steps.push(step);
    Ok(violation)
}

async fn inference_step<I: Inference>(
    infer: &I,
    cfg: &TurnConfig,
    ctx: &TurnContext<'_>,
    history: &[Message],
    tool_choice: ToolChoice,
    steps: &mut Vec<Step>,
) -> Result<Message, TurnError> {
    let step_id = (ctx.new_id)();
    let started_at = (ctx.clock)();
    ctx.emit(Event::StepStart {
        step_id: step_id.clone(),
        step_type: StepType::Inference,
    });
    let mut messages = Vec::with_capacity(history.len() + 1);
    if !cfg.instructions.is_empty() {
        messages.push(Message::new(Role::System, cfg.instructions.clone()));
    }
    messages.extend(history.iter().cloned());
    let req = InferRequest {
        model: cfg.model.clone(),
        messages,
        tools: if tool_choice == ToolChoice::None {
            Vec::new()
        } else {
            cfg.tools.clone()
        },
        tool_choice,
        sampling: cfg.sampling.clone(),
        max_tokens: cfg.max_tokens,
    };
    // Text deltas flow to the event stream while the model generates.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let forward = async {
        while let Some(text) = rx.recv().await {
            ctx.emit(Event::StepProgress {
                step_id: step_id.clone(),
                step_type: StepType::Inference,
                delta: Delta::Text(text),
            });
        }
    };
    let (reply, ()) = tokio::join!(infer.infer(req, tx), forward);
    let reply = reply?;
    for c in &reply.tool_calls {
        ctx.emit(Event::StepProgress {
            step_id: step_id.clone(),
            step_type: StepType::Inference,
            delta: Delta::ToolCall(c.clone()),
        });
    }
    let message = Message {
        tool_calls: reply.tool_calls,
        stop_reason: Some(reply.stop_reason),
        ..Message::new(Role::Assistant, reply.content)
    };
    let step = Step::Inference {
        turn_id: ctx.turn_id.to_string(),
        step_id,
        started_at,
        completed_at: (ctx.clock)(),
        model_response: message.clone(),
    };
    ctx.emit(Event::StepComplete(step.clone()));
    steps.push(step);
    Ok(message)
}

async fn tool_step<T: ToolExecutor>(
    tools: &T,
    cfg: &TurnConfig,
    ctx: &TurnContext<'_>,
    history: &mut Vec<Message>,
    calls: &[&ToolCall],
    steps: &mut Vec<Step>,
) {
    let step_id = (ctx.new_id)();
    let started_at = (ctx.clock)();
    ctx.emit(Event::StepStart {
        step_id: step_id.clone(),
        step_type: StepType::ToolExecution,
    });
    let mut responses = Vec::with_capacity(calls.len());
    for call in calls {
        let r = match find_tool(cfg, &call.tool_name) {
            Some(tool) => tools.execute(ctx.session_id, tool, call).await,
            // The model named a tool it was not given: it reads why and may retry.
            None => ToolResponse::error(
                call,
                format!(
                    "unknown tool '{}'; the available tools are: {}",
                    call.tool_name,
                    cfg.tools
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        };
        history.push(Message::tool_result(
            &r.call_id,
            &r.tool_name,
            r.content.clone(),
        ));
        responses.push(r);
    }
    let step = Step::ToolExecution {
        turn_id: ctx.turn_id.to_string(),
        step_id,
        started_at,
        completed_at: (ctx.clock)(),
        tool_calls: calls.iter().map(|c| (*c).clone()).collect(),
        tool_responses: responses,
    };
    ctx.emit(Event::StepComplete(step.clone()));
    steps.push(step);
}

/// The step that records client tools' results when a paused turn resumes (Llama Stack
/// adds one too), appending them to the history.
pub fn client_results_step(
    ctx: &TurnContext<'_>,
    history: &mut Vec<Message>,
    calls: &[ToolCall],
    responses: Vec<ToolResponse>,
) -> Step {
    let now = (ctx.clock)();
    for r in &responses {
        history.push(Message::tool_result(
            &r.call_id,
            &r.tool_name,
            r.content.clone(),
        ));
    }
    let step = Step::ToolExecution {
        turn_id: ctx.turn_id.to_string(),
        step_id: (ctx.new_id)(),
        started_at: now.clone(),
        completed_at: now,
        tool_calls: calls.to_vec(),
        tool_responses: responses,
    };
    ctx.emit(Event::StepComplete(step.clone()));
    step
}
