//! `ferrollama eval`: benchmark tasks with lm-evaluation-harness's definitions, in process
//! or against an OpenAI-compatible server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferrollama_eval::{
    Backend, EvalOptions, LocalBackend, LocalOptions, OpenAiBackend, Task, run_task,
};
use indicatif::ProgressStyle;

use super::model_args::ModelArgs;

/// Evaluate a model on a task file, with lm-evaluation-harness's definitions: multiple
/// choice by log-likelihood (acc, acc_norm), generation with exact match after regex
/// filters, log-likelihood (perplexity, acc = greedy) and rolling perplexity
/// (word_perplexity, byte_perplexity, bits_per_byte); standard errors as lm-eval computes
/// them.
///
/// The task file is lm-eval's YAML: dataset_path (a local .jsonl or .csv, relative to the
/// YAML; or lm-eval's `json`/`csv` with dataset_kwargs.data_files), output_type
/// (multiple_choice | generate_until | loglikelihood | loglikelihood_rolling), doc_to_text
/// / doc_to_target / doc_to_choice (Jinja templates or column names), target_delimiter
/// (" "), fewshot_delimiter ("\n\n"), num_fewshot with fewshot_path (or fewshot_split) and
/// fewshot_config.sampler (random with seed 1234, or first_n), generation_kwargs (until,
/// max_gen_toks), filter_list (regex with regex_pattern / group_select / fallback,
/// take_first, lowercase, uppercase, remove_whitespace) and metric_list (acc, acc_norm,
/// exact_match with ignore_case / ignore_punctuation / regexes_to_ignore, perplexity,
/// word_perplexity, byte_perplexity, bits_per_byte; and llm_judge, with judge_template and
/// score_regex, where a judge model scores each generation: --judge-model, or
/// --judge-base-url with --judge-name, else the evaluated model judges itself).
/// output_type tool_call (ours) asks doc_to_text with the tools of doc_to_tools and checks
/// the first call against doc_to_target BFCL-style (tool_call_accuracy, tool_name_accuracy).
///
/// In process (the default), the choices of a question share one evaluation of their
/// context. With --base-url, the model behind an OpenAI-compatible server (ferrollama
/// serve, llama-server, vLLM) is scored as lm-eval's local-completions does: echo with
/// logprobs on /v1/completions; -m/--model is then the model name sent to the server.
///
/// Example: ferrollama eval -m model.gguf --task arc.yaml --num-fewshot 5 --json out.json
#[derive(Debug, clap::Args)]
#[command(mut_arg("ctx_size", |a| a.help(
    "The longest sequence scored at once, lm-eval's max_length; longer requests are cut \
     from the left (default: 4096, or the model's training context if smaller)"
)))]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Evaluate the model with this LoRA adapter (a PEFT folder or a llama.cpp GGUF
    /// adapter, as `finetune --method lora` writes it), in process only: e.g. the same task
    /// before and after fine-tuning.
    #[arg(long = "lora", value_name = "ADAPTER", conflicts_with = "base_url")]
    lora: Option<PathBuf>,
    /// The task file (YAML).
    #[arg(long, value_name = "FILE.yaml")]
    task: PathBuf,
    /// Evaluate the first N rows only.
    #[arg(long, value_name = "N", value_parser = super::at_least_one)]
    limit: Option<usize>,
    /// Few-shot examples per question (default: the task file's num_fewshot, else 0).
    #[arg(long, value_name = "K")]
    num_fewshot: Option<usize>,
    /// Few-shot sampling seed (lm-eval's --fewshot_random_seed).
    #[arg(long, default_value_t = 1234, value_name = "SEED")]
    fewshot_seed: u64,
    /// Lay the prompt out with the model's chat template: the task's description becomes
    /// the system message and the whole few-shot prompt one user turn; a choice is scored
    /// as the assistant's reply (without the target delimiter), as lm-eval's
    /// --apply_chat_template.
    #[arg(long)]
    apply_chat_template: bool,
    /// With --apply-chat-template: each few-shot example as a user turn and an assistant
    /// turn.
    #[arg(long, requires = "apply_chat_template")]
    fewshot_as_multiturn: bool,
    /// Score each context + choice in one pass from an empty cache instead of evaluating a
    /// question's context once for all its choices: slower; on quantized models the two
    /// can differ by a few hundredths of a nat per choice (the integer kernels round a row
    /// differently depending on the tokens that share its call), on F16/F32 they agree.
    #[arg(long)]
    no_prefix_sharing: bool,
    /// Score a model behind an OpenAI-compatible server instead of loading one, e.g.
    /// http://127.0.0.1:8080 (or its /v1, or /v1/completions).
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// API key for --base-url (sent as a Bearer token).
    #[arg(
        long,
        env = "OPENAI_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: Option<String>,
    /// Seconds to wait for one HTTP reply with --base-url.
    #[arg(long, default_value_t = 600, value_name = "S")]
    timeout: u64,
    /// Resamples for bootstrapped standard errors (the perplexity aggregation), as lm-eval's
    /// --bootstrap_iters; 0 turns them off.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    bootstrap_iters: usize,
    /// The judge for `llm_judge` metrics: a model file or store name, run in process
    /// (default: the evaluated model judges).
    #[arg(long, value_name = "MODEL", conflicts_with = "judge_base_url")]
    judge_model: Option<PathBuf>,
    /// The judge behind an OpenAI-compatible server (with --judge-name).
    #[arg(long, value_name = "URL", requires = "judge_name")]
    judge_base_url: Option<String>,
    /// The judge's model name at --judge-base-url.
    #[arg(long, value_name = "NAME")]
    judge_name: Option<String>,
    /// Write the results and per-sample records (prompt, choices, per-choice
    /// log-likelihoods, prediction, metric values) as JSON to this file.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
}

pub fn run(a: EvalArgs) -> Result<ExitCode> {
    let task = Task::load(&a.task)?;
    let opts = EvalOptions {
        limit: a.limit,
        num_fewshot: a.num_fewshot,
        seed: a.fewshot_seed,
        apply_chat_template: a.apply_chat_template,
        fewshot_as_multiturn: a.fewshot_as_multiturn,
        bootstrap_iters: a.bootstrap_iters,
    };
    if a.model.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let model;
    let mut local;
    let mut remote;
    let (backend, name): (&mut dyn Backend, String) = match &a.base_url {
        Some(url) => {
            let Some(name) = a.model.model.as_ref() else {
                bail!("--base-url needs -m/--model: the model name to send to the server");
            };
            let name = name.to_string_lossy().into_owned();
            remote = OpenAiBackend::new(
                url,
                &name,
                a.api_key.clone(),
                Duration::from_secs(a.timeout.max(1)),
            );
            (&mut remote, format!("{name} at {url}"))
        }
        None => {
            model = a.model.load()?;
            let max_length = a
                .model
                .ctx_size
                .unwrap_or_else(|| model.llama.config.max_seq_len.min(4096));
            local = LocalBackend::new(
                &model,
                LocalOptions {
                    threads: a.model.threads(),
                    batch: a.model.batch_size.min(max_length),
                    max_length,
                    prefix_sharing: !a.no_prefix_sharing,
                },
            )
            .context("cannot set up the model")?
            .with_adapter(match &a.lora {
                Some(p) => Some(std::sync::Arc::new(
                    ferrollama_model::Adapter::load(p, &model.llama.config)
                        .with_context(|| format!("--lora {}", p.display()))?,
                )),
                None => None,
            });
            let name = match &a.lora {
                Some(p) => format!("{} + LoRA {}", model.name, p.display()),
                None => model.name.clone(),
            };
            (&mut local, name)
        }
    };
    let judge_model = match &a.judge_model {
        Some(p) => {
            let path = ferrollama_store::Store::open_default().resolve_arg(p)?;
            Some(
                ferrollama_engine::Model::load(&path)
                    .with_context(|| format!("cannot load judge model {}", path.display()))?,
            )
        }
        None => None,
    };
    let mut judge_local = match &judge_model {
        Some(m) => Some(LocalBackend::new(
            m,
            LocalOptions {
                threads: a.model.threads(),
                batch: a.model.batch_size.min(4096),
                max_length: m.llama.config.max_seq_len.min(4096),
                prefix_sharing: true,
            },
        )?),
        None => None,
    };
    let mut judge_remote = match (&a.judge_base_url, &a.judge_name) {
        (Some(url), Some(name)) => Some(OpenAiBackend::new(
            url,
            name,
            a.api_key.clone(),
            Duration::from_secs(a.timeout.max(1)),
        )),
        _ => None,
    };
    let judge: Option<&mut dyn Backend> = match (&mut judge_local, &mut judge_remote) {
        (Some(j), _) => Some(j),
        (None, Some(j)) => Some(j),
        (None, None) => None,
    };
    let bar = super::progress_bar(false);
    bar.set_style(
        ProgressStyle::with_template("eval [{bar:30}] {pos}/{len} docs (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let report = run_task(&task, backend, judge, &opts, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{name}: task {}, {} documents, {secs:.1} s",
        report.task, report.n
    );
    print!("{}", report.table());
    if let Some(out) = &a.json {
        let mut v = serde_json::to_value(&report)?;
        v["model"] = serde_json::json!(name);
        v["seconds"] = serde_json::json!(secs);
        let text = serde_json::to_string_pretty(&v)?;
        std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
