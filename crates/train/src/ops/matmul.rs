//! The linear layer without bias, as `nn.Linear` stores it: `out = inp · Wᵀ`, `W` (OC, C).

use crate::Float;

/// `out (T, OC) = inp (T, C) · w (OC, C)ᵀ`.
pub fn forward<F: Float>(out: &mut [F], inp: &[F], w: &[F], c: usize, oc: usize) {
    for (o, x) in out.chunks_exact_mut(oc).zip(inp.chunks_exact(c)) {
        for (o, wr) in o.iter_mut().zip(w.chunks_exact(c)) {
            let mut s = F::ZERO;
            for (&a, &b) in x.iter().zip(wr) {
                s += a * b;
            }
            *o = s;
        }
    }
}

/// `dinp (T, C) += dout (T, OC) · w (OC, C)`; `dw (OC, C) += doutᵀ · inp`. `dinp` is
/// `None` where the input needs no gradient (it is the tokens' embedding of nothing).
pub fn backward<F: Float>(
    dinp: Option<&mut [F]>,
    dw: &mut [F],
    dout: &[F],
    inp: &[F],
    w: &[F],
    c: usize,
    oc: usize,
) {
    if let Some(dinp) = dinp {
        for (dx, dy) in dinp.chunks_exact_mut(c).zip(dout.chunks_exact(oc)) {
            for (&g, wr) in dy.iter().zip(w.chunks_exact(c)) {
                for (d, &wv) in dx.iter_mut().zip(wr) {
                    *d += g * wv;
                }
            }
        }
    }
    for (dy, x) in dout.chunks_exact(oc).zip(inp.chunks_exact(c)) {
        for (&g, dwr) in dy.iter().zip(dw.chunks_exact_mut(c)) {
            for (d, &xv) in dwr.iter_mut().zip(x) {
                *d += g * xv;
            }
        }
    }
}
