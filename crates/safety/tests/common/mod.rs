//! Finding the test assets: the repository's testdata, Meta's tokenizer and SmolLM2 (the
//! last two from the cache that `scripts/test` fills).
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

fn cache() -> PathBuf {
    std::env::var_os("FERROLLAMA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("ferrollama")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/ferrollama")))
        .unwrap_or_default()
}

/// Meta's `tokenizer.model` (`ferrollama fetch tokenizer`).
pub fn tokenizer_path() -> PathBuf {
    std::env::var_os("FERROLLAMA_TOKENIZER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("llama-models-0.3.0/tokenizer.model"))
}

/// SmolLM2-135M-Instruct Q4_1 (`ferrollama fetch smollm2`).
pub fn smollm2_path() -> PathBuf {
    std::env::var_os("FERROLLAMA_SMOLLM2")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"))
}

pub fn jsonl(path: PathBuf) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}
