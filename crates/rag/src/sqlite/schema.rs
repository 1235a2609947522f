//! Connection setup and schema migrations for the retrieval database (`rag.sqlite`).
//!
//! The schema version lives in `PRAGMA user_version` (0 = empty file). A file that is not
//! SQLite, or that a newer build migrated past [`SCHEMA_VERSION`], is refused; missing
//! migrations run in one IMMEDIATE transaction, so two processes opening the same fresh file
//! cannot both migrate it. A schema change appends a migration; never edit one that shipped.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use crate::error::StoreError;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 2;

/// How long a statement waits for another connection's write lock before failing with BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [V1, V2];

/// Version 1: uploaded files. `seq` (AUTOINCREMENT) breaks ties between equal `created_at`
/// seconds the same way on every query, which cursor pagination depends on.
const V1: &str = "
CREATE TABLE files (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    filename   TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE INDEX files_by_time ON files(created_at, seq);
CREATE INDEX files_by_purpose ON files(purpose, created_at, seq);
CREATE INDEX files_by_expiry ON files(expires_at) WHERE expires_at IS NOT NULL;
";

/// Version 2: vector stores, their files and chunks, and the chunks' full-text index.
/// A file's chunks are inserted in the transaction that marks it `completed`; the FTS5
/// table follows `chunks` through triggers (external content: the text is stored once).
const V2: &str = "
CREATE TABLE vector_stores (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    id                  TEXT NOT NULL UNIQUE,
    name                TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    last_active_at      INTEGER NOT NULL,
    metadata            TEXT NOT NULL,
    expires_after_days  INTEGER,
    embedding_model     TEXT NOT NULL,
    embedding_dimension INTEGER NOT NULL
);
CREATE TABLE vector_store_files (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    vector_store_id TEXT NOT NULL,
    file_id         TEXT NOT NULL,
    filename        TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    status          TEXT NOT NULL,
    last_error      TEXT,
    attributes      TEXT NOT NULL,
    chunking        TEXT NOT NULL,
    usage_bytes     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (vector_store_id, file_id)
);
CREATE INDEX vector_store_files_by_status ON vector_store_files(status);
CREATE TABLE chunks (
    id              INTEGER PRIMARY KEY,
    vector_store_id TEXT NOT NULL,
    file_id         TEXT NOT NULL,
    ordinal         INTEGER NOT NULL,
    text            TEXT NOT NULL,
    tokens          INTEGER NOT NULL,
    embedding       BLOB NOT NULL,
    metadata        TEXT
);
CREATE INDEX chunks_by_file ON chunks(vector_store_id, file_id, ordinal);
CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id');
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
";

/// Maps SQLite's "file is not a database" (raised lazily, on the first read of the header)
/// to [`StoreError::NotADatabase`]; other errors pass through.
fn classify(e: rusqlite::Error, path: &Path) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::NotADatabase => {
            StoreError::NotADatabase {
                path: path.to_path_buf(),
            }
        }
        _ => StoreError::Sqlite(e),
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Checks the file, sets the connection's pragmas and migrates it to [`SCHEMA_VERSION`].
pub(super) fn prepare(mut conn: Connection, path: &Path) -> Result<Connection, StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let found = user_version(&conn).map_err(|e| classify(e, path))?;
    let too_new = |found| StoreError::TooNew {
        path: path.to_path_buf(),
        found,
        supported: SCHEMA_VERSION,
    };
    if found < 0 {
        return Err(StoreError::Corrupt(format!(
            "{} has user_version {found}: not a ferrollama retrieval database",
            path.display()
        )));
    }
    if found > SCHEMA_VERSION {
        return Err(too_new(found));
    }
    // WAL: readers do not block the writer, and a commit is one append. An in-memory
    // database answers "memory", which is fine.
    let _mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| classify(e, path))?;
    // NORMAL is durable across application crashes in WAL mode. A power loss may lose the
    // last rows; their blobs are then orphans, removed at the next open.
    conn.pragma_update(None, "synchronous", "NORMAL")?;

    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Re-read under the write lock: another process may have migrated meanwhile.
    let mut version = user_version(&tx)?;
    if version > SCHEMA_VERSION {
        return Err(too_new(version));
    }
    let from = version;
    for migration in MIGRATIONS
        .iter()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        tx.execute_batch(migration)?;
        version += 1;
        tx.pragma_update(None, "user_version", version)?;
    }
    tx.commit()?;
    if from != version {
        tracing::info!(path = %path.display(), from, to = version, "retrieval database migrated");
    }
    Ok(conn)
}
