//! Where things live on disk: the cache directory and the store root.
//!
//! One place for the lookup order, shared by the binary's asset cache and the store:
//! cache = `$FERROLLAMA_CACHE`, else `$XDG_CACHE_HOME/ferrollama`, else
//! `~/.cache/ferrollama`; store root = `$FERROLLAMA_MODELS`, else `<cache>/models` — so the
//! default model, cached as `<cache>/models/SmolLM2-135M-Instruct.Q4_1.gguf` long before
//! the store existed, sits in the default store root. Empty variables count as unset.

use std::path::PathBuf;

fn var(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The cache directory for downloaded assets (outside any checkout).
pub fn cache_dir() -> PathBuf {
    if let Some(p) = var("FERROLLAMA_CACHE") {
        return p;
    }
    if let Some(p) = var("XDG_CACHE_HOME") {
        return p.join("ferrollama");
    }
    match var("HOME") {
        Some(h) => h.join(".cache/ferrollama"),
        None => PathBuf::from(".ferrollama-cache"),
    }
}

/// Where `serve` keeps its state (agent sessions, Responses, stored chat completions):
/// `$FERROLLAMA_DATA`, else `$XDG_DATA_HOME/ferrollama`, else `~/.local/share/ferrollama`.
pub fn data_dir() -> PathBuf {
    if let Some(p) = var("FERROLLAMA_DATA") {
        return p;
    }
    if let Some(p) = var("XDG_DATA_HOME") {
        return p.join("ferrollama");
    }
    match var("HOME") {
        Some(h) => h.join(".local/share/ferrollama"),
        None => PathBuf::from(".ferrollama-data"),
    }
}

/// The store root: `$FERROLLAMA_MODELS`, else `<cache>/models`.
pub fn models_root() -> PathBuf {
    var("FERROLLAMA_MODELS").unwrap_or_else(|| cache_dir().join("models"))
}

/// The Python interpreter used for `pip download`: `$FERROLLAMA_PYTHON`, else `python3`.
pub fn python() -> PathBuf {
    var("FERROLLAMA_PYTHON").unwrap_or_else(|| PathBuf::from("python3"))
}
