//! Shields on the server: the registry and serve-wide policy ([`Safety`]), the HTTP
//! routes ([`api`]: shields, run-shield, moderations) and guarded chat ([`guard`]: input
//! shields before generation, output shields while a reply streams).
//!
//! Which shields a chat request passes: the server's `--input-shield` / `--output-shield`
//! ids, plus any the request names itself in `input_shields` / `output_shields` (lists of
//! shield ids, accepted by the OpenAI and Llama Stack chat routes). `--tool-shield` /
//! `tool_shields` judge each tool result in the conversation on its own
//! ([`guard::scan_untrusted`], the hook agents and retrieval use for what they feed a
//! model). A request can add shields, never remove the server's.

pub mod api;
pub mod guard;
pub mod prompt_guard;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ferrollama_safety::ShieldRegistry;
use ferrollama_safety::llama_guard::{Speaker, Turn as GuardTurn};
use ferrollama_safety::prompt_guard::PromptGuard;

use crate::job::{Role, Turn};

/// When the output shields look at a streaming reply.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Check after this many new tokens at the latest.
    pub tokens: usize,
    /// Also check at a sentence end (`.`, `!`, `?` then a space, or a newline) once
    /// [`Window::min_tokens`] new tokens have come.
    pub sentences: bool,
    pub min_tokens: usize,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            tokens: 32,
            sentences: true,
            min_tokens: 8,
        }
    }
}

/// What a chat request's shields do with a violation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Action {
    /// Refuse a flagged prompt, cut a flagged reply (the default).
    #[default]
    Block,
    /// Audit mode: log the violation but let the request go on, with the same checks and the same holding back of output, so a deployment
    /// can watch what a shield would do before enforcing it.
    Log,
}

/// The server's shields and its policy for chat requests.
#[derive(Debug, Default)]
pub struct Safety {
    pub shields: ShieldRegistry,
    /// Shield ids every chat request's conversation passes before generation.
    pub input: Vec<String>,
    /// Shield ids every chat reply passes while it is generated.
    pub output: Vec<String>,
    /// Shield ids every tool result in a chat conversation passes, each on its own, before
    /// generation (third-party content: Prompt Guard in injection mode).
    pub tool: Vec<String>,
    pub window: Window,
    pub action: Action,
    /// Prompt Guard models by (folder, quantized), shared by the shields on them.
    pub prompt_guards: Mutex<HashMap<(PathBuf, bool), Arc<PromptGuard>>>,
}

/// A chat conversation as shields read it. Lenient, since a shield must not make a valid
/// chat request fail: consecutive messages of the same role are joined (with a blank
/// line), system messages after the first are left out, and an assistant's tool calls are
/// written out (code for the interpreter as code, other calls as `{"name", "parameters"}`)
/// so that what the model asked a tool to do is judged too.
pub fn guard_turns(turns: &[Turn]) -> Vec<GuardTurn> {
    convert(turns, true)
}

/// The messages of a `run-shield` request as given, one turn each (the shield checks the
/// order and answers a clear error).
pub fn exact_turns(turns: &[Turn]) -> Vec<GuardTurn> {
    convert(turns, false)
}

fn convert(turns: &[Turn], lenient: bool) -> Vec<GuardTurn> {
    let mut out: Vec<GuardTurn> = Vec::new();
    for (i, t) in turns.iter().enumerate() {
        let speaker = match t.role {
            Role::System if lenient && i > 0 => continue,
            Role::System => Speaker::System,
            Role::User => Speaker::User,
            Role::Assistant => Speaker::Assistant,
            Role::Tool => Speaker::Tool,
        };
        let mut text = t.text.clone();
        for c in &t.tool_calls {
            if !text.is_empty() {
                text.push('\n');
            }
            match (
                c.name.as_str(),
                c.arguments.get("code").and_then(|v| v.as_str()),
            ) {
                ("code_interpreter", Some(code)) => text.push_str(code),
                _ => text.push_str(
                    &serde_json::json!({"name": c.name, "parameters": c.arguments}).to_string(),
                ),
            }
        }
        match out.last_mut() {
            Some(last) if lenient && last.speaker == speaker && speaker != Speaker::Tool => {
                last.text.push_str("\n\n");
                last.text.push_str(&text);
            }
            _ => out.push(GuardTurn::new(speaker, text)),
        }
    }
    out
}
