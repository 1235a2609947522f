//! Relative positions: HF's `make_log_bucket_position` / `build_relative_position`, and
//! the index tables the attention gathers with.
//!
//! The score of query `i` against key `j` reads the relative embedding row
//! `c2p = clamp(bucket(i - j) + span, 0, 2 span - 1)` for the content-to-position term and
//! `p2c = clamp(-bucket(j - i) + span, 0, 2 span - 1)` for position-to-content (HF gathers
//! `p2c_att[j][clamp(-r(j, i) + span)]` and transposes). Both depend on `i - j` only, so
//! they are tables over `delta = i - j` in `-(n-1) ..= n-1`.

/// HF `make_log_bucket_position` for one relative position: identity within
/// `(-bucket_size/2, bucket_size/2)`, log-spaced buckets beyond, reaching
/// `±(bucket_size - 1)` at `max_position - 1`. Computed in f32 like torch (the ids are
/// divided as float32 tensors), so bucket edges match.
pub fn log_bucket(rel: i64, bucket_size: i64, max_position: i64) -> i64 {
    let mid = bucket_size / 2;
    let abs = if rel < mid && rel > -mid {
        mid - 1
    } else {
        rel.abs()
    };
    if abs <= mid {
        return rel;
    }
    let log_pos = ((abs as f32 / mid as f32).ln() / ((max_position - 1) as f32 / mid as f32).ln()
        * (mid - 1) as f32)
        .ceil()
        + mid as f32;
    (log_pos * rel.signum() as f32) as i64
}

/// HF `build_relative_position` for one pair: `q - k`, bucketed when both
/// `bucket_size` and `max_position` are positive.
pub fn relative_position(delta: i64, bucket_size: i64, max_position: i64) -> i64 {
    if bucket_size > 0 && max_position > 0 {
        log_bucket(delta, bucket_size, max_position)
    } else {
        delta
    }
}

/// Rows of the (2 span)-row position projections that a sequence of `n` tokens reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelIndex {
    /// Tokens in the sequence.
    pub n: usize,
    /// `c2p[delta + n - 1]`: the position row for `delta = i - j` (content-to-position).
    pub c2p: Vec<u32>,
    /// `p2c[delta + n - 1]`: the position row for `delta = i - j` (position-to-content).
    pub p2c: Vec<u32>,
}

impl RelIndex {
    /// Tables for `n` tokens with `span` = HF `att_span`, `bucket_size` =
    /// `position_buckets`, `max_position` = the resolved `max_relative_positions`.
    pub fn new(n: usize, span: usize, bucket_size: i64, max_position: i64) -> RelIndex {
        let top = (2 * span).saturating_sub(1) as i64;
        let clamp = |r: i64| (r + span as i64).clamp(0, top) as u32;
        let n_i = n as i64;
        let deltas = (1 - n_i).min(0)..n_i;
        let c2p = deltas
            .clone()
            .map(|d| clamp(relative_position(d, bucket_size, max_position)))
            .collect();
        let p2c = deltas
            .map(|d| clamp(-relative_position(-d, bucket_size, max_position)))
            .collect();
        RelIndex { n, c2p, p2c }
    }

    /// Row for query `i`, key `j`, content-to-position.
    #[inline]
    pub fn c2p(&self, i: usize, j: usize) -> usize {
        self.c2p[i + self.n - 1 - j] as usize
    }

    /// Row for query `i`, key `j`, position-to-content.
    #[inline]
    pub fn p2c(&self, i: usize, j: usize) -> usize {
        self.p2c[i + self.n - 1 - j] as usize
    }

    /// The inclusive range of rows `table` reads (tables are monotone in `delta`, but
    /// min/max does not rely on it).
    pub fn range(table: &[u32]) -> (usize, usize) {
        let lo = table.iter().copied().min().unwrap_or(0) as usize;
        let hi = table.iter().copied().max().unwrap_or(0) as usize;
        (lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_inside_the_bucket_half() {
        for d in -128..=128 {
            assert_eq!(log_bucket(d, 256, 512), d);
        }
    }

    #[test]
    fn log_buckets_are_odd_monotone_and_bounded() {
        let mut prev = log_bucket(129, 256, 512);
        assert!(prev > 128);
        for d in 130..512 {
            let b = log_bucket(d, 256, 512);
            assert!(b >= prev && b <= 255, "{d} -> {b}");
            assert_eq!(log_bucket(-d, 256, 512), -b);
            prev = b;
        }
        assert_eq!(log_bucket(511, 256, 512), 255);
        // HF: ceil(log(200/128) / log(511/128) * 127) + 128 = 169.
        assert_eq!(log_bucket(200, 256, 512), 169);
    }

    #[test]
    fn tables_index_by_delta() {
        let r = RelIndex::new(3, 256, 256, 512);
        assert_eq!(r.c2p(0, 0), 256);
        assert_eq!(r.c2p(2, 0), 258);
        assert_eq!(r.c2p(0, 2), 254);
        assert_eq!(r.p2c(2, 0), 258);
        let r = RelIndex::new(1, 4, -1, 512);
        assert_eq!((r.c2p(0, 0), r.p2c(0, 0)), (4, 4));
    }
}
