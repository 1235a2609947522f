//! The embedded backend's vector stores: rows in SQLite, chunk vectors as little-endian f32
//! blobs, keyword search by FTS5's BM25, vector search over each store's vectors held in
//! memory (loaded from SQLite on a store's first search, then kept in step with every
//! completed or removed file): an exact scan, plus an HNSW graph built in the background
//! for large stores (see `index`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde_json::{Map, Value};

use super::SqliteStore;
use super::index::StoreIndex;
use super::rank::{fts_query, fuse};
use crate::error::StoreError;
use crate::files::{Order, Page, unix_now};
use crate::store::{
    ListQuery, NewStoreFile, NewVectorStore, SearchQuery, VectorDb, VectorStoreUpdate,
};
use crate::vector_stores::{
    Chunking, ExpiresAfter, FileCounts, FileStatus, Hit, LastError, NewChunk, SearchMode,
    VectorStore, VectorStoreFile, new_vector_store_id,
};

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub(crate) fn json_map(s: &str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("stored JSON: {e}")))
}

pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("JSON: {e}")))
}

const VS_COLUMNS: &str = "id, name, created_at, last_active_at, metadata, expires_after_days, embedding_model, embedding_dimension";

const VSF_COLUMNS: &str = "file_id, vector_store_id, created_at, status, last_error, attributes, chunking, usage_bytes, filename";

fn row_to_store(r: &rusqlite::Row<'_>) -> Result<VectorStore, StoreError> {
    let days: Option<i64> = r.get(5)?;
    let dim: i64 = r.get(7)?;
    Ok(VectorStore {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
        last_active_at: r.get(3)?,
        metadata: json_map(&r.get::<_, String>(4)?)?,
        expires_after: days.map(|d| ExpiresAfter {
            anchor: crate::vector_stores::Anchor::LastActiveAt,
            days: u32::try_from(d).unwrap_or(u32::MAX),
        }),
        embedding_model: r.get(6)?,
        embedding_dimension: usize::try_from(dim).unwrap_or(0),
        file_counts: FileCounts::default(),
        usage_bytes: 0,
    })
}

fn row_to_file(r: &rusqlite::Row<'_>) -> Result<VectorStoreFile, StoreError> {
    let status: String = r.get(3)?;
    let last_error: Option<String> = r.get(4)?;
    let chunking: String = r.get(6)?;
    let usage: i64 = r.get(7)?;
    Ok(VectorStoreFile {
        id: r.get(0)?,
        vector_store_id: r.get(1)?,
        created_at: r.get(2)?,
        status: FileStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("file status {status:?}")))?,
        last_error: match last_error {
            Some(s) => Some(
                serde_json::from_str::<LastError>(&s)
                    .map_err(|e| StoreError::Corrupt(format!("last_error: {e}")))?,
            ),
            None => None,
        },
        attributes: json_map(&r.get::<_, String>(5)?)?,
        chunking: serde_json::from_str::<Chunking>(&chunking)
            .map_err(|e| StoreError::Corrupt(format!("chunking: {e}")))?,
        usage_bytes: u64::try_from(usage).unwrap_or(0),
        filename: r.get(8)?,
    })
}

/// `seq` of the row with `id` in `table`/`id_col` (within `scope` when given); a cursor
/// naming nothing is NotFound.
fn cursor_seq(
    conn: &rusqlite::Connection,
    sql: &str,
    p: &[&dyn rusqlite::ToSql],
    kind: &'static str,
    id: &str,
) -> Result<i64, StoreError> {
    conn.query_row(sql, p, |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            kind,
            id: id.to_string(),
        })
}

/// Turns a page query over `seq` into SQL (`WHERE` fragments, order, limit + 1).
pub(crate) fn page_sql(q: &ListQuery, after: Option<i64>, before: Option<i64>) -> (String, String) {
    let (asc, desc) = match q.order {
        Order::Asc => (">", "<"),
        Order::Desc => ("<", ">"),
    };
    let mut conds = Vec::new();
    if let Some(a) = after {
        conds.push(format!("seq {asc} {a}"));
    }
    if let Some(b) = before {
        conds.push(format!("seq {desc} {b}"));
    }
    let order = match q.order {
        Order::Asc => "ORDER BY seq ASC",
        Order::Desc => "ORDER BY seq DESC",
    };
    let cond = if conds.is_empty() {
        String::new()
    } else {
        format!(" AND {}", conds.join(" AND "))
    };
    (
        cond,
        format!("{order} LIMIT {}", q.limit.clamp(1, 10_000) + 1),
    )
}

pub(crate) fn page_of<T>(mut data: Vec<T>, limit: usize, id: impl Fn(&T) -> String) -> Page<T> {
    let has_more = data.len() > limit;
    data.truncate(limit);
    Page {
        first_id: data.first().map(&id),
        last_id: data.last().map(&id),
        data,
        has_more,
    }
}

/// Refuses a filter naming an attribute that no completed file of store `vs` has (`keys`):
/// it is almost always a typo. Shared with the PostgreSQL backend (same message).
pub(crate) fn check_filter_keys(
    vs: &str,
    filter: &crate::vector_stores::Filter,
    keys: HashSet<String>,
) -> Result<(), StoreError> {
    if let Some(k) = filter.keys().into_iter().find(|k| !keys.contains(*k)) {
        return Err(StoreError::Invalid(format!(
            "the filter names the attribute {k:?}, which no file of vector store {vs} has (attributes: {})",
            if keys.is_empty() {
                "none".to_string()
            } else {
                let mut k: Vec<_> = keys.into_iter().collect();
                k.sort();
                k.join(", ")
            }
        )));
    }
    Ok(())
}

impl SqliteStore {
    fn counts(&self, conn: &rusqlite::Connection, vs: &mut VectorStore) -> Result<(), StoreError> {
        let mut stmt = conn.prepare_cached(
            "SELECT status, COUNT(*), COALESCE(SUM(usage_bytes), 0) FROM vector_store_files WHERE vector_store_id = ?1 GROUP BY status",
        )?;
        let mut rows = stmt.query([&vs.id])?;
        let mut c = FileCounts::default();
        let mut usage = 0u64;
        while let Some(r) = rows.next()? {
            let s: String = r.get(0)?;
            let n: i64 = r.get(1)?;
            let u: i64 = r.get(2)?;
            let n = u64::try_from(n).unwrap_or(0);
            usage += u64::try_from(u).unwrap_or(0);
            match FileStatus::parse(&s) {
                Some(FileStatus::InProgress) => c.in_progress += n,
                Some(FileStatus::Completed) => c.completed += n,
                Some(FileStatus::Failed) => c.failed += n,
                Some(FileStatus::Cancelled) => c.cancelled += n,
                None => {}
            }
            c.total += n;
        }
        vs.file_counts = c;
        vs.usage_bytes = usage;
        Ok(())
    }

    fn store_row(
        &self,
        conn: &rusqlite::Connection,
        id: &str,
    ) -> Result<Option<VectorStore>, StoreError> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {VS_COLUMNS} FROM vector_stores WHERE id = ?1"
        ))?;
        let mut rows = stmt.query([id])?;
        let Some(r) = rows.next()? else {
            return Ok(None);
        };
        let mut vs = row_to_store(r)?;
        drop(rows);
        self.counts(conn, &mut vs)?;
        Ok(Some(vs))
    }

    fn file_row(
        conn: &rusqlite::Connection,
        vs: &str,
        file: &str,
    ) -> Result<Option<VectorStoreFile>, StoreError> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {VSF_COLUMNS} FROM vector_store_files WHERE vector_store_id = ?1 AND file_id = ?2"
        ))?;
        let mut rows = stmt.query([vs, file])?;
        match rows.next()? {
            Some(r) => Ok(Some(row_to_file(r)?)),
            None => Ok(None),
        }
    }

    /// The store's index, loaded from SQLite if it is not in memory yet. Only this store's
    /// index is locked while loading (writes to it wait, so none is missed); the map of
    /// indexes is not, so other stores keep answering.
    pub(super) fn index(&self, vs: &VectorStore) -> Result<Arc<StoreIndex>, StoreError> {
        let idx = self
            .inner
            .indexes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(vs.id.clone())
            .or_insert_with(|| {
                Arc::new(StoreIndex::new(
                    vs.embedding_dimension,
                    self.inner.index_shared.clone(),
                ))
            })
            .clone();
        idx.ensure_loaded(|push| {
            let conn = self.inner.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT id, file_id, embedding FROM chunks WHERE vector_store_id = ?1 ORDER BY id",
            )?;
            let mut rows = stmt.query([&vs.id])?;
            let mut files: HashMap<String, Arc<str>> = HashMap::new();
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(0)?;
                let f: String = r.get(1)?;
                let v =
                    from_blob(r.get_ref(2)?.as_blob().map_err(|e| {
                        StoreError::Corrupt(format!("embedding of chunk {id}: {e}"))
                    })?);
                let f = match files.get(&f) {
                    Some(a) => a.clone(),
                    None => {
                        let a: Arc<str> = Arc::from(f.as_str());
                        files.insert(f, a.clone());
                        a
                    }
                };
                push(id, f, &v)?;
            }
            Ok(())
        })?;
        Ok(idx)
    }

    /// The index of a store, if one is in memory (to keep it in step).
    pub(super) fn loaded_index(&self, vs: &str) -> Option<Arc<StoreIndex>> {
        self.inner
            .indexes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(vs)
            .cloned()
    }

    /// Forgets a store's index (cancelling its build): the store was deleted, or its
    /// index fell out of step with SQLite and is reloaded on the next search.
    fn drop_index(&self, vs: &str) {
        let gone = self
            .inner
            .indexes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(vs);
        if let Some(idx) = gone {
            idx.cancel();
        }
    }

    /// Completed files of a store passing `q.filter` (`None`: no filter). A filter on an
    /// attribute no file of the store has is refused: it is almost always a typo.
    fn allowed_files(
        &self,
        vs: &str,
        q: &SearchQuery,
    ) -> Result<Option<HashSet<String>>, StoreError> {
        let Some(filter) = &q.filter else {
            return Ok(None);
        };
        let conn = self.inner.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT file_id, attributes FROM vector_store_files WHERE vector_store_id = ?1 AND status = 'completed'",
        )?;
        let mut rows = stmt.query([vs])?;
        let mut keys: HashSet<String> = HashSet::new();
        let mut allowed = HashSet::new();
        while let Some(r) = rows.next()? {
            let attrs = json_map(&r.get::<_, String>(1)?)?;
            keys.extend(attrs.keys().cloned());
            if filter.matches(&attrs) {
                allowed.insert(r.get::<_, String>(0)?);
            }
        }
        check_filter_keys(vs, filter, keys)?;
        Ok(Some(allowed))
    }

    fn keyword_hits(
        &self,
        vs: &str,
        text: &str,
        k: usize,
        allowed: Option<&HashSet<String>>,
    ) -> Result<Vec<(i64, f32)>, StoreError> {
        let Some(query) = fts_query(text) else {
            return Ok(Vec::new());
        };
        let conn = self.inner.lock();
        // bm25() is lower-is-better and unbounded; s / (1 + s) of its negation maps it to
        // [0, 1) keeping the order. Filtered files are skipped after ranking, so ask for more.
        let mut stmt = conn.prepare_cached(
            "SELECT c.id, c.file_id, -bm25(chunks_fts) AS s FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid
             WHERE chunks_fts MATCH ?1 AND c.vector_store_id = ?2 ORDER BY s DESC LIMIT ?3",
        )?;
        let limit = i64::try_from(if allowed.is_some() { k * 20 } else { k }).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![query, vs, limit])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let file: String = r.get(1)?;
            if allowed.is_some_and(|a| !a.contains(&file)) {
                continue;
            }
            let s: f64 = r.get(2)?;
            let s = s.max(0.0);
            out.push((r.get(0)?, (s / (1.0 + s)) as f32));
            if out.len() == k {
                break;
            }
        }
        Ok(out)
    }
}

impl VectorDb for SqliteStore {
    fn create_vector_store(&self, v: NewVectorStore) -> Result<VectorStore, StoreError> {
        let id = v.id.clone().unwrap_or_else(new_vector_store_id);
        let now = unix_now();
        let conn = self.inner.lock();
        let n = conn.execute(
            "INSERT OR IGNORE INTO vector_stores (id, name, created_at, last_active_at, metadata, expires_after_days, embedding_model, embedding_dimension)
             VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                v.name,
                now,
                json_text(&v.metadata)?,
                v.expires_after.map(|e| i64::from(e.days)),
                v.embedding_model,
                i64::try_from(v.embedding_dimension).unwrap_or(i64::MAX),
            ],
        )?;
        if n == 0 {
            return Err(StoreError::Invalid(format!(
                "a vector store with id {id} already exists"
            )));
        }
        self.store_row(&conn, &id)?
            .ok_or_else(|| StoreError::Corrupt(format!("vector store {id} vanished")))
    }

    fn get_vector_store(&self, id: &str) -> Result<Option<VectorStore>, StoreError> {
        let conn = self.inner.lock();
        self.store_row(&conn, id)
    }

    fn list_vector_stores(&self, q: &ListQuery) -> Result<Page<VectorStore>, StoreError> {
        let conn = self.inner.lock();
        let seq = |id: &str| {
            cursor_seq(
                &conn,
                "SELECT seq FROM vector_stores WHERE id = ?1",
                &[&id],
                "vector store",
                id,
            )
        };
        let after = q.after.as_deref().map(seq).transpose()?;
        let before = q.before.as_deref().map(seq).transpose()?;
        let (cond, tail) = page_sql(q, after, before);
        let mut stmt = conn.prepare(&format!(
            "SELECT {VS_COLUMNS} FROM vector_stores WHERE 1 = 1{cond} {tail}"
        ))?;
        let mut rows = stmt.query([])?;
        let mut data = Vec::new();
        while let Some(r) = rows.next()? {
            data.push(row_to_store(r)?);
        }
        drop(rows);
        for vs in &mut data {
            self.counts(&conn, vs)?;
        }
        Ok(page_of(data, q.limit.clamp(1, 10_000), |v| v.id.clone()))
    }

    fn update_vector_store(
        &self,
        id: &str,
        u: VectorStoreUpdate,
    ) -> Result<Option<VectorStore>, StoreError> {
        let conn = self.inner.lock();
        if self.store_row(&conn, id)?.is_none() {
            return Ok(None);
        }
        if let Some(name) = &u.name {
            conn.execute(
                "UPDATE vector_stores SET name = ?2 WHERE id = ?1",
                params![id, name],
            )?;
        }
        if let Some(m) = &u.metadata {
            conn.execute(
                "UPDATE vector_stores SET metadata = ?2 WHERE id = ?1",
                params![id, json_text(m)?],
            )?;
        }
        if let Some(e) = &u.expires_after {
            conn.execute(
                "UPDATE vector_stores SET expires_after_days = ?2 WHERE id = ?1",
                params![id, e.map(|e| i64::from(e.days))],
            )?;
        }
        conn.execute(
            "UPDATE vector_stores SET last_active_at = ?2 WHERE id = ?1",
            params![id, unix_now()],
        )?;
        self.store_row(&conn, id)
    }

    fn delete_vector_store(&self, id: &str) -> Result<bool, StoreError> {
        let deleted = {
            let mut conn = self.inner.lock();
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM chunks WHERE vector_store_id = ?1", [id])?;
            tx.execute(
                "DELETE FROM vector_store_files WHERE vector_store_id = ?1",
                [id],
            )?;
            let n = tx.execute("DELETE FROM vector_stores WHERE id = ?1", [id])?;
            tx.commit()?;
            n > 0
        };
        self.drop_index(id);
        Ok(deleted)
    }

    fn add_file(&self, vs: &str, f: NewStoreFile) -> Result<VectorStoreFile, StoreError> {
        let conn = self.inner.lock();
        if self.store_row(&conn, vs)?.is_none() {
            return Err(StoreError::NotFound {
                kind: "vector store",
                id: vs.to_string(),
            });
        }
        conn.execute(
            "INSERT OR IGNORE INTO vector_store_files (vector_store_id, file_id, filename, created_at, status, attributes, chunking)
             VALUES (?1, ?2, ?3, ?4, 'in_progress', ?5, ?6)",
            params![vs, f.file_id, f.filename, unix_now(), json_text(&f.attributes)?, json_text(&f.chunking)?],
        )?;
        conn.execute(
            "UPDATE vector_stores SET last_active_at = ?2 WHERE id = ?1",
            params![vs, unix_now()],
        )?;
        SqliteStore::file_row(&conn, vs, &f.file_id)?
            .ok_or_else(|| StoreError::Corrupt(format!("file {} vanished", f.file_id)))
    }

    fn get_store_file(&self, vs: &str, file: &str) -> Result<Option<VectorStoreFile>, StoreError> {
        let conn = self.inner.lock();
        SqliteStore::file_row(&conn, vs, file)
    }

    fn list_store_files(
        &self,
        vs: &str,
        q: &ListQuery,
        status: Option<FileStatus>,
    ) -> Result<Page<VectorStoreFile>, StoreError> {
        let conn = self.inner.lock();
        let seq = |id: &str| {
            cursor_seq(
                &conn,
                "SELECT seq FROM vector_store_files WHERE vector_store_id = ?1 AND file_id = ?2",
                &[&vs, &id],
                "file in this vector store",
                id,
            )
        };
        let after = q.after.as_deref().map(seq).transpose()?;
        let before = q.before.as_deref().map(seq).transpose()?;
        let (cond, tail) = page_sql(q, after, before);
        let status_cond = match status {
            Some(s) => format!(" AND status = '{}'", s.as_str()),
            None => String::new(),
        };
        let mut stmt = conn.prepare(&format!(
            "SELECT {VSF_COLUMNS} FROM vector_store_files WHERE vector_store_id = ?1{status_cond}{cond} {tail}"
        ))?;
        let mut rows = stmt.query([vs])?;
        let mut data = Vec::new();
        while let Some(r) = rows.next()? {
            data.push(row_to_file(r)?);
        }
        Ok(page_of(data, q.limit.clamp(1, 10_000), |f| f.id.clone()))
    }

    fn update_file_attributes(
        &self,
        vs: &str,
        file: &str,
        attributes: Map<String, Value>,
    ) -> Result<Option<VectorStoreFile>, StoreError> {
        let conn = self.inner.lock();
        conn.execute(
            "UPDATE vector_store_files SET attributes = ?3 WHERE vector_store_id = ?1 AND file_id = ?2",
            params![vs, file, json_text(&attributes)?],
        )?;
        SqliteStore::file_row(&conn, vs, file)
    }

    fn remove_store_file(&self, vs: &str, file: &str) -> Result<bool, StoreError> {
        let removed = {
            let mut conn = self.inner.lock();
            let tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM chunks WHERE vector_store_id = ?1 AND file_id = ?2",
                [vs, file],
            )?;
            let n = tx.execute(
                "DELETE FROM vector_store_files WHERE vector_store_id = ?1 AND file_id = ?2",
                [vs, file],
            )?;
            tx.commit()?;
            n > 0
        };
        if let Some(idx) = self.loaded_index(vs) {
            idx.remove_file(file);
        }
        Ok(removed)
    }

    fn complete_file(&self, vs: &str, file: &str, chunks: &[NewChunk]) -> Result<bool, StoreError> {
        let dim = {
            let conn = self.inner.lock();
            match self.store_row(&conn, vs)? {
                Some(s) => s.embedding_dimension,
                None => return Ok(false),
            }
        };
        if let Some(bad) = chunks.iter().find(|c| c.embedding.len() != dim) {
            return Err(StoreError::Invalid(format!(
                "embedding of dimension {} for a vector store of dimension {dim}",
                bad.embedding.len()
            )));
        }
        let ids = {
            let mut conn = self.inner.lock();
            let tx = conn.transaction()?;
            let status: Option<String> = tx
                .query_row(
                    "SELECT status FROM vector_store_files WHERE vector_store_id = ?1 AND file_id = ?2",
                    [vs, file],
                    |r| r.get(0),
                )
                .optional()?;
            if status.as_deref() != Some("in_progress") {
                return Ok(false);
            }
            // A retry after a crash may find chunks of an earlier attempt only if that
            // attempt committed, which also completed it; clear anyway to stay idempotent.
            tx.execute(
                "DELETE FROM chunks WHERE vector_store_id = ?1 AND file_id = ?2",
                [vs, file],
            )?;
            let mut ids = Vec::with_capacity(chunks.len());
            let mut usage = 0i64;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO chunks (vector_store_id, file_id, ordinal, text, tokens, embedding, metadata) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for (i, c) in chunks.iter().enumerate() {
                    let meta = if c.metadata.is_empty() {
                        None
                    } else {
                        Some(json_text(&c.metadata)?)
                    };
                    ins.execute(params![
                        vs,
                        file,
                        i64::try_from(i).unwrap_or(i64::MAX),
                        c.text,
                        i64::try_from(c.tokens).unwrap_or(i64::MAX),
                        to_blob(&c.embedding),
                        meta
                    ])?;
                    ids.push(tx.last_insert_rowid());
                    usage += i64::try_from(c.text.len()).unwrap_or(0);
                }
            }
            tx.execute(
                "UPDATE vector_store_files SET status = 'completed', last_error = NULL, usage_bytes = ?3 WHERE vector_store_id = ?1 AND file_id = ?2",
                params![vs, file, usage],
            )?;
            tx.commit()?;
            ids
        };
        if let Some(idx) = self.loaded_index(vs) {
            let pushed = idx.insert_file(
                file,
                ids.iter()
                    .zip(chunks)
                    .map(|(id, c)| (*id, &c.embedding[..])),
            );
            if pushed.is_err() {
                // The rows are committed; rebuild the index from them on the next search.
                self.drop_index(vs);
            }
        }
        Ok(true)
    }

    fn insert_chunks(
        &self,
        vs: &str,
        file: &str,
        filename: &str,
        chunks: &[NewChunk],
    ) -> Result<(), StoreError> {
        // One transaction: the entry appears `in_progress` to nobody, and a crash leaves
        // either all of it or nothing.
        {
            let mut conn = self.inner.lock();
            let tx = conn.transaction()?;
            let exists: Option<i64> = tx
                .query_row("SELECT seq FROM vector_stores WHERE id = ?1", [vs], |r| {
                    r.get(0)
                })
                .optional()?;
            if exists.is_none() {
                return Err(StoreError::NotFound {
                    kind: "vector store",
                    id: vs.to_string(),
                });
            }
            tx.execute(
                "INSERT INTO vector_store_files (vector_store_id, file_id, filename, created_at, status, attributes, chunking)
                 VALUES (?1, ?2, ?3, ?4, 'in_progress', '{}', ?5)",
                params![vs, file, filename, unix_now(), json_text(&Chunking::AUTO)?],
            )?;
            tx.commit()?;
        }
        match self.complete_file(vs, file, chunks) {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::Corrupt(format!("chunk group {file} vanished"))),
            Err(e) => {
                let _ = self.remove_store_file(vs, file);
                Err(e)
            }
        }
    }

    fn fail_file(&self, vs: &str, file: &str, error: LastError) -> Result<(), StoreError> {
        let conn = self.inner.lock();
        conn.execute(
            "UPDATE vector_store_files SET status = 'failed', last_error = ?3 WHERE vector_store_id = ?1 AND file_id = ?2 AND status = 'in_progress'",
            params![vs, file, json_text(&error)?],
        )?;
        Ok(())
    }

    fn in_progress_files(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.inner.lock();
        let mut stmt = conn.prepare(
            "SELECT vector_store_id, file_id FROM vector_store_files WHERE status = 'in_progress' ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn file_chunks(&self, vs: &str, file: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.inner.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT text FROM chunks WHERE vector_store_id = ?1 AND file_id = ?2 ORDER BY ordinal",
        )?;
        let rows = stmt.query_map([vs, file], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn search(&self, vs_id: &str, q: &SearchQuery) -> Result<Vec<Hit>, StoreError> {
        let vs = self
            .get_vector_store(vs_id)?
            .ok_or_else(|| StoreError::NotFound {
                kind: "vector store",
                id: vs_id.to_string(),
            })?;
        let k = q.max_results.max(1);
        let allowed = self.allowed_files(vs_id, q)?;
        let vector = |k: usize| -> Result<Vec<(i64, f32)>, StoreError> {
            let e = q.embedding.as_deref().ok_or_else(|| {
                StoreError::Invalid("vector search needs the query's embedding".into())
            })?;
            if e.len() != vs.embedding_dimension {
                return Err(StoreError::Invalid(format!(
                    "the query embedding has {} dimensions; vector store {vs_id} holds {}-dimension vectors ({})",
                    e.len(),
                    vs.embedding_dimension,
                    vs.embedding_model
                )));
            }
            self.index(&vs)?.search(e, k, allowed.as_ref())
        };
        let ranked = match q.mode {
            SearchMode::Vector => vector(k)?,
            SearchMode::Keyword => self.keyword_hits(vs_id, &q.text, k, allowed.as_ref())?,
            SearchMode::Hybrid => {
                let v = vector(2 * k)?;
                let w = self.keyword_hits(vs_id, &q.text, 2 * k, allowed.as_ref())?;
                fuse(&v, &w, k)
            }
        };
        let conn = self.inner.lock();
        // At most once a minute, as PostgreSQL's backend: a search should not be a write.
        conn.execute(
            "UPDATE vector_stores SET last_active_at = ?2 WHERE id = ?1 AND last_active_at < ?2 - 60",
            params![vs_id, unix_now()],
        )?;
        let mut stmt = conn.prepare_cached(
            "SELECT c.file_id, c.text, f.filename, f.attributes, c.metadata FROM chunks c JOIN vector_store_files f
             ON f.vector_store_id = c.vector_store_id AND f.file_id = c.file_id WHERE c.id = ?1",
        )?;
        let mut out = Vec::with_capacity(ranked.len());
        for (id, score) in ranked {
            if score < q.score_threshold {
                continue;
            }
            let row = stmt
                .query_row([id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                })
                .optional()?;
            if let Some((file_id, text, filename, attrs, meta)) = row {
                out.push(Hit {
                    chunk_id: id,
                    file_id,
                    filename,
                    attributes: json_map(&attrs)?,
                    metadata: match meta {
                        Some(m) => json_map(&m)?,
                        None => Map::new(),
                    },
                    text,
                    score,
                });
            }
        }
        Ok(out)
    }
}
