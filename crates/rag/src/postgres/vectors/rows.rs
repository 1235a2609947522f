//! Rows of `vector_stores` and `vector_store_files` as domain values (the same columns and
//! JSON-in-text encoding as the SQLite backend).

use postgres::{GenericClient, Row};

use crate::error::StoreError;
use crate::sqlite::vectors::json_map;
use crate::vector_stores::{
    Anchor, Chunking, ExpiresAfter, FileCounts, FileStatus, LastError, VectorStore, VectorStoreFile,
};

pub(super) const VS_COLUMNS: &str = "id, name, created_at, last_active_at, metadata, expires_after_days, embedding_model, embedding_dimension";

pub(super) const VSF_COLUMNS: &str = "file_id, vector_store_id, created_at, status, last_error, attributes, chunking, usage_bytes, filename";

pub(super) fn row_to_store(r: &Row) -> Result<VectorStore, StoreError> {
    let days: Option<i64> = r.try_get(5)?;
    let dim: i64 = r.try_get(7)?;
    Ok(VectorStore {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        created_at: r.try_get(2)?,
        last_active_at: r.try_get(3)?,
        metadata: json_map(r.try_get(4)?)?,
        expires_after: days.map(|d| ExpiresAfter {
            anchor: Anchor::LastActiveAt,
            days: u32::try_from(d).unwrap_or(u32::MAX),
        }),
        embedding_model: r.try_get(6)?,
        embedding_dimension: usize::try_from(dim).unwrap_or(0),
        file_counts: FileCounts::default(),
        usage_bytes: 0,
    })
}

pub(super) fn row_to_file(r: &Row) -> Result<VectorStoreFile, StoreError> {
    let status: &str = r.try_get(3)?;
    let last_error: Option<&str> = r.try_get(4)?;
    let chunking: &str = r.try_get(6)?;
    let usage: i64 = r.try_get(7)?;
    Ok(VectorStoreFile {
        id: r.try_get(0)?,
        vector_store_id: r.try_get(1)?,
        created_at: r.try_get(2)?,
        status: FileStatus::parse(status)
            .ok_or_else(|| StoreError::Corrupt(format!("file status {status:?}")))?,
        last_error: match last_error {
            Some(s) => Some(
                serde_json::from_str::<LastError>(s)
                    .map_err(|e| StoreError::Corrupt(format!("last_error: {e}")))?,
            ),
            None => None,
        },
        attributes: json_map(r.try_get(5)?)?,
        chunking: serde_json::from_str::<Chunking>(chunking)
            .map_err(|e| StoreError::Corrupt(format!("chunking: {e}")))?,
        usage_bytes: u64::try_from(usage).unwrap_or(0),
        filename: r.try_get(8)?,
    })
}

/// Fills a store's `file_counts` and `usage_bytes`.
pub(super) fn counts(c: &mut impl GenericClient, vs: &mut VectorStore) -> Result<(), StoreError> {
    let rows = c.query(
        "SELECT status, COUNT(*), COALESCE(SUM(usage_bytes), 0)::bigint FROM vector_store_files WHERE vector_store_id = $1 GROUP BY status",
        &[&vs.id],
    )?;
    let mut counts = FileCounts::default();
    let mut usage = 0u64;
    for r in rows {
        let s: &str = r.try_get(0)?;
        let n = u64::try_from(r.try_get::<_, i64>(1)?).unwrap_or(0);
        usage += u64::try_from(r.try_get::<_, i64>(2)?).unwrap_or(0);
        match FileStatus::parse(s) {
            Some(FileStatus::InProgress) => counts.in_progress += n,
            Some(FileStatus::Completed) => counts.completed += n,
            Some(FileStatus::Failed) => counts.failed += n,
            Some(FileStatus::Cancelled) => counts.cancelled += n,
            None => {}
        }
        counts.total += n;
    }
    vs.file_counts = counts;
    vs.usage_bytes = usage;
    Ok(())
}

pub(super) fn store_row(
    c: &mut impl GenericClient,
    id: &str,
) -> Result<Option<VectorStore>, StoreError> {
    let Some(r) = c.query_opt(
        &format!("SELECT {VS_COLUMNS} FROM vector_stores WHERE id = $1"),
        &[&id],
    )?
    else {
        return Ok(None);
    };
    let mut vs = row_to_store(&r)?;
    counts(c, &mut vs)?;
    Ok(Some(vs))
}

pub(super) fn file_row(
    c: &mut impl GenericClient,
    vs: &str,
    file: &str,
) -> Result<Option<VectorStoreFile>, StoreError> {
    let r = c.query_opt(
        &format!("SELECT {VSF_COLUMNS} FROM vector_store_files WHERE vector_store_id = $1 AND file_id = $2"),
        &[&vs, &file],
    )?;
    r.as_ref().map(row_to_file).transpose()
}
