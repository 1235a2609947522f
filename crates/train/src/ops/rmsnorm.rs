//! RMSNorm (Meta's `RMSNorm`): `y = x / sqrt(mean(x²) + eps) * weight`, per row.

use crate::Float;

/// `out (T, C) = x (T, C) · rstd (T) * weight (C)`, saving `rstd (T) = 1 / sqrt(mean(x²) + eps)`.
pub fn forward<F: Float>(out: &mut [F], rstd: &mut [F], x: &[F], weight: &[F], eps: F) {
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
/// `dweight += Σ_t dy · n`, `dx += rstd · (g - n · mean(g · n))`.
pub fn backward<F: Float>(
    dx: &mut [F],      // (T, C)
    dweight: &mut [F], // (C)
    dout: &[F],        // (T, C)
    x: &[F],           // (T, C)
    weight: &[F],      // (C)
    rstd: &[F],        // (T)
) {
    let c = weight.len();
    let inv_c = F::ONE / F::from_f64(c as f64);
    for (((dxr, dy), xr), &r) in dx
        .chunks_exact_mut(c)
        .zip(dout.chunks_exact(c))
        .zip(x.chunks_exact(c))
        .zip(rstd)
    {
        // mean over the row of g · n
        let mut dot = F::ZERO;
        for i in 0..c {
            dot += dy[i] * weight[i] * xr[i] * r;
        }
        let mean = dot * inv_c;
        for i in 0..c {
            let n = xr[i] * r;
            dweight[i] += dy[i] * n;
            dxr[i] += r * (dy[i] * weight[i] - n * mean);
        }
    }
}
