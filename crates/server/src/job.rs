//! What both APIs share: a dialog with tools becomes prompt tokens and engine sequences, and
//! the engine's events become text, tool calls and usage.
//!
//! Tools are described in the prompt in one of three ways ([`ToolFormat`]):
//! - Llama 3.1 models: Meta's format (built-ins in the system prompt, custom functions as
//!   JSON definitions), calls parsed by Meta's rules;
//! - models whose Jinja template lays out tools itself (Qwen2.5's and other Hermes-style
//!   templates): `tools`, assistant `tool_calls` and `tool` messages go through the
//!   template exactly as transformers and llama.cpp pass them, and calls come back as
//!   `<tool_call>` blocks (or fenced/bare JSON calls, see `calls.rs`);
//! - other templates (SmolLM2's ChatML knows no tools): a system prompt of ours asking for
//!   a JSON call `{"name": ..., "parameters": ...}`.
//!
//! When a call is required (`tool_choice` `required` or a named function), the output is
//! constrained to a call of the format matching the tools' schemas (for Hermes templates
//! `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`), so a well-formed call
//! always comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrollama_engine::constrain::{Constraint, Schema};
use ferrollama_engine::scheduler::{Done, Event, Finish, SeqRequest, SubmitError, TokenLogprob};
use ferrollama_engine::{
    ChatMessage, ChatTemplate, FinishReason, Lora, Model, SamplerConfig, TemplateToolCall,
};
use ferrollama_tokenizer::chat::{
    BuiltinTool, Date, StopReason, SystemPrompt, ToolDefinition, ToolName, ToolParam,
    ToolPromptFormat, custom_tools_prompt, parse_assistant_text, system_prompt,
};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::calls::{Piece, Scanner};
use crate::error::ApiError;
use crate::state::AppState;

/// A dialog turn, whichever API it came from.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    pub role: Role,
    pub text: String,
    pub tool_calls: Vec<Call>,
    /// For a tool result: the call it answers (OpenAI's `tool_call_id`).
    pub tool_call_id: Option<String>,
    /// For a tool result: the tool's name, when the client gives it.
    pub name: Option<String>,
}

impl Turn {
    /// A turn with text only.
    pub fn plain(role: Role, text: impl Into<String>) -> Turn {
        Turn {
            role,
            text: text.into(),
            ..Turn::default()
        }
    }
}

/// How tools are described to the model and calls read back (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// Meta's Llama 3.1 format.
    Llama31,
    /// The model's own Jinja template lays out tools; calls are `<tool_call>` blocks.
    Hermes,
    /// Our system prompt asking for a JSON call.
    Json,
}

impl ToolFormat {
    pub fn of(model: &Model) -> ToolFormat {
        match &model.template {
            ChatTemplate::Llama31 => ToolFormat::Llama31,
            t if t.knows_tools() => ToolFormat::Hermes,
            ChatTemplate::Jinja { .. } => ToolFormat::Json,
        }
    }
}

/// What a Hermes-style call looks like around its JSON (Qwen2.5's template asks for
/// exactly this layout).
pub const HERMES_OPEN: &str = "<tool_call>\n";
pub const HERMES_CLOSE: &str = "\n</tool_call>";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    System,
    #[default]
    User,
    Assistant,
    Tool,
}

impl Role {
    /// A role name of either API (`developer` is OpenAI's newer `system`; `ipython` is
    /// Meta's name for tool output).
    pub fn parse(s: &str) -> Result<Role, ApiError> {
        match s {
            "system" | "developer" => Ok(Role::System),
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            "tool" | "ipython" => Ok(Role::Tool),
            r => Err(ApiError::invalid_param(
                "messages",
                format!("unknown role '{r}' (system, user, assistant, tool)"),
            )),
        }
    }
}

/// Tool-call arguments as sent back to us: a JSON string (OpenAI) or an object.
pub fn arguments_value(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
        v => v.clone(),
    }
}

/// A tool the model may call: its name, description and JSON Schema of the parameters.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

/// A tool call, parsed from generated text.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// Generation settings common to both APIs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_tokens: Option<usize>,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub logprobs: Option<usize>,
    /// Log-probabilities of the prompt's tokens too (completions' `echo` with `logprobs`).
    pub prompt_logprobs: Option<usize>,
    pub n: usize,
    pub response_format: Option<Arc<Schema>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_tokens: None,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: None,
            prompt_logprobs: None,
            n: 1,
            response_format: None,
        }
    }
}

/// A prepared request: prompt tokens and how to read the output.
#[derive(Debug)]
pub struct Job {
    pub model: usize,
    /// The model itself, held so the request never looks it up again.
    pub loaded: Arc<ferrollama_engine::Model>,
    pub model_id: String,
    pub prompt: Vec<u32>,
    pub seq: SeqRequest,
    pub n: usize,
    /// Parse the output for tool calls.
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
    pub format: ToolFormat,
    /// The shields this request passes (set by the chat routes; see [`crate::shields`]).
    pub guard: Option<Arc<crate::shields::guard::Guard>>,
}

/// One finished choice.
#[derive(Debug, Clone)]
pub struct Output {
    pub text: String,
    pub ids: Vec<u32>,
    pub logprobs: Vec<(u32, TokenLogprob)>,
    /// Prompt tokens `1..` when the prompt was scored (see [`Settings::prompt_logprobs`]).
    pub prompt_logprobs: Vec<TokenLogprob>,
    /// The stop token that ended the output, with its log-probability (see
    /// `Done::stop_token`); listed by `/v1/completions` only.
    pub stop_token: Option<(u32, TokenLogprob)>,
    pub finish: Finish,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// Set when the output holds tool calls (then `text` is the raw output).
    pub calls: Vec<Call>,
    /// The text outside tool calls (all of `text` when there are none).
    pub content: String,
}

impl Output {
    pub fn openai_finish(&self) -> &'static str {
        if self.finish == Finish::ContentFilter {
            return "content_filter";
        }
        if !self.calls.is_empty() {
            return "tool_calls";
        }
        match self.finish {
            Finish::Generation(FinishReason::Length | FinishReason::ContextFull)
            | Finish::Timeout
            | Finish::Shutdown => "length",
            Finish::Generation(_) | Finish::ContentFilter => "stop",
        }
    }

    /// Llama Stack's stop reason (a shield's refusal ends the turn): end_of_message after a tool call (Meta's `<|eom_id|>`).
    pub fn stop_reason(&self) -> &'static str {
        match self.finish {
            Finish::Generation(FinishReason::Length | FinishReason::ContextFull)
            | Finish::Timeout
            | Finish::Shutdown => "out_of_tokens",
            _ if !self.calls.is_empty() => "end_of_message",
            _ => "end_of_turn",
        }
    }
}

/// The engine's model `mi` (an index from the registry, which never outlives the model).
pub fn loaded_model(app: &AppState, mi: usize) -> Result<Arc<ferrollama_engine::Model>, ApiError> {
    app.engine
        .model(mi)
        .ok_or_else(|| ApiError::internal(format!("model index {mi} is not loaded")))
}

/// Finds a model by id, with the LoRA adapter the id runs it with (if any).
pub fn resolve_model(app: &AppState, id: &str) -> Result<(usize, Option<Arc<Lora>>), ApiError> {
    let i = app
        .models
        .resolve_lora(id)
        .ok_or_else(|| ApiError::model_not_found(id, &app.models.ids()))?;
    crate::reqlog::set_model(id);
    Ok(i)
}

/// JSON Schema for a built-in tool's arguments (as Meta's tools take them).
fn builtin_schema(b: BuiltinTool) -> Value {
    let key = if b == BuiltinTool::CodeInterpreter {
        "code"
    } else {
        "query"
    };
    json!({"type": "object", "properties": {key: {"type": "string"}}, "required": [key]})
}

/// The tool's parameters schema, built-ins filled in.
fn tool_schema(t: &ToolSpec) -> Value {
    match BuiltinTool::parse(&t.name) {
        Some(b) if t.parameters.is_null() => builtin_schema(b),
        _ if t.parameters.is_null() => json!({"type": "object"}),
        _ => t.parameters.clone(),
    }
}

/// Schema of a forced call: `{"name": one of the tools, "parameters": its arguments}`.
/// Each tool's parameters are compiled as their own document, so their `$ref`s resolve.
pub fn call_schema(tools: &[ToolSpec], only: Option<&str>) -> Result<Schema, ApiError> {
    forced_call_schema(tools, only, Schema::tool_call)
}

/// Schema of a forced Hermes-style call: `<tool_call>\n{"name": one of the tools,
/// "arguments": its arguments}\n</tool_call>`.
pub fn tagged_call_schema(tools: &[ToolSpec], only: Option<&str>) -> Result<Schema, ApiError> {
    forced_call_schema(tools, only, |refs| {
        Schema::tagged_tool_call(refs, HERMES_OPEN, HERMES_CLOSE)
    })
}

/// The tools a forced call may name (all, or the one `tool_choice` names), compiled by
/// `build` in either call format.
fn forced_call_schema<E: std::fmt::Display>(
    tools: &[ToolSpec],
    only: Option<&str>,
    build: impl FnOnce(&[(&str, &Value)]) -> Result<Schema, E>,
) -> Result<Schema, ApiError> {
    let schemas: Vec<(&str, Value)> = tools
        .iter()
        .filter(|t| only.is_none_or(|n| n == t.name))
        .map(|t| (t.name.as_str(), tool_schema(t)))
        .collect();
    if schemas.is_empty() {
        return Err(ApiError::invalid_param(
            "tool_choice",
            "tool_choice names a function that is not in `tools`",
        ));
    }
    let refs: Vec<(&str, &Value)> = schemas.iter().map(|(n, v)| (*n, v)).collect();
    build(&refs).map_err(|e| ApiError::invalid_param("tools", format!("tool parameters: {e}")))
}

/// Compiles a response schema, or answers 400 naming what is not supported.
pub fn compile_schema(schema: &Value, param: &str) -> Result<Arc<Schema>, ApiError> {
    Schema::compile(schema)
        .map(Arc::new)
        .map_err(|e| ApiError::invalid_param(param, format!("response_format: {e}")))
}

/// Turns the dialog into prompt tokens and the engine request.
pub fn prepare(
    app: &AppState,
    model_id: &str,
    turns: &[Turn],
    tools: Vec<ToolSpec>,
    tool_choice: ToolChoice,
    settings: Settings,
) -> Result<Job, ApiError> {
    let (mi, lora) = resolve_model(app, model_id)?;
    let model = &loaded_model(app, mi)?;
    if turns.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must not be empty",
        ));
    }
    for t in &tools {
        if t.name.is_empty() || t.name.len() > 128 {
            return Err(ApiError::invalid_param(
                "tools",
                "a tool name must be 1 to 128 characters",
            ));
        }
    }
    // With tool_choice "none" the tools stay in the prompt (the conversation may refer to
    // them, as with OpenAI) but no call is parsed or forced.
    let use_tools = !tools.is_empty() && tool_choice != ToolChoice::None;
    let format = ToolFormat::of(model);
    let (messages, template_tools) = render_dialog(model, turns, &tools);
    let prompt = model
        .chat_prompt_with_tools(&messages, &template_tools)
        .map_err(|e| ApiError::invalid(format!("cannot apply the chat template: {e}")))?;
    let forced = match (&tool_choice, use_tools) {
        (ToolChoice::Required, true) => Some(None),
        (ToolChoice::Named(n), true) => Some(Some(n.as_str())),
        _ => None,
    };
    let constraint = match forced {
        Some(only) if format == ToolFormat::Hermes => {
            Some(Arc::new(tagged_call_schema(&tools, only)?))
        }
        Some(only) => Some(Arc::new(call_schema(&tools, only)?)),
        None => settings.response_format.clone(),
    };
    let seq = seq_request(app, mi, lora, prompt.clone(), &settings, constraint)?;
    Ok(Job {
        loaded: model.clone(),
        model: mi,
        model_id: model_id.to_string(),
        prompt,
        seq,
        n: settings.n,
        tools: if use_tools { tools } else { Vec::new() },
        tool_choice,
        format,
        guard: None,
    })
}

/// A plain-text completion of `text` (no chat template).
pub fn prepare_completion(
    app: &AppState,
    model_id: &str,
    text: &str,
    settings: Settings,
) -> Result<Job, ApiError> {
    let (mi, _) = resolve_model(app, model_id)?;
    let prompt = loaded_model(app, mi)?.encode(text, true, false);
    prepare_completion_ids(app, model_id, prompt, settings)
}

/// A plain-text completion of prompt token ids (as lm-evaluation-harness sends them).
pub fn prepare_completion_ids(
    app: &AppState,
    model_id: &str,
    prompt: Vec<u32>,
    settings: Settings,
) -> Result<Job, ApiError> {
    let (mi, lora) = resolve_model(app, model_id)?;
    let model = &loaded_model(app, mi)?;
    let vocab = model.llama.config.vocab_size;
    if let Some(t) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::invalid_param(
            "prompt",
            format!("token id {t} is outside the vocabulary ({vocab} tokens)"),
        ));
    }
    if prompt.is_empty() {
        return Err(ApiError::invalid_param("prompt", "the prompt is empty"));
    }
    let constraint = settings.response_format.clone();
    let seq = seq_request(app, mi, lora, prompt.clone(), &settings, constraint)?;
    Ok(Job {
        loaded: model.clone(),
        model: mi,
        model_id: model_id.to_string(),
        prompt,
        seq,
        n: settings.n,
        tools: Vec::new(),
        tool_choice: ToolChoice::None,
        format: ToolFormat::Json,
        guard: None,
    })
}

fn seq_request(
    app: &AppState,
    mi: usize,
    lora: Option<Arc<Lora>>,
    prompt: Vec<u32>,
    s: &Settings,
    constraint: Option<Arc<Schema>>,
) -> Result<SeqRequest, ApiError> {
    let ctx = app
        .engine
        .context(mi)
        .ok_or_else(|| ApiError::internal(format!("no model {mi}")))?;
    if prompt.len() >= ctx {
        return Err(ApiError::invalid_param(
            "messages",
            format!(
                "the prompt has {} tokens but the context holds {ctx}; shorten it",
                prompt.len()
            ),
        ));
    }
    let room = ctx - prompt.len();
    let max_tokens = s
        .max_tokens
        .unwrap_or(app.limits.default_max_tokens)
        .min(app.limits.max_tokens)
        .min(room);
    // Zero only when asked for (a scoring request, `echo` with `max_tokens: 0`).
    if max_tokens == 0 && s.max_tokens != Some(0) {
        return Err(ApiError::invalid_param(
            "max_tokens",
            "max_tokens must be at least 1",
        ));
    }
    if s.n == 0 || s.n > app.limits.max_n {
        return Err(ApiError::invalid_param(
            "n",
            format!("n must be between 1 and {}", app.limits.max_n),
        ));
    }
    s.sampler
        .validate()
        .map_err(|e| ApiError::invalid_param("sampling", e))?;
    Ok(SeqRequest {
        model: mi,
        prompt,
        max_tokens,
        sampler: s.sampler.clone(),
        stop: s.stop.clone(),
        ignore_eos: s.ignore_eos,
        logprobs: s.logprobs,
        prompt_logprobs: s.prompt_logprobs,
        constraint: constraint.map(Constraint::Json),
        watch: Vec::new(),
        deadline: Some(Instant::now() + app.limits.request_timeout),
        lora,
    })
}

/// The dialog as the model's template sees it, and the tools to give the template itself
/// (for templates that lay out tools; otherwise tools are described in a system message).
fn render_dialog(
    model: &Model,
    turns: &[Turn],
    tools: &[ToolSpec],
) -> (Vec<ChatMessage>, Vec<Value>) {
    if ToolFormat::of(model) == ToolFormat::Hermes {
        return hermes_dialog(turns, tools);
    }
    let llama31 = matches!(model.template, ChatTemplate::Llama31);
    let mut system: Vec<String> = turns
        .iter()
        .filter(|t| t.role == Role::System)
        .map(|t| t.text.clone())
        .collect();
    let mut out = Vec::new();
    if !tools.is_empty() {
        let builtins: Vec<BuiltinTool> = tools
            .iter()
            .filter_map(|t| BuiltinTool::parse(&t.name))
            .collect();
        let customs: Vec<&ToolSpec> = tools
            .iter()
            .filter(|t| BuiltinTool::parse(&t.name).is_none())
            .collect();
        let instruction = (!system.is_empty()).then(|| system.join("\n"));
        if llama31 {
            // Meta's layout: built-ins announced in the system prompt; custom functions
            // defined in JSON after it.
            let mut s = system_prompt(&SystemPrompt {
                builtin_tools: builtins,
                custom_tools: !customs.is_empty(),
                today: Date::today(),
                instruction,
            });
            if !customs.is_empty() {
                let defs: Vec<ToolDefinition> = customs.iter().map(|t| definition(t)).collect();
                s.push('\n');
                s.push_str(&custom_tools_prompt(&defs, ToolPromptFormat::Json));
            }
            system = vec![s];
        } else {
            let list: Vec<Value> = tools
                .iter()
                .map(|t| {
                    json!({"name": t.name, "description": t.description, "parameters": tool_schema(t)})
                })
                .collect();
            let mut s = instruction.map(|i| i + "\n\n").unwrap_or_default();
            s.push_str(
                "You can call these tools. To call one, answer with only a JSON object of the form \
                 {\"name\": tool name, \"parameters\": {argument name: value}} and nothing else.\n",
            );
            s.push_str(&Value::Array(list).to_string());
            system = vec![s];
        }
    }
    if !system.is_empty() {
        out.push(ChatMessage::new("system", &system.join("\n")));
    }
    for t in turns {
        match t.role {
            Role::System => {}
            Role::User => out.push(ChatMessage::new("user", &t.text)),
            Role::Tool => out.push(ChatMessage::new("tool", &t.text)),
            Role::Assistant if llama31 => {
                // Meta's encoding of the calls (python_tag, `.call(query=...)`, eom) is the
                // prompt builder's: the calls go structured.
                let mut m = ChatMessage::new("assistant", &t.text);
                m.tool_calls = t
                    .tool_calls
                    .iter()
                    .map(|c| {
                        TemplateToolCall::new(
                            (!c.id.is_empty()).then(|| c.id.clone()),
                            &c.name,
                            c.arguments.clone(),
                        )
                    })
                    .collect();
                out.push(m);
            }
            Role::Assistant => {
                let mut text = t.text.clone();
                for c in &t.tool_calls {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&json!({"name": c.name, "parameters": c.arguments}).to_string());
                }
                out.push(ChatMessage::new("assistant", &text));
            }
        }
    }
    (out, Vec::new())
}

/// Messages and tools for a template that lays out tools itself, as transformers and
/// llama.cpp pass them: system turns joined into the first message, assistant calls with
/// object arguments, tool results with their call id and tool name, and the tools in
/// OpenAI's shape (`{"type": "function", "function": {"name", "description",
/// "parameters"}}`, keys in that order, as llama.cpp rebuilds them).
pub(crate) fn hermes_dialog(turns: &[Turn], tools: &[ToolSpec]) -> (Vec<ChatMessage>, Vec<Value>) {
    let mut out = Vec::new();
    let system: Vec<&str> = turns
        .iter()
        .filter(|t| t.role == Role::System)
        .map(|t| t.text.as_str())
        .collect();
    if !system.is_empty() {
        out.push(ChatMessage::new("system", &system.join("\n")));
    }
    for (i, t) in turns.iter().enumerate() {
        match t.role {
            Role::System => {}
            Role::User => out.push(ChatMessage::new("user", &t.text)),
            Role::Assistant => {
                let mut m = ChatMessage::new("assistant", &t.text);
                if !t.tool_calls.is_empty() && t.text.is_empty() {
                    // OpenAI clients send null content with tool calls.
                    m.content = None;
                }
                m.tool_calls = t
                    .tool_calls
                    .iter()
                    .map(|c| {
                        TemplateToolCall::new(
                            (!c.id.is_empty()).then(|| c.id.clone()),
                            &c.name,
                            c.arguments.clone(),
                        )
                    })
                    .collect();
                out.push(m);
            }
            Role::Tool => {
                let mut m = ChatMessage::new("tool", &t.text);
                m.tool_call_id = t.tool_call_id.clone();
                // The tool's name: given, or that of the call this result answers.
                m.name = t.name.clone().or_else(|| {
                    let id = t.tool_call_id.as_deref()?;
                    turns[..i]
                        .iter()
                        .rev()
                        .flat_map(|u| &u.tool_calls)
                        .find(|c| c.id == id)
                        .map(|c| c.name.clone())
                });
                out.push(m);
            }
        }
    }
    let tools = tools
        .iter()
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": tool_schema(t)}})
        })
        .collect();
    (out, tools)
}

/// A tool as Meta's custom-tool prompt lists it.
fn definition(t: &ToolSpec) -> ToolDefinition {
    let parameters = ToolParam::from_json_schema(&tool_schema(t));
    ToolDefinition {
        name: t.name.clone(),
        description: t.description.clone(),
        parameters,
    }
}

/// One sequence's engine events, as submitted for a request. It feeds the request's log
/// entry (time to first token, token counts) as events pass, and keeps the entry open
/// until the sequence's consumer is gone.
#[derive(Debug)]
pub struct Events {
    rx: UnboundedReceiver<Event>,
    log: Option<Arc<crate::reqlog::Entry>>,
}

impl Events {
    pub fn new(rx: UnboundedReceiver<Event>) -> Events {
        Events {
            rx,
            log: crate::reqlog::current(),
        }
    }

    /// Events that are not logged again (already logged where they were made).
    pub fn unlogged(rx: UnboundedReceiver<Event>) -> Events {
        Events { rx, log: None }
    }

    /// The next event, as `UnboundedReceiver::recv`.
    pub async fn recv(&mut self) -> Option<Event> {
        let e = self.rx.recv().await;
        if let (Some(log), Some(ev)) = (&self.log, &e) {
            match ev {
                Event::Token { .. } => log.token(),
                Event::Done(d) => log.done(d.prompt_tokens, d.cached_tokens, d.completion_tokens),
                Event::Error(_) => {}
            }
        }
        e
    }
}

/// Submits one sequence, mapping refusals to HTTP errors.
pub fn submit(app: &AppState, seq: SeqRequest) -> Result<Events, ApiError> {
    let rx = app.engine.submit(seq).map_err(|e| match e {
        SubmitError::QueueFull { retry_after_s, .. } => {
            ApiError::busy(e.to_string(), retry_after_s)
        }
        SubmitError::ShuttingDown => ApiError::unavailable(e.to_string()),
        SubmitError::Invalid(m) => ApiError::invalid(m),
    })?;
    Ok(Events::new(rx))
}

/// Submits the job's `n` sequences (seeds `seed, seed + 1, ...`).
pub fn submit_all(app: &AppState, job: &Job) -> Result<Vec<Events>, ApiError> {
    (0..job.n)
        .map(|i| {
            let mut seq = job.seq.clone();
            seq.sampler.seed = seq.sampler.seed.wrapping_add(i as u64);
            submit(app, seq)
        })
        .collect()
}

/// Submits the job's sequences through its shields: a conversation an input shield flags
/// gets the refusal and is never submitted; with output shields each sequence's events
/// pass [`crate::shields::guard::moderate`].
pub async fn submit_guarded(app: &AppState, job: &Job) -> Result<Vec<Events>, ApiError> {
    use crate::shields::guard;
    let Some(g) = &job.guard else {
        return submit_all(app, job);
    };
    if let Some(flag) = guard::check_input(app, g).await? {
        if g.action == crate::shields::Action::Block {
            tracing::info!(shield = %flag.shield, codes = ?flag.verdict.codes, "input shield refused a request");
            return Ok((0..job.n).map(|_| guard::refusal(job)).collect());
        }
        tracing::warn!(shield = %flag.shield, codes = ?flag.verdict.codes, "input shield flagged a request (--shield-action log: not refused)");
    }
    let rxs = submit_all(app, job)?;
    if g.output.is_empty() {
        return Ok(rxs);
    }
    Ok(rxs
        .into_iter()
        .map(|rx| guard::moderate(app.engine.clone(), g.clone(), rx, job.prompt.len()))
        .collect())
}

/// Collects one sequence's events into an output.
pub async fn collect(app: &AppState, job: &Job, mut rx: Events) -> Result<Output, ApiError> {
    let mut out = Output {
        text: String::new(),
        ids: Vec::new(),
        logprobs: Vec::new(),
        prompt_logprobs: Vec::new(),
        stop_token: None,
        finish: Finish::Generation(FinishReason::Stop),
        prompt_tokens: job.prompt.len(),
        cached_tokens: 0,
        completion_tokens: 0,
        calls: Vec::new(),
        content: String::new(),
    };
    loop {
        match rx.recv().await {
            Some(Event::Token { id, text, logprob }) => {
                out.ids.push(id);
                out.text.push_str(&text);
                if let Some(lp) = logprob {
                    out.logprobs.push((id, lp));
                }
            }
            Some(Event::Done(d)) => {
                finish_output(app, job, &mut out, d);
                return Ok(out);
            }
            Some(Event::Error(e)) => return Err(engine_error(e)),
            None => return Err(ApiError::internal("the engine dropped a sequence")),
        }
    }
}

/// Engine errors are about the request (too large for memory) or shutdown.
pub fn engine_error(e: String) -> ApiError {
    if e.contains("shutting down") {
        ApiError::unavailable(e)
    } else if e.contains("internal") {
        ApiError::internal(e)
    } else {
        ApiError::invalid(e)
    }
}

/// Applies `Done` and parses tool calls.
pub fn finish_output(_app: &AppState, job: &Job, out: &mut Output, d: Done) {
    apply_done(out, d);
    out.content = out.text.clone();
    if job.tools.is_empty() {
        return;
    }
    if job.format == ToolFormat::Llama31 {
        let model = &job.loaded;
        out.calls = parse_calls(model, &job.tools, &out.ids, &out.text);
        if !out.calls.is_empty() {
            out.content.clear();
        }
    } else {
        let (content, calls) = crate::calls::split(tool_names(job), &out.text);
        out.content = content;
        out.calls = calls
            .into_iter()
            .enumerate()
            .map(|(i, (name, arguments))| Call {
                id: call_id(i),
                name,
                arguments,
            })
            .collect();
    }
}

/// Applies `Done` (its trailing text, finish reason and counts), parsing nothing.
pub fn apply_done(out: &mut Output, d: Done) {
    out.text.push_str(&d.text);
    out.finish = d.finish;
    out.prompt_tokens = d.prompt_tokens;
    out.cached_tokens = d.cached_tokens;
    out.completion_tokens = d.completion_tokens;
    out.prompt_logprobs = d.prompt_logprobs;
    out.stop_token = d.stop_token;
}

fn tool_names(job: &Job) -> Vec<String> {
    job.tools.iter().map(|t| t.name.clone()).collect()
}

/// Streams a reply's text and calls as they settle: for jobs with tools in the Hermes or
/// JSON format (Llama 3.1's calls are parsed when the reply ends).
#[derive(Debug)]
pub struct CallStream {
    scanner: Scanner,
    /// Calls released so far.
    pub calls: Vec<Call>,
    /// Text released so far.
    pub content: String,
}

/// What a [`CallStream`] released.
#[derive(Debug, Clone)]
pub enum Release {
    Text(String),
    /// A call and its index among the reply's calls.
    Call(usize, Call),
}

impl CallStream {
    /// A stream for the job, or `None` when its output is not read for calls this way.
    pub fn for_job(job: &Job) -> Option<CallStream> {
        (!job.tools.is_empty() && job.format != ToolFormat::Llama31).then(|| CallStream {
            scanner: Scanner::new(tool_names(job)),
            calls: Vec::new(),
            content: String::new(),
        })
    }

    /// Feeds generated text.
    pub fn push(&mut self, text: &str) -> Vec<Release> {
        let pieces = self.scanner.push(text);
        self.release(pieces)
    }

    /// The reply ended.
    pub fn finish(&mut self) -> Vec<Release> {
        let pieces = self.scanner.finish();
        self.release(pieces)
    }

    fn release(&mut self, pieces: Vec<Piece>) -> Vec<Release> {
        pieces
            .into_iter()
            .map(|p| match p {
                Piece::Text(t) => {
                    self.content.push_str(&t);
                    Release::Text(t)
                }
                Piece::Call { name, arguments } => {
                    let k = self.calls.len();
                    let c = Call {
                        id: call_id(k),
                        name,
                        arguments,
                    };
                    self.calls.push(c.clone());
                    Release::Call(k, c)
                }
            })
            .collect()
    }

    /// Puts what was released into the finished output.
    pub fn into_output(self, out: &mut Output) {
        out.calls = self.calls;
        out.content = self.content;
    }
}

/// Tool calls in generated output: Meta's formats for Llama 3.1 models (JSON, function
/// tags, `<|python_tag|>` built-ins), and the JSON call everywhere.
pub fn parse_calls(model: &Model, tools: &[ToolSpec], ids: &[u32], text: &str) -> Vec<Call> {
    let known = |n: &str| tools.iter().any(|t| t.name == n);
    let mut calls = Vec::new();
    if let Ok(v) = serde_json::from_str::<Value>(text.trim())
        && let Some(c) = json_call(&v)
        && known(&c.0)
    {
        calls.push(Call {
            id: call_id(0),
            name: c.0,
            arguments: c.1,
        });
        return calls;
    }
    if matches!(model.template, ChatTemplate::Llama31) {
        // Decode with special tokens so `<|python_tag|>` is visible to Meta's parser.
        let raw: Vec<u8> = ids
            .iter()
            .flat_map(|&i| {
                model
                    .tokenizer
                    .bpe
                    .token_bytes(i, true)
                    .unwrap_or(&[])
                    .to_vec()
            })
            .collect();
        let raw = String::from_utf8_lossy(&raw);
        let msg = parse_assistant_text(&raw, StopReason::EndOfTurn);
        for (i, c) in msg.tool_calls.into_iter().enumerate() {
            let name = match &c.tool_name {
                ToolName::Builtin(b) => b.name().to_string(),
                ToolName::Custom(s) => s.clone(),
            };
            if known(&name) {
                let arguments = Value::Object(c.arguments);
                calls.push(Call {
                    id: call_id(i),
                    name,
                    arguments,
                });
            }
        }
    }
    calls
}

/// `{"name": .., "parameters"|"arguments": {..}}`, or OpenAI's `{"type":"function", ...}`.
fn json_call(v: &Value) -> Option<(String, Value)> {
    let o = v.as_object()?;
    let o = match o.get("function").and_then(Value::as_object) {
        Some(f) => f,
        None => o,
    };
    let name = o.get("name")?.as_str()?.to_string();
    let args = o
        .get("parameters")
        .or_else(|| o.get("arguments"))
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    let args = match args {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        a => a,
    };
    Some((name, args))
}

fn call_id(i: usize) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("call_{n:x}{i}")
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Visible text of a token for logprob listings.
pub fn token_text(model: &Model, id: u32) -> (String, Vec<u8>) {
    let b = model.tokenizer.bpe.token_bytes(id, true).unwrap_or(&[]);
    (String::from_utf8_lossy(b).into_owned(), b.to_vec())
}
