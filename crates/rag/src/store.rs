//! The storage seam: file bytes and metadata behind one synchronous trait.
//!
//! Backends: [`crate::sqlite::SqliteStore`] (embedded, the default); a PostgreSQL one is
//! planned. Everything is blocking: async callers use `tokio::task::spawn_blocking`.

use std::io::{Read, Write};

use crate::error::StoreError;
use crate::files::{FileObject, FileQuery, NewFile, Page};

/// Where files live. Implementations are shared by every request (`Arc<dyn Store>`).
///
/// Expired files (past `expires_at`) are invisible to every method, as if deleted.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Starts an upload: a temporary blob the caller writes the file's bytes into, then
    /// [`Upload::commit`]s. Dropping the upload instead discards what was written.
    fn begin_upload(&self) -> Result<Box<dyn Upload>, StoreError>;

    /// One file's metadata; `None` when no such file exists.
    fn get_file(&self, id: &str) -> Result<Option<FileObject>, StoreError>;

    /// A page of files in creation order; an `after` cursor naming no file is
    /// [`StoreError::NotFound`].
    fn list_files(&self, q: &FileQuery) -> Result<Page<FileObject>, StoreError>;

    /// Deletes a file's metadata, then its bytes; false when there was no such file.
    fn delete_file(&self, id: &str) -> Result<bool, StoreError>;

    /// A file's metadata and a reader of its bytes; `None` when no such file exists. The
    /// reader stays valid if the file is deleted meanwhile.
    fn open_content(&self, id: &str) -> Result<Option<FileContent>, StoreError>;

    /// A file's whole content in memory (for ingestion by later stages, e.g. vector
    /// stores); `None` when no such file exists.
    fn read_content(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(FileContent { file, mut reader }) = self.open_content(id)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(usize::try_from(file.bytes).unwrap_or(0));
        reader
            .read_to_end(&mut out)
            .map_err(|e| StoreError::io(format!("<file {id}>"), e))?;
        Ok(Some(out))
    }
}

/// A stored file opened for reading: its metadata and a reader of its bytes.
pub struct FileContent {
    pub file: FileObject,
    pub reader: Box<dyn Read + Send>,
}

impl std::fmt::Debug for FileContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileContent")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// A file being uploaded: written in pieces, then committed once.
///
/// Dropping it without [`Upload::commit`] removes what was written (a rejected or
/// interrupted upload leaves nothing behind).
pub trait Upload: Write + Send + std::fmt::Debug {
    /// Bytes written so far.
    fn len(&self) -> u64;

    /// Whether nothing was written yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the bytes durable under a fresh id and records the file's metadata; returns
    /// the stored file. On error nothing of the upload remains.
    fn commit(self: Box<Self>, file: NewFile) -> Result<FileObject, StoreError>;
}
