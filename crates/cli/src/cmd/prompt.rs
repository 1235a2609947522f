//! `ferrollama prompt` (dialog -> ids) and `ferrollama parse-reply` (generated text ->
//! content, tool calls, stop reason).

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use ferrollama_tokenizer::chat::{self, ChatFormat, Message, StopReason};
use ferrollama_tokenizer::{AllowedSpecial, Tokenizer};
use serde::Deserialize;
use serde_json::{Value, json};

use super::TokenizerArg;
use crate::jsonl;

/// Dialog -> prompt ids in the Llama 3.1 format, exactly as Meta's ChatFormat.
///
/// A dialog is {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str or
/// [{"type": "text", "text": str}], "context": str?, "stop_reason": "end_of_turn"|
/// "end_of_message"?, "tool_calls": [{"tool_name", "arguments"}]}], "tool_prompt_format":
/// "json"|"function_tag"|"python_list"}. Prints {"ids": [...], "text": "..."}.
#[derive(Debug, clap::Args)]
pub struct PromptArgs {
    #[command(flatten)]
    tokenizer: TokenizerArg,
    /// One dialog per stdin line, one answer per line (otherwise stdin is one dialog).
    #[arg(long)]
    jsonl: bool,
}

/// The shape of a dialog, for errors.
const DIALOG_SHAPE: &str =
    r#"expected an object with "messages": [{"role": "user", "content": "..."}, ...]"#;

/// Parses a dialog, with errors in terms of the JSON the user wrote: serde's own messages
/// name our internal wire types (`DialogWire`, `MessageWire`...), which mean nothing to
/// the user, so the shape is checked here first and any type name left is reworded.
pub(crate) fn parse_dialog(json: &str) -> Result<chat::wire::Dialog> {
    let v: Value = serde_json::from_str(json).map_err(|e| anyhow!("not valid JSON: {e}"))?;
    let Some(obj) = v.as_object() else {
        bail!("{DIALOG_SHAPE}, got {}", json_kind(&v));
    };
    match obj.get("messages") {
        None => bail!("{DIALOG_SHAPE}; this object has no \"messages\""),
        Some(Value::Array(ms)) => {
            for (i, m) in ms.iter().enumerate() {
                if !m.is_object() {
                    bail!(
                        "messages[{i}]: expected an object with \"role\" and \"content\", got {}",
                        json_kind(m)
                    );
                }
            }
        }
        Some(other) => bail!(
            "{DIALOG_SHAPE}; \"messages\" is {}, not a list",
            json_kind(other)
        ),
    }
    // The shape is checked: "not a dialog object" would now only mislead.
    chat::parse_dialog(json).map_err(|e| {
        anyhow!(
            "{}",
            user_words(&e.to_string().replace("not a dialog object: ", ""))
        )
    })
}

/// "a string", "a number"... for errors.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Replaces the internal type names serde puts in its messages with the JSON they stand
/// for.
fn user_words(msg: &str) -> String {
    const WORDS: [(&str, &str); 5] = [
        (
            "data did not match any variant of untagged enum ContentWire",
            r#""content" must be a string or a list of {"type": "text", "text": "..."} items"#,
        ),
        ("struct DialogWire", r#"an object with "messages""#),
        (
            "struct MessageWire",
            r#"a message object with "role" and "content""#,
        ),
        (
            "struct ItemWire",
            r#"a content item {"type": "text", "text": "..."}"#,
        ),
        (
            "struct ToolCallWire",
            r#"a tool call {"tool_name": "...", "arguments": {...}}"#,
        ),
    ];
    let mut out = msg.to_string();
    for (from, to) in WORDS {
        out = out.replace(from, to);
    }
    // Any wire type added later: at least no Rust name.
    out.split(' ')
        .map(|w| {
            let core = w.trim_matches(|c: char| !c.is_alphanumeric());
            if core.len() > 4 && core.ends_with("Wire") && core.starts_with(char::is_uppercase) {
                w.replace(core, "value")
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn encode(tok: &Tokenizer, json: &str) -> Result<Value> {
    let d = parse_dialog(json)?;
    let ids = ChatFormat::new(tok).encode_dialog_prompt(&d.messages, d.tool_prompt_format)?;
    let text = tok.decode(&ids)?;
    Ok(json!({ "ids": ids, "text": text }))
}

pub fn prompt(a: PromptArgs) -> Result<ExitCode> {
    let tok = a.tokenizer.load()?;
    if a.jsonl {
        return jsonl::each_line(|line| encode(&tok, line));
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("cannot read stdin as UTF-8")?;
    println!("{}", encode(&tok, &s)?);
    Ok(ExitCode::SUCCESS)
}

/// Generated assistant output -> {"content", "stop_reason", "tool_calls"}, as Meta's
/// decode_assistant_message: built-in calls (brave_search, wolfram_alpha,
/// code_interpreter), custom calls in JSON, <function=...> and Python-list form.
///
/// Reads JSON lines {"text": str} or {"ids": [...]}, with an optional "stop_reason" used
/// when the output ends in no stop token (default "out_of_tokens").
#[derive(Debug, clap::Args)]
pub struct ParseReplyArgs {
    #[command(flatten)]
    tokenizer: TokenizerArg,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"an object with "text" (a string) or "ids" (a list of token ids)"#
)]
struct ReplyLine {
    text: Option<String>,
    ids: Option<Vec<u32>>,
    stop_reason: Option<String>,
}

fn message_json(m: &Message) -> Value {
    let calls: Vec<Value> = m
        .tool_calls
        .iter()
        .map(|c| json!({"call_id": c.call_id, "tool_name": c.tool_name.as_str(), "arguments": c.arguments}))
        .collect();
    json!({
        "content": m.content.joined(),
        "stop_reason": m.stop_reason.map(|s| s.as_str()),
        "tool_calls": calls,
    })
}

pub fn parse_reply(a: ParseReplyArgs) -> Result<ExitCode> {
    let tok = a.tokenizer.load()?;
    jsonl::each_line(|line| {
        let l: ReplyLine = serde_json::from_str(line).map_err(|e| anyhow!("{e}"))?;
        let fallback = match l.stop_reason.as_deref() {
            None => StopReason::OutOfTokens,
            Some(s) => {
                StopReason::parse(s).with_context(|| format!("unknown stop_reason {s:?}"))?
            }
        };
        let m = match (l.text, l.ids) {
            (Some(t), None) => {
                // Special-token text in generated output is structure, so allow it.
                let ids = tok.encode(&t, false, false, AllowedSpecial::All);
                chat::decode_assistant_message(&tok, &ids, fallback)?
            }
            (None, Some(ids)) => chat::decode_assistant_message(&tok, &ids, fallback)?,
            _ => bail!("give exactly one of \"text\" or \"ids\""),
        };
        Ok(message_json(&m))
    })
}
