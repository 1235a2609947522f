//! `ferrollama sdg`: synthetic data generation into a training file (the eval crate's
//! [`ferrollama_eval::sdg`] pipeline on an engine of this process).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use ferrollama_engine::scheduler::{Engine, EngineConfig};
use ferrollama_engine::{ChatMessage, Model};
use ferrollama_eval::sdg::{
    self, DEFAULT_JUDGE_TEMPLATE, DEFAULT_SCORE_REGEX, DEFAULT_TOPIC_TEMPLATE, Filter, FilterKind,
    Journal, Judge, SdgConfig, Teacher,
};
use ferrollama_safety::llama_guard::LlamaGuard;
use ferrollama_safety::{Shield, ShieldKind};
use indicatif::ProgressStyle;
use serde_json::json;

use super::model_args::ModelArgs;

/// Generate a training set with a teacher model: N sampled replies to each seed prompt,
/// unsafe ones dropped by a Llama Guard shield, the rest scored (the teacher's mean token
/// log-probability, or a judge model's rating) and filtered, written as chat records
/// (`{"messages": [...], "provenance": {...}}`) that `ferrollama finetune --data` reads.
///
/// Seeds (--prompts): JSON lines {"messages": [...]} (ending with a user message),
/// {"prompt": "..."} or {"topic": "..."}. --system is the teacher's system prompt: used to
/// generate, left out of the records (distilling a system prompt into a student).
///
/// Filters, per prompt: none; random (k at random, seeded); top_k (k best); top_p (best
/// until their softmax share of the scores reaches p); top_k_top_p (top_p over the softmax of
/// the k best); sigmoid (keep sigmoid(score) >= threshold). See docs/sdg.md.
///
/// Resumable: OUT and OUT.journal are appended and flushed one line at a time; run the same
/// command again after a crash and it carries on where it stopped, with the same result.
///
/// Example: ferrollama sdg -m teacher.gguf --prompts seeds.jsonl --out data.jsonl -n 4
/// --filter top_k --k 1 --shield llama-guard-3-1b.gguf
#[derive(Debug, clap::Args)]
pub struct SdgArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The seed prompts (JSON lines).
    #[arg(long, value_name = "FILE.jsonl")]
    prompts: PathBuf,
    /// The dataset to write (and OUT.journal beside it); an unfinished run there resumes.
    #[arg(long, value_name = "OUT.jsonl")]
    out: PathBuf,
    /// Replies per prompt.
    #[arg(short = 'n', long, default_value_t = 4, value_parser = super::at_least_one)]
    n: usize,
    /// Most tokens per reply.
    #[arg(long, default_value_t = 256, value_parser = super::at_least_one)]
    max_tokens: usize,
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Base seed: each (prompt, reply) samples with a seed derived from it.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The teacher's system prompt (not stored in the records).
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// The teacher's prompt as a JSON list of messages: a system message and/or few-shot
    /// user/assistant turns, put before every seed when the teacher generates and never
    /// stored in the records (after --system, if both are given).
    #[arg(long, value_name = "FILE.json")]
    teacher_prompt: Option<PathBuf>,
    /// The prompt made from a {"topic": ...} seed; {topic} is replaced.
    #[arg(long, value_name = "TEXT", default_value = DEFAULT_TOPIC_TEMPLATE)]
    topic_template: String,
    /// A Llama Guard 3 model (file or store name) that checks each (prompt, reply); unsafe
    /// pairs are dropped.
    #[arg(long, value_name = "GUARD_MODEL")]
    shield: Option<PathBuf>,
    /// Score with this judge model (file or store name) instead of the teacher's mean token
    /// log-probability.
    #[arg(long, value_name = "MODEL")]
    judge: Option<PathBuf>,
    /// The judge's prompt, a Jinja template over {{ prompt }} and {{ response }}.
    #[arg(long, value_name = "FILE", requires = "judge")]
    judge_template: Option<PathBuf>,
    /// Where the score is in the judge's reply: the first capture group of the first match.
    #[arg(long, value_name = "REGEX", default_value = DEFAULT_SCORE_REGEX, requires = "judge")]
    score_regex: String,
    /// none | random | top_k | top_p | top_k_top_p | sigmoid.
    #[arg(long, default_value = "none", value_parser = parse_filter)]
    filter: FilterKind,
    /// random, top_k, top_k_top_p: how many to keep per prompt.
    #[arg(long, default_value_t = 1, value_parser = super::at_least_one)]
    k: usize,
    /// top_p, top_k_top_p: the softmax mass to reach.
    #[arg(long, default_value_t = 0.9)]
    p: f64,
    /// sigmoid: the least sigmoid(score) kept.
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    /// Sequences in flight at once (the engine batches them).
    #[arg(long, default_value_t = 16, value_parser = super::at_least_one)]
    concurrency: usize,
}

fn parse_filter(s: &str) -> Result<FilterKind, String> {
    FilterKind::parse(s).map_err(|e| e.to_string())
}

fn load(p: &Path, what: &str) -> Result<Arc<Model>> {
    let path = ferrollama_store::Store::open_default().resolve_arg(p)?;
    Ok(Arc::new(Model::load(&path).with_context(|| {
        format!("cannot load the {what} {}", path.display())
    })?))
}

/// --system and --teacher-prompt as one list of messages (one system message first).
fn teacher_prompt(system: Option<&str>, file: Option<&Path>) -> Result<Vec<ChatMessage>> {
    let mut ms = Vec::new();
    if let Some(s) = system {
        ms.push(ChatMessage::new("system", s));
    }
    let Some(p) = file else { return Ok(ms) };
    let bad = |what: String| anyhow::anyhow!("--teacher-prompt {}: {what}", p.display());
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("cannot read --teacher-prompt {}", p.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("not JSON ({e}); expected a list of messages")))?;
    let list = v
        .as_array()
        .ok_or_else(|| bad("expected a JSON list of {\"role\", \"content\"} messages".into()))?;
    for (i, m) in list.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        let content = m["content"].as_str().unwrap_or_default();
        if !matches!(role, "system" | "user" | "assistant") || content.trim().is_empty() {
            return Err(bad(format!(
                "message {i} needs a role (system, user or assistant) and a text content"
            )));
        }
        match ms.last_mut() {
            Some(sys) if role == "system" && i == 0 && sys.role == "system" => {
                let joined = format!("{}\n\n{content}", sys.content.clone().unwrap_or_default());
                sys.content = Some(joined);
            }
            _ => ms.push(ChatMessage::new(role, content)),
        }
    }
    Ok(ms)
}

pub fn run(a: SdgArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&a.prompts)
        .with_context(|| format!("cannot read --prompts {}", a.prompts.display()))?;
    let seeds = sdg::parse_seeds(&a.prompts.display().to_string(), &text, &a.topic_template)?;
    let filter = Filter {
        kind: a.filter,
        k: a.k,
        p: a.p,
        threshold: a.threshold,
        seed: a.seed,
    };
    filter.validate()?;
    let template = match &a.judge_template {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read --judge-template {}", p.display()))?,
        None => DEFAULT_JUDGE_TEMPLATE.to_string(),
    };
    if a.judge.is_some() {
        sdg::check_judge_template(&template)?;
    }
    let score_regex =
        regex::Regex::new(&a.score_regex).map_err(|e| anyhow::anyhow!("--score-regex: {e}"))?;

    let teacher = Arc::new(a.model.load()?);
    let mut models = vec![teacher.clone()];
    let guard = match &a.shield {
        Some(p) => {
            models.push(load(p, "shield model")?);
            Some(models.len() - 1)
        }
        None => None,
    };
    let judge_index = match &a.judge {
        Some(p) => {
            models.push(load(p, "judge model")?);
            Some(models.len() - 1)
        }
        None => None,
    };
    let ctx = a
        .model
        .ctx_size
        .unwrap_or_else(|| teacher.llama.config.max_seq_len.min(4096));
    let engine = Engine::start(
        models.clone(),
        EngineConfig {
            threads: a.model.threads(),
            ctx,
            kv_positions: (ctx * 2)
                .max(a.concurrency * (a.max_tokens + 512))
                .max(8192),
            max_running: a.concurrency.max(1),
            max_queue: a.concurrency * 4 + 16,
            ..EngineConfig::default()
        },
    )?;
    let shield = match guard {
        Some(i) => Some(Shield {
            id: "llama-guard".into(),
            provider_id: "llama-guard".into(),
            provider_resource_id: models[i].name.clone(),
            params: json!({}),
            kind: ShieldKind::LlamaGuard(LlamaGuard::new(&models[i], i, None, Vec::new())?),
        }),
        None => None,
    };
    let cfg = SdgConfig {
        teacher: Teacher {
            model: 0,
            name: teacher.name.clone(),
            lora: None,
        },
        n: a.n,
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        teacher_prompt: teacher_prompt(a.system.as_deref(), a.teacher_prompt.as_deref())?,
        judge: judge_index.map(|i| Judge {
            model: i,
            name: models[i].name.clone(),
            template,
            score_regex,
            max_tokens: 32,
        }),
        filter,
        concurrency: a.concurrency,
    };
    let settings = cfg.settings(
        &seeds,
        shield.as_ref().map(|s| s.provider_resource_id.as_str()),
    );
    let (mut journal, resumed) = Journal::open(&a.out, &settings)?;
    if !resumed.generations.is_empty() || resumed.torn > 0 {
        eprintln!(
            "resuming {}: {} generations done, {} records written{}",
            a.out.display(),
            resumed.generations.len(),
            resumed.written.len(),
            if resumed.torn > 0 {
                format!(", {} torn last line(s) dropped", resumed.torn)
            } else {
                String::new()
            }
        );
    }
    let bar = super::progress_bar(false);
    bar.set_style(
        ProgressStyle::with_template("sdg [{bar:30}] {pos}/{len} replies (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(sdg::run(
        &engine,
        shield.as_ref(),
        &cfg,
        &seeds,
        resumed.generations,
        &resumed.written,
        &mut journal,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    ));
    bar.finish_and_clear();
    engine.shutdown();
    let stats = result.with_context(|| {
        format!(
            "stopped; what is done is kept in {}: run the same command again to resume",
            a.out.display()
        )
    })?;
    if stats.kept == 0 {
        eprintln!(
            "warning: no record was kept ({} unsafe, {} empty, {} filtered out)",
            stats.unsafe_dropped, stats.empty_dropped, stats.filtered_out
        );
    }
    println!("{}", serde_json::to_string(&stats)?);
    Ok(ExitCode::SUCCESS)
}
