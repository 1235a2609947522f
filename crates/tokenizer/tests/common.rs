//! Shared by the integration tests: finding Meta's tokenizer and the vectors.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use ferrollama_tokenizer::Tokenizer;

/// `testdata/` at the workspace root.
pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// Meta's `tokenizer.model`: `$FERROLLAMA_TOKENIZER`, else the cache the CLI fills
/// (`ferrollama fetch tokenizer`, which `scripts/test` runs first).
pub fn tokenizer_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROLLAMA_TOKENIZER") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("FERROLLAMA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("ferrollama")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/ferrollama")))
        .unwrap_or_else(|| PathBuf::from(".cache/ferrollama"));
    cache.join("llama-models-0.3.0/tokenizer.model")
}

pub fn tokenizer() -> Tokenizer {
    let path = tokenizer_path();
    Tokenizer::from_file(&path).unwrap_or_else(|e| {
        panic!(
            "{e}\nMeta's tokenizer.model is needed; run `./scripts/test` (it fetches it), or \
             `cargo run -p ferrollama -- fetch tokenizer`, or set FERROLLAMA_TOKENIZER"
        )
    })
}

/// Lines of a JSONL vector file, parsed.
pub fn vectors(name: &str) -> Vec<serde_json::Value> {
    let path = testdata().join("llama3").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect()
}
