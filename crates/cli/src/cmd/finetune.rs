//! `ferrollama finetune`: full or LoRA fine-tuning of a model on a JSONL file, with
//! checkpoints, resume, evaluation, and the result written as a GGUF the engine loads (full)
//! or as adapters in PEFT's and llama.cpp's formats (LoRA).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ferrollama_tensor::ThreadPool;
use ferrollama_train::checkpoint::CHECKPOINT_FILE;
use ferrollama_train::data::{LengthPolicy, SequenceOptions};
use ferrollama_train::job::{self, Job, JobSpec, NoControl, Output};
use ferrollama_train::{AdamWConfig, Event, Length, LoraConfig, Target, TrainConfig};
use indicatif::ProgressStyle;
use serde_json::json;

use super::at_least_one;

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

pub fn finetune(a: FinetuneArgs) -> Result<ExitCode> {
    let method = match a.method {
        Method::Full => job::Method::Full,
        Method::Lora => job::Method::Lora(LoraConfig {
            rank: a.rank,
            alpha: a.alpha,
            targets: Target::parse_list(&a.targets)?,
        }),
        Method::Dpo | Method::Distill => bail!(
            "--method {} is not implemented yet; --method full trains every weight, --method \
             lora an adapter",
            if a.method == Method::Dpo {
                "dpo"
            } else {
                "distill"
            }
        ),
    };
    let path = ferrollama_store::Store::open_default().resolve_arg(&a.model)?;
    let lr = a.lr.unwrap_or(match method {
        job::Method::Lora(_) => 2e-4,
        _ => 1e-5,
    });
    let config = TrainConfig {
        length: match (a.steps, a.epochs) {
            (Some(n), _) => Length::Steps(n),
            (None, e) => Length::Epochs(e.unwrap_or(1)),
        },
        lr,
        warmup: a.warmup,
        batch_size: a.batch_size,
        grad_accum: a.grad_accum,
        max_grad_norm: a.max_grad_norm,
        adamw: AdamWConfig {
            weight_decay: a.weight_decay,
            ..AdamWConfig::default()
        },
        seed: a.seed,
        eval_every: a.eval_every,
        checkpoint_every: a.checkpoint_every,
        recompute: a.recompute,
    };
    let spec = JobSpec {
        model: path.clone(),
        data: a.data.clone(),
        eval: a.eval.clone(),
        method,
        config,
        sequences: SequenceOptions {
            seq_len: a.seq_len,
            policy: if a.truncate {
                LengthPolicy::Truncate
            } else {
                LengthPolicy::Refuse
            },
        },
        out: a.out.clone(),
        resume: a.resume,
        out_type: match a.out_type {
            OutType::F32 => job::OutType::F32,
            OutType::F16 => job::OutType::F16,
            OutType::Bf16 => job::OutType::Bf16,
        },
    };
    let ck_path = a.out.join(CHECKPOINT_FILE);
    let mut job = Job::prepare(spec).with_context(|| {
        if a.resume {
            format!("cannot resume from {}", ck_path.display())
        } else {
            format!("cannot start fine-tuning {}", path.display())
        }
    })?;
    if !a.json {
        for n in &job.notes {
            eprintln!("{n}");
        }
    }
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = ThreadPool::new(threads);

    let bar = super::progress_bar(a.json);
    bar.set_length(job.trainer.total_steps());
    bar.set_position(job.trainer.progress.step);
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
    let output = job.run(&pool, &NoControl, &mut on).with_context(|| {
        format!(
            "training stopped; the last good checkpoint is in {}",
            a.out.display()
        )
    })?;
    bar.finish_and_clear();
    let steps = job.trainer.progress.step;
    match output {
        Output::Adapter { peft, gguf } => {
            if json {
                println!(
                    "{}",
                    json!({"event": "done", "method": "lora", "steps": steps, "adapter": peft,
                           "adapter_gguf": gguf, "checkpoint": ck_path})
                );
            } else {
                eprintln!(
                    "trained {steps} steps; wrote the adapter as {} (PEFT) and {} (llama.cpp)",
                    peft.display(),
                    gguf.display(),
                );
            }
        }
        Output::Model(model) => {
            if json {
                println!(
                    "{}",
                    json!({"event": "done", "method": "full", "steps": steps, "model": model,
                           "checkpoint": ck_path})
                );
            } else {
                eprintln!(
                    "trained {steps} steps; wrote {} (run it: ferrollama run -m {})",
                    model.display(),
                    model.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
