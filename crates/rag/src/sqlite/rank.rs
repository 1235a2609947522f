//! Ranking pieces of the embedded backend: the FTS5 query built from a search text, and
//! the fusion of vector and keyword rankings for hybrid search. (Each store's vectors in
//! memory live in `index`.)

use std::collections::HashMap;

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
