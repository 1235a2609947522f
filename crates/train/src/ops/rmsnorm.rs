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
    backward_impl(pool, dx, Base::Add, dweight, dout, x, weight, rstd);
}

/// [`backward`] with `dx = residual + ...` (or `dx = ...` without one), whatever `dx`
/// held: the residual stream's gradient passes by the norm and the norm's input
/// gradient adds to it, in one pass instead of a copy and an add.
#[allow(clippy::too_many_arguments)]
pub fn backward_into<F: Float>(
    pool: &ThreadPool,
    dx: &mut [F],              // (T, C)
    residual: Option<&[F]>,    // (T, C)
    dweight: Option<&mut [F]>, // (C)
    dout: &[F],                // (T, C)
    x: &[F],                   // (T, C)
    weight: &[F],              // (C)
    rstd: &[F],                // (T)
) {
    let base = match residual {
        Some(r) => Base::Residual(r),
        None => Base::Zero,
    };
    backward_impl(pool, dx, base, dweight, dout, x, weight, rstd);
}

/// What the input gradient's contribution is added to.
#[derive(Clone, Copy)]
enum Base<'a, F> {
    /// What `dx` holds.
    Add,
    Zero,
    Residual(&'a [F]),
}

#[allow(clippy::too_many_arguments)]
fn backward_impl<F: Float>(
    pool: &ThreadPool,
    dx: &mut [F],
    base: Base<'_, F>,
    dweight: Option<&mut [F]>,
    dout: &[F],
    x: &[F],
    weight: &[F],
    rstd: &[F],
) {
    let c = weight.len();
    let t = rstd.len().min(x.len() / c.max(1));
    let inv_c = F::ONE / F::from_f64(c as f64);
    let dxs = SyncSlice::new(dx);
    par_ranges(pool, t, t * c, &|rows| {
        // SAFETY: the row ranges of different threads are disjoint.
        let dx = unsafe { dxs.slice_mut(rows.start * c, rows.len() * c) };
        let (a, b) = (rows.start * c, rows.end * c);
        for (row, (((dxr, dy), xr), &r)) in dx
            .chunks_exact_mut(c)
            .zip(dout[a..b].chunks_exact(c))
            .zip(x[a..b].chunks_exact(c))
            .zip(&rstd[rows.clone()])
            .enumerate()
        {
            // mean over the row of g · n
            let mut dot = F::ZERO;
            for i in 0..c {
                dot += dy[i] * weight[i] * xr[i] * r;
            }
            let mean = dot * inv_c;
            let grad = |i: usize| r * (dy[i] * weight[i] - xr[i] * r * mean);
            match base {
                Base::Add => (0..c).for_each(|i| dxr[i] += grad(i)),
                Base::Zero => (0..c).for_each(|i| dxr[i] = grad(i)),
                Base::Residual(res) => {
                    let res = &res[a + row * c..a + (row + 1) * c];
                    (0..c).for_each(|i| dxr[i] = res[i] + grad(i));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Writing over a residual (or nothing) is copying it (or zeroing) and adding, bit
    /// for bit, whatever the buffer held.
    #[test]
    fn writing_over_a_residual_is_copy_and_add() {
        let (t, c) = (9, 40);
        let v = |n: usize, k: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 37 + 11) % 23) as f32 * 0.1 * k - 1.0)
                .collect()
        };
        let (dout, x, res) = (v(t * c, 1.0), v(t * c, 0.7), v(t * c, 0.3));
        let w = v(c, 0.5);
        let rstd = v(t, 0.2);
        for threads in [1, 2] {
            let pool = ThreadPool::new(threads);
            let mut want = res.clone();
            backward(&pool, &mut want, None, &dout, &x, &w, &rstd);
            let mut got = vec![f32::NAN; t * c];
            backward_into(&pool, &mut got, Some(&res), None, &dout, &x, &w, &rstd);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            let mut want = vec![0.0; t * c];
            backward(&pool, &mut want, None, &dout, &x, &w, &rstd);
            backward_into(&pool, &mut got, None, None, &dout, &x, &w, &rstd);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
    }
}
