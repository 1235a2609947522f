//! `ferrollama quantize`: convert or quantize a model into a GGUF file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ferrollama_model::export::{ModelParts, Target, requantized_types, write_gguf};
use indicatif::{ProgressBar, ProgressStyle};

use super::source::open_source;

/// Quantize or convert a model (GGUF file, Hugging Face folder or Meta checkpoint folder)
/// into a GGUF file.
///
/// Types: q8_0, q6_k, q5_0, q5_1 (Q6_K output matrix) and q4_k (llama.cpp's Q4_K_M
/// mixture: Q6_K for the output matrix and for wv/w2 in some layers; Q5_0 for matrices whose
/// rows are not a multiple of 256) load in llama.cpp too; fp8 is Meta's Llama 3.1 405B recipe
/// (E4M3 row-wise feed-forward weights in layers 1..n-2, the rest BF16), which only
/// ferrollama runs; f16, bf16 and f32 convert without quantizing. Quantizing an already
/// quantized model works but compounds the error, so it needs --allow-requantize.
#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// The model to read: .gguf file, Hugging Face folder, or Meta folder (params.json +
    /// consolidated.NN.pth + tokenizer.model).
    input: PathBuf,
    /// The GGUF file to write (written as OUT.partial, renamed when complete).
    output: PathBuf,
    /// Target type: q8_0, q5_0, q5_1, q4_k (= q4_k_m), q6_k, fp8, f16, bf16, f32.
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_target)]
    target: Target,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Allow quantizing tensors that are already quantized in the input.
    #[arg(long)]
    allow_requantize: bool,
    /// Model name written into the file (default: the input's name).
    #[arg(long)]
    name: Option<String>,
    /// Threads for quantizing (default: all cores).
    #[arg(short = 't', long, value_name = "N")]
    threads: Option<usize>,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

pub fn parse_target(s: &str) -> Result<Target, String> {
    Target::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
        format!("unknown type {s:?}; choose one of {}", names.join(", "))
    })
}

/// All cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A bytes progress bar on stderr labelled `msg` (hidden when the output is JSON).
pub fn bytes_bar(json: bool, msg: &str) -> ProgressBar {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(msg.to_string());
    bar
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

pub fn quantize(a: QuantizeArgs) -> Result<ExitCode> {
    if a.output.exists() && !a.force {
        bail!(
            "{} already exists; pass --force to replace it",
            a.output.display()
        );
    }
    if same_file(&a.input, &a.output) {
        bail!("the output would overwrite the input; choose another file name");
    }
    if a.output.extension().is_none_or(|e| e != "gguf") {
        tracing::warn!("the output name does not end in .gguf");
    }
    let src = open_source(&a.input)?;
    let name = a.name.clone().or(src.name.clone());
    let parts = ModelParts {
        config: &src.config,
        weights: &src.weights,
        tokenizer: &src.tokenizer,
        name: name.as_deref(),
    };
    let threads = a.threads.unwrap_or_else(default_threads);
    let bar = bytes_bar(a.json, &format!("writing {}", a.target.name()));
    let started = std::time::Instant::now();
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    if !a.allow_requantize {
        // A dry run of the plan would duplicate it; the report after writing names the
        // requantized tensors, so check the source types up front instead.
        let quantized_src = requantized_types(&src.weights, a.target);
        if !quantized_src.is_empty() {
            bail!(
                "{} is already quantized ({}); quantizing again compounds the error. Start \
                 from an F16/BF16/F32 model, or pass --allow-requantize",
                a.input.display(),
                quantized_src.join(", ")
            );
        }
    }
    let report = write_gguf(&parts, a.target, &a.output, threads, &progress)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        let v = serde_json::json!({
            "input": a.input,
            "output": a.output,
            "type": a.target.name(),
            "tensors": report.tensors,
            "bytes": report.bytes,
            "types": report.types,
            "fallbacks": report.fallbacks,
            "requantized": report.requantized,
            "seconds": secs,
        });
        println!("{v}");
    } else {
        let types: Vec<String> = report
            .types
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        eprintln!(
            "wrote {} ({:.1} MiB, {} tensors; matrices: {}) in {secs:.1} s",
            a.output.display(),
            report.bytes as f64 / (1 << 20) as f64,
            report.tensors,
            types.join(", ")
        );
        for line in summarize_fallbacks(&report.fallbacks) {
            eprintln!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How many tensor names a fallback summary shows before "and N more".
const FALLBACK_NAMES_SHOWN: usize = 4;

/// One line per fallback reason instead of one per tensor. The export report's entries
/// read "NAME: rows of C are not a multiple of B for TYPE; stored as FALLBACK"; entries
/// with the same reason are grouped, in first-seen order:
/// "12 tensors stored as q5_0 because their rows of 576 are not a multiple of 256 for
/// q4_k: blk.0.attn_q.weight, ... and 8 more (--json lists them all)".
pub fn summarize_fallbacks(fallbacks: &[String]) -> Vec<String> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for f in fallbacks {
        let (name, reason) = f.split_once(": ").unwrap_or((f.as_str(), ""));
        match groups.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, names)) => names.push(name),
            None => groups.push((reason, vec![name])),
        }
    }
    groups
        .into_iter()
        .map(|(reason, names)| {
            let n = names.len();
            let (tensors, their) = if n == 1 {
                ("tensor", "its")
            } else {
                ("tensors", "their")
            };
            // "rows of C are not ... for T; stored as F" → "stored as F because their rows ..."
            let what = match reason.rsplit_once("; stored as ") {
                Some((why, to)) => format!("stored as {to} because {their} {why}"),
                None => reason.to_string(),
            };
            let mut shown = names[..n.min(FALLBACK_NAMES_SHOWN)].join(", ");
            if n > FALLBACK_NAMES_SHOWN {
                shown.push_str(&format!(
                    " and {} more (--json lists them all)",
                    n - FALLBACK_NAMES_SHOWN
                ));
            }
            format!("{n} {tensors} {what}: {shown}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::summarize_fallbacks;

    #[test]
    fn quantize_q4_k_fallbacks_are_one_line_per_reason() {
        let mut f: Vec<String> = (0..12)
            .map(|i| {
                format!(
                    "blk.{i}.ffn_down.weight: rows of 1536 are not a multiple of 256 for q4_k; stored as q5_0"
                )
            })
            .collect();
        f.insert(
            3,
            "output.weight: rows of 576 are not a multiple of 256 for q6_k; stored as q8_0".into(),
        );
        let lines = summarize_fallbacks(&f);
        assert_eq!(
            lines,
            [
                "12 tensors stored as q5_0 because their rows of 1536 are not a multiple of 256 \
                 for q4_k: blk.0.ffn_down.weight, blk.1.ffn_down.weight, blk.2.ffn_down.weight, \
                 blk.3.ffn_down.weight and 8 more (--json lists them all)",
                "1 tensor stored as q8_0 because its rows of 576 are not a multiple of 256 for \
                 q6_k: output.weight",
            ]
        );
        assert!(summarize_fallbacks(&[]).is_empty());
    }
}
