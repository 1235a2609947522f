//! `ferrollama batch IN.jsonl OUT.jsonl`: OpenAI's batch format, offline. Every line goes
//! through the same router as `serve` (in process, many at once, so the engine's continuous
//! batching fills each step); answers are appended to OUT (2xx) or the error file (the
//! rest, and lines that cannot be read) as they finish, each flushed.
//!
//! Resumable: a rerun reads OUT and the error file and skips every custom_id (and every
//! unreadable line) already answered. Shardable: with `--shard I/N` this run takes the
//! lines whose 1-based line number L has (L - 1) mod N == I; shards of one input partition
//! it, and concatenating their outputs gives the whole batch.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferrollama_engine::Model;
use ferrollama_engine::scheduler::{Engine, EngineConfig};
use ferrollama_model::KvType;
use ferrollama_server::agents::AgentsState;
use ferrollama_server::batch::{self, Done, LineError, Request, append};
use ferrollama_server::files::FilesState;
use ferrollama_server::fine_tuning::FineTuning;
use ferrollama_server::ollama::OllamaState;
use ferrollama_server::{AppState, Limits, ModelRegistry, Registered, RequestCounters};
use serde_json::json;

/// Run a JSONL file of OpenAI batch requests (`{"custom_id", "method": "POST", "url":
/// "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings", "body"}` per line) and
/// write OpenAI's batch output lines (`{"id", "custom_id", "response": {"status_code",
/// "request_id", "body"}, "error"}`). Bodies mean what they mean to `serve`. A body
/// without `model` runs on the first model (embeddings: the embedding model).
///
/// Answers with a 2xx status go to OUT, the others and unreadable lines (bad JSON, an
/// unknown url) to the error file; the rest of the batch goes on. A rerun skips every
/// custom_id already in OUT or the error file, so a killed run resumes. Duplicate
/// custom_ids are refused before anything runs. Exits 0 once every line is answered,
/// whether or not some went to the error file.
#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    /// The input: one request per line.
    input: PathBuf,
    /// The output (appended to; answered lines of an earlier run are kept and skipped).
    output: PathBuf,
    /// A model (.gguf file, Hugging Face folder or store name; repeatable, a body's
    /// `model` picks by file stem). Default: SmolLM2-135M-Instruct (Q4_1).
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    models: Vec<PathBuf>,
    /// Where failed lines go [default: OUT with `.errors` before its extension].
    #[arg(long, value_name = "FILE")]
    errors: Option<PathBuf>,
    /// Run only shard I of N (0 <= I < N): the lines whose 1-based number L has
    /// (L - 1) mod N == I. For N machines (a Kubernetes Indexed Job:
    /// `--shard $JOB_COMPLETION_INDEX/N`); `cat` the shards' outputs to merge them.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long, value_name = "N")]
    threads: Option<usize>,
    /// Requests in flight at once (the engine batches them together).
    #[arg(long, value_name = "K", default_value_t = 64, value_parser = super::at_least_one)]
    concurrency: usize,
    /// Longest context of one request, in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    ctx_size: usize,
    /// KV memory per model, in token positions shared by all requests.
    #[arg(long, default_value_t = 32768)]
    kv_size: usize,
    /// Embedding model for /v1/embeddings lines (loaded only when a line needs it):
    /// all-MiniLM-L6-v2 (fetched once) or a sentence-transformers folder.
    #[arg(
        long,
        value_name = "DIR|all-MiniLM-L6-v2",
        default_value = "all-MiniLM-L6-v2"
    )]
    embedding_model: String,
    /// Print a JSON summary line on stdout at the end (request counts); no progress bar.
    #[arg(long)]
    json: bool,
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("{s:?}: expected I/N with 0 <= I < N, e.g. 0/4");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n) = (
        i.trim().parse::<usize>().map_err(|_| bad())?,
        n.trim().parse::<usize>().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// `out.jsonl` -> `out.errors.jsonl`.
fn default_errors(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "batch".into(), |s| s.to_string_lossy().into_owned());
    let name = match out.extension() {
        Some(e) => format!("{stem}.errors.{}", e.to_string_lossy()),
        None => format!("{stem}.errors"),
    };
    out.with_file_name(name)
}

pub fn batch(a: BatchArgs) -> Result<ExitCode> {
    let errors = a
        .errors
        .clone()
        .unwrap_or_else(|| default_errors(&a.output));
    if errors == a.output {
        bail!("--errors must differ from the output file");
    }
    let text =
        std::fs::read(&a.input).with_context(|| format!("cannot read {}", a.input.display()))?;
    let (i, n) = a.shard.unwrap_or((0, 1));
    // Every line is read (duplicates are checked across the whole input, so all shards
    // agree), and only this shard's are run.
    let mut parsed: Vec<Result<Request, LineError>> = Vec::new();
    for (k, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = k + 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let r = match std::str::from_utf8(raw) {
            Ok(s) => batch::parse_line(line, s.trim_end_matches('\r'), None),
            Err(e) => Err(LineError {
                line,
                custom_id: None,
                code: "invalid_json",
                message: format!("not valid UTF-8: {e}"),
            }),
        };
        parsed.push(r);
    }
    let ids = parsed.iter().filter_map(|r| match r {
        Ok(q) => Some((q.line, q.custom_id.as_str())),
        Err(e) => e.custom_id.as_deref().map(|c| (e.line, c)),
    });
    let dups = batch::duplicates(ids);
    if !dups.is_empty() {
        let list: Vec<String> = dups
            .iter()
            .take(10)
            .map(|(id, lines)| {
                let l: Vec<String> = lines.iter().map(ToString::to_string).collect();
                format!("{id:?} on lines {}", l.join(", "))
            })
            .collect();
        bail!(
            "{} custom_id(s) are used more than once, nothing was run: {}{}",
            dups.len(),
            list.join("; "),
            if dups.len() > 10 { "; ..." } else { "" }
        );
    }
    let mine: Vec<Result<Request, LineError>> = parsed
        .into_iter()
        .filter(|r| {
            let line = match r {
                Ok(q) => q.line,
                Err(e) => e.line,
            };
            (line - 1) % n == i
        })
        .collect();
    let total = mine.len();
    let mut done = Done::default();
    done.read_into(&a.output)?;
    done.read_into(&errors)?;
    let is_done = |r: &Result<Request, LineError>| match r {
        Ok(q) => done.ids.contains(&q.custom_id),
        Err(e) => match &e.custom_id {
            Some(c) => done.ids.contains(c),
            None => done.lines.contains(&e.line),
        },
    };
    let (skipped, todo): (Vec<_>, Vec<_>) = mine.into_iter().partition(is_done);
    let open = |p: &Path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("cannot open {}", p.display()))
    };
    let mut out_f = open(&a.output)?;
    let mut err_f = open(&errors)?;
    let mut reqs = Vec::new();
    let mut failed = 0usize;
    for r in todo {
        match r {
            Ok(q) => reqs.push(q),
            Err(e) => {
                append(&mut err_f, &batch::error_line(&e))?;
                failed += 1;
            }
        }
    }
    let mut completed = 0usize;
    if !reqs.is_empty() {
        let needs_embeddings = reqs.iter().any(|q| q.url == "/v1/embeddings");
        let app = app_state(&a, needs_embeddings)?;
        batch::default_model(&app, &mut reqs);
        let bar = super::progress_bar(a.json);
        bar.set_length(reqs.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} requests  {elapsed_precise} (eta {eta})",
        ) {
            bar.set_style(style);
        }
        let router = ferrollama_server::router(app.clone());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let concurrency = a.concurrency;
        rt.block_on(batch::run_all(
            router,
            None,
            reqs,
            concurrency,
            Arc::new(AtomicBool::new(false)),
            || std::future::ready(()),
            |o| -> Result<()> {
                if o.ok() {
                    append(&mut out_f, &o.out)?;
                    completed += 1;
                } else {
                    append(&mut err_f, &o.out)?;
                    failed += 1;
                }
                bar.inc(1);
                Ok(())
            },
        ))?;
        bar.finish_and_clear();
        let engine = app.engine.clone();
        drop(rt);
        engine.shutdown();
    }
    let summary = json!({
        "total": total,
        "completed": completed,
        "failed": failed,
        "skipped": skipped.len(),
        "output": a.output.display().to_string(),
        "errors": errors.display().to_string(),
    });
    if a.json {
        println!("{summary}");
    } else {
        eprintln!(
            "{total} requests: {completed} completed, {failed} failed (in {}), {} done before",
            errors.display(),
            skipped.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The server's state for this run: the models, the engine, and stores that live only in
/// memory (a batch line never reaches them).
fn app_state(a: &BatchArgs, needs_embeddings: bool) -> Result<Arc<AppState>> {
    if a.ctx_size < 16 || a.kv_size < a.ctx_size {
        bail!("--ctx-size must be at least 16 and --kv-size at least --ctx-size");
    }
    let paths = super::model_paths(&a.models)?;
    let mut models = Vec::new();
    let mut registered = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let m = Model::load(p).with_context(|| format!("cannot load model {}", p.display()))?;
        if registered.iter().any(|r: &Registered| r.id == m.name) {
            bail!("two models are named {}; rename one file", m.name);
        }
        registered.push(Registered {
            id: m.name.clone(),
            model: i,
            provider_model_id: m.name.clone(),
            metadata: json!({}),
            lora: None,
        });
        models.push(Arc::new(m));
    }
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let embeddings = if needs_embeddings {
        super::serve::load_embedding_models(std::slice::from_ref(&a.embedding_model), threads)?
    } else {
        ferrollama_server::embeddings::EmbeddingModels::default()
    };
    let config = EngineConfig {
        threads,
        kv_positions: a.kv_size,
        ctx: a.ctx_size,
        max_running: a.concurrency.max(1),
        // Room for every line in flight (and its `n` choices) to wait.
        max_queue: (a.concurrency * 8).max(256),
        kv_type: KvType::F16,
        ..EngineConfig::default()
    };
    let engine = Engine::start(models, config)?;
    Ok(Arc::new(AppState {
        agents: AgentsState::in_memory()
            .map_err(|e| anyhow::anyhow!("cannot open an in-memory database: {e}"))?,
        files: FilesState::in_memory()
            .map_err(|e| anyhow::anyhow!("cannot open an in-memory file store: {e}"))?,
        engine,
        models: ModelRegistry::with_entries(registered),
        api_key: None,
        cors_origin: None,
        limits: Limits {
            request_timeout: Duration::from_secs(86_400),
            ..Limits::default()
        },
        created: ferrollama_server::job::unix_now(),
        requests: RequestCounters::new(
            ferrollama_server::routes().iter().map(|r| r.path).collect(),
        ),
        safety: ferrollama_server::shields::Safety::default(),
        ollama: OllamaState::new(None, None, paths.iter().cloned().map(Some).collect()),
        embeddings,
        fine_tuning: Arc::new(FineTuning::temporary()),
        batches: ferrollama_server::batch::store::Batches::temporary(),
        evals: Default::default(),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shard_and_error_file_names() {
        assert_eq!(parse_shard("2/4").unwrap(), (2, 4));
        for bad in ["4/4", "1/0", "x/2", "3"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
        assert_eq!(
            default_errors(Path::new("/d/out.jsonl")),
            PathBuf::from("/d/out.errors.jsonl")
        );
        assert_eq!(
            default_errors(Path::new("out")),
            PathBuf::from("out.errors")
        );
    }
}
