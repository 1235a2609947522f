//! The storage error type: every variant carries what a caller needs to answer (the id of a
//! missing object, the path of an unreadable file).

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A named object does not exist (e.g. a pagination cursor naming no file).
    #[error("no {kind} with id '{id}'")]
    NotFound { kind: &'static str, id: String },
    /// A file or folder of the store could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL backend's errors (connection, SQL, constraint violations).
    #[error("postgres: {0}")]
    Postgres(#[from] ::postgres::Error),
    /// The database file is something other than SQLite.
    #[error("{} is not a SQLite database", path.display())]
    NotADatabase { path: PathBuf },
    /// A newer build migrated the database past what this one understands.
    #[error(
        "{} has schema version {found}, newer than this build's {supported}; use a newer ferrollama",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// A request the store cannot answer as asked (a filter on an attribute no file has, a
    /// vector of the wrong dimension); the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// Stored data that breaks the store's own rules (e.g. an unknown purpose in a row).
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}
