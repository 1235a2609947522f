//! `ferrollama prompt-guard`: Prompt Guard's verdict on a text (spec §5.2).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use ferrollama_safety::prompt_guard::{
    DEFAULT_THRESHOLD, LABELS, Mode, PromptGuard, PromptGuardScores, WeightFormat, flagged,
};
use ferrollama_tensor::ThreadPool;
use serde_json::{Value, json};

use crate::jsonl;

/// Scores texts with Prompt Guard, Meta's mDeBERTa-v3 classifier of prompt injections and
/// jailbreaks (labels BENIGN, INJECTION, JAILBREAK).
///
/// Prints the three probabilities, the mode's score and the verdict. Jailbreak mode
/// (direct user input) scores p[JAILBREAK]; injection mode (third-party content: tool
/// output, web pages, documents) scores p[INJECTION] + p[JAILBREAK]. A text is flagged
/// when its score is strictly above the threshold (llama-stack's rule). Texts longer than
/// 510 tokens are scored in windows of 510 (each wrapped in [CLS] .. [SEP]); the worst
/// window counts.
#[derive(Debug, clap::Args)]
pub struct PromptGuardArgs {
    /// The Prompt Guard folder from Hugging Face (config.json, model.safetensors,
    /// tokenizer.json or spm.model), e.g. a download of meta-llama/Prompt-Guard-86M.
    #[arg(short = 'm', long = "model", value_name = "DIR")]
    model: PathBuf,
    /// jailbreak: score p[2], for user input; injection: score p[1] + p[2], for
    /// third-party content (many false positives on ordinary dialogue).
    #[arg(long, value_name = "jailbreak|injection", default_value = "jailbreak", value_parser = parse_mode)]
    mode: Mode,
    /// Flag when the score is above this (strictly).
    #[arg(long, value_name = "P", default_value_t = DEFAULT_THRESHOLD)]
    threshold: f32,
    /// Encoder weights: f32 (the reference numerics) or q8_0 (8-bit, faster, about 4x
    /// less memory for the encoder; probabilities move by about 1e-2).
    #[arg(long, value_enum, default_value = "f32")]
    weights: WeightsArg,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long, value_name = "N")]
    threads: Option<usize>,
    /// Print one JSON object {"benign", "injection", "jailbreak", "score", "mode",
    /// "threshold", "flagged", "windows", "tokens"}.
    #[arg(long, conflicts_with = "jsonl")]
    json: bool,
    /// Read JSON lines {"text": "..."} from stdin and write one such object per line
    /// ({"error": "..."} for a bad line); a summary with texts/s goes to stderr.
    #[arg(long)]
    jsonl: bool,
    /// The text to score (default: all of stdin).
    #[arg(value_name = "TEXT", conflicts_with = "jsonl")]
    text: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WeightsArg {
    F32,
    #[value(name = "q8_0")]
    Q8_0,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse::<Mode>().map_err(|e| e.to_string())
}

pub fn prompt_guard(a: PromptGuardArgs) -> Result<ExitCode> {
    if !(0.0..=1.0).contains(&a.threshold) {
        return Err(anyhow!(
            "--threshold {} is not a probability in [0, 1]",
            a.threshold
        ));
    }
    let format = match a.weights {
        WeightsArg::F32 => WeightFormat::F32,
        WeightsArg::Q8_0 => WeightFormat::Q8_0,
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let t0 = Instant::now();
    let guard = PromptGuard::load_with(&a.model, format)
        .with_context(|| format!("cannot load Prompt Guard from {}", a.model.display()))?;
    let pool = ThreadPool::new(threads);
    tracing::info!(seconds = t0.elapsed().as_secs_f64(), "Prompt Guard loaded");

    if a.jsonl {
        let start = Instant::now();
        let (mut texts, mut tokens) = (0usize, 0usize);
        let code = jsonl::each_line(|line| {
            let v: Value =
                serde_json::from_str(line).map_err(|e| anyhow!("not valid JSON: {e}"))?;
            let text = v
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!(r#"expected an object {{"text": "..."}}"#))?;
            let s = guard.classify(text, &pool)?;
            texts += 1;
            tokens += s.tokens;
            Ok(report(&s, a.mode, a.threshold))
        })?;
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "prompt-guard: {texts} texts, {tokens} tokens in {secs:.3} s: {:.2} texts/s, {:.1} tokens/s ({threads} threads, {} weights)",
            texts as f64 / secs.max(1e-9),
            tokens as f64 / secs.max(1e-9),
            format_name(format),
        );
        return Ok(code);
    }

    let text = match a.text {
        Some(t) => t,
        None => std::io::read_to_string(std::io::stdin()).context("cannot read stdin as UTF-8")?,
    };
    let s = guard.classify(&text, &pool)?;
    if a.json {
        println!("{}", report(&s, a.mode, a.threshold));
        return Ok(ExitCode::SUCCESS);
    }
    let score = a.mode.score(&s);
    for (label, p) in LABELS.iter().zip([s.benign, s.injection, s.jailbreak]) {
        println!("{label:<10} {p:.6}");
    }
    println!(
        "{} score {score:.6} (threshold {}), {} window(s), {} tokens",
        a.mode.name(),
        a.threshold,
        s.n_windows(),
        s.tokens
    );
    if flagged(score, a.threshold) {
        println!("FLAGGED as {}", a.mode.name());
    } else {
        println!("not flagged");
    }
    Ok(ExitCode::SUCCESS)
}

fn format_name(f: WeightFormat) -> &'static str {
    match f {
        WeightFormat::F32 => "f32",
        WeightFormat::Q8_0 => "q8_0",
    }
}

/// The `--json` / `--jsonl` object.
fn report(s: &PromptGuardScores, mode: Mode, threshold: f32) -> Value {
    let score = mode.score(s);
    json!({
        "benign": short(s.benign),
        "injection": short(s.injection),
        "jailbreak": short(s.jailbreak),
        "score": short(score),
        "mode": mode.name(),
        "threshold": short(threshold),
        "flagged": flagged(score, threshold),
        "windows": s.n_windows(),
        "tokens": s.tokens,
    })
}

/// An f32 as the f64 with the same shortest decimal (0.9, not 0.8999999761581421).
fn short(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}
