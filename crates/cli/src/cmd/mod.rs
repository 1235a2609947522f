//! One module per subcommand.

pub mod batch;
pub mod bench;
pub mod chat;
pub mod chat_agent;
pub mod embed;
pub mod eval;
pub mod fetch;
pub mod finetune;
pub mod guard;
pub mod import;
pub mod merge;
pub mod model_args;
pub mod models;
pub mod perplexity;
pub mod prompt;
pub mod prompt_guard;
pub mod pull;
pub mod quantize;
pub mod run;
pub mod sdg;
pub mod serve;
pub mod source;
pub mod teacher_data;
pub mod tokenize;
pub mod tool;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrollama_tokenizer::Tokenizer;

use crate::cache;

/// `--tokenizer FILE`, shared by the text subcommands.
#[derive(Debug, clap::Args)]
pub struct TokenizerArg {
    /// Meta's tiktoken-format tokenizer.model. Default: the Llama 3 tokenizer, fetched once
    /// from the PyPI package llama-models==0.3.0 into the cache (sha256 checked).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
}

impl TokenizerArg {
    pub fn load(&self) -> Result<Tokenizer> {
        let path = match &self.tokenizer {
            Some(p) => p.clone(),
            None => cache::ensure(&cache::LLAMA3_TOKENIZER)?,
        };
        Tokenizer::from_file(&path)
            .with_context(|| format!("cannot load tokenizer {}", path.display()))
    }
}

/// The model files `-m` names (an existing path wins, otherwise a model in the store), or
/// the default model, fetched once into the cache, when none is named (`serve`, `batch`).
pub fn model_paths(models: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if models.is_empty() {
        return Ok(vec![cache::ensure(&cache::SMOLLM2)?]);
    }
    let store = ferrollama_store::Store::open_default();
    Ok(models
        .iter()
        .map(|p| store.resolve_arg(p))
        .collect::<Result<Vec<_>, _>>()?)
}

/// A probability in `[0, 1)` (a dropout rate).
pub fn probability(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|p| (0.0..1.0).contains(p))
        .ok_or_else(|| format!("{s:?} is not a probability in [0, 1)"))
}

/// A value parser for counts that must be at least 1.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (expected a whole number, at least 1)")),
    }
}

/// A progress bar on stderr for long runs, hidden with `--json` or when stderr is not a
/// terminal (logs and pipes stay clean).
pub fn progress_bar(json: bool) -> indicatif::ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    }
}
