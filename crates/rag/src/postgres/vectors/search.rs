//! Search helpers of the PostgreSQL backend: vector and keyword rankings in SQL, the
//! attribute filter, and the text forms pgvector and `to_tsquery` take.

use std::collections::HashSet;

use super::super::PgStore;
use crate::error::StoreError;
use crate::sqlite::vectors::{check_filter_keys, json_map};
use crate::store::SearchQuery;
use crate::vector_stores::VectorStore;

/// pgvector's text form of a vector.
pub(super) fn vector_text(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 10 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // `{:?}` prints an f32 exactly (shortest round-trip form).
        s.push_str(&format!("{x:?}"));
    }
    s.push(']');
    s
}

/// Words of `text` as a `to_tsquery('simple', ...)` argument: only alphanumeric words
/// (no operator injection), any may match.
pub(super) fn ts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(64)
        .map(str::to_lowercase)
        .collect();
    (!words.is_empty()).then(|| words.join(" | "))
}

/// A SQL string literal (for DDL, which takes no parameters): quotes doubled;
/// `standard_conforming_strings` (on since PostgreSQL 9.1) leaves backslashes alone.
pub(super) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl PgStore {
    /// Completed files of a store passing `q.filter` (`None`: no filter); a filter on an
    /// attribute no file has is refused, as in SQLite.
    pub(super) fn allowed_files(
        &self,
        c: &mut postgres::Client,
        vs: &str,
        q: &SearchQuery,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let Some(filter) = &q.filter else {
            return Ok(None);
        };
        let rows = c.query(
            "SELECT file_id, attributes FROM vector_store_files WHERE vector_store_id = $1 AND status = 'completed'",
            &[&vs],
        )?;
        let mut keys: HashSet<String> = HashSet::new();
        let mut allowed = Vec::new();
        for r in rows {
            let attrs = json_map(r.try_get(1)?)?;
            keys.extend(attrs.keys().cloned());
            if filter.matches(&attrs) {
                allowed.push(r.try_get::<_, String>(0)?);
            }
        }
        check_filter_keys(vs, filter, keys)?;
        Ok(Some(allowed))
    }

    pub(super) fn vector_hits(
        &self,
        c: &mut postgres::Client,
        vs: &VectorStore,
        e: &[f32],
        k: usize,
        allowed: Option<&Vec<String>>,
    ) -> Result<Vec<(i64, f32)>, StoreError> {
        let dim = vs.embedding_dimension;
        // The expression must be the index's, `embedding::vector(DIM)`, for the planner to
        // use it; `dim` is a number from our own row. With an attribute filter the search is
        // exact: pgvector 0.6's HNSW scan filters after it picks `ef_search` candidates, so
        // a selective filter could leave fewer hits than exist. The extra sort key `id`
        // (which the index cannot provide) is what steers the planner to the exact scan.
        let tie = if allowed.is_some() { ", id" } else { "" };
        let sql = format!(
            "SELECT id, 1 - (embedding::vector({dim}) <=> $2::text::vector({dim})) FROM chunks
             WHERE vector_store_id = $1 AND ($3::text[] IS NULL OR file_id = ANY($3))
             ORDER BY embedding::vector({dim}) <=> $2::text::vector({dim}){tie} LIMIT $4"
        );
        let mut tx = c.transaction()?;
        // pgvector's default beam (40) gave recall@10 0.935 at 100K chunks in
        // bench/results/store-search-2026-12-07.txt; 100 is the SQLite index's setting.
        let ef = k.saturating_mul(4).clamp(100, 1000);
        tx.batch_execute(&format!("SET LOCAL hnsw.ef_search = {ef}"))?;
        let limit = i64::try_from(k).unwrap_or(i64::MAX);
        let rows = tx.query(&sql, &[&vs.id, &vector_text(e), &allowed, &limit])?;
        tx.commit()?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<_, f64>(1)? as f32)))
            .collect()
    }

    pub(super) fn keyword_hits(
        &self,
        c: &mut postgres::Client,
        vs: &str,
        text: &str,
        k: usize,
        allowed: Option<&Vec<String>>,
    ) -> Result<Vec<(i64, f32)>, StoreError> {
        let Some(query) = ts_query(text) else {
            return Ok(Vec::new());
        };
        let limit = i64::try_from(k).unwrap_or(i64::MAX);
        let rows = c.query(
            "SELECT id, ts_rank_cd(tsv, q)::float8 AS s FROM chunks, to_tsquery('simple', $2) q
             WHERE vector_store_id = $1 AND tsv @@ q AND ($3::text[] IS NULL OR file_id = ANY($3))
             ORDER BY s DESC, id LIMIT $4",
            &[&vs, &query, &allowed, &limit],
        )?;
        rows.iter()
            .map(|r| {
                let s = r.try_get::<_, f64>(1)?.max(0.0);
                Ok((r.try_get(0)?, (s / (1.0 + s)) as f32))
            })
            .collect()
    }

    /// Marks a store active. At most once a minute: every write commit is a WAL flush,
    /// which made each search cost ~10 ms more; expiry counts in days.
    pub(super) fn touch(c: &mut postgres::Client, vs: &str) -> Result<(), StoreError> {
        let now = crate::files::unix_now();
        c.execute(
            "UPDATE vector_stores SET last_active_at = $2 WHERE id = $1 AND last_active_at < $3",
            &[&vs, &now, &(now - 60)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_query_keeps_words_only() {
        assert_eq!(ts_query("a & b | !c:*").as_deref(), Some("a | b | c"));
        assert_eq!(ts_query(" ;; "), None);
    }

    #[test]
    fn literal_doubles_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn vector_text_is_pgvector_form() {
        assert_eq!(vector_text(&[1.0, -0.5]), "[1.0,-0.5]");
    }
}
