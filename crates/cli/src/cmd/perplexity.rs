//! `ferrollama perplexity`: how well a model predicts a text, and how far it drifts from a
//! base model (KL divergence).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ferrollama_engine::Model;
use ferrollama_eval::{PplOptions, perplexity};
use indicatif::ProgressStyle;

use super::model_args::ModelArgs;

/// Perplexity of a model on a text file, computed as llama.cpp's llama-perplexity does
/// (chunks of --ctx-size tokens, each starting with BOS, the second half of each scored),
/// optionally with the KL divergence from a base model (usually the F16/BF16 original of a
/// quantized model) over the same positions.
#[derive(Debug, clap::Args)]
#[command(mut_arg("ctx_size", |a| a.help(
    "Tokens per chunk (the default, 512, is what llama.cpp's published perplexity tables \
     use); at most the model's training context"
)))]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A UTF-8 text file (at least 2 × ctx-size tokens).
    file: PathBuf,
    /// Base model for KL divergence (same tokenizer); both run over the same chunks.
    #[arg(long = "kl-divergence", value_name = "BASE")]
    kl_base: Option<PathBuf>,
    /// Evaluate at most this many chunks (at least 1; default: all the text holds).
    #[arg(long, value_name = "N", value_parser = super::at_least_one)]
    chunks: Option<usize>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Tokens per chunk without -c: llama.cpp's published tables use 512.
pub const DEFAULT_CTX: usize = 512;

pub fn run(a: PerplexityArgs) -> Result<ExitCode> {
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 text (byte {})",
            a.file.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let n_ctx = a.model.ctx_size.unwrap_or(DEFAULT_CTX);
    if a.model.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let model = a.model.load()?;
    let base = match &a.kl_base {
        Some(p) => Some(
            Model::load(p).with_context(|| format!("cannot load base model {}", p.display()))?,
        ),
        None => None,
    };
    let opts = PplOptions {
        n_ctx,
        batch: a.model.batch_size.min(n_ctx),
        max_chunks: a.chunks,
        threads: a.model.threads(),
    };
    let bar = super::progress_bar(a.json);
    bar.set_style(
        ProgressStyle::with_template("perplexity [{bar:30}] chunk {pos}/{len} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let r = perplexity(&model, base.as_ref(), &text, &opts, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["model"] = serde_json::json!(model.name);
        v["seconds"] = serde_json::json!(secs);
        if let Some(b) = &base {
            v["base"] = serde_json::json!(b.name);
        }
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: {} tokens, {} chunks of {n_ctx}, {} positions scored, {secs:.1} s",
        model.name, r.text_tokens, r.chunks, r.count
    );
    println!("Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.ppl_unc);
    if let (Some(kl), Some(b)) = (&r.kl, &base) {
        println!(
            "base {}: PPL = {:.4} +/- {:.5}",
            b.name, kl.base_ppl, kl.base_ppl_unc
        );
        println!("ln(PPL(Q)/PPL(base)): {:.6}", kl.ln_ppl_ratio);
        println!(
            "KL divergence: mean {:.6} +/- {:.6}, median {:.6}, 99% {:.6}, max {:.6}",
            kl.mean, kl.mean_unc, kl.median, kl.p99, kl.max
        );
        println!(
            "same top token: {:.3}%, RMS Δp: {:.3}%",
            100.0 * kl.top1_same,
            100.0 * kl.rms_dp
        );
    }
    Ok(ExitCode::SUCCESS)
}
