//! `ferrollama chat --tools ...`: the interactive chat as an agent. Each line is a turn of
//! the agent loop (the same loop and engine path as the server's agents API): the model's
//! tool calls run here — Python in the sandbox, Brave Search, Wolfram Alpha, MCP servers'
//! tools — and each call and its result is shown as it happens, before the model continues.
//!
//! The engine runs in this process behind the same in-process `AppState` the server uses,
//! so prompts, tool formats and call parsing are those of `serve`.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use ferrollama_agents::runtime::{Executor, Runtime, builtin_tool};
use ferrollama_agents::{
    Delta, Event, Message, NoShields, Role, Step, ToolChoice, ToolDef, ToolKind, TurnConfig,
    TurnContext, TurnEnd, run_turn,
};
use ferrollama_engine::scheduler::{Engine, EngineConfig};
use ferrollama_model::KvType;
use ferrollama_server::agents::infer::EngineInference;
use ferrollama_server::{AppState, Limits, ModelRegistry, RequestCounters};
use serde_json::{Value, json};

use super::chat::ChatArgs;
use super::model_args::KvTypeArg;

/// The tools of `--tools`: built-in names and `mcp:ENDPOINT` (all that server's tools).
fn resolve_tools(runtime: &Runtime, names: &[String]) -> Result<Vec<ToolDef>> {
    let mut out: Vec<ToolDef> = Vec::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if let Some(ep) = n.strip_prefix("mcp:") {
            let tools = runtime
                .mcp_tools(ep)
                .with_context(|| format!("cannot list the tools of MCP server {ep}"))?;
            eprintln!(
                "(MCP {ep}: {} tools: {})",
                tools.len(),
                tools
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            out.extend(tools.into_iter().map(|t| ToolDef {
                name: t.name,
                description: t.description,
                parameters: t.input_schema,
                kind: ToolKind::Mcp {
                    endpoint: ep.to_string(),
                },
                toolgroup: None,
            }));
        } else if let Some(t) = builtin_tool(n) {
            out.push(t);
        } else {
            bail!(
                "unknown tool '{n}' in --tools; choose from code_interpreter, brave_search, wolfram_alpha, mcp:URL (or mcp:stdio:COMMAND)"
            );
        }
    }
    Ok(out)
}

fn short(v: &Value, max: usize) -> String {
    let s = match v.get("code").and_then(Value::as_str) {
        Some(code) => code.to_string(),
        None => v.to_string(),
    };
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max).collect::<String>())
    } else {
        s
    }
}

pub fn chat_with_tools(a: ChatArgs) -> Result<ExitCode> {
    let sampler = a.sampling.config()?;
    let model = Arc::new(a.model.load()?);
    let name = model.name.clone();
    let ctx = a
        .model
        .ctx_size
        .unwrap_or_else(|| model.llama.config.max_seq_len.min(4096));
    let engine = Engine::start(
        vec![model],
        EngineConfig {
            threads: a.model.threads(),
            step_tokens: a.model.batch_size.clamp(1, 512),
            max_running: 1,
            max_queue: 4,
            kv_positions: ctx,
            ctx,
            kv_type: match a.model.kv_type {
                KvTypeArg::F16 => KvType::F16,
                KvTypeArg::Q8_0 => KvType::Q8_0,
            },
        },
    )?;
    let runtime = Arc::new(Runtime::from_env());
    let tools = resolve_tools(&runtime, &a.tools)?;
    let app = Arc::new(AppState {
        engine,
        models: ModelRegistry::new(vec![name.clone()]),
        api_key: None,
        cors_origin: None,
        limits: Limits {
            default_max_tokens: a.n_predict,
            ..Limits::default()
        },
        created: 0,
        requests: RequestCounters::new(Vec::new()),
        safety: Default::default(),
        ollama: Default::default(),
        agents: ferrollama_server::agents::AgentsState::in_memory()?,
        embeddings: Default::default(),
        files: ferrollama_server::files::FilesState::in_memory()?,
        fine_tuning: std::sync::Arc::new(ferrollama_server::fine_tuning::FineTuning::temporary()),
        batches: ferrollama_server::batch::store::Batches::temporary(),
        evals: Default::default(),
    });
    let sampling = if sampler.temperature <= 0.0 {
        json!({"strategy": {"type": "greedy"}, "max_tokens": a.n_predict})
    } else {
        json!({"strategy": {"type": "top_p", "temperature": sampler.temperature, "top_p": sampler.top_p},
               "max_tokens": a.n_predict, "repetition_penalty": sampler.repetition_penalty})
    };
    let mut cfg = TurnConfig {
        model: name.clone(),
        instructions: a.system.clone().unwrap_or_default(),
        tools,
        tool_choice: ToolChoice::Auto,
        max_infer_iters: a.max_infer_iters,
        input_shields: Vec::new(),
        output_shields: Vec::new(),
        sampling,
        max_tokens: Some(a.n_predict),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let exec = Executor {
        runtime: runtime.clone(),
        keys: Default::default(),
    };
    let infer = EngineInference {
        app: app.clone(),
        response_format: None,
    };
    let session = format!("chat-{}", std::process::id());
    let mut history: Vec<Message> = Vec::new();
    let names: Vec<&str> = cfg.tools.iter().map(|t| t.name.as_str()).collect();
    eprintln!(
        "{name} with tools: {} — /reset, /system TEXT, /quit",
        names.join(", ")
    );
    let stdin = std::io::stdin();
    let counter = AtomicU64::new(0);
    let ids = || format!("step-{}", counter.fetch_add(1, Ordering::Relaxed));
    let clock = || String::new();
    loop {
        print!("> ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                history.clear();
                runtime.close_session(&session);
                eprintln!("(conversation and interpreter state cleared)");
                continue;
            }
            cmd if cmd.starts_with("/system") => {
                cfg.instructions = cmd.trim_start_matches("/system").trim().to_string();
                history.clear();
                eprintln!("(system prompt set; conversation cleared)");
                continue;
            }
            cmd if cmd.starts_with('/') => {
                eprintln!("unknown command {cmd}; commands: /reset, /system TEXT, /quit");
                continue;
            }
            _ => {}
        }
        let mut turn_history = history.clone();
        turn_history.push(Message::new(Role::User, line));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let result = rt.block_on(async {
            let printer = async {
                let mut out = std::io::stdout();
                while let Some(e) = rx.recv().await {
                    match e {
                        Event::StepProgress {
                            delta: Delta::Text(t),
                            ..
                        } => {
                            let _ = out.write_all(t.as_bytes());
                            let _ = out.flush();
                        }
                        Event::StepProgress {
                            delta: Delta::ToolCall(c),
                            ..
                        } => {
                            println!("\n[call {}] {}", c.tool_name, short(&c.arguments, 400));
                        }
                        Event::StepComplete(Step::ToolExecution { tool_responses, .. }) => {
                            for r in tool_responses {
                                let tag = if r.is_error() { "error" } else { "result" };
                                println!("[{tag} {}] {}", r.tool_name, r.content.trim_end());
                            }
                        }
                        _ => {}
                    }
                }
            };
            let work = async {
                let ctx = TurnContext {
                    session_id: &session,
                    turn_id: "chat",
                    events: Some(&tx),
                    clock: &clock,
                    new_id: &ids,
                };
                let r = run_turn(
                    (&infer, &NoShields, &exec),
                    &cfg,
                    &ctx,
                    &mut turn_history,
                    true,
                )
                .await;
                drop(tx);
                r
            };
            let (r, ()) = tokio::join!(work, printer);
            r
        });
        match result {
            Ok(o) => {
                println!();
                if let TurnEnd::AwaitingInput(_) = o.end {
                    eprintln!("(the model called a tool this chat does not run)");
                }
                history = turn_history;
            }
            Err(e) => eprintln!("\nerror: {e} (the turn was not kept)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
