//! Ranking pieces of the embedded backend: each store's vectors in memory (the rag
//! crate's [`VectorIndex`], loaded from SQLite on a store's first search and kept in step
//! with every completed or removed file), the FTS5 query built from a search text, and
//! the fusion of vector and keyword rankings for hybrid search.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::StoreError;
use crate::vector_index::VectorIndex;

/// One store's vectors in the rag crate's [`VectorIndex`] (a SIMD flat scan, HNSW above
/// its threshold), keyed by chunk row id, and each chunk's file (for attribute filters).
#[derive(Debug)]
pub(super) struct FlatIndex {
    index: VectorIndex,
    files: HashMap<u64, Arc<str>>,
}

impl FlatIndex {
    pub(super) fn new(dim: usize) -> FlatIndex {
        FlatIndex {
            index: VectorIndex::new(dim),
            files: HashMap::new(),
        }
    }

    pub(super) fn push(&mut self, id: i64, file: Arc<str>, v: &[f32]) -> Result<(), StoreError> {
        let id = u64::try_from(id).map_err(|_| StoreError::Corrupt(format!("chunk id {id}")))?;
        self.index
            .insert(id, v)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.files.insert(id, file);
        Ok(())
    }

    pub(super) fn remove_file(&mut self, file_id: &str) {
        let ids: Vec<u64> = self
            .files
            .iter()
            .filter(|(_, f)| &***f == file_id)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.index.remove(id);
            self.files.remove(&id);
        }
    }

    /// The `k` best (chunk id, cosine) among chunks whose file passes `allowed`.
    pub(super) fn search(
        &self,
        q: &[f32],
        k: usize,
        allowed: Option<&HashSet<String>>,
    ) -> Result<Vec<(i64, f32)>, StoreError> {
        let pass =
            |id: u64| allowed.is_none_or(|a| self.files.get(&id).is_some_and(|f| a.contains(&**f)));
        let filter: Option<&dyn Fn(u64) -> bool> =
            if allowed.is_some() { Some(&pass) } else { None };
        let hits = self
            .index
            .search(q, k, filter)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        Ok(hits
            .into_iter()
            .filter_map(|(id, s)| i64::try_from(id).ok().map(|id| (id, s)))
            .collect())
    }
}

/// The per-store indexes.
pub(super) type Indexes = Mutex<HashMap<String, Arc<RwLock<FlatIndex>>>>;

/// Words of `text` as an FTS5 query: each quoted (no operator injection), any may match.
pub(super) fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(64)
        .map(|w| format!("\"{}\"", w.to_lowercase()))
        .collect();
    (!words.is_empty()).then(|| words.join(" OR "))
}

/// Reciprocal rank fusion (k = 60) of two rankings, scaled so a chunk first in both
/// scores 1. Shared with the PostgreSQL backend, so both rank alike.
pub(crate) fn fuse(a: &[(i64, f32)], b: &[(i64, f32)], k: usize) -> Vec<(i64, f32)> {
    const K: f32 = 60.0;
    let mut score: HashMap<i64, f32> = HashMap::new();
    for list in [a, b] {
        for (rank, &(id, _)) in list.iter().enumerate() {
            *score.entry(id).or_default() += 1.0 / (K + 1.0 + rank as f32);
        }
    }
    let top = 2.0 / (K + 1.0);
    let mut out: Vec<(i64, f32)> = score.into_iter().map(|(id, s)| (id, s / top)).collect();
    out.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    out.truncate(k);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_prefers_agreement() {
        let a = [(1, 0.9), (2, 0.8), (3, 0.1)];
        let b = [(2, 0.7), (4, 0.6)];
        let f = fuse(&a, &b, 3);
        assert_eq!(f[0].0, 2);
        assert!(f[0].1 <= 1.0 && f[0].1 > f[1].1);
    }

    #[test]
    fn fts_query_quotes_words() {
        assert_eq!(
            fts_query("NEAR(a b) OR \"x\"").as_deref(),
            Some("\"near\" OR \"a\" OR \"b\" OR \"or\" OR \"x\"")
        );
        assert_eq!(fts_query("  ,;  "), None);
    }
}
