//! The embedded SQLite database that keeps agents, sessions, turns, OpenAI Responses and
//! stored chat completions across restarts.
//!
//! Objects are stored mostly as JSON documents with a few indexed columns (ids, timestamps,
//! model, status), because the HTTP layer owns their exact shapes: this module only has to
//! find, order, page and cascade them. One [`Db`] is shared by all async handlers: it wraps a
//! single connection in a mutex, which is enough because every call is a short statement or
//! transaction. WAL mode lets another process (e.g. `sqlite3` for inspection) read meanwhile.
//!
//! Submodules: `schema` (pragmas and migrations, `PRAGMA user_version`), `page` (cursor
//! pagination shared by the list endpoints), `agents` (agents, sessions, turns, session
//! state) and `openai` (Responses and chat completions).

mod agents;
mod openai;
mod page;
mod schema;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

pub use crate::error::DbError;
pub use agents::{AgentRow, SessionRow, TurnRow};
pub use openai::{ChatCompletionRow, ResponseRow};
pub use page::{DEFAULT_LIMIT, ListQuery, MAX_LIMIT, Order, Page};
pub use schema::SCHEMA_VERSION;

/// The agent database: one SQLite connection behind a mutex (so `Db: Send + Sync`), plus the
/// retention limits applied when chat completions and responses are inserted.
#[derive(Debug)]
pub struct Db {
    conn: Mutex<Connection>,
    /// Most stored chat completions kept (0 = unlimited).
    max_chat_completions: AtomicUsize,
    /// Most stored responses kept (0 = unlimited).
    max_responses: AtomicUsize,
}

impl Db {
    /// Opens (creating if missing, with its parent folder) the database at `path`, and
    /// migrates it to [`SCHEMA_VERSION`]. Fails with [`DbError::NotADatabase`] when the file is
    /// something else and [`DbError::TooNew`] when a newer build wrote it.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| DbError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        schema::prepare(conn, path).map(Db::from_conn)
    }

    /// A private, empty database that lives as long as the `Db` (tests, `--no-persist`).
    pub fn open_in_memory() -> Result<Db, DbError> {
        let conn = Connection::open_in_memory()?;
        schema::prepare(conn, Path::new(":memory:")).map(Db::from_conn)
    }

    fn from_conn(conn: Connection) -> Db {
        Db {
            conn: Mutex::new(conn),
            max_chat_completions: AtomicUsize::new(0),
            max_responses: AtomicUsize::new(0),
        }
    }

    /// Caps how many chat completions and responses are kept (0 = unlimited). The oldest
    /// (by creation time, then insertion) are removed on the next insert of that kind.
    pub fn set_retention(&self, max_chat_completions: usize, max_responses: usize) {
        self.max_chat_completions
            .store(max_chat_completions, Ordering::Relaxed);
        self.max_responses.store(max_responses, Ordering::Relaxed);
    }

    /// The connection. A handler that panicked while holding the lock cannot have left a
    /// half-applied write behind (writes run in transactions, rolled back on drop), so a
    /// poisoned lock is safe to take over rather than failing every later request.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Serializes a JSON document for a TEXT column.
fn to_json(v: &impl serde::Serialize) -> Result<String, DbError> {
    Ok(serde_json::to_string(v)?)
}

/// Parses the JSON document in column `idx` of `row`.
fn json_col<T: serde::de::DeserializeOwned>(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> Result<T, DbError> {
    let text: String = row.get(idx)?;
    Ok(serde_json::from_str(&text)?)
}

/// Runs `stmt` and maps each row with `f`, which may fail with a [`DbError`] (unlike
/// rusqlite's `query_map`, whose closure can only return rusqlite errors).
fn collect<T>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    mut f: impl FnMut(&rusqlite::Row<'_>) -> Result<T, DbError>,
) -> Result<Vec<T>, DbError> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(f(row)?);
    }
    Ok(out)
}

/// Whether `e` is a UNIQUE / PRIMARY KEY violation (a caller-chosen id already in use).
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}
