//! The agent database's error type. It lives apart from `db` so the agent loop and the HTTP
//! layer can match on it (NotFound → 404/400, AlreadyExists → 409, the rest → 500) without
//! depending on rusqlite themselves.

use std::path::PathBuf;

/// What can go wrong reading or writing the agent database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Any other SQLite failure (I/O, locking past the busy timeout, a constraint).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored JSON document did not parse, or a value did not serialize.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A named object (an agent, a session, a response, a pagination cursor) does not exist.
    #[error("{kind} not found: {id}")]
    NotFound { kind: &'static str, id: String },
    /// An object with this id is already stored (ids are chosen by the caller).
    #[error("{kind} already exists: {id}")]
    AlreadyExists { kind: &'static str, id: String },
    /// The caller passed something the database cannot store as asked.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Creating the database's folder failed.
    #[error("cannot create {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not a SQLite database (or is encrypted / corrupt in its header).
    #[error("{} is not a SQLite database (move it away or pick another path)", path.display())]
    NotADatabase { path: PathBuf },
    /// The file was written by a newer ferrollama whose schema this build does not know.
    #[error(
        "{} has schema version {found}, newer than the {supported} this build supports (upgrade ferrollama or use another file)",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
}
