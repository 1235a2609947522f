//! The embedded backend: metadata in SQLite (`<dir>/rag.sqlite`, WAL), bytes as plain files
//! in `<dir>/files/` (see `blobs`).
//!
//! One connection behind a mutex serves every request: each call is one short statement,
//! and file bytes are read and written outside the lock. At open, expired files are deleted
//! and the files folder is swept of unfinished uploads and of blobs without a row (left by a
//! crash between the rename and the insert, or between a row's delete and its blob's), so
//! one data folder must be served by one process at a time.
//!
//! In-memory mode ([`SqliteStore::open_in_memory`], `serve --data-dir :memory:` and tests)
//! keeps the metadata in an in-memory database and the bytes in a private temporary folder
//! removed when the store is dropped: uploads still stream to disk, never into memory.

mod blobs;
mod index;
pub(crate) mod rank;
mod schema;
pub(crate) mod vectors;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::StoreError;
use crate::files::{
    FileObject, FileQuery, MAX_LIMIT, NewFile, Order, Page, Purpose, new_file_id, unix_now,
};
use crate::store::{FileContent, Store, Upload};
use blobs::{Blobs, TempBlob};

pub use index::{IndexStatus, IndexTuning};
pub use schema::SCHEMA_VERSION;

/// The database file's name inside the data folder.
pub const DB_FILE: &str = "rag.sqlite";

/// The folder of file bytes inside the data folder.
pub const FILES_DIR: &str = "files";

/// Files in SQLite and on disk. Cheap to clone (one shared connection and folder).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Mutex<Connection>,
    blobs: Blobs,
    /// Each searched store's vectors in memory (see `index`), loaded on first search.
    indexes: Mutex<HashMap<String, Arc<index::StoreIndex>>>,
    /// What the stores' indexes share: tuning, the build slot, test hooks.
    index_shared: Arc<index::Shared>,
}

impl Drop for Inner {
    /// Background graph builds hold their store's index, not the backend: tell them to
    /// stop rather than link a graph nobody will search.
    fn drop(&mut self) {
        let map = std::mem::take(
            self.indexes
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for idx in map.values() {
            idx.cancel();
        }
    }
}

/// The columns [`row_to_file`] reads, in order.
const COLUMNS: &str = "id, bytes, created_at, expires_at, filename, purpose";

/// A file that has not expired at `?now` (the parameter named `:now`).
const LIVE: &str = "(expires_at IS NULL OR expires_at > :now)";

fn row_to_file(row: &rusqlite::Row<'_>) -> Result<FileObject, StoreError> {
    let purpose: String = row.get(5)?;
    let bytes: i64 = row.get(1)?;
    Ok(FileObject {
        id: row.get(0)?,
        bytes: u64::try_from(bytes)
            .map_err(|_| StoreError::Corrupt(format!("negative size {bytes}")))?,
        created_at: row.get(2)?,
        expires_at: row.get(3)?,
        filename: row.get(4)?,
        purpose: Purpose::parse(&purpose)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown purpose '{purpose}'")))?,
    })
}

impl SqliteStore {
    /// The store in folder `dir` (`dir/rag.sqlite`, `dir/files/`), created if missing;
    /// expired files, unfinished uploads and blobs without metadata are removed.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(StoreError::Sqlite)?;
        let conn = schema::prepare(conn, &path)?;
        let blobs = Blobs::open(dir.join(FILES_DIR))?;
        let store = SqliteStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                blobs,
                indexes: Default::default(),
                index_shared: Default::default(),
            }),
        };
        store.purge_expired()?;
        store.sweep()?;
        Ok(store)
    }

    /// A private, empty store: metadata in memory, bytes in a temporary folder; both gone
    /// when the last clone is dropped.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let conn = schema::prepare(Connection::open_in_memory()?, Path::new(":memory:"))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                blobs: Blobs::temporary()?,
                indexes: Default::default(),
                index_shared: Default::default(),
            }),
        })
    }

    /// Sets when and how vector stores get their HNSW graph (see [`IndexTuning`]); applies
    /// to every store from their next search or write on.
    pub fn set_index_tuning(&self, t: IndexTuning) {
        self.inner.index_shared.set_tuning(t);
    }

    pub fn index_tuning(&self) -> IndexTuning {
        self.inner.index_shared.tuning()
    }

    /// What vector store `vs`'s in-memory index holds and whether its graph is being
    /// built; `None` while it is not loaded (before the store's first search).
    pub fn index_status(&self, vs: &str) -> Option<IndexStatus> {
        self.loaded_index(vs).map(|i| i.status())
    }

    /// Loads vector store `vs`'s index if needed and waits until its graph is built and
    /// no build is due (starting one that is); the status then, or `None` after `timeout`.
    /// Searches never wait like this: for tests, benchmarks and warm-ups.
    pub fn wait_for_index(
        &self,
        vs: &str,
        timeout: Duration,
    ) -> Result<Option<IndexStatus>, StoreError> {
        let store = crate::store::VectorDb::get_vector_store(self, vs)?.ok_or_else(|| {
            StoreError::NotFound {
                kind: "vector store",
                id: vs.to_string(),
            }
        })?;
        Ok(self.index(&store)?.wait_built(timeout))
    }

    /// Waits until no graph build runs in this backend (a cancelled one included); false
    /// after `timeout`.
    pub fn wait_index_builds(&self, timeout: Duration) -> bool {
        self.inner.index_shared.wait_idle(timeout)
    }

    /// Test hook: while `hold` is true, graph builds wait after taking their snapshot.
    #[doc(hidden)]
    pub fn hold_index_builds(&self, hold: bool) {
        self.inner.index_shared.set_hold(hold);
    }

    /// Test hook: waits until a build is held (see [`SqliteStore::hold_index_builds`])
    /// with its snapshot taken; false after `timeout`.
    #[doc(hidden)]
    pub fn wait_index_build_held(&self, timeout: Duration) -> bool {
        self.inner.index_shared.wait_held(timeout)
    }

    /// Test hook: the next `n` graph builds panic after their snapshot.
    #[doc(hidden)]
    pub fn fail_next_index_builds(&self, n: usize) {
        self.inner.index_shared.fail_next(n);
    }

    /// The folder holding the file bytes.
    pub fn files_dir(&self) -> &Path {
        self.inner.blobs.dir()
    }

    /// Deletes every expired file (row, then bytes); returns how many.
    pub fn purge_expired(&self) -> Result<usize, StoreError> {
        let ids: Vec<String> = {
            let conn = self.inner.lock();
            let mut stmt = conn.prepare(
                "DELETE FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?1 RETURNING id",
            )?;
            let rows = stmt.query_map([unix_now()], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for id in &ids {
            self.inner.blobs.remove(id)?;
        }
        Ok(ids.len())
    }

    /// Removes unfinished uploads and blobs without a row; returns how many.
    pub fn sweep(&self) -> Result<usize, StoreError> {
        self.inner.blobs.sweep(|id| {
            let conn = self.inner.lock();
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM files WHERE id = ?1", [id], |r| {
                r.get(0)
            })?;
            Ok(n > 0)
        })
    }
}

impl Inner {
    /// The connection. Every write is one statement (atomic), so a poisoned lock holds
    /// consistent data and is taken over rather than failing every later call.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, id: &str) -> Result<Option<FileObject>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM files WHERE id = :id AND {LIVE}"
        ))?;
        let mut rows = stmt.query(rusqlite::named_params! {":id": id, ":now": unix_now()})?;
        match rows.next()? {
            Some(row) => Ok(Some(row_to_file(row)?)),
            None => Ok(None),
        }
    }
}

impl Store for SqliteStore {
    fn begin_upload(&self) -> Result<Box<dyn Upload>, StoreError> {
        Ok(Box::new(SqliteUpload {
            inner: self.inner.clone(),
            blob: self.inner.blobs.create_temp()?,
        }))
    }

    fn get_file(&self, id: &str) -> Result<Option<FileObject>, StoreError> {
        self.inner.get(id)
    }

    fn list_files(&self, q: &FileQuery) -> Result<Page<FileObject>, StoreError> {
        let limit = q.limit.clamp(1, MAX_LIMIT);
        let now = unix_now();
        let conn = self.inner.lock();
        let mut conds = vec![LIVE.to_string()];
        let mut args: Vec<(&str, SqlValue)> = vec![(":now", SqlValue::Integer(now))];
        if let Some(p) = q.purpose {
            conds.push("purpose = :purpose".into());
            args.push((":purpose", SqlValue::Text(p.as_str().into())));
        }
        // The cursor is the (created_at, seq) of the file its id names: pages stay stable
        // while files are added or removed elsewhere in the list.
        if let Some(after) = &q.after {
            let key: Option<(i64, i64)> = conn
                .query_row(
                    "SELECT created_at, seq FROM files WHERE id = ?1",
                    [after],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (t, seq) = key.ok_or_else(|| StoreError::NotFound {
                kind: "file",
                id: after.clone(),
            })?;
            let op = match q.order {
                Order::Asc => ">",
                Order::Desc => "<",
            };
            conds.push(format!("(created_at, seq) {op} (:t, :seq)"));
            args.push((":t", SqlValue::Integer(t)));
            args.push((":seq", SqlValue::Integer(seq)));
        }
        let dir = match q.order {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        };
        // One extra row tells whether another page follows.
        let sql = format!(
            "SELECT {COLUMNS} FROM files WHERE {} ORDER BY created_at {dir}, seq {dir} LIMIT {}",
            conds.join(" AND "),
            limit + 1
        );
        let mut stmt = conn.prepare(&sql)?;
        let named: Vec<(&str, &dyn rusqlite::ToSql)> = args
            .iter()
            .map(|(k, v)| (*k, v as &dyn rusqlite::ToSql))
            .collect();
        let mut rows = stmt.query(named.as_slice())?;
        let mut data = Vec::new();
        while let Some(row) = rows.next()? {
            data.push(row_to_file(row)?);
        }
        let has_more = data.len() > limit;
        data.truncate(limit);
        Ok(Page {
            first_id: data.first().map(|f| f.id.clone()),
            last_id: data.last().map(|f| f.id.clone()),
            data,
            has_more,
        })
    }

    fn delete_file(&self, id: &str) -> Result<bool, StoreError> {
        let n = {
            let conn = self.inner.lock();
            conn.execute(
                &format!("DELETE FROM files WHERE id = :id AND {LIVE}"),
                rusqlite::named_params! {":id": id, ":now": unix_now()},
            )?
        };
        if n == 0 {
            return Ok(false);
        }
        // The row is gone, so the file is deleted for every caller; a blob that cannot be
        // removed now is an orphan the next open sweeps away.
        if let Err(e) = self.inner.blobs.remove(id) {
            tracing::warn!("file {id} deleted, but its bytes stay until the next start: {e}");
        }
        Ok(true)
    }

    fn open_content(&self, id: &str) -> Result<Option<FileContent>, StoreError> {
        let Some(file) = self.inner.get(id)? else {
            return Ok(None);
        };
        let path = self.inner.blobs.path(&file.id)?;
        match std::fs::File::open(&path) {
            Ok(f) => Ok(Some(FileContent {
                file,
                reader: Box::new(f),
            })),
            // Deleted between the lookup and the open.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.inner.get(id)?.is_none() => {
                Ok(None)
            }
            Err(e) => Err(StoreError::io(path, e)),
        }
    }
}

/// An upload into a [`SqliteStore`]: a temporary blob, then a rename and a row.
#[derive(Debug)]
struct SqliteUpload {
    inner: Arc<Inner>,
    blob: TempBlob,
}

impl std::io::Write for SqliteUpload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.blob.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.blob.flush()
    }
}

impl Upload for SqliteUpload {
    fn len(&self) -> u64 {
        self.blob.len()
    }

    fn commit(self: Box<Self>, file: NewFile) -> Result<FileObject, StoreError> {
        let SqliteUpload { inner, blob } = *self;
        let bytes = blob.len();
        let size = i64::try_from(bytes)
            .map_err(|_| StoreError::Corrupt(format!("file of {bytes} bytes")))?;
        // A fresh id whose blob name is free (a clash is practically impossible; the
        // UNIQUE constraint on `id` is the backstop).
        let mut id = new_file_id();
        while inner.blobs.path(&id)?.exists() {
            id = new_file_id();
        }
        let created_at = unix_now();
        let expires_at = file
            .expires_after
            .map(|s| created_at.saturating_add(i64::try_from(s).unwrap_or(i64::MAX)));
        inner.blobs.persist(blob, &id)?;
        let inserted = inner.lock().execute(
            "INSERT INTO files (id, filename, purpose, bytes, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                file.filename,
                file.purpose.as_str(),
                size,
                created_at,
                expires_at
            ],
        );
        if let Err(e) = inserted {
            if let Err(e2) = inner.blobs.remove(&id) {
                tracing::warn!("cannot remove the bytes of failed upload {id}: {e2}");
            }
            return Err(e.into());
        }
        Ok(FileObject {
            id,
            bytes,
            created_at,
            expires_at,
            filename: file.filename,
            purpose: file.purpose,
        })
    }
}
