//! Causal grouped-query self-attention of one sequence (Meta's `Attention` after RoPE):
//! query head `h` reads KV head `h / n_rep`, token `t` sees tokens `0..=t`.
//!
//! ```text
//! s[h,t,u] = q[t,h] · k[u,h/n_rep] / sqrt(hd)      (u <= t)
//! p[h,t,:] = softmax(s[h,t,:])
//! out[t,h] = Σ_u p[h,t,u] · v[u,h/n_rep]
//! ```

use crate::Float;

/// Head counts and size.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl Heads {
    fn q_width(&self) -> usize {
        self.n_heads * self.head_dim
    }
    fn kv_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
    fn kv_head(&self, h: usize) -> usize {
        h / (self.n_heads / self.n_kv_heads)
    }
}

/// `out (T, Hq·hd)` from `q (T, Hq·hd)`, `k`, `v (T, Hkv·hd)`; saves the probabilities
/// `probs (Hq, T, T)` (zero above the diagonal) for the backward.
pub fn forward<F: Float>(out: &mut [F], probs: &mut [F], q: &[F], k: &[F], v: &[F], hs: Heads) {
    let hd = hs.head_dim;
    let (qw, kw) = (hs.q_width(), hs.kv_width());
    let t_len = q.len() / qw;
    let scale = F::ONE / F::from_f64(hd as f64).sqrt();
    out.fill(F::ZERO);
    probs.fill(F::ZERO);
    for h in 0..hs.n_heads {
        let g = hs.kv_head(h);
        for t in 0..t_len {
            let qt = &q[t * qw + h * hd..][..hd];
            let p = &mut probs[(h * t_len + t) * t_len..][..t_len];
            let mut max = F::from_f64(f64::NEG_INFINITY);
            for u in 0..=t {
                let ku = &k[u * kw + g * hd..][..hd];
                let mut s = F::ZERO;
                for d in 0..hd {
                    s += qt[d] * ku[d];
                }
                p[u] = s * scale;
                max = max.max(p[u]);
            }
            let mut sum = F::ZERO;
            for pu in &mut p[..=t] {
                *pu = (*pu - max).exp();
                sum += *pu;
            }
            let inv = F::ONE / sum;
            let o = &mut out[t * qw + h * hd..][..hd];
            for u in 0..=t {
                p[u] *= inv;
                let vu = &v[u * kw + g * hd..][..hd];
                for d in 0..hd {
                    o[d] += p[u] * vu[d];
                }
            }
        }
    }
}

/// With `dp[t,u] = dout[t] · v[u]` and the softmax backward
/// `ds[t,u] = p[t,u] (dp[t,u] - Σ_u' p[t,u'] dp[t,u'])`:
/// `dq[t] += Σ_u ds[t,u] k[u] / sqrt(hd)`, `dk[u] += Σ_t ds[t,u] q[t] / sqrt(hd)`,
/// `dv[u] += Σ_t p[t,u] dout[t]` (KV heads collect from all their query heads).
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(
    dq: &mut [F], // (T, Hq·hd)
    dk: &mut [F], // (T, Hkv·hd)
    dv: &mut [F], // (T, Hkv·hd)
    dout: &[F],   // (T, Hq·hd)
    q: &[F],      // (T, Hq·hd)
    k: &[F],      // (T, Hkv·hd)
    v: &[F],      // (T, Hkv·hd)
    probs: &[F],  // (Hq, T, T)
    hs: Heads,
    dp: &mut Vec<F>, // scratch
) {
    let hd = hs.head_dim;
    let (qw, kw) = (hs.q_width(), hs.kv_width());
    let t_len = q.len() / qw;
    let scale = F::ONE / F::from_f64(hd as f64).sqrt();
    dp.clear();
    dp.resize(t_len, F::ZERO);
    for h in 0..hs.n_heads {
        let g = hs.kv_head(h);
        for t in 0..t_len {
            let p = &probs[(h * t_len + t) * t_len..][..t_len];
            let dot = &dout[t * qw + h * hd..][..hd];
            let mut pdp = F::ZERO;
            for u in 0..=t {
                let vu = &v[u * kw + g * hd..][..hd];
                let mut s = F::ZERO;
                for d in 0..hd {
                    s += dot[d] * vu[d];
                }
                dp[u] = s;
                pdp += p[u] * s;
                let dvu = &mut dv[u * kw + g * hd..][..hd];
                for d in 0..hd {
                    dvu[d] += p[u] * dot[d];
                }
            }
            for u in 0..=t {
                let ds = p[u] * (dp[u] - pdp) * scale;
                for d in 0..hd {
                    dq[t * qw + h * hd + d] += ds * k[u * kw + g * hd + d];
                    dk[u * kw + g * hd + d] += ds * q[t * qw + h * hd + d];
                }
            }
        }
    }
}
