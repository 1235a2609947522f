//! One module per subcommand.

pub mod bench;
pub mod chat;
pub mod fetch;
pub mod import;
pub mod model_args;
pub mod models;
pub mod perplexity;
pub mod prompt;
pub mod pull;
pub mod quantize;
pub mod run;
pub mod serve;
pub mod source;
pub mod tokenize;

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
