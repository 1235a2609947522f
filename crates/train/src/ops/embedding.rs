//! Token embedding lookup: `out[t] = wte[tokens[t]]`.

use ferrollama_tensor::{SyncSlice, ThreadPool};

use super::par_ranges;
use crate::Float;

/// `out (T, C) = wte (V, C)[tokens (T)]`. Tokens are checked by the caller.
pub fn forward<F: Float>(out: &mut [F], tokens: &[u32], wte: &[F], c: usize) {
    for (o, &tok) in out.chunks_exact_mut(c).zip(tokens) {
        let t = tok as usize;
        o.copy_from_slice(&wte[t * c..(t + 1) * c]);
    }
}

/// `dwte (V, C)[tokens[t]] += dout (T, C)[t]`: a token seen twice gets both rows, in
/// order of `t`. The columns are spread over the pool (two positions may share a row).
pub fn backward<F: Float>(pool: &ThreadPool, dwte: &mut [F], dout: &[F], tokens: &[u32], c: usize) {
    let dws = SyncSlice::new(dwte);
    par_ranges(pool, c, tokens.len() * c, &|cols| {
        for (d, &tok) in dout.chunks_exact(c).zip(tokens) {
            let t = tok as usize;
            // SAFETY: threads take disjoint column ranges of every row.
            let row = unsafe { dws.slice_mut(t * c + cols.start, cols.len()) };
            super::add_into(row, &d[cols.clone()]);
        }
    });
}
