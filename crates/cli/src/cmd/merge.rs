//! `ferrollama merge`: a LoRA adapter folded into its base model, written as GGUF.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ferrollama_model::Adapter;
use ferrollama_model::export::{ModelParts, Target, write_gguf};

use super::quantize::{bytes_bar, default_threads, parse_target};
use super::source::open_source;

/// Merge a LoRA adapter into its base model and write the result as a GGUF model file.
///
/// Every adapted matrix becomes W + (alpha / rank) · B·A, computed in f32 (a quantized base
/// is dequantized first); the other tensors are carried over. The output is a float model
/// (--type f16 by default); quantize it afterwards as usual, e.g.
/// `ferrollama quantize merged.gguf merged-q4.gguf --type q4_k`. To run an adapter without
/// merging, use `run|chat --lora` or `serve --lora`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The base model: .gguf file, Hugging Face folder, or Meta folder.
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    model: PathBuf,
    /// The adapter: a PEFT folder (adapter_config.json + adapter_model.safetensors) or a
    /// llama.cpp GGUF LoRA adapter, made for this base.
    #[arg(long = "lora", value_name = "ADAPTER")]
    lora: PathBuf,
    /// The GGUF file to write (written as OUT.partial, renamed when complete).
    output: PathBuf,
    /// Type of the matrices written: f16, bf16 or f32.
    #[arg(long = "type", value_name = "TYPE", default_value = "f16", value_parser = parse_target)]
    target: Target,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Model name written into the file (default: the base's name).
    #[arg(long)]
    name: Option<String>,
    /// Threads for converting (default: all cores).
    #[arg(short = 't', long, value_name = "N")]
    threads: Option<usize>,
}

pub fn merge(a: MergeArgs) -> Result<ExitCode> {
    if !a.target.is_float() {
        bail!(
            "--type {} would quantize while merging; merge to f16, bf16 or f32, then run \
             `ferrollama quantize` on the result",
            a.target.name()
        );
    }
    if a.output.exists() && !a.force {
        bail!(
            "{} already exists; pass --force to replace it",
            a.output.display()
        );
    }
    let src = open_source(&a.model)?;
    let adapter = Adapter::load(&a.lora, &src.config)
        .with_context(|| format!("--lora {}", a.lora.display()))?;
    adapter.check(&src.config)?;
    let merged = adapter
        .merge(&src.config, &src.weights)
        .context("cannot merge the adapter")?;
    let name = a.name.clone().or(src.name.clone());
    let parts = ModelParts {
        config: &src.config,
        weights: &merged,
        tokenizer: &src.tokenizer,
        name: name.as_deref(),
    };
    let bar = bytes_bar(false, &format!("writing {}", a.target.name()));
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let threads = a.threads.unwrap_or_else(default_threads);
    let report = write_gguf(&parts, a.target, &a.output, threads, &progress)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    bar.finish_and_clear();
    let adapted: usize = adapter
        .layers
        .iter()
        .map(|l| l.iter().filter(|p| p.is_some()).count())
        .sum();
    eprintln!(
        "merged {adapted} matrices (rank {}, scale {}) into {} ({:.1} MiB, {} tensors)",
        adapter.rank,
        adapter.scale,
        a.output.display(),
        report.bytes as f64 / (1 << 20) as f64,
        report.tensors
    );
    Ok(ExitCode::SUCCESS)
}
