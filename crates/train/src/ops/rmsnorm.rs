//! RMSNorm (Meta's `RMSNorm`): `y = x / sqrt(mean(x²) + eps) * weight`, per row.

use ferrollama_tensor::{SyncSlice, ThreadPool};

use super::par_ranges;
use crate::Float;

/// `out (T, C) = x (T, C) · rstd (T) * weight (C)`, saving `rstd (T) = 1 / sqrt(mean(x²) + eps)`.
/// Rows are spread over the pool.
pub fn forward<F: Float>(
    pool: &ThreadPool,
    out: &mut [F],
    rstd: &mut [F],
    x: &[F],
    weight: &[F],
    eps: F,
) {
    let c = weight.len();
    let t = rstd.len().min(x.len() / c.max(1));
    let (os, rs) = (SyncSlice::new(out), SyncSlice::new(rstd));
    par_ranges(pool, t, t * c, &|rows| {
        // SAFETY: the row ranges of different threads are disjoint.
        let (o, r) = unsafe {
            (
                os.slice_mut(rows.start * c, rows.len() * c),
                rs.slice_mut(rows.start, rows.len()),
            )
        };
        forward_rows(o, r, &x[rows.start * c..rows.end * c], weight, eps);
    });
}

fn forward_rows<F: Float>(out: &mut [F], rstd: &mut [F], x: &[F], weight: &[F], eps: F) {
    let c = weight.len();
    for ((o, xr), r) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(rstd) {
        let mut ss = F::ZERO;
        for &v in xr {
            ss += v * v;
        }
        *r = F::ONE / (ss / F::from_f64(c as f64) + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(xr).zip(weight) {
            *o = v * *r * w;
        }
    }
}

/// With `n = x · rstd` and `g = dy * weight`:
/// `dweight += Σ_t dy · n`, `dx += rstd · (g - n · mean(g · n))`. `dweight` is `None`
/// for a frozen weight. `dx` is spread over the pool by rows, `dweight` by columns (each
/// column summed over the rows in order, as one thread would).
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(
    pool: &ThreadPool,
    dx: &mut [F],              // (T, C)
    dweight: Option<&mut [F]>, // (C)
    dout: &[F],                // (T, C)
    x: &[F],                   // (T, C)
    weight: &[F],              // (C)
    rstd: &[F],                // (T)
) {
    let c = weight.len();
    let t = rstd.len().min(x.len() / c.max(1));
    let inv_c = F::ONE / F::from_f64(c as f64);
    let dxs = SyncSlice::new(dx);
    par_ranges(pool, t, t * c, &|rows| {
        // SAFETY: the row ranges of different threads are disjoint.
        let dx = unsafe { dxs.slice_mut(rows.start * c, rows.len() * c) };
        let (a, b) = (rows.start * c, rows.end * c);
        for (((dxr, dy), xr), &r) in dx
            .chunks_exact_mut(c)
            .zip(dout[a..b].chunks_exact(c))
            .zip(x[a..b].chunks_exact(c))
            .zip(&rstd[rows])
        {
            // mean over the row of g · n
            let mut dot = F::ZERO;
            for i in 0..c {
                dot += dy[i] * weight[i] * xr[i] * r;
            }
            let mean = dot * inv_c;
            for i in 0..c {
                let n = xr[i] * r;
                dxr[i] += r * (dy[i] * weight[i] - n * mean);
            }
        }
    });
    if let Some(dweight) = dweight {
        let dws = SyncSlice::new(dweight);
        par_ranges(pool, c, t * c, &|cols| {
            // SAFETY: the column ranges of different threads are disjoint.
            let dw = unsafe { dws.slice_mut(cols.start, cols.len()) };
            for ((dy, xr), &r) in dout.chunks_exact(c).zip(x.chunks_exact(c)).zip(&rstd[..t]) {
                for ((d, &dy), &xv) in dw.iter_mut().zip(&dy[cols.clone()]).zip(&xr[cols.clone()]) {
                    *d += dy * (xv * r);
                }
            }
        });
    }
}
