//! `ferrollama finetune`: full or LoRA fine-tuning of a model on a JSONL file, with
//! checkpoints, resume, evaluation, and the result written as a GGUF the engine loads (full)
//! or as adapters in PEFT's and llama.cpp's formats (LoRA).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ferrollama_tensor::ThreadPool;
use ferrollama_train::checkpoint::CHECKPOINT_FILE;
use ferrollama_train::data::{LengthPolicy, SequenceOptions};
use ferrollama_train::dpo::DpoMetrics;
use ferrollama_train::job::{self, DistillSpec, Job, JobSpec, Loss, NoControl, Output};
use ferrollama_train::{AdamWConfig, BaseCompute, Event, Length, LoraConfig, Target, TrainConfig};
use indicatif::ProgressStyle;
use serde_json::json;

use super::teacher_data::{TeacherGen, write_teacher_data};
use super::{at_least_one, probability};

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
/// --method dpo trains on {"prompt", "chosen", "rejected"} pairs with DPO's loss (--beta),
/// the reference being the base model (without the adapter), and reports TRL's metrics
/// (rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins). --method
/// distill learns from --teacher: from its top --distill-top-k probabilities at
/// --distill-temperature on every trained position (--distill-mode logits, same tokenizer,
/// computed as training goes), or from its greedy answers to the data's prompts, written to
/// OUT/teacher_data.jsonl and trained on as ordinary fine-tuning data (--distill-mode
/// sequences, any tokenizer). Both train a LoRA adapter unless --tune full.
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
    /// What to train: full (every weight, f32 master weights), lora (a low-rank adapter
    /// on --targets, the model frozen), dpo (preference pairs) or distill (from --teacher).
    #[arg(long, value_enum, default_value = "full")]
    method: Method,
    /// What dpo and distill train: a LoRA adapter (default; --rank, --alpha, --targets) or
    /// every weight (full).
    #[arg(long, value_enum, value_name = "lora|full")]
    tune: Option<Tune>,
    /// DPO's beta: how far the policy may move from the reference (higher: closer).
    #[arg(long, default_value_t = 0.1, value_name = "B")]
    beta: f64,
    /// The teacher for --method distill: a .gguf file, a folder, or a model in the store.
    #[arg(long, value_name = "MODEL")]
    teacher: Option<PathBuf>,
    /// Distillation from the teacher's logits or from its generated answers.
    #[arg(long, value_enum, default_value = "logits")]
    distill_mode: DistillMode,
    /// The teacher's most probable tokens kept per position (logits mode).
    #[arg(long, default_value_t = 16, value_parser = at_least_one, value_name = "K")]
    distill_top_k: usize,
    /// Softmax temperature of teacher and student (logits mode); the loss is scaled by T².
    #[arg(long, default_value_t = 1.0, value_name = "T")]
    distill_temperature: f64,
    /// Keep the teacher's probability outside its top --distill-top-k as one more class
    /// (logits mode): the loss is then 0 exactly at the teacher. Without it the top k are
    /// renormalized, which also asks the student to sharpen onto them.
    #[arg(long)]
    distill_tail: bool,
    /// Tokens per teacher answer at most (sequences mode).
    #[arg(long, default_value_t = 256, value_parser = at_least_one, value_name = "N")]
    distill_max_tokens: usize,
    /// LoRA rank r: each adapted projection learns B (out × r) · A (r × in).
    #[arg(long, default_value_t = 16, value_parser = at_least_one, value_name = "R")]
    rank: usize,
    /// LoRA alpha: the update is scaled by alpha / rank.
    #[arg(long, default_value_t = 32.0, value_name = "A")]
    alpha: f64,
    /// LoRA dropout (PEFT's lora_dropout): the probability that an element of an
    /// adapter's input is zeroed while training (the rest scaled by 1 / (1 - P)); the
    /// base path, the eval loss and serving never drop. Masks follow from --seed, so
    /// runs and resumed runs repeat exactly.
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = probability)]
    lora_dropout: f64,
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
    /// How LoRA multiplies by the frozen base. f32: decoded f32 panels of the stored
    /// matrices, the exact products and gradients of the stored model. int8: integer
    /// arithmetic over the stored blocks (16-bit activations; F16/BF16 bases rounded to
    /// 12 bits on the fly) and a 12-bit transposed copy of each matrix for the backward
    /// (+2.1 bytes per weight); faster on CPUs whose integer multiply-add outruns their
    /// f32 FMA, with LoRA gradients within about 1-2 % of f32's.
    #[arg(long, value_enum, default_value = "f32", value_name = "f32|int8")]
    base_compute: BaseComputeArg,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Tune {
    Lora,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DistillMode {
    Logits,
    Sequences,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BaseComputeArg {
    F32,
    Int8,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OutType {
    F32,
    F16,
    Bf16,
}

pub fn finetune(a: FinetuneArgs) -> Result<ExitCode> {
    let method_name = match a.method {
        Method::Full => "full",
        Method::Lora => "lora",
        Method::Dpo => "dpo",
        Method::Distill => "distill",
    };
    if matches!(a.method, Method::Full | Method::Lora) && a.tune.is_some() {
        bail!(
            "--tune is for --method dpo and distill (--method {method_name} says what it trains)"
        );
    }
    if a.method != Method::Distill && a.teacher.is_some() {
        bail!("--teacher is for --method distill");
    }
    let tune_lora = match a.method {
        Method::Full => false,
        Method::Lora => true,
        Method::Dpo | Method::Distill => a.tune != Some(Tune::Full),
    };
    let method = if tune_lora {
        job::Method::Lora(LoraConfig {
            dropout: a.lora_dropout,
            rank: a.rank,
            alpha: a.alpha,
            targets: Target::parse_list(&a.targets)?,
        })
    } else {
        job::Method::Full
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let store = ferrollama_store::Store::open_default();
    let mut data_path = a.data.clone();
    let loss = match a.method {
        Method::Full | Method::Lora => Loss::CrossEntropy,
        Method::Dpo => Loss::Dpo { beta: a.beta },
        Method::Distill => {
            let Some(t) = &a.teacher else {
                bail!("--method distill needs --teacher MODEL");
            };
            let teacher = store.resolve_arg(t)?;
            match a.distill_mode {
                DistillMode::Logits => Loss::Distill(DistillSpec {
                    teacher,
                    top_k: a.distill_top_k,
                    temperature: a.distill_temperature,
                    tail: a.distill_tail,
                }),
                DistillMode::Sequences => {
                    data_path = teacher_answers(&a, &teacher, threads)?;
                    Loss::CrossEntropy
                }
            }
        }
    };
    let path = store.resolve_arg(&a.model)?;
    let lr = a.lr.unwrap_or(match (a.method, &method) {
        (Method::Dpo, job::Method::Lora(_)) => 5e-5,
        (Method::Dpo, job::Method::Full) => 1e-6,
        (_, job::Method::Lora(_)) => 2e-4,
        (_, job::Method::Full) => 1e-5,
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
        data: data_path,
        eval: a.eval.clone(),
        method,
        loss,
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
        base_compute: match a.base_compute {
            BaseComputeArg::F32 => BaseCompute::F32,
            BaseComputeArg::Int8 => BaseCompute::Int8,
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
                let mut v = json!({
                    "event": "step", "step": r.step, "total_steps": r.total_steps,
                    "epoch": r.epoch, "loss": r.loss, "grad_norm": r.grad_norm, "lr": r.lr,
                    "tokens": r.tokens, "tokens_per_s": r.tokens_per_s, "seconds": r.seconds,
                });
                if let Some(m) = &r.dpo {
                    add_dpo_fields(&mut v, m, "");
                }
                println!("{v}");
            } else {
                let extra = r.dpo.map_or(String::new(), |m| {
                    format!(", acc {:.2}, margin {:.3}", m.accuracy(), m.margin())
                });
                bar.set_message(format!(
                    "loss {:.4}{extra}, {:.0} tok/s",
                    r.loss, r.tokens_per_s
                ));
                bar.set_position(r.step);
            }
        }
        Event::EvalDpo { step, metrics } => {
            if json {
                let mut v = json!({"event": "eval", "step": step, "eval_loss": metrics.loss()});
                add_dpo_fields(&mut v, metrics, "eval_");
                println!("{v}");
            } else {
                bar.println(format!(
                    "step {step}: eval loss {:.4}, reward accuracy {:.2}, margin {:.3}",
                    metrics.loss(),
                    metrics.accuracy(),
                    metrics.margin()
                ));
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
                    json!({"event": "done", "method": method_name, "tune": "lora", "steps": steps,
                           "adapter": peft,
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
                    json!({"event": "done", "method": method_name, "tune": "full", "steps": steps,
                           "model": model,
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

/// Sequence-level distillation: the teacher's greedy answers to the data's prompts, written
/// to OUT/teacher_data.jsonl (kept for a resumed run), which then is the training data.
fn teacher_answers(a: &FinetuneArgs, teacher: &std::path::Path, threads: usize) -> Result<PathBuf> {
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let out = a.out.join("teacher_data.jsonl");
    if a.resume && out.exists() {
        if !a.json {
            eprintln!("reusing the teacher's answers in {}", out.display());
        }
        return Ok(out);
    }
    let model = ferrollama_engine::Model::load(teacher)
        .with_context(|| format!("cannot load the teacher {}", teacher.display()))?;
    let bar = super::progress_bar(a.json);
    bar.set_style(
        ProgressStyle::with_template("teacher answers [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let g = TeacherGen {
        max_tokens: a.distill_max_tokens,
        threads,
    };
    let w = write_teacher_data(&model, &a.data, &out, g, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    if a.json {
        println!(
            "{}",
            json!({"event": "teacher_data", "path": out, "records": w.records,
                   "cut_at_max_tokens": w.cut})
        );
    } else {
        eprintln!(
            "the teacher answered {} prompts into {} ({} cut at --distill-max-tokens)",
            w.records,
            out.display(),
            w.cut
        );
    }
    Ok(out)
}

/// DPO's metrics under TRL's names (`rewards/chosen`, ...), each key prefixed by `prefix`.
fn add_dpo_fields(v: &mut serde_json::Value, m: &DpoMetrics, prefix: &str) {
    if let (Some(obj), serde_json::Value::Object(fields)) = (v.as_object_mut(), m.to_json()) {
        for (k, x) in fields {
            if k != "loss" {
                obj.insert(format!("{prefix}{k}"), x);
            }
        }
    }
}
