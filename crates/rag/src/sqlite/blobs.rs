//! File bytes on disk: one file per stored file, `<dir>/<file id>`, and uploads in progress
//! as `<dir>/.upload-<random>.tmp`.
//!
//! An upload is written to its temporary file, fsync'd, renamed to its id (atomic within
//! one folder) and the folder fsync'd; only then is its metadata row inserted. So after a
//! crash there may be temporary files and blobs without a row, never a row without its
//! bytes; [`Blobs::sweep`] removes the former at open.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::StoreError;
use crate::files::{is_file_id, new_file_id};

/// Name prefix of uploads in progress (a leading dot: never a file id).
const TMP_PREFIX: &str = ".upload-";
const TMP_SUFFIX: &str = ".tmp";

/// The folder of blobs. In memory mode it is a fresh temporary folder, removed on drop.
#[derive(Debug)]
pub(super) struct Blobs {
    dir: PathBuf,
    /// Keeps the temporary folder alive (and removes it on drop) in memory mode.
    _temp: Option<tempfile::TempDir>,
}

impl Blobs {
    /// The folder `dir`, created if missing.
    pub fn open(dir: PathBuf) -> Result<Blobs, StoreError> {
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        Ok(Blobs { dir, _temp: None })
    }

    /// A private temporary folder that lives as long as the returned value.
    pub fn temporary() -> Result<Blobs, StoreError> {
        let t = tempfile::Builder::new()
            .prefix("ferrollama-files-")
            .tempdir()
            .map_err(|e| StoreError::io(std::env::temp_dir(), e))?;
        Ok(Blobs {
            dir: t.path().to_path_buf(),
            _temp: Some(t),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the bytes of file `id` live. Ids are checked first: they come from rows we
    /// wrote, but a path must never be built from anything else.
    pub fn path(&self, id: &str) -> Result<PathBuf, StoreError> {
        if !is_file_id(id) {
            return Err(StoreError::Corrupt(format!("'{id}' is not a file id")));
        }
        Ok(self.dir.join(id))
    }

    /// A new, empty temporary blob.
    pub fn create_temp(&self) -> Result<TempBlob, StoreError> {
        // The id generator's randomness, reused for a name no other upload has.
        let name = format!(
            "{TMP_PREFIX}{}{TMP_SUFFIX}",
            new_file_id().trim_start_matches("file-")
        );
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        Ok(TempBlob {
            file: Some(file),
            path,
            len: 0,
        })
    }

    /// Makes `tmp` the bytes of file `id`: fsync, rename, fsync the folder. On error the
    /// temporary file is removed (by `tmp`'s drop).
    pub fn persist(&self, mut tmp: TempBlob, id: &str) -> Result<(), StoreError> {
        let dest = self.path(id)?;
        if let Some(f) = tmp.file.as_mut() {
            f.flush().map_err(|e| StoreError::io(&tmp.path, e))?;
            f.sync_all().map_err(|e| StoreError::io(&tmp.path, e))?;
        }
        std::fs::rename(&tmp.path, &dest).map_err(|e| StoreError::io(&dest, e))?;
        // Renamed: nothing left for the drop to remove.
        tmp.file = None;
        sync_dir(&self.dir);
        Ok(())
    }

    /// Removes file `id`'s bytes; a blob already gone is fine.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        let p = self.path(id)?;
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(p, e)),
        }
    }

    /// Removes temporary uploads and the blobs of ids `keep` says no row has; returns how
    /// many were removed. Names of other shapes are left alone (not ours).
    pub fn sweep(
        &self,
        keep: impl Fn(&str) -> Result<bool, StoreError>,
    ) -> Result<usize, StoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let stale = if name.starts_with(TMP_PREFIX) && name.ends_with(TMP_SUFFIX) {
                true
            } else if is_file_id(name) {
                !keep(name)?
            } else {
                tracing::warn!(dir = %self.dir.display(), name, "unexpected entry in the files folder; left alone");
                false
            };
            if stale {
                let p = entry.path();
                match std::fs::remove_file(&p) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(p, e)),
                }
            }
        }
        if removed > 0 {
            tracing::info!(dir = %self.dir.display(), removed, "removed unfinished uploads and blobs without metadata");
        }
        Ok(removed)
    }
}

/// Makes a rename in `dir` durable. Best effort: not every platform can open a folder.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// An upload's bytes so far; removed on drop unless persisted.
#[derive(Debug)]
pub(super) struct TempBlob {
    /// `None` once persisted.
    file: Option<File>,
    path: PathBuf,
    len: u64,
}

impl TempBlob {
    pub fn len(&self) -> u64 {
        self.len
    }
}

impl Write for TempBlob {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("upload already committed"))?;
        let n = f.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if self.file.take().is_some()
            && let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), "cannot remove an unfinished upload: {e}");
        }
    }
}
