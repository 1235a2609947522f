//! The PostgreSQL backend's vector stores: the SQLite backend's semantics, searched in SQL.
//!
//! - Vector search: pgvector's cosine distance, score = `1 - (embedding <=> query)` (the
//!   cosine similarity, as the SQLite backend's scan). Each store gets a partial HNSW index
//!   `ON chunks USING hnsw ((embedding::vector(DIM)) vector_cosine_ops) WHERE
//!   vector_store_id = '<id>'` when it is created, because stores differ in dimension and
//!   one typed column cannot hold them all. The planner uses it once a store is large
//!   enough to beat a scan; it is approximate (`hnsw.ef_search` is raised per query to at
//!   least twice the results asked for). Searches with an attribute filter, and stores of
//!   more than 2000 dimensions (pgvector's HNSW limit), are scanned exactly.
//! - Keyword search: PostgreSQL full-text, `ts_rank_cd` (cover density) over the `simple`
//!   configuration, any query word matching; the rank `s >= 0` maps to `s / (1 + s)` in
//!   [0, 1), as the SQLite backend does with BM25.
//! - Hybrid: the same reciprocal rank fusion (k = 60) as SQLite.
//! - Vectors cross the wire as pgvector's text form `[x,y,...]`, cast in SQL.

use serde_json::{Map, Value};

use super::PgStore;
use crate::error::StoreError;
use crate::files::Page;
use crate::sqlite::rank::fuse;
use crate::sqlite::vectors::{json_map, json_text, page_of, page_sql};
use crate::store::{
    ListQuery, NewStoreFile, NewVectorStore, SearchQuery, VectorDb, VectorStoreUpdate,
};
use crate::vector_stores::{
    Chunking, FileStatus, Hit, LastError, NewChunk, SearchMode, VectorStore, VectorStoreFile,
    new_vector_store_id,
};

mod rows;
mod search;

use rows::{VS_COLUMNS, VSF_COLUMNS, counts, file_row, row_to_file, row_to_store, store_row};
use search::{literal, vector_text};

/// pgvector's HNSW limit on dimensions (for `vector`).
const HNSW_MAX_DIM: usize = 2000;

impl VectorDb for PgStore {
    fn create_vector_store(&self, v: NewVectorStore) -> Result<VectorStore, StoreError> {
        let id = v.id.clone().unwrap_or_else(new_vector_store_id);
        let now = crate::files::unix_now();
        let dim = i64::try_from(v.embedding_dimension).unwrap_or(i64::MAX);
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        let seq = tx.query_opt(
            "INSERT INTO vector_stores (id, name, created_at, last_active_at, metadata, expires_after_days, embedding_model, embedding_dimension)
             VALUES ($1, $2, $3, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING seq",
            &[&id, &v.name, &now, &json_text(&v.metadata)?, &v.expires_after.map(|e| i64::from(e.days)), &v.embedding_model, &dim],
        )?;
        let Some(seq) = seq else {
            return Err(StoreError::Invalid(format!(
                "a vector store with id {id} already exists"
            )));
        };
        let seq: i64 = seq.try_get(0)?;
        if (1..=HNSW_MAX_DIM).contains(&v.embedding_dimension) {
            // Named by the store's seq (ids are arbitrary text); dropped with the store.
            tx.batch_execute(&format!(
                "CREATE INDEX chunks_hnsw_{seq} ON chunks USING hnsw ((embedding::vector({d})) vector_cosine_ops) WHERE vector_store_id = {lit}",
                d = v.embedding_dimension,
                lit = literal(&id)
            ))?;
        }
        let vs = store_row(&mut tx, &id)?
            .ok_or_else(|| StoreError::Corrupt(format!("vector store {id} vanished")))?;
        tx.commit()?;
        Ok(vs)
    }

    fn get_vector_store(&self, id: &str) -> Result<Option<VectorStore>, StoreError> {
        store_row(&mut *self.conn()?, id)
    }

    fn list_vector_stores(&self, q: &ListQuery) -> Result<Page<VectorStore>, StoreError> {
        let mut c = self.conn()?;
        let mut seq = |id: &str| -> Result<i64, StoreError> {
            let r = c.query_opt("SELECT seq FROM vector_stores WHERE id = $1", &[&id])?;
            let r = r.ok_or_else(|| StoreError::NotFound {
                kind: "vector store",
                id: id.to_string(),
            })?;
            Ok(r.try_get(0)?)
        };
        let after = q.after.as_deref().map(&mut seq).transpose()?;
        let before = q.before.as_deref().map(&mut seq).transpose()?;
        let (cond, tail) = page_sql(q, after, before);
        let rows = c.query(
            &format!("SELECT {VS_COLUMNS} FROM vector_stores WHERE 1 = 1{cond} {tail}"),
            &[],
        )?;
        let mut data = rows
            .iter()
            .map(row_to_store)
            .collect::<Result<Vec<_>, _>>()?;
        for vs in &mut data {
            counts(&mut *c, vs)?;
        }
        Ok(page_of(data, q.limit.clamp(1, 10_000), |v| v.id.clone()))
    }

    fn update_vector_store(
        &self,
        id: &str,
        u: VectorStoreUpdate,
    ) -> Result<Option<VectorStore>, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        let n = tx.execute(
            "UPDATE vector_stores SET
                name = COALESCE($2, name),
                metadata = COALESCE($3, metadata),
                expires_after_days = CASE WHEN $4 THEN $5 ELSE expires_after_days END,
                last_active_at = $6
             WHERE id = $1",
            &[
                &id,
                &u.name,
                &u.metadata.as_ref().map(json_text).transpose()?,
                &u.expires_after.is_some(),
                &u.expires_after.flatten().map(|e| i64::from(e.days)),
                &crate::files::unix_now(),
            ],
        )?;
        if n == 0 {
            return Ok(None);
        }
        let vs = store_row(&mut tx, id)?;
        tx.commit()?;
        Ok(vs)
    }

    fn delete_vector_store(&self, id: &str) -> Result<bool, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        let seq = tx.query_opt(
            "DELETE FROM vector_stores WHERE id = $1 RETURNING seq",
            &[&id],
        )?;
        tx.execute("DELETE FROM chunks WHERE vector_store_id = $1", &[&id])?;
        tx.execute(
            "DELETE FROM vector_store_files WHERE vector_store_id = $1",
            &[&id],
        )?;
        if let Some(seq) = &seq {
            let seq: i64 = seq.try_get(0)?;
            tx.batch_execute(&format!("DROP INDEX IF EXISTS chunks_hnsw_{seq}"))?;
        }
        tx.commit()?;
        Ok(seq.is_some())
    }

    fn add_file(&self, vs: &str, f: NewStoreFile) -> Result<VectorStoreFile, StoreError> {
        let mut c = self.conn()?;
        if store_row(&mut *c, vs)?.is_none() {
            return Err(StoreError::NotFound {
                kind: "vector store",
                id: vs.to_string(),
            });
        }
        let now = crate::files::unix_now();
        c.execute(
            "INSERT INTO vector_store_files (vector_store_id, file_id, filename, created_at, status, attributes, chunking)
             VALUES ($1, $2, $3, $4, 'in_progress', $5, $6) ON CONFLICT (vector_store_id, file_id) DO NOTHING",
            &[&vs, &f.file_id, &f.filename, &now, &json_text(&f.attributes)?, &json_text(&f.chunking)?],
        )?;
        PgStore::touch(&mut c, vs)?;
        file_row(&mut *c, vs, &f.file_id)?
            .ok_or_else(|| StoreError::Corrupt(format!("file {} vanished", f.file_id)))
    }

    fn get_store_file(&self, vs: &str, file: &str) -> Result<Option<VectorStoreFile>, StoreError> {
        file_row(&mut *self.conn()?, vs, file)
    }

    fn list_store_files(
        &self,
        vs: &str,
        q: &ListQuery,
        status: Option<FileStatus>,
    ) -> Result<Page<VectorStoreFile>, StoreError> {
        let mut c = self.conn()?;
        let mut seq = |id: &str| -> Result<i64, StoreError> {
            let r = c.query_opt(
                "SELECT seq FROM vector_store_files WHERE vector_store_id = $1 AND file_id = $2",
                &[&vs, &id],
            )?;
            let r = r.ok_or_else(|| StoreError::NotFound {
                kind: "file in this vector store",
                id: id.to_string(),
            })?;
            Ok(r.try_get(0)?)
        };
        let after = q.after.as_deref().map(&mut seq).transpose()?;
        let before = q.before.as_deref().map(&mut seq).transpose()?;
        let (cond, tail) = page_sql(q, after, before);
        let status = status.map(|s| s.as_str());
        let rows = c.query(
            &format!("SELECT {VSF_COLUMNS} FROM vector_store_files WHERE vector_store_id = $1 AND ($2::text IS NULL OR status = $2){cond} {tail}"),
            &[&vs, &status],
        )?;
        let data = rows
            .iter()
            .map(row_to_file)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_of(data, q.limit.clamp(1, 10_000), |f| f.id.clone()))
    }

    fn update_file_attributes(
        &self,
        vs: &str,
        file: &str,
        attributes: Map<String, Value>,
    ) -> Result<Option<VectorStoreFile>, StoreError> {
        let mut c = self.conn()?;
        c.execute(
            "UPDATE vector_store_files SET attributes = $3 WHERE vector_store_id = $1 AND file_id = $2",
            &[&vs, &file, &json_text(&attributes)?],
        )?;
        file_row(&mut *c, vs, file)
    }

    fn remove_store_file(&self, vs: &str, file: &str) -> Result<bool, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        tx.execute(
            "DELETE FROM chunks WHERE vector_store_id = $1 AND file_id = $2",
            &[&vs, &file],
        )?;
        let n = tx.execute(
            "DELETE FROM vector_store_files WHERE vector_store_id = $1 AND file_id = $2",
            &[&vs, &file],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn complete_file(&self, vs: &str, file: &str, chunks: &[NewChunk]) -> Result<bool, StoreError> {
        let mut c = self.conn()?;
        let dim = match store_row(&mut *c, vs)? {
            Some(s) => s.embedding_dimension,
            None => return Ok(false),
        };
        if let Some(bad) = chunks.iter().find(|c| c.embedding.len() != dim) {
            return Err(StoreError::Invalid(format!(
                "embedding of dimension {} for a vector store of dimension {dim}",
                bad.embedding.len()
            )));
        }
        let mut tx = c.transaction()?;
        // The row lock makes completion idempotent across replicas: two replicas ingesting
        // the same file (both resumed it at start) serialize here, and the second finds it
        // no longer `in_progress` and writes nothing.
        let status = tx.query_opt(
            "SELECT status FROM vector_store_files WHERE vector_store_id = $1 AND file_id = $2 FOR UPDATE",
            &[&vs, &file],
        )?;
        let status: Option<String> = status.map(|r| r.try_get(0)).transpose()?;
        if status.as_deref() != Some("in_progress") {
            return Ok(false);
        }
        tx.execute(
            "DELETE FROM chunks WHERE vector_store_id = $1 AND file_id = $2",
            &[&vs, &file],
        )?;
        let ins = tx.prepare(
            "INSERT INTO chunks (vector_store_id, file_id, ordinal, text, tokens, embedding, metadata)
             VALUES ($1, $2, $3, $4, $5, $6::text::vector, $7)",
        )?;
        let mut usage = 0i64;
        for (i, ch) in chunks.iter().enumerate() {
            let meta = if ch.metadata.is_empty() {
                None
            } else {
                Some(json_text(&ch.metadata)?)
            };
            let ordinal = i64::try_from(i).unwrap_or(i64::MAX);
            let tokens = i64::try_from(ch.tokens).unwrap_or(i64::MAX);
            tx.execute(
                &ins,
                &[
                    &vs,
                    &file,
                    &ordinal,
                    &ch.text,
                    &tokens,
                    &vector_text(&ch.embedding),
                    &meta,
                ],
            )?;
            usage += i64::try_from(ch.text.len()).unwrap_or(0);
        }
        tx.execute(
            "UPDATE vector_store_files SET status = 'completed', last_error = NULL, usage_bytes = $3 WHERE vector_store_id = $1 AND file_id = $2",
            &[&vs, &file, &usage],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn insert_chunks(
        &self,
        vs: &str,
        file: &str,
        filename: &str,
        chunks: &[NewChunk],
    ) -> Result<(), StoreError> {
        {
            let mut c = self.conn()?;
            if store_row(&mut *c, vs)?.is_none() {
                return Err(StoreError::NotFound {
                    kind: "vector store",
                    id: vs.to_string(),
                });
            }
            c.execute(
                "INSERT INTO vector_store_files (vector_store_id, file_id, filename, created_at, status, attributes, chunking)
                 VALUES ($1, $2, $3, $4, 'in_progress', '{}', $5)",
                &[&vs, &file, &filename, &crate::files::unix_now(), &json_text(&Chunking::AUTO)?],
            )?;
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
        self.conn()?.execute(
            "UPDATE vector_store_files SET status = 'failed', last_error = $3 WHERE vector_store_id = $1 AND file_id = $2 AND status = 'in_progress'",
            &[&vs, &file, &json_text(&error)?],
        )?;
        Ok(())
    }

    fn in_progress_files(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT vector_store_id, file_id FROM vector_store_files WHERE status = 'in_progress' ORDER BY seq",
            &[],
        )?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    fn file_chunks(&self, vs: &str, file: &str) -> Result<Vec<String>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT text FROM chunks WHERE vector_store_id = $1 AND file_id = $2 ORDER BY ordinal",
            &[&vs, &file],
        )?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    fn search(&self, vs_id: &str, q: &SearchQuery) -> Result<Vec<Hit>, StoreError> {
        let mut c = self.conn()?;
        let vs = store_row(&mut *c, vs_id)?.ok_or_else(|| StoreError::NotFound {
            kind: "vector store",
            id: vs_id.to_string(),
        })?;
        let k = q.max_results.max(1);
        let allowed = self.allowed_files(&mut c, vs_id, q)?;
        let vector = |c: &mut postgres::Client, k: usize| -> Result<Vec<(i64, f32)>, StoreError> {
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
            self.vector_hits(c, &vs, e, k, allowed.as_ref())
        };
        let ranked = match q.mode {
            SearchMode::Vector => vector(&mut c, k)?,
            SearchMode::Keyword => {
                self.keyword_hits(&mut c, vs_id, &q.text, k, allowed.as_ref())?
            }
            SearchMode::Hybrid => {
                let v = vector(&mut c, 2 * k)?;
                let w = self.keyword_hits(&mut c, vs_id, &q.text, 2 * k, allowed.as_ref())?;
                fuse(&v, &w, k)
            }
        };
        PgStore::touch(&mut c, vs_id)?;
        let ranked: Vec<(i64, f32)> = ranked
            .into_iter()
            .filter(|(_, s)| *s >= q.score_threshold)
            .collect();
        let ids: Vec<i64> = ranked.iter().map(|(id, _)| *id).collect();
        let rows = c.query(
            "SELECT c.id, c.file_id, c.text, f.filename, f.attributes, c.metadata FROM chunks c JOIN vector_store_files f
             ON f.vector_store_id = c.vector_store_id AND f.file_id = c.file_id WHERE c.id = ANY($1)",
            &[&ids],
        )?;
        let mut by_id = std::collections::HashMap::with_capacity(rows.len());
        for r in rows {
            by_id.insert(r.try_get::<_, i64>(0)?, r);
        }
        let mut out = Vec::with_capacity(ranked.len());
        for (id, score) in ranked {
            let Some(r) = by_id.get(&id) else { continue };
            let meta: Option<&str> = r.try_get(5)?;
            out.push(Hit {
                chunk_id: id,
                file_id: r.try_get(1)?,
                text: r.try_get(2)?,
                filename: r.try_get(3)?,
                attributes: json_map(r.try_get(4)?)?,
                metadata: match meta {
                    Some(m) => json_map(m)?,
                    None => Map::new(),
                },
                score,
            });
        }
        Ok(out)
    }
}
