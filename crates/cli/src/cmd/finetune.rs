//! `ferrollama finetune`: full or LoRA fine-tuning of a model on a JSONL file, with
//! checkpoints, resume, evaluation, and the result written as a GGUF the engine loads (full)
//! or as adapters in PEFT's and llama.cpp's formats (LoRA).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ferrollama_model::ModelTokenizer;
use ferrollama_model::export::{ModelParts, Target, write_gguf};
use ferrollama_tensor::ThreadPool;
use ferrollama_train::adapter::{save_gguf, save_peft};
use ferrollama_train::checkpoint::{self, CHECKPOINT_FILE};
use ferrollama_train::data::{
    self, ChatRenderer, LengthPolicy, Llama31Renderer, RecordKind, SequenceOptions, TrainingData,
};
use ferrollama_train::vocab::{TextOnlyRenderer, llama3_tokenizer};
use ferrollama_train::weights::params_from_weights;
use ferrollama_train::{
    AdamWConfig, Event, Length, Lora, LoraConfig, Sequence, Shape, TrainConfig, Trainer,
};
use indicatif::ProgressStyle;
use serde_json::json;

use super::at_least_one;
use super::source::open_source;
use super::template_renderer::TemplateRenderer;

/// Fine-tune a model on a JSONL file: every weight (--method full, written as
/// OUT/model.gguf) or a LoRA adapter over the frozen model (--method lora, written as
/// OUT/adapter/ for PEFT and OUT/adapter.gguf for llama.cpp and `--lora`).
///
/// Data, one record a line: {"messages": [...]} chats (OpenAI's format) or
/// {"prompt": ..., "completion": ...} pairs, trained on the assistant's tokens in the
/// model's prompt format (Llama 3.1's for a Llama 3 vocabulary, else the model's own chat
/// template); or {"text": ...} documents, packed into --seq-len windows (continued
/// pretraining). Every bad line is
/// reported with its number.
///
/// Each optimizer step reads --grad-accum micro-batches of --batch-size sequences; the loss
/// is the mean over each micro-batch's trained tokens. Gradients are clipped to a global
/// norm of --max-grad-norm, AdamW updates the f32 weights, and the learning rate warms up
/// linearly over --warmup steps and then follows a cosine down to 0. The data is shuffled
/// per epoch with --seed: the same command gives the same run.
///
/// OUT/checkpoint.safetensors (weights, optimizer state, progress and settings; replaced
/// atomically) is written every --checkpoint-every steps and at the end; --resume continues
/// it exactly as if the run had not stopped. A loss that stops being finite ends the run
/// with an error and keeps the last good checkpoint.
#[derive(Debug, clap::Args)]
pub struct FinetuneArgs {
    /// Base model: a .gguf file, a Hugging Face or Meta folder, or a model in the store.
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    model: PathBuf,
    /// Training data (JSONL).
    #[arg(long, value_name = "FILE.jsonl")]
    data: PathBuf,
    /// What to train: full (every weight, f32 master weights) or lora (a low-rank adapter
    /// on --targets, the model frozen). dpo and distill are not implemented yet.
    #[arg(long, value_enum, default_value = "full")]
    method: Method,
    /// LoRA rank r: each adapted projection learns B (out × r) · A (r × in).
    #[arg(long, default_value_t = 16, value_parser = at_least_one, value_name = "R")]
    rank: usize,
    /// LoRA alpha: the update is scaled by alpha / rank.
    #[arg(long, default_value_t = 32.0, value_name = "A")]
    alpha: f64,
    /// LoRA target projections, comma-separated: q, k, v, o, gate, up, down, or all.
    #[arg(long, default_value = "all", value_name = "LIST")]
    targets: String,
    /// Optimizer steps to run (default: one epoch).
    #[arg(long, value_name = "N", conflicts_with = "epochs")]
    steps: Option<u64>,
    /// Passes over the data, rounded up to whole steps (default 1).
    #[arg(long, value_name = "N")]
    epochs: Option<u64>,
    /// Peak learning rate (default 1e-5 for full, 2e-4 for lora).
    #[arg(long, value_name = "LR")]
    lr: Option<f64>,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 1, value_parser = at_least_one, value_name = "B")]
    batch_size: usize,
    /// Micro-batches whose gradients are summed into one optimizer step.
    #[arg(long, default_value_t = 1, value_parser = at_least_one, value_name = "G")]
    grad_accum: usize,
    /// Positions per sequence: longer records are refused (or cut with --truncate), text is
    /// packed into windows of this length.
    #[arg(long, default_value_t = 2048, value_parser = at_least_one, value_name = "L")]
    seq_len: usize,
    /// Cut records longer than --seq-len instead of refusing the file.
    #[arg(long)]
    truncate: bool,
    /// Linear warmup steps before the cosine schedule.
    #[arg(long, default_value_t = 0, value_name = "W")]
    warmup: u64,
    /// Gradient clipping: the global norm is scaled down to at most this.
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    max_grad_norm: f64,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.01, value_name = "X")]
    weight_decay: f64,
    /// Held-out data (same formats) whose mean loss is reported every --eval-every steps
    /// and at the end.
    #[arg(long, value_name = "FILE.jsonl")]
    eval: Option<PathBuf>,
    /// Steps between evaluations (0: only at the end).
    #[arg(long, default_value_t = 0, value_name = "K")]
    eval_every: u64,
    /// Seed of the data order.
    #[arg(long, default_value_t = 0, value_name = "S")]
    seed: u64,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long, value_name = "T")]
    threads: Option<usize>,
    /// Steps between checkpoints (0: only at the end).
    #[arg(long, default_value_t = 0, value_name = "K")]
    checkpoint_every: u64,
    /// Continue the run checkpointed in --out, with the settings it was started with (the
    /// training options given now are not used; the data must be the same).
    #[arg(long)]
    resume: bool,
    /// Recompute activations in the backward pass: memory for one layer instead of all,
    /// for about a third more compute.
    #[arg(long)]
    recompute: bool,
    /// Tensor type of OUT/model.gguf (full fine-tuning).
    #[arg(long, value_enum, default_value = "f32")]
    out_type: OutType,
    /// Output folder: checkpoint.safetensors, checkpoint.json, and model.gguf (full) or
    /// adapter/ + adapter.gguf (lora).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// One JSON object per line on stdout (every step, evaluation and checkpoint, then a
    /// summary) instead of the progress bar.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Method {
    Full,
    Lora,
    Dpo,
    Distill,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OutType {
    F32,
    F16,
    Bf16,
}

/// Reads a JSONL file into training sequences for `r`. `chat_ok`: whether the model's
/// vocabulary can be trained in the chat format.
fn sequences(
    path: &Path,
    r: &dyn ChatRenderer,
    opts: SequenceOptions,
    chat_ok: bool,
    quiet: bool,
) -> Result<Vec<Sequence>> {
    let records = data::read_jsonl(path)?;
    let shown = path.display().to_string();
    match records.kind {
        RecordKind::Preference => bail!(
            "{shown}: preference pairs are DPO data, and --method dpo is not implemented yet \
             (lora/dpo/distill come next)"
        ),
        RecordKind::Chat | RecordKind::Completion if !chat_ok => bail!(
            "{shown}: {} records are trained in the model's chat format, and this model has \
             neither Llama 3's vocabulary nor a chat template (tokenizer.chat_template); only \
             {{\"text\": ...}} records can be trained on it",
            records.kind.describe()
        ),
        _ => {}
    }
    Ok(match data::build(&shown, &records, r, opts)? {
        TrainingData::Sft(b) => {
            if !quiet && !b.truncated.is_empty() {
                eprintln!("{shown}: {} records cut to --seq-len", b.truncated.len());
            }
            if !quiet && !b.skipped.is_empty() {
                eprintln!(
                    "{shown}: {} records left out (nothing to train on after the cut), lines {:?}",
                    b.skipped.len(),
                    b.skipped
                );
            }
            b.items
        }
        TrainingData::Pretraining(p) => p.sequences,
        TrainingData::Preference(_) => bail!("{shown}: preference pairs need --method dpo"),
    })
}

pub fn finetune(a: FinetuneArgs) -> Result<ExitCode> {
    let method = match a.method {
        Method::Full | Method::Lora => None,
        Method::Dpo => Some("dpo"),
        Method::Distill => Some("distill"),
    };
    if let Some(m) = method {
        bail!(
            "--method {m} is not implemented yet; --method full trains every weight, --method \
             lora an adapter"
        );
    }
    let lora_config = match a.method {
        Method::Lora => {
            let c = LoraConfig {
                rank: a.rank,
                alpha: a.alpha,
                targets: ferrollama_train::Target::parse_list(&a.targets)?,
            };
            Some(c)
        }
        _ => None,
    };
    let path = ferrollama_store::Store::open_default().resolve_arg(&a.model)?;
    let src = open_source(&path)?;
    let vocab = ModelTokenizer::from_keys(&src.tokenizer)
        .with_context(|| format!("cannot read the tokenizer of {}", path.display()))?;
    // The prompt format chats are trained in: Llama 3.1's (Meta's exact encoding) for a
    // Llama 3 vocabulary, else the model's own Jinja template, else none (text only).
    let llama3 = llama3_tokenizer(&vocab);
    let (l31, jinja, text_only);
    let mut chat_ok = true;
    let renderer: &dyn ChatRenderer = match &llama3 {
        Some(t) => {
            l31 = Llama31Renderer::new(t);
            &l31
        }
        None => match TemplateRenderer::new(&vocab) {
            Some(r) => {
                jinja = r;
                &jinja
            }
            None => {
                chat_ok = false;
                text_only = TextOnlyRenderer::new(&vocab).context(
                    "the model's vocabulary has no end-of-text token to separate documents",
                )?;
                &text_only
            }
        },
    };
    let opts = SequenceOptions {
        seq_len: a.seq_len,
        policy: if a.truncate {
            LengthPolicy::Truncate
        } else {
            LengthPolicy::Refuse
        },
    };
    let train = sequences(&a.data, renderer, opts, chat_ok, a.json)?;
    let eval = match &a.eval {
        Some(p) => sequences(p, renderer, opts, chat_ok, a.json)?,
        None => Vec::new(),
    };
    if a.seq_len > src.config.max_seq_len {
        eprintln!(
            "warning: --seq-len {} is beyond the model's context of {} tokens",
            a.seq_len, src.config.max_seq_len
        );
    }
    let (params, divisors) = params_from_weights(&src.weights, &src.config)?;
    let mut shape = Shape::of(&src.config);
    shape.rope_divisors = divisors;
    let adamw = AdamWConfig {
        weight_decay: a.weight_decay,
        ..AdamWConfig::default()
    };
    let ck_path = a.out.join(CHECKPOINT_FILE);
    // Which base a checkpoint was trained on: a LoRA checkpoint holds only the adapter.
    let base_desc = format!(
        "{} ({} bytes)",
        src.name.as_deref().unwrap_or("model"),
        std::fs::metadata(&path).map_or(0, |m| m.len())
    );
    let mut trainer = if a.resume {
        let ck = checkpoint::load(&a.out, &shape, params, adamw)
            .with_context(|| format!("cannot resume from {}", ck_path.display()))?;
        if let Some(was) = &ck.base
            && *was != base_desc
        {
            bail!(
                "{} was trained on {was}, and -m gives {base_desc}: resume with the same base \
                 model",
                ck_path.display()
            );
        }
        let mut t = Trainer::resume(ck, shape, train)?;
        t.base = Some(base_desc);
        t
    } else {
        if ck_path.exists() {
            bail!(
                "{} holds a checkpoint already: pass --resume to continue it, or choose \
                 another --out",
                a.out.display()
            );
        }
        let config = TrainConfig {
            length: match (a.steps, a.epochs) {
                (Some(n), _) => Length::Steps(n),
                (None, e) => Length::Epochs(e.unwrap_or(1)),
            },
            lr: a
                .lr
                .unwrap_or(if lora_config.is_some() { 2e-4 } else { 1e-5 }),
            warmup: a.warmup,
            batch_size: a.batch_size,
            grad_accum: a.grad_accum,
            max_grad_norm: a.max_grad_norm,
            adamw,
            seed: a.seed,
            eval_every: a.eval_every,
            checkpoint_every: a.checkpoint_every,
            recompute: a.recompute,
        };
        let mut t = match lora_config {
            Some(lc) => {
                let lora = Lora::new(&src.config, lc, a.seed)?;
                Trainer::new_lora(config, shape, params, lora, train)?
            }
            None => Trainer::new(config, shape, params, train)?,
        };
        t.base = Some(base_desc);
        t
    };
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = ThreadPool::new(threads);

    let bar = super::progress_bar(a.json);
    bar.set_length(trainer.total_steps());
    bar.set_position(trainer.progress.step);
    bar.set_style(
        ProgressStyle::with_template("finetune [{bar:30}] step {pos}/{len} {msg} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let json = a.json;
    let mut on = |e: &Event| match e {
        Event::Step(r) => {
            if json {
                let v = json!({
                    "event": "step", "step": r.step, "total_steps": r.total_steps,
                    "epoch": r.epoch, "loss": r.loss, "grad_norm": r.grad_norm, "lr": r.lr,
                    "tokens": r.tokens, "tokens_per_s": r.tokens_per_s, "seconds": r.seconds,
                });
                println!("{v}");
            } else {
                bar.set_message(format!("loss {:.4}, {:.0} tok/s", r.loss, r.tokens_per_s));
                bar.set_position(r.step);
            }
        }
        Event::Eval { step, loss } => {
            if json {
                println!(
                    "{}",
                    json!({"event": "eval", "step": step, "eval_loss": loss})
                );
            } else {
                bar.println(format!("step {step}: eval loss {loss:.4}"));
            }
        }
        Event::Checkpoint { step } => {
            if json {
                println!(
                    "{}",
                    json!({"event": "checkpoint", "step": step, "path": ck_path})
                );
            }
        }
    };
    trainer
        .run(&pool, &eval, Some(&a.out), &mut on)
        .with_context(|| {
            format!(
                "training stopped; the last good checkpoint is in {}",
                a.out.display()
            )
        })?;
    bar.finish_and_clear();

    if let Some(lora) = trainer.lora() {
        let peft_dir = a.out.join("adapter");
        let base_name = src.name.as_deref().unwrap_or("model");
        save_peft(&peft_dir, lora, &src.config, base_name)
            .with_context(|| format!("cannot write {}", peft_dir.display()))?;
        let gguf_path = a.out.join("adapter.gguf");
        save_gguf(&gguf_path, lora, &src.config, "llama")
            .with_context(|| format!("cannot write {}", gguf_path.display()))?;
        if json {
            println!(
                "{}",
                json!({"event": "done", "method": "lora", "steps": trainer.progress.step,
                       "adapter": peft_dir, "adapter_gguf": gguf_path, "checkpoint": ck_path})
            );
        } else {
            eprintln!(
                "trained {} steps; wrote the adapter as {} (PEFT) and {} (llama.cpp)",
                trainer.progress.step,
                peft_dir.display(),
                gguf_path.display(),
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let model_path = a.out.join("model.gguf");
    let weights = ferrollama_train::export::to_weights(
        &trainer.params,
        &src.config,
        src.weights.rope_freqs.clone(),
    )?;
    let target = match a.out_type {
        OutType::F32 => Target::F32,
        OutType::F16 => Target::F16,
        OutType::Bf16 => Target::BF16,
    };
    let name = src.name.as_deref().map(|n| format!("{n} (fine-tuned)"));
    let parts = ModelParts {
        config: &src.config,
        weights: &weights,
        tokenizer: &src.tokenizer,
        name: name.as_deref(),
    };
    write_gguf(&parts, target, &model_path, threads, &|_, _| {})
        .with_context(|| format!("cannot write {}", model_path.display()))?;
    if json {
        println!(
            "{}",
            json!({"event": "done", "method": "full", "steps": trainer.progress.step,
                   "model": model_path,
                   "checkpoint": ck_path})
        );
    } else {
        eprintln!(
            "trained {} steps; wrote {} (run it: ferrollama run -m {})",
            trainer.progress.step,
            model_path.display(),
            model_path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
