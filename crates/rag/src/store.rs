//! The storage seam: file bytes and metadata behind one synchronous trait.
//!
//! Backends: [`crate::sqlite::SqliteStore`] (embedded, the default) and
//! [`crate::postgres::PgStore`] (PostgreSQL + pgvector, shared by several replicas).
//! Everything is blocking: async callers use `tokio::task::spawn_blocking`.

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

/// A list request over vector stores or a store's files: `?after=&before=&limit=&order=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub after: Option<String>,
    pub before: Option<String>,
    /// Page size, 1..=100 (OpenAI's range; callers check it).
    pub limit: usize,
    pub order: crate::files::Order,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            after: None,
            before: None,
            limit: 20,
            order: crate::files::Order::Desc,
        }
    }
}

/// What creating a vector store takes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVectorStore {
    pub name: String,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub expires_after: Option<crate::vector_stores::ExpiresAfter>,
    pub embedding_model: String,
    pub embedding_dimension: usize,
    /// The id to use (Llama Stack's register names its own); `None`: a fresh `vs_` id.
    pub id: Option<String>,
}

/// Changes to a vector store; `None` leaves a field alone. `expires_after: Some(None)`
/// removes the expiry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VectorStoreUpdate {
    pub name: Option<String>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub expires_after: Option<Option<crate::vector_stores::ExpiresAfter>>,
}

/// A file to attach to a store (its ingestion starts `in_progress`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewStoreFile {
    pub file_id: String,
    pub filename: String,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub chunking: crate::vector_stores::Chunking,
}

/// One search over one store.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// The query text (keyword search matches its words).
    pub text: String,
    /// The query's embedding (vector and hybrid search), of the store's dimension.
    pub embedding: Option<Vec<f32>>,
    pub mode: crate::vector_stores::SearchMode,
    pub max_results: usize,
    pub filter: Option<crate::vector_stores::Filter>,
    /// Hits scoring below are dropped.
    pub score_threshold: f32,
}

/// Vector stores, their files and chunks. Backends: [`crate::sqlite::SqliteStore`],
/// [`crate::postgres::PgStore`].
///
/// Crash safety rests on [`VectorDb::complete_file`]: a file's chunks and its `completed`
/// status are written in one transaction, so no store ever holds part of a file.
pub trait VectorDb: Send + Sync + std::fmt::Debug {
    fn create_vector_store(
        &self,
        v: NewVectorStore,
    ) -> Result<crate::vector_stores::VectorStore, StoreError>;
    fn get_vector_store(
        &self,
        id: &str,
    ) -> Result<Option<crate::vector_stores::VectorStore>, StoreError>;
    /// A page of stores; a cursor naming no store is [`StoreError::NotFound`].
    fn list_vector_stores(
        &self,
        q: &ListQuery,
    ) -> Result<Page<crate::vector_stores::VectorStore>, StoreError>;
    fn update_vector_store(
        &self,
        id: &str,
        u: VectorStoreUpdate,
    ) -> Result<Option<crate::vector_stores::VectorStore>, StoreError>;
    /// Deletes a store with its files' links and chunks (the files themselves stay).
    fn delete_vector_store(&self, id: &str) -> Result<bool, StoreError>;
    /// Attaches a file (`in_progress`); attaching one already there returns it unchanged.
    fn add_file(
        &self,
        vector_store_id: &str,
        f: NewStoreFile,
    ) -> Result<crate::vector_stores::VectorStoreFile, StoreError>;
    fn get_store_file(
        &self,
        vector_store_id: &str,
        file_id: &str,
    ) -> Result<Option<crate::vector_stores::VectorStoreFile>, StoreError>;
    fn list_store_files(
        &self,
        vector_store_id: &str,
        q: &ListQuery,
        status: Option<crate::vector_stores::FileStatus>,
    ) -> Result<Page<crate::vector_stores::VectorStoreFile>, StoreError>;
    fn update_file_attributes(
        &self,
        vector_store_id: &str,
        file_id: &str,
        attributes: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<crate::vector_stores::VectorStoreFile>, StoreError>;
    /// Detaches a file and deletes its chunks.
    fn remove_store_file(&self, vector_store_id: &str, file_id: &str) -> Result<bool, StoreError>;
    /// Stores all of a file's chunks and marks it `completed`, atomically. False (and
    /// nothing written) when the file is no longer attached or no longer `in_progress`.
    fn complete_file(
        &self,
        vector_store_id: &str,
        file_id: &str,
        chunks: &[crate::vector_stores::NewChunk],
    ) -> Result<bool, StoreError>;
    /// Stores chunks that come with their vectors (Llama Stack's `vector-io/insert`, the RAG
    /// tool) as one new `completed` file entry `file_id` named `filename`, atomically.
    fn insert_chunks(
        &self,
        vector_store_id: &str,
        file_id: &str,
        filename: &str,
        chunks: &[crate::vector_stores::NewChunk],
    ) -> Result<(), StoreError>;
    /// Marks an `in_progress` file `failed` with its reason.
    fn fail_file(
        &self,
        vector_store_id: &str,
        file_id: &str,
        error: crate::vector_stores::LastError,
    ) -> Result<(), StoreError>;
    /// Every `(vector_store_id, file_id)` still `in_progress` (to resume after a restart).
    fn in_progress_files(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// A completed file's chunk texts in order.
    fn file_chunks(&self, vector_store_id: &str, file_id: &str) -> Result<Vec<String>, StoreError>;
    /// The best chunks of a store for `q`, best first.
    fn search(
        &self,
        vector_store_id: &str,
        q: &SearchQuery,
    ) -> Result<Vec<crate::vector_stores::Hit>, StoreError>;
}
