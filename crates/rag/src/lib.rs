//! Retrieval's storage: uploaded files today; chunks, embeddings and vector stores build on
//! it next (issue 14).
//!
//! What it owns: the OpenAI Files API's domain (a [`files::FileObject`], its
//! [`files::Purpose`], listing with cursor pages) and the [`store::Store`] trait that keeps
//! file bytes and their metadata. The HTTP shapes live in the server; this crate knows no
//! HTTP, no async runtime and no model.
//!
//! Key design choice: storage is one synchronous, `Send + Sync` trait, so the PostgreSQL
//! backend ([`postgres::PgStore`]) sits beside the embedded SQLite one ([`sqlite::SqliteStore`])
//! without callers knowing which; async handlers call it through `tokio::task::spawn_blocking`. Uploads
//! are streamed: [`store::Store::begin_upload`] hands out a writer into a temporary blob that
//! becomes a file only on [`store::Upload::commit`], and disappears if dropped, so a
//! rejected or interrupted upload leaves nothing behind.

pub mod chunking;
pub mod error;
pub mod extract;
pub mod files;
pub mod ingest;
pub mod postgres;
pub mod sqlite;
pub mod store;
pub mod vector_index;
pub mod vector_stores;

pub use self::postgres::PgStore;
pub use error::StoreError;
pub use extract::{ExtractError, Extracted, Format, Limits};
pub use files::{FileObject, FileQuery, NewFile, Order, Page, Purpose};
pub use sqlite::SqliteStore;
pub use store::{
    FileContent, ListQuery, NewStoreFile, NewVectorStore, SearchQuery, Store, Upload, VectorDb,
    VectorStoreUpdate,
};
pub use vector_index::{IndexParams, VectorIndex, VectorIndexError};
