//! `ferrollama guard-prompt` (a conversation -> Llama Guard 3's prompt and ids, no model)
//! and `ferrollama guard` (a conversation -> a Llama Guard verdict).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use ferrollama_engine::scheduler::{Engine, EngineConfig};
use ferrollama_safety::llama_guard::{GuardSize, LlamaGuard, Speaker, Turn, render};
use ferrollama_tokenizer::Tokenizer;
use ferrollama_tokenizer::chat::{self, ChatFormat, Message, Role, ToolPromptFormat};
use serde_json::{Value, json};

use super::TokenizerArg;
use super::model_args::ModelArgs;
use crate::jsonl;

/// Llama Guard 3's prompt for a conversation, as Meta writes it (spec §5.1), without a
/// model.
///
/// Reads JSON lines {"messages": [...], "excluded_categories": ["S3", ...]} (messages as
/// `ferrollama prompt` takes them; "guard_model": "1b"|"8b" on a line overrides
/// --guard-model) and writes {"text": the guard prompt, "ids": the whole Llama 3.1 prompt
/// from <|begin_of_text|> to the assistant header}, one line per input line. The last
/// message is the one classified (`User` or `Agent`); a first message that is not the
/// user's is treated as the user's (llama-stack's rule).
#[derive(Debug, clap::Args)]
pub struct GuardPromptArgs {
    #[command(flatten)]
    tokenizer: TokenizerArg,
    /// Read JSON lines (one conversation per line); otherwise stdin is one conversation.
    #[arg(long)]
    jsonl: bool,
    /// Which Llama Guard 3: the 1B knows S1-S13, the 8B S1-S14.
    #[arg(long, value_name = "1b|8b", default_value = "8b", value_parser = parse_size)]
    guard_model: GuardSize,
}

/// Classifies conversations with a Llama Guard 3 model (or any Llama-architecture model
/// standing in for one: its answer is constrained to `safe` | `unsafe\nS<n>,...`).
///
/// Reads the same lines as `guard-prompt` and writes {"safe": bool, "codes": ["S1", ...],
/// "categories": ["Violent Crimes", ...], "unsafe_score": P(first token is "unsafe")}.
/// Decoding is greedy, so answers are deterministic.
#[derive(Debug, clap::Args)]
pub struct GuardArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Read JSON lines (one conversation per line); otherwise stdin is one conversation.
    #[arg(long)]
    jsonl: bool,
    /// Which category set (default: from the model's name or width; 1B: S1-S13, 8B: S1-S14).
    #[arg(long, value_name = "1b|8b", value_parser = parse_size)]
    guard_model: Option<GuardSize>,
}

fn parse_size(s: &str) -> Result<GuardSize, String> {
    GuardSize::parse(s).ok_or_else(|| format!("{s:?}: expected 1b or 8b"))
}

/// One input line: the conversation, its exclusions and an optional size.
struct Line {
    turns: Vec<Turn>,
    excluded: Vec<String>,
    size: Option<GuardSize>,
}

fn parse_line(json: &str) -> Result<Line> {
    let mut v: Value = serde_json::from_str(json).map_err(|e| anyhow!("not valid JSON: {e}"))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| anyhow!(r#"expected an object with "messages": [...]"#))?;
    let excluded = match obj.remove("excluded_categories") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|c| match c {
                Value::String(s) => Ok(s),
                other => Err(anyhow!(
                    "excluded_categories: {other} is not a string like \"S3\""
                )),
            })
            .collect::<Result<_>>()?,
        Some(other) => bail!("excluded_categories must be a list like [\"S3\"], got {other}"),
    };
    let size = match obj.remove("guard_model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_size(&s).map_err(|e| anyhow!("guard_model: {e}"))?),
        Some(other) => bail!("guard_model must be \"1b\" or \"8b\", got {other}"),
    };
    let dialog = super::prompt::parse_dialog(&v.to_string())?;
    let turns = dialog
        .messages
        .iter()
        .map(|m| turn(m, dialog.tool_prompt_format))
        .collect::<Result<_>>()?;
    Ok(Line {
        turns,
        excluded,
        size,
    })
}

/// A dialog message as a guard turn: its text, and an assistant's tool calls written as
/// the model writes them (so code sent to the interpreter is classified too).
fn turn(m: &Message, fmt: ToolPromptFormat) -> Result<Turn> {
    let speaker = match m.role {
        Role::System => Speaker::System,
        Role::User => Speaker::User,
        Role::Assistant => Speaker::Assistant,
        Role::Tool => Speaker::Tool,
    };
    let mut text = m.content.joined();
    for call in &m.tool_calls {
        text.push_str(&chat::encode_tool_call(call, fmt)?);
    }
    Ok(Turn::new(speaker, text))
}

fn guard_prompt_line(tok: &Tokenizer, size: GuardSize, json: &str) -> Result<Value> {
    let l = parse_line(json)?;
    let text = render(&l.turns, l.size.unwrap_or(size), &l.excluded)?;
    let ids = ChatFormat::new(tok).encode_dialog_prompt(
        &[Message::new(Role::User, text.as_str())],
        ToolPromptFormat::Json,
    )?;
    Ok(json!({ "text": text, "ids": ids }))
}

pub fn guard_prompt(a: GuardPromptArgs) -> Result<ExitCode> {
    let tok = a.tokenizer.load()?;
    if a.jsonl {
        return jsonl::each_line(|line| guard_prompt_line(&tok, a.guard_model, line));
    }
    let s = std::io::read_to_string(std::io::stdin()).context("cannot read stdin as UTF-8")?;
    println!("{}", guard_prompt_line(&tok, a.guard_model, &s)?);
    Ok(ExitCode::SUCCESS)
}

pub fn guard(a: GuardArgs) -> Result<ExitCode> {
    if a.model.model.is_none() {
        bail!(
            "give the guard model with -m: a Llama Guard 3 GGUF file, Hugging Face folder, \
             Meta checkpoint or store name (e.g. after `ferrollama pull hf:...`)"
        );
    }
    let model = Arc::new(a.model.load()?);
    let ctx = a
        .model
        .ctx_size
        .unwrap_or_else(|| model.llama.config.max_seq_len.min(8192));
    let config = EngineConfig {
        threads: a.model.threads(),
        ctx,
        kv_positions: ctx.max(4096),
        ..EngineConfig::default()
    };
    let engine = Engine::start(vec![model.clone()], config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let check = |json: &str| -> Result<Value> {
        let l = parse_line(json)?;
        let shield = LlamaGuard::new(&model, 0, l.size.or(a.guard_model), l.excluded)?;
        let v = rt.block_on(shield.check(&engine, &l.turns))?;
        Ok(json!({
            "safe": v.safe,
            "codes": v.codes,
            "categories": v.categories,
            "unsafe_score": v.unsafe_score,
        }))
    };
    let code = if a.jsonl {
        jsonl::each_line(check)?
    } else {
        let s = std::io::read_to_string(std::io::stdin()).context("cannot read stdin as UTF-8")?;
        println!("{}", check(&s)?);
        ExitCode::SUCCESS
    };
    engine.shutdown();
    Ok(code)
}
