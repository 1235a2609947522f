//! LoRA adapters as the engine serves them: a named adapter on one base model, shared by
//! the requests that use it (`Arc`), so unloading it while requests still run only drops
//! the name; the matrices live until the last of them finishes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ferrollama_model::Adapter;

use crate::error::Result;
use crate::model::Model;

/// A loaded adapter with its serving name.
#[derive(Debug, PartialEq)]
pub struct Lora {
    /// The name requests use (`"model": NAME`).
    pub name: String,
    /// Where it was read from (PEFT folder or GGUF file).
    pub path: PathBuf,
    pub adapter: Adapter,
    /// Unique for the process's life: names this adapter's prefix-cache chain, so a
    /// reloaded adapter (new matrices, maybe the same address) never meets blocks computed
    /// with an earlier one.
    id: u64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Lora {
    /// Wraps an adapter already read (and checked) for `model`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>, adapter: Adapter) -> Lora {
        Lora {
            name: name.into(),
            path: path.into(),
            adapter,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Reads a PEFT folder or GGUF adapter at `path` for `model`.
    pub fn load(name: impl Into<String>, path: &Path, model: &Model) -> Result<Lora> {
        let adapter = Adapter::load(path, &model.llama.config)?;
        adapter.check(&model.llama.config)?;
        Ok(Lora::new(name, path, adapter))
    }

    /// The first name of this adapter's prefix-cache chain (the base model's is 0).
    pub fn chain_seed(&self) -> u64 {
        crate::paged::chain_hash(0x4c6f_5241 ^ self.id.rotate_left(17), &[self.id as u32]) | 1
    }
}
