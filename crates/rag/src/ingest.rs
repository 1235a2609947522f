//! Ingestion: a file attached to a vector store becomes chunks with vectors, on one worker
//! thread fed by a channel. Each file ends `completed` (all its chunks stored in one
//! transaction) or `failed` with a reason; nothing stays `in_progress` but what is queued.
//! At start the worker re-queues every file still `in_progress` (the server was killed
//! mid-ingestion), so an interrupted file resumes from scratch.

use std::sync::Arc;
use std::sync::mpsc;

use ferrollama_engine::Embedder;

use crate::chunking::chunk;
use crate::store::{Store, VectorDb};
use crate::vector_stores::{Chunking, LastError, NewChunk};

/// Finds the embedder a store was made with, by model id.
pub type EmbedderLookup = Arc<dyn Fn(&str) -> Option<Arc<Embedder>> + Send + Sync>;

/// Turns a file's bytes into text (by name and content), or says why not.
pub type TextExtractor = Arc<dyn Fn(&str, &[u8]) -> Result<String, LastError> + Send + Sync>;

/// Chunks embedded per encoder call.
const EMBED_BATCH: usize = 64;

/// The handle that queues files; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingestor {
    tx: mpsc::Sender<(String, String)>,
}

impl Ingestor {
    /// Starts the worker and queues every file left `in_progress`.
    pub fn start(
        db: Arc<dyn VectorDb>,
        files: Arc<dyn Store>,
        embedders: EmbedderLookup,
        extract: TextExtractor,
    ) -> Ingestor {
        let (tx, rx) = mpsc::channel::<(String, String)>();
        let worker = Worker {
            db,
            files,
            embedders,
            extract,
        };
        let spawned = std::thread::Builder::new()
            .name("ingest".into())
            .spawn(move || {
                // Listed here, on the worker thread, rather than by the caller: a database
                // client may block (the PostgreSQL one refuses to run on an async runtime's
                // thread, where `start` is often called).
                match worker.db.in_progress_files() {
                    Ok(pending) => {
                        if !pending.is_empty() {
                            tracing::info!(files = pending.len(), "resuming interrupted ingestion");
                        }
                        for (vs, file) in pending {
                            worker.run(&vs, &file);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot list files to resume"),
                }
                while let Ok((vs, file)) = rx.recv() {
                    worker.run(&vs, &file);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the ingestion thread");
        }
        Ingestor { tx }
    }

    /// Queues `file` of store `vs` (already attached, `in_progress`).
    pub fn submit(&self, vs: &str, file: &str) {
        let _ = self.tx.send((vs.to_string(), file.to_string()));
    }
}

struct Worker {
    db: Arc<dyn VectorDb>,
    files: Arc<dyn Store>,
    embedders: EmbedderLookup,
    extract: TextExtractor,
}

fn err(code: &str, message: impl Into<String>) -> LastError {
    LastError {
        code: code.into(),
        message: message.into(),
    }
}

/// `auto` chunking fitted to the model: OpenAI's 800 tokens, but never more than the
/// encoder reads (all-MiniLM-L6-v2: 256 with [CLS]/[SEP]), overlapping by half.
pub fn resolve_chunking(c: Chunking, embedder: &Embedder) -> Chunking {
    if !c.auto {
        return c;
    }
    let max = c
        .max_chunk_size_tokens
        .min(embedder.max_tokens().saturating_sub(2))
        .max(1);
    Chunking {
        max_chunk_size_tokens: max,
        chunk_overlap_tokens: max / 2,
        auto: true,
    }
}

impl Worker {
    fn run(&self, vs: &str, file: &str) {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.ingest(vs, file)));
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(err(
                "server_error",
                "ingestion failed unexpectedly (a bug: please report it)",
            )),
        };
        if let Some(e) = failure {
            tracing::warn!(vector_store = vs, file, code = %e.code, message = %e.message, "ingestion failed");
            if let Err(db) = self.db.fail_file(vs, file, e) {
                tracing::error!(vector_store = vs, file, error = %db, "cannot record the failure");
            }
        }
    }

    fn ingest(&self, vs: &str, file: &str) -> Result<(), LastError> {
        let db = |e: crate::StoreError| err("server_error", e.to_string());
        let Some(store) = self.db.get_vector_store(vs).map_err(db)? else {
            return Ok(());
        };
        let Some(f) = self.db.get_store_file(vs, file).map_err(db)? else {
            return Ok(());
        };
        if f.status != crate::vector_stores::FileStatus::InProgress {
            return Ok(());
        }
        let embedder = (self.embedders)(&store.embedding_model).ok_or_else(|| {
            err(
                "server_error",
                format!(
                    "the embedding model {} of this vector store is not loaded (start serve with --embedding-model)",
                    store.embedding_model
                ),
            )
        })?;
        let bytes = self
            .files
            .read_content(file)
            .map_err(db)?
            .ok_or_else(|| err("invalid_file", format!("file {file} no longer exists")))?;
        let text = (self.extract)(&f.filename, &bytes)?;
        let offsets = embedder
            .token_offsets(&text)
            .map_err(|e| err("invalid_file", e.to_string()))?;
        let chunking = resolve_chunking(f.chunking, &embedder);
        let pieces = chunk(&text, &offsets, &chunking);
        if pieces.is_empty() {
            return Err(err("invalid_file", "the file has no text to index"));
        }
        let mut chunks = Vec::with_capacity(pieces.len());
        for batch in pieces.chunks(EMBED_BATCH) {
            let texts: Vec<&str> = batch.iter().map(|c| c.text.as_str()).collect();
            let e = embedder
                .embed_texts(&texts)
                .map_err(|e| err("server_error", e.to_string()))?;
            for (i, c) in batch.iter().enumerate() {
                chunks.push(NewChunk {
                    text: c.text.clone(),
                    tokens: c.tokens,
                    embedding: e.row(i).to_vec(),
                    metadata: Default::default(),
                });
            }
        }
        self.db.complete_file(vs, file, &chunks).map_err(db)?;
        Ok(())
    }
}
