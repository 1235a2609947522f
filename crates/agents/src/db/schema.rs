//! Connection setup and schema migrations for the agent database.
//!
//! The schema version lives in `PRAGMA user_version` (0 = empty file). `prepare` refuses a
//! file that is not SQLite or that a newer build migrated past [`SCHEMA_VERSION`], then runs
//! the missing migrations in one IMMEDIATE transaction so two processes opening the same
//! fresh file cannot both migrate it. A schema change appends a migration; never edit one
//! that has shipped.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use crate::error::DbError;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for another process's write lock before failing with BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [V1];

/// Version 1. Every table has an AUTOINCREMENT `seq`, so listing order is insertion order
/// and ties between equal timestamps are broken the same way on every query (pagination
/// cursors depend on that). JSON documents are TEXT; ids are chosen by the caller.
const V1: &str = "
CREATE TABLE agents (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id   TEXT NOT NULL UNIQUE,
    config     TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE sessions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL UNIQUE,
    agent_id   TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state      TEXT
);
CREATE INDEX sessions_by_agent ON sessions(agent_id, seq);

CREATE TABLE turns (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(session_id) ON DELETE CASCADE,
    turn_id    TEXT NOT NULL,
    status     TEXT NOT NULL,
    turn       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (session_id, turn_id)
);
CREATE INDEX turns_by_session ON turns(session_id, seq);

CREATE TABLE responses (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    id                   TEXT NOT NULL UNIQUE,
    created_at           INTEGER NOT NULL,
    model                TEXT NOT NULL,
    previous_response_id TEXT,
    response             TEXT NOT NULL,
    messages             TEXT NOT NULL
);
CREATE INDEX responses_by_time ON responses(created_at, seq);
CREATE INDEX responses_by_model ON responses(model, created_at, seq);

CREATE TABLE response_input_items (
    response_id TEXT NOT NULL REFERENCES responses(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    item_id     TEXT NOT NULL,
    item        TEXT NOT NULL,
    PRIMARY KEY (response_id, idx)
) WITHOUT ROWID;
CREATE INDEX response_input_items_by_id ON response_input_items(response_id, item_id);

CREATE TABLE chat_completions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    created    INTEGER NOT NULL,
    model      TEXT NOT NULL,
    completion TEXT NOT NULL
);
CREATE INDEX chat_completions_by_time ON chat_completions(created, seq);
CREATE INDEX chat_completions_by_model ON chat_completions(model, created, seq);

CREATE TABLE chat_completion_messages (
    completion_id TEXT NOT NULL REFERENCES chat_completions(id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL,
    message_id    TEXT NOT NULL,
    message       TEXT NOT NULL,
    PRIMARY KEY (completion_id, idx)
) WITHOUT ROWID;
CREATE INDEX chat_completion_messages_by_id ON chat_completion_messages(completion_id, message_id);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// Maps SQLite's "file is not a database" (raised lazily, on the first read of the header)
/// to [`DbError::NotADatabase`]; other errors pass through.
fn classify(e: rusqlite::Error, path: &Path) -> DbError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::NotADatabase => {
            DbError::NotADatabase {
                path: path.to_path_buf(),
            }
        }
        _ => DbError::Sqlite(e),
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Checks the file, sets the connection's pragmas and migrates it to [`SCHEMA_VERSION`].
pub(super) fn prepare(mut conn: Connection, path: &Path) -> Result<Connection, DbError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // First read of the header: where a non-SQLite file is detected.
    let found = user_version(&conn).map_err(|e| classify(e, path))?;
    if found < 0 {
        // Not a version this project ever writes: some other application's database.
        return Err(DbError::Invalid(format!(
            "{} has user_version {found}: not a ferrollama agent database",
            path.display()
        )));
    }
    if found > SCHEMA_VERSION {
        return Err(DbError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    // WAL: readers do not block the writer, and commits are one append (fast, crash-safe).
    // An in-memory database answers "memory", which is fine.
    let _mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| classify(e, path))?;
    // NORMAL is durable across application crashes in WAL mode; only a power loss may lose
    // the last commits, which is acceptable for this data and much faster than FULL.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Off by default in SQLite; the cascades from agents to sessions to turns need it.
    conn.pragma_update(None, "foreign_keys", true)?;

    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Re-read under the write lock: another process may have migrated meanwhile.
    let mut version = user_version(&tx)?;
    if version > SCHEMA_VERSION {
        return Err(DbError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
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
        tracing::info!(path = %path.display(), from, to = version, "agent database migrated");
    }
    Ok(conn)
}
