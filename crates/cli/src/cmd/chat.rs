//! `ferrollama chat`: interactive multi-turn chat.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Result;
use ferrollama_engine::{ChatMessage, GenerateParams, generate};

use super::model_args::{LoraArgs, ModelArgs, SamplingArgs};

/// Chat with a model in the terminal, using its chat template; replies stream as they are
/// generated. Earlier turns stay in the KV cache, so each turn only computes what is new.
///
/// Commands: /reset (forget the conversation), /system TEXT (set the system prompt and
/// reset), /quit (or end of input).
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) lora: LoraArgs,
    #[command(flatten)]
    pub(crate) sampling: SamplingArgs,
    /// Stop when the output contains this text (repeatable); the text itself is not
    /// printed.
    #[arg(long = "stop", value_name = "TEXT")]
    stop: Vec<String>,
    /// Longest reply, in tokens (at least 1).
    #[arg(short = 'n', long = "n-predict", default_value_t = 512, value_parser = super::at_least_one)]
    pub(crate) n_predict: usize,
    /// System prompt.
    #[arg(long)]
    pub(crate) system: Option<String>,
    /// Let the model call tools, run here as an agent turn by turn: comma-separated
    /// `code_interpreter` (Python in a bubblewrap sandbox; state kept for the chat),
    /// `brave_search` (needs BRAVE_SEARCH_API_KEY), `wolfram_alpha` (needs
    /// WOLFRAM_ALPHA_API_KEY), `mcp:URL` or `mcp:stdio:COMMAND` (every tool of that MCP
    /// server). Each call and its result is printed as it happens.
    #[arg(long, value_name = "TOOLS", value_delimiter = ',')]
    pub(crate) tools: Vec<String>,
    /// With --tools: most model replies in one turn (each tool result gets a new one).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = super::at_least_one)]
    pub(crate) max_infer_iters: usize,
}

pub fn chat(a: ChatArgs) -> Result<ExitCode> {
    if !a.tools.is_empty() {
        if a.lora.lora.is_some() {
            anyhow::bail!(
                "--lora cannot be combined with --tools yet; serve the adapter instead \
                 (ferrollama serve --lora NAME=ADAPTER) and use it as the model NAME"
            );
        }
        return super::chat_agent::chat_with_tools(a);
    }
    let sampler = a.sampling.config()?;
    let model = a.model.load()?;
    let mut session = a.model.session(&model)?;
    a.lora.apply(&model, &mut session)?;
    let mut system = a.system.clone();
    let mut dialog: Vec<ChatMessage> = Vec::new();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    eprintln!("{} — /reset, /system TEXT, /quit", model.name);
    loop {
        write!(out, "> ")?;
        out.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                dialog.clear();
                session.reset();
                eprintln!("(conversation cleared)");
                continue;
            }
            cmd if cmd.starts_with("/system") => {
                system = Some(cmd.trim_start_matches("/system").trim().to_string())
                    .filter(|s| !s.is_empty());
                dialog.clear();
                session.reset();
                eprintln!("(system prompt set; conversation cleared)");
                continue;
            }
            cmd if cmd.starts_with('/') => {
                eprintln!("unknown command {cmd}; commands: /reset, /system TEXT, /quit");
                continue;
            }
            _ => {}
        }
        dialog.push(ChatMessage::new("user", line));
        let mut messages = Vec::with_capacity(dialog.len() + 1);
        if let Some(s) = &system {
            messages.push(ChatMessage::new("system", s));
        }
        messages.extend(dialog.iter().cloned());
        let prompt = match model.chat_prompt(&messages) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                dialog.pop();
                continue;
            }
        };
        let params = GenerateParams {
            max_tokens: a.n_predict,
            sampler: sampler.clone(),
            stop: a.stop.clone(),
        };
        match generate(&model, &mut session, &prompt, &params, &mut |s| {
            let _ = out.write_all(s.as_bytes());
            let _ = out.flush();
        }) {
            Ok(g) => {
                writeln!(out)?;
                dialog.push(ChatMessage::new("assistant", &g.text));
            }
            Err(e) => {
                eprintln!("\nerror: {e} (use /reset to start over)");
                dialog.pop();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
