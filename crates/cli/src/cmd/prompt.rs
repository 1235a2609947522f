//! `ferrollama prompt` (dialog -> ids) and `ferrollama parse-reply` (generated text ->
//! content, tool calls, stop reason).

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
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

fn encode(tok: &Tokenizer, json: &str) -> Result<Value> {
    let d = chat::parse_dialog(json)?;
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
#[serde(deny_unknown_fields)]
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
        let l: ReplyLine = serde_json::from_str(line).context("not a reply object")?;
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
