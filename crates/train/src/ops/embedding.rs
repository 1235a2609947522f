//! Token embedding lookup: `out[t] = wte[tokens[t]]`.

use crate::Float;

/// `out (T, C) = wte (V, C)[tokens (T)]`. Tokens are checked by the caller.
pub fn forward<F: Float>(out: &mut [F], tokens: &[u32], wte: &[F], c: usize) {
    for (o, &tok) in out.chunks_exact_mut(c).zip(tokens) {
        let t = tok as usize;
        o.copy_from_slice(&wte[t * c..(t + 1) * c]);
    }
}

/// `dwte (V, C)[tokens[t]] += dout (T, C)[t]`: a token seen twice gets both rows.
pub fn backward<F: Float>(dwte: &mut [F], dout: &[F], tokens: &[u32], c: usize) {
    for (d, &tok) in dout.chunks_exact(c).zip(tokens) {
        let t = tok as usize;
        super::add_into(&mut dwte[t * c..(t + 1) * c], d);
    }
}
