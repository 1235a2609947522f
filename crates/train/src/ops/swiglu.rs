//! SwiGLU's gate (Meta's `FeedForward`): `h = silu(a) * b` with `a = w1 · x` (gate) and
//! `b = w3 · x` (up); `silu(a) = a · σ(a)`.
//!
//! σ is evaluated a chunk at a time by [`Float::sigmoid_into`] (the SIMD `exp` for f32).

use ferrollama_tensor::{SyncSlice, ThreadPool};

use super::par_ranges;
use crate::Float;

/// Elements per σ chunk (on the stack).
const CHUNK: usize = 256;

/// `out (T, FF) = silu(a (T, FF)) * b (T, FF)`, spread over the pool.
pub fn forward<F: Float>(pool: &ThreadPool, out: &mut [F], a: &[F], b: &[F]) {
    let n = out.len().min(a.len()).min(b.len());
    let os = SyncSlice::new(out);
    par_ranges(pool, n, n, &|r| {
        // SAFETY: the ranges of different threads are disjoint.
        let o = unsafe { os.slice_mut(r.start, r.len()) };
        let mut s = [F::ZERO; CHUNK];
        for ((o, a), b) in o
            .chunks_mut(CHUNK)
            .zip(a[r.clone()].chunks(CHUNK))
            .zip(b[r.clone()].chunks(CHUNK))
        {
            let s = &mut s[..a.len()];
            F::sigmoid_into(s, a);
            for (((o, &a), &b), &s) in o.iter_mut().zip(a).zip(b).zip(s.iter()) {
                *o = a * s * b;
            }
        }
    });
}

/// `db += dh · silu(a)`, `da += dh · b · σ(a) (1 + a (1 - σ(a)))`, spread over the pool.
pub fn backward<F: Float>(
    pool: &ThreadPool,
    da: &mut [F],
    db: &mut [F],
    dout: &[F],
    a: &[F],
    b: &[F],
) {
    backward_impl(pool, da, db, dout, a, b, true);
}

/// [`backward`] with `=` for `+=`: into buffers that hold no gradient yet.
pub fn backward_into<F: Float>(
    pool: &ThreadPool,
    da: &mut [F],
    db: &mut [F],
    dout: &[F],
    a: &[F],
    b: &[F],
) {
    backward_impl(pool, da, db, dout, a, b, false);
}

fn backward_impl<F: Float>(
    pool: &ThreadPool,
    da: &mut [F],
    db: &mut [F],
    dout: &[F],
    a: &[F],
    b: &[F],
    add: bool,
) {
    let n = dout.len().min(da.len()).min(db.len());
    let (das, dbs) = (SyncSlice::new(da), SyncSlice::new(db));
    par_ranges(pool, n, n, &|r| {
        // SAFETY: the ranges of different threads are disjoint.
        let (da, db) = unsafe {
            (
                das.slice_mut(r.start, r.len()),
                dbs.slice_mut(r.start, r.len()),
            )
        };
        let mut s = [F::ZERO; CHUNK];
        for (c, (da, db)) in da.chunks_mut(CHUNK).zip(db.chunks_mut(CHUNK)).enumerate() {
            let i0 = r.start + c * CHUNK;
            let (a, b, dout) = (&a[i0..i0 + da.len()], &b[i0..], &dout[i0..]);
            let s = &mut s[..a.len()];
            F::sigmoid_into(s, a);
            for j in 0..a.len() {
                let gb = dout[j] * a[j] * s[j];
                let ga = dout[j] * b[j] * s[j] * (F::ONE + a[j] * (F::ONE - s[j]));
                if add {
                    db[j] += gb;
                    da[j] += ga;
                } else {
                    db[j] = gb;
                    da[j] = ga;
                }
            }
        }
    });
}
