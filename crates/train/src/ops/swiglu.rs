//! SwiGLU's gate (Meta's `FeedForward`): `h = silu(a) * b` with `a = w1 · x` (gate) and
//! `b = w3 · x` (up); `silu(a) = a · σ(a)`.

use ferrollama_tensor::{SyncSlice, ThreadPool};

use super::par_ranges;
use crate::Float;

fn sigmoid<F: Float>(a: F) -> F {
    F::ONE / (F::ONE + (-a).exp())
}

/// `out (T, FF) = silu(a (T, FF)) * b (T, FF)`, spread over the pool.
pub fn forward<F: Float>(pool: &ThreadPool, out: &mut [F], a: &[F], b: &[F]) {
    let n = out.len().min(a.len()).min(b.len());
    let os = SyncSlice::new(out);
    par_ranges(pool, n, n, &|r| {
        // SAFETY: the ranges of different threads are disjoint.
        let o = unsafe { os.slice_mut(r.start, r.len()) };
        for ((o, &a), &b) in o.iter_mut().zip(&a[r.clone()]).zip(&b[r.clone()]) {
            *o = a * sigmoid(a) * b;
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
        for (j, i) in r.enumerate() {
            let s = sigmoid(a[i]);
            db[j] += dout[i] * a[i] * s;
            da[j] += dout[i] * b[i] * s * (F::ONE + a[i] * (F::ONE - s));
        }
    });
}
