//! The scale-out backend: files' metadata and bytes, vector stores, chunks and vectors in
//! PostgreSQL with pgvector (`serve --store postgres://...`).
//!
//! Several `serve` replicas may share one database: nothing lives in a replica's memory or
//! on its disk, so every replica sees every other's writes at once. File bytes are stored
//! in the database too (`file_blobs`, 1 MiB parts), so an upload to one replica can be read
//! from another. An upload streams into an anonymous temporary file first and enters the
//! database in one transaction at [`Upload::commit`]: a dropped upload leaves nothing.
//!
//! Connections come from a small pool (idle clients kept in a mutex-guarded list; a new one
//! is opened when none is idle, and a broken one is dropped rather than returned), because
//! the synchronous `postgres::Client` serves one statement at a time and requests arrive
//! from many blocking threads at once.

mod schema;
mod vectors;

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use ::postgres::{Client, Config, NoTls, Row};

use crate::error::StoreError;
use crate::files::{
    FileObject, FileQuery, MAX_LIMIT, NewFile, Order, Page, Purpose, new_file_id, unix_now,
};
use crate::store::{FileContent, Store, Upload};

pub use schema::SCHEMA_VERSION;

/// Size of one `file_blobs` row: large enough that a file is few rows, small enough that
/// one row is cheap to hold in memory while copying.
const PART: usize = 1 << 20;

/// Idle connections kept for reuse; more may be open while busy.
const MAX_IDLE: usize = 8;

/// Files and vector stores in PostgreSQL. Cheap to clone (one shared pool).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Pool>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.inner.what)
            .finish_non_exhaustive()
    }
}

struct Pool {
    config: Config,
    /// The database for messages: host, port and name, never the password.
    what: String,
    idle: Mutex<Vec<Client>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("database", &self.what)
            .finish_non_exhaustive()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = std::mem::take(
            self.idle
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        // Closing a `postgres::Client` blocks on its private runtime, which panics on an
        // async runtime's thread (where the last `Arc` of a server state may be dropped),
        // so the idle clients are closed on a thread of their own.
        if !idle.is_empty() {
            let closer = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(idle));
            if let Err(e) = closer {
                tracing::warn!("cannot close idle PostgreSQL connections: {e}");
            }
        }
    }
}

/// A pooled connection: back to the pool on drop unless it broke.
pub(crate) struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        // Only `Drop` takes the client out.
        self.client.as_ref().expect("client present until drop")
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("client present until drop")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            // A client left mid-transaction by a panic is rolled back when it is dropped
            // (the server aborts the transaction of a closed connection), so only
            // healthy, idle clients go back.
            if !c.is_closed() && !std::thread::panicking() {
                let mut idle = self
                    .pool
                    .idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if idle.len() < MAX_IDLE {
                    idle.push(c);
                }
            }
        }
    }
}

impl Pool {
    fn get(&self) -> Result<Conn<'_>, StoreError> {
        let reused = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let client = match reused {
            Some(c) => c,
            None => self.config.connect(NoTls)?,
        };
        Ok(Conn {
            pool: self,
            client: Some(client),
        })
    }
}

/// The columns [`row_to_file`] reads, in order.
const COLUMNS: &str = "id, bytes, created_at, expires_at, filename, purpose";

/// A file that has not expired at `$1`.
const LIVE: &str = "(expires_at IS NULL OR expires_at > $1)";

fn row_to_file(row: &Row) -> Result<FileObject, StoreError> {
    let purpose: String = row.try_get(5)?;
    let bytes: i64 = row.try_get(1)?;
    Ok(FileObject {
        id: row.try_get(0)?,
        bytes: u64::try_from(bytes)
            .map_err(|_| StoreError::Corrupt(format!("negative size {bytes}")))?,
        created_at: row.try_get(2)?,
        expires_at: row.try_get(3)?,
        filename: row.try_get(4)?,
        purpose: Purpose::parse(&purpose)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown purpose '{purpose}'")))?,
    })
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db`),
    /// creates the `vector` extension and migrates the schema; expired files are deleted.
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        let config: Config = url.parse()?;
        let what = describe(&config);
        let mut client = config.connect(NoTls)?;
        schema::migrate(&mut client, &what)?;
        let store = PgStore {
            inner: Arc::new(Pool {
                config,
                what,
                idle: Mutex::new(vec![client]),
            }),
        };
        store.purge_expired()?;
        Ok(store)
    }

    pub(crate) fn conn(&self) -> Result<Conn<'_>, StoreError> {
        self.inner.get()
    }

    /// Deletes every expired file (its bytes go with it: `ON DELETE CASCADE`); returns how
    /// many.
    pub fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(self.conn()?.execute(
            "DELETE FROM files WHERE expires_at IS NOT NULL AND expires_at <= $1",
            &[&unix_now()],
        )?)
    }

    fn get(&self, c: &mut Client, id: &str) -> Result<Option<FileObject>, StoreError> {
        let row = c.query_opt(
            &format!("SELECT {COLUMNS} FROM files WHERE id = $2 AND {LIVE}"),
            &[&unix_now(), &id],
        )?;
        row.as_ref().map(row_to_file).transpose()
    }
}

/// `host:port/dbname` of a config, for messages (no user, no password).
fn describe(c: &Config) -> String {
    let host = match c.get_hosts().first() {
        Some(::postgres::config::Host::Tcp(h)) => h.clone(),
        Some(::postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{host}:{port}/{}",
        c.get_dbname().unwrap_or("postgres")
    )
}

impl Store for PgStore {
    fn begin_upload(&self) -> Result<Box<dyn Upload>, StoreError> {
        let tmp = tempfile::tempfile().map_err(|e| StoreError::io(std::env::temp_dir(), e))?;
        Ok(Box::new(PgUpload {
            store: self.clone(),
            tmp,
            len: 0,
        }))
    }

    fn get_file(&self, id: &str) -> Result<Option<FileObject>, StoreError> {
        self.get(&mut *self.conn()?, id)
    }

    fn list_files(&self, q: &FileQuery) -> Result<Page<FileObject>, StoreError> {
        let limit = q.limit.clamp(1, MAX_LIMIT);
        let mut c = self.conn()?;
        let now = unix_now();
        let purpose = q.purpose.map(|p| p.as_str().to_string());
        let mut conds = vec![
            LIVE.to_string(),
            "($2::text IS NULL OR purpose = $2)".into(),
        ];
        // The cursor is the (created_at, seq) of the file its id names: pages stay stable
        // while files are added or removed elsewhere in the list.
        let mut key = (0i64, 0i64);
        if let Some(after) = &q.after {
            let row = c.query_opt("SELECT created_at, seq FROM files WHERE id = $1", &[after])?;
            let row = row.ok_or_else(|| StoreError::NotFound {
                kind: "file",
                id: after.clone(),
            })?;
            key = (row.try_get(0)?, row.try_get(1)?);
            let op = match q.order {
                Order::Asc => ">",
                Order::Desc => "<",
            };
            conds.push(format!("(created_at, seq) {op} ($3, $4)"));
        } else {
            // Keeps the parameter list fixed.
            conds.push("$3::bigint IS NOT NULL AND $4::bigint IS NOT NULL".into());
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
        let rows = c.query(&sql, &[&now, &purpose, &key.0, &key.1])?;
        let mut data = rows
            .iter()
            .map(row_to_file)
            .collect::<Result<Vec<_>, _>>()?;
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
        let n = self.conn()?.execute(
            &format!("DELETE FROM files WHERE id = $2 AND {LIVE}"),
            &[&unix_now(), &id],
        )?;
        Ok(n > 0)
    }

    fn open_content(&self, id: &str) -> Result<Option<FileContent>, StoreError> {
        let mut c = self.conn()?;
        // One REPEATABLE READ snapshot for the row and all its parts, copied to a temporary
        // file: the reader stays valid (and whole) if the file is deleted meanwhile, and a
        // large file never sits in memory.
        let mut tx = c
            .build_transaction()
            .isolation_level(::postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let row = tx.query_opt(
            &format!("SELECT {COLUMNS} FROM files WHERE id = $2 AND {LIVE}"),
            &[&unix_now(), &id],
        )?;
        let Some(file) = row.as_ref().map(row_to_file).transpose()? else {
            return Ok(None);
        };
        let tmp_err = |e| StoreError::io(std::env::temp_dir(), e);
        let mut tmp = tempfile::tempfile().map_err(tmp_err)?;
        let parts = tx.query(
            "SELECT part FROM file_blobs WHERE file_id = $1 ORDER BY part",
            &[&id],
        )?;
        for p in parts {
            let part: i32 = p.try_get(0)?;
            let row = tx.query_one(
                "SELECT data FROM file_blobs WHERE file_id = $1 AND part = $2",
                &[&id, &part],
            )?;
            let data: &[u8] = row.try_get(0)?;
            tmp.write_all(data).map_err(tmp_err)?;
        }
        tx.commit()?;
        tmp.seek(SeekFrom::Start(0)).map_err(tmp_err)?;
        Ok(Some(FileContent {
            file,
            reader: Box::new(tmp),
        }))
    }
}

/// An upload into a [`PgStore`]: an anonymous temporary file (gone when dropped), copied
/// into `file_blobs` in the transaction that inserts the file's row.
#[derive(Debug)]
struct PgUpload {
    store: PgStore,
    tmp: std::fs::File,
    len: u64,
}

impl Write for PgUpload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.tmp.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

impl Upload for PgUpload {
    fn len(&self) -> u64 {
        self.len
    }

    fn commit(self: Box<Self>, file: NewFile) -> Result<FileObject, StoreError> {
        let PgUpload {
            store,
            mut tmp,
            len: bytes,
        } = *self;
        let size = i64::try_from(bytes)
            .map_err(|_| StoreError::Corrupt(format!("file of {bytes} bytes")))?;
        let tmp_err = |e| StoreError::io(std::env::temp_dir(), e);
        tmp.seek(SeekFrom::Start(0)).map_err(tmp_err)?;
        let id = new_file_id();
        let created_at = unix_now();
        let expires_at = file
            .expires_after
            .map(|s| created_at.saturating_add(i64::try_from(s).unwrap_or(i64::MAX)));
        let mut c = store.conn()?;
        // Row and bytes in one transaction: other replicas see the file whole or not at all.
        let mut tx = c.transaction()?;
        tx.execute(
            "INSERT INTO files (id, filename, purpose, bytes, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &id,
                &file.filename,
                &file.purpose.as_str(),
                &size,
                &created_at,
                &expires_at,
            ],
        )?;
        let ins = tx.prepare("INSERT INTO file_blobs (file_id, part, data) VALUES ($1, $2, $3)")?;
        let mut buf = vec![0u8; PART];
        let mut part = 0i32;
        loop {
            let n = read_full(&mut tmp, &mut buf).map_err(tmp_err)?;
            if n == 0 {
                break;
            }
            tx.execute(&ins, &[&id, &part, &&buf[..n]])?;
            part += 1;
        }
        tx.commit()?;
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

/// Reads until `buf` is full or the end; returns how many bytes.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
