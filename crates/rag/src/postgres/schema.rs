//! Schema migrations for the PostgreSQL backend.
//!
//! The version lives in a one-row `schema_version` table (no row = empty database). The
//! migrations run in one transaction that first takes `pg_advisory_xact_lock`, so several
//! replicas starting together against a fresh database serialize: the first migrates, the
//! others then find the current version and do nothing. A schema change appends a
//! migration; never edit one that shipped.

use std::path::PathBuf;

use crate::error::StoreError;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 1;

/// The advisory lock key that serializes migrations (any fixed number; "ferrollama" in
/// ASCII, truncated to 8 bytes).
const MIGRATION_LOCK: i64 = 0x6665_7272_6f6c_6c61;

/// `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [V1];

/// Version 1: the SQLite schema's tables (files, vector stores, their files, chunks) plus
/// the file bytes (`file_blobs`, so every replica reads them) and PostgreSQL's own indexes:
/// a generated `tsvector` with a GIN index for keyword search. `embedding` is an untyped
/// `vector` because each store has its own dimension; each store gets its own partial HNSW
/// index over `embedding::vector(DIM)` when it is created (see `vectors`). The `simple`
/// text search configuration (lowercased words, no stemming, no stop words) matches what
/// SQLite's FTS5 `unicode61` tokenizer does.
const V1: &str = "
CREATE TABLE files (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    filename   TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    bytes      BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX files_by_time ON files(created_at, seq);
CREATE INDEX files_by_purpose ON files(purpose, created_at, seq);
CREATE INDEX files_by_expiry ON files(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE file_blobs (
    file_id TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    part    INTEGER NOT NULL,
    data    BYTEA NOT NULL,
    PRIMARY KEY (file_id, part)
);
CREATE TABLE vector_stores (
    seq                 BIGSERIAL PRIMARY KEY,
    id                  TEXT NOT NULL UNIQUE,
    name                TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    last_active_at      BIGINT NOT NULL,
    metadata            TEXT NOT NULL,
    expires_after_days  BIGINT,
    embedding_model     TEXT NOT NULL,
    embedding_dimension BIGINT NOT NULL
);
CREATE TABLE vector_store_files (
    seq             BIGSERIAL PRIMARY KEY,
    vector_store_id TEXT NOT NULL,
    file_id         TEXT NOT NULL,
    filename        TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    status          TEXT NOT NULL,
    last_error      TEXT,
    attributes      TEXT NOT NULL,
    chunking        TEXT NOT NULL,
    usage_bytes     BIGINT NOT NULL DEFAULT 0,
    UNIQUE (vector_store_id, file_id)
);
CREATE INDEX vector_store_files_by_status ON vector_store_files(status);
CREATE TABLE chunks (
    id              BIGSERIAL PRIMARY KEY,
    vector_store_id TEXT NOT NULL,
    file_id         TEXT NOT NULL,
    ordinal         BIGINT NOT NULL,
    text            TEXT NOT NULL,
    tokens          BIGINT NOT NULL,
    embedding       vector NOT NULL,
    metadata        TEXT,
    tsv             tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED
);
CREATE INDEX chunks_by_file ON chunks(vector_store_id, file_id, ordinal);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
";

/// Creates pgvector and migrates the database to [`SCHEMA_VERSION`]; `what` names the
/// database in errors (the URL without its password).
pub(super) fn migrate(client: &mut ::postgres::Client, what: &str) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS vector;
         CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);",
    )?;
    let found: Option<i64> = tx
        .query_opt("SELECT version FROM schema_version", &[])?
        .map(|r| r.get(0));
    let mut version = found.unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: PathBuf::from(what),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let from = version;
    for m in MIGRATIONS
        .iter()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        tx.batch_execute(m)?;
        version += 1;
    }
    if found.is_none() {
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )?;
    } else if from != version {
        tx.execute("UPDATE schema_version SET version = $1", &[&version])?;
    }
    tx.commit()?;
    if from != version {
        tracing::info!(
            database = what,
            from,
            to = version,
            "retrieval database migrated"
        );
    }
    Ok(())
}
