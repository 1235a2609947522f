//! Opening any supported model source (GGUF file, Hugging Face folder, Meta checkpoint)
//! for the commands that rewrite models.

use std::path::Path;

use anyhow::{Context, Result};
use ferrollama_model::import::Imported;

/// The model at `path`, named after the file or folder when it carries no name.
pub fn open_source(path: &Path) -> Result<Imported> {
    let mut m = ferrollama_model::import::open(path)
        .with_context(|| format!("cannot read model {}", path.display()))?;
    tracing::info!(kind = ?m.kind, path = %path.display(), "opened model");
    if m.name.is_none() {
        m.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    }
    Ok(m)
}
