//! Entries made on this machine (`ferrollama import`, `ferrollama quantize --store`): a
//! GGUF file written by the caller into a fresh entry, then hashed and given a manifest.
//!
//! Same guarantees as a pull: the entry is locked while it is filled, the model file is
//! written by the caller under a temporary name and renamed when complete, and the manifest
//! comes last, so an interrupted import leaves an incomplete entry, never one that looks
//! complete. A failed write removes a new entry and leaves a replaced one as it was.

use std::fs;
use std::path::Path;

use crate::error::{Result, StoreError};
use crate::hash::sha256_file;
use crate::manifest::{FORMAT_VERSION, FileRecord, Format, Manifest, Verified, now_rfc3339};
use crate::store::{Entry, PENDING, Store};

impl Store {
    /// Creates the entry `name` holding one GGUF file `<name>.gguf`, produced by `write`
    /// (which gets the final path and must create it atomically). `source` says where it
    /// came from (e.g. `import:/path/to/folder (q8_0)`). An existing complete entry of that
    /// name is refused unless `replace` is set.
    pub fn add_gguf<E>(
        &self,
        name: &str,
        source: &str,
        replace: bool,
        write: impl FnOnce(&Path) -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<Entry, E>> {
        let dir = self.entry_dir(name)?;
        if !replace && let Ok(e) = self.get(name) {
            return Err(StoreError::NameTaken {
                name: e.name,
                existing: e.source.unwrap_or_else(|| "another model".into()),
                wanted: source.to_string(),
            });
        }
        let existed = dir.exists();
        let lock = self.lock(name)?;
        let pending = dir.join(PENDING);
        if !existed {
            fs::write(&pending, format!("import:{name}\n{source}\n"))
                .map_err(StoreError::io("write", &pending))?;
        }
        let file = format!("{name}.gguf");
        let path = dir.join(&file);
        if let Err(e) = write(&path) {
            // The writer leaves no partial file behind. A new entry goes away entirely; a
            // replaced one keeps its old file and manifest, as the rename never happened.
            if !existed {
                drop(lock);
                let _ = fs::remove_dir_all(&dir);
            }
            return Ok(Err(e));
        }
        let (sha256, size) = sha256_file(&path)?;
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            name: name.to_string(),
            source: source.to_string(),
            source_id: format!("local:{name}"),
            origin: "local".into(),
            revision: String::new(),
            format: Format::Gguf,
            model_path: file.clone(),
            files: vec![FileRecord {
                path: file,
                size,
                sha256,
                verified: Verified::Computed,
            }],
            pulled_at: now_rfc3339(),
        };
        manifest.write(&dir)?;
        let _ = fs::remove_file(&pending);
        self.get(name).map(Ok)
    }
}
