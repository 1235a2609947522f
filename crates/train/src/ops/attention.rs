//! Causal grouped-query self-attention of one sequence (Meta's `Attention` after RoPE):
//! query head `h` reads KV head `h / n_rep`, token `t` sees tokens `0..=t`.
//!
//! ```text
//! s[h,t,u] = q[t,h] · k[u,h/n_rep] / sqrt(hd)      (u <= t)
//! p[h,t,:] = softmax(s[h,t,:])
//! out[t,h] = Σ_u p[h,t,u] · v[u,h/n_rep]
//! ```

use ferrollama_tensor::{SyncSlice, ThreadPool};

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
/// `probs (Hq, T, T)` (zero above the diagonal) for the backward. Heads are spread over
/// the pool.
pub fn forward<F: Float>(
    pool: &ThreadPool,
    out: &mut [F],
    probs: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    hs: Heads,
) {
    let hd = hs.head_dim;
    let (qw, kw) = (hs.q_width(), hs.kv_width());
    let t_len = q.len() / qw;
    let scale = F::ONE / F::from_f64(hd as f64).sqrt();
    out.fill(F::ZERO);
    probs.fill(F::ZERO);
    let out = SyncSlice::new(out);
    let probs = SyncSlice::new(probs);
    pool.run(&|th, nt| {
        for h in (th..hs.n_heads).step_by(nt.max(1)) {
            let g = hs.kv_head(h);
            for t in 0..t_len {
                let qt = &q[t * qw + h * hd..][..hd];
                // SAFETY: head h's probability rows and output columns belong to the one
                // thread that takes head h.
                let p = unsafe { probs.slice_mut((h * t_len + t) * t_len, t_len) };
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
                // SAFETY: as above.
                let o = unsafe { out.slice_mut(t * qw + h * hd, hd) };
                for u in 0..=t {
                    p[u] *= inv;
                    let vu = &v[u * kw + g * hd..][..hd];
                    for d in 0..hd {
                        o[d] += p[u] * vu[d];
                    }
                }
            }
        }
    });
}

/// With `dp[t,u] = dout[t] · v[u]` and the softmax backward
/// `ds[t,u] = p[t,u] (dp[t,u] - Σ_u' p[t,u'] dp[t,u'])`:
/// `dq[t] += Σ_u ds[t,u] k[u] / sqrt(hd)`, `dk[u] += Σ_t ds[t,u] q[t] / sqrt(hd)`,
/// `dv[u] += Σ_t p[t,u] dout[t]` (KV heads collect from all their query heads).
/// KV heads are spread over the pool: a KV head's gradient collects from its query
/// heads, which no other KV head has.
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(
    pool: &ThreadPool,
    dq: &mut [F], // (T, Hq·hd)
    dk: &mut [F], // (T, Hkv·hd)
    dv: &mut [F], // (T, Hkv·hd)
    dout: &[F],   // (T, Hq·hd)
    q: &[F],      // (T, Hq·hd)
    k: &[F],      // (T, Hkv·hd)
    v: &[F],      // (T, Hkv·hd)
    probs: &[F],  // (Hq, T, T)
    hs: Heads,
) {
    let hd = hs.head_dim;
    let (qw, kw) = (hs.q_width(), hs.kv_width());
    let t_len = q.len() / qw;
    let scale = F::ONE / F::from_f64(hd as f64).sqrt();
    let n_rep = hs.n_heads / hs.n_kv_heads;
    let (dq, dk, dv) = (SyncSlice::new(dq), SyncSlice::new(dk), SyncSlice::new(dv));
    pool.run(&|th, nt| {
        let mut dp = vec![F::ZERO; t_len];
        for g in (th..hs.n_kv_heads).step_by(nt.max(1)) {
            for h in g * n_rep..(g + 1) * n_rep {
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
                        // SAFETY: KV head g's columns of dk / dv and its query heads'
                        // columns of dq belong to the one thread that takes g.
                        let dvu = unsafe { dv.slice_mut(u * kw + g * hd, hd) };
                        for d in 0..hd {
                            dvu[d] += p[u] * dot[d];
                        }
                    }
                    // SAFETY: as above.
                    let dqt = unsafe { dq.slice_mut(t * qw + h * hd, hd) };
                    let qt = &q[t * qw + h * hd..][..hd];
                    for u in 0..=t {
                        let ds = p[u] * (dp[u] - pdp) * scale;
                        let ku = &k[u * kw + g * hd..][..hd];
                        // SAFETY: as above.
                        let dku = unsafe { dk.slice_mut(u * kw + g * hd, hd) };
                        for d in 0..hd {
                            dqt[d] += ds * ku[d];
                            dku[d] += ds * qt[d];
                        }
                    }
                }
            }
        }
    });
}
