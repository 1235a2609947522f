//! `ferrollama import`: bring a model from disk into the store, as one GGUF file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ferrollama_model::export::{ModelParts, Target, requantized_types, write_gguf};
use ferrollama_store::Store;
use ferrollama_store::name::derive_name;

use super::quantize::{bytes_bar, default_threads};
use super::source::open_source;

/// Import a model into the local store (see `ferrollama models list`): a Hugging Face
/// folder (config.json + safetensors + tokenizer.json or tokenizer.model), a Meta
/// checkpoint folder (params.json + consolidated.NN.pth + tokenizer.model; model-parallel
/// shards are merged) or a GGUF file. The model is written as one GGUF file in the
/// entry, converted to --type (default: f16 for a float source, or kept as it is for a
/// GGUF file), and can then be run with `-m NAME`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The model folder or .gguf file.
    path: PathBuf,
    /// Entry name (default: derived from the folder or file name).
    #[arg(long)]
    name: Option<String>,
    /// Store as this type: f16, bf16, f32, q8_0, q4_k, q6_k or fp8 (see `quantize --help`).
    #[arg(long = "type", value_name = "TYPE", value_parser = super::quantize::parse_target)]
    target: Option<Target>,
    /// Replace an entry of the same name.
    #[arg(long)]
    force: bool,
    /// Threads for quantizing (default: all cores).
    #[arg(short = 't', long, value_name = "N")]
    threads: Option<usize>,
    /// Print the entry as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn import(a: ImportArgs) -> Result<ExitCode> {
    let src = open_source(&a.path)?;
    let is_gguf = a.path.is_file();
    let target = match a.target {
        Some(t) => t,
        None if is_gguf => {
            // Keep a GGUF file's own types: F32 would inflate it, anything else requantize.
            // Copying is what "import" of a GGUF means.
            return copy_gguf(&a);
        }
        None => Target::F16,
    };
    let quantized_src = requantized_types(&src.weights, target);
    if !quantized_src.is_empty() {
        anyhow::bail!(
            "{} is already quantized ({}); import it without --type, or start from an \
             F16/BF16 model",
            a.path.display(),
            quantized_src.join(", ")
        );
    }
    let stem = a
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| derive_name(&format!("{stem}-{}", target.name())));
    let threads = a.threads.unwrap_or_else(default_threads);
    let bar = bytes_bar(a.json, "importing");
    let source = format!("import:{} ({})", a.path.display(), target.name());
    let model_name = src.name.clone().unwrap_or_else(|| stem.clone());
    let parts = ModelParts {
        config: &src.config,
        weights: &src.weights,
        tokenizer: &src.tokenizer,
        name: Some(&model_name),
    };
    let store = Store::open_default();
    let entry = store
        .add_gguf(&name, &source, a.force, |path| {
            write_gguf(&parts, target, path, threads, &|d, t| {
                bar.set_length(t);
                bar.set_position(d);
            })
            .map(|_| ())
        })?
        .with_context(|| format!("cannot import {}", a.path.display()))?;
    bar.finish_and_clear();
    report(&entry, a.json)
}

fn copy_gguf(a: &ImportArgs) -> Result<ExitCode> {
    let stem = a
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let name = a.name.clone().unwrap_or_else(|| derive_name(&stem));
    let source = format!("import:{}", a.path.display());
    let store = Store::open_default();
    let entry = store
        .add_gguf(&name, &source, a.force, |path| -> std::io::Result<()> {
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(".partial");
            std::fs::copy(&a.path, &tmp)?;
            std::fs::rename(&tmp, path)
        })?
        .with_context(|| format!("cannot copy {}", a.path.display()))?;
    report(&entry, a.json)
}

fn report(entry: &ferrollama_store::Entry, json: bool) -> Result<ExitCode> {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "name": entry.name,
                "path": entry.model_path,
                "size": entry.size,
                "source": entry.source,
            })
        );
    } else {
        eprintln!(
            "imported {} ({:.1} MiB); run it with `ferrollama run -m {} ...`",
            entry.name,
            entry.size as f64 / (1 << 20) as f64,
            entry.name
        );
        if let Some(p) = &entry.model_path {
            println!("{}", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
