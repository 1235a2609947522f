//! Causal grouped-query self-attention of one sequence (Meta's `Attention` after RoPE):
//! query head `h` reads KV head `h / n_rep`, token `t` sees tokens `0..=t`.
//!
//! ```text
//! s[h,t,u] = q[t,h] · k[u,h/n_rep] / sqrt(hd)      (u <= t)
//! p[h,t,:] = softmax(s[h,t,:])
//! out[t,h] = Σ_u p[h,t,u] · v[u,h/n_rep]
//! ```
//!
//! [`forward`] and [`backward`] run each head as matrix products on [`Float::gemm`] (the
//! SIMD GEMM for f32, threaded inside), over the full `T x T` square with the masked
//! half zero in `p`: twice the arithmetic of the triangle, at GEMM speed, and every
//! thread busy whatever the head count. [`forward_loops`] / [`backward_loops`] are the
//! plain per-element reference, threaded over heads, which the tests compare against.

use ferrollama_tensor::{SyncSlice, ThreadPool};

use crate::Float;
use crate::float::Layout;

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
pub fn forward_loops<F: Float>(
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
pub fn backward_loops<F: Float>(
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

/// Copies head `h`'s columns of `x (T, width)` into `out (T, hd)`.
fn gather<F: Float>(out: &mut [F], x: &[F], width: usize, h: usize, hd: usize) {
    for (o, row) in out.chunks_exact_mut(hd).zip(x.chunks_exact(width)) {
        o.copy_from_slice(&row[h * hd..(h + 1) * hd]);
    }
}

/// Copies head `h`'s columns of `x (T, width)` transposed into `out (hd, T)`.
fn gather_t<F: Float>(out: &mut [F], x: &[F], width: usize, h: usize, hd: usize) {
    let t_len = out.len() / hd.max(1);
    for (t, row) in x.chunks_exact(width).enumerate().take(t_len) {
        for (d, &v) in row[h * hd..(h + 1) * hd].iter().enumerate() {
            out[d * t_len + t] = v;
        }
    }
}

/// Adds `src (hd, T)` transposed into head `h`'s columns of `x (T, width)`.
fn scatter_add_t<F: Float>(x: &mut [F], src: &[F], width: usize, h: usize, hd: usize) {
    let t_len = src.len() / hd.max(1);
    for (t, row) in x.chunks_exact_mut(width).enumerate().take(t_len) {
        for (d, v) in row[h * hd..(h + 1) * hd].iter_mut().enumerate() {
            *v += src[d * t_len + t];
        }
    }
}

/// Adds `src (T, hd)` into head `h`'s columns of `x (T, width)`.
fn scatter_add<F: Float>(x: &mut [F], src: &[F], width: usize, h: usize, hd: usize) {
    for (row, s) in x.chunks_exact_mut(width).zip(src.chunks_exact(hd)) {
        super::add_into(&mut row[h * hd..(h + 1) * hd], s);
    }
}

/// Query rows per block of the causal square: row block `i` (rows `i·B..(i+1)·B`) sees
/// keys `0..(i+1)·B` only, so the products skip the blocks above the diagonal (at 512
/// tokens 44% of the square's arithmetic) and the probabilities are stored without them.
pub const ROW_BLOCK: usize = 64;

/// The row blocks of a `t_len`-token square: `(first row, rows, keys seen, offset of the
/// block's `rows x keys` probabilities within the head's)`.
fn row_blocks(t_len: usize, block: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let block = block.max(1);
    let mut off = 0;
    (0..t_len.div_ceil(block)).map(move |i| {
        let t0 = i * block;
        let t1 = (t0 + block).min(t_len);
        let o = off;
        off += (t1 - t0) * t1;
        (t0, t1 - t0, t1, o)
    })
}

/// Values per head of the probabilities [`forward`] saves for `t_len` tokens.
fn head_len(t_len: usize, block: usize) -> usize {
    row_blocks(t_len, block).map(|(_, r, w, _)| r * w).sum()
}

/// The length of the `probs` buffer [`forward`] fills and [`backward`] reads: per head,
/// each row block's rows over the keys it sees (about 56% of `n_heads · T²` at 512).
pub fn probs_len(t_len: usize, hs: Heads) -> usize {
    hs.n_heads * head_len(t_len, ROW_BLOCK)
}

/// `p[h, t, u]` of the probabilities [`forward`] saved (zero above the diagonal).
pub fn prob<F: Float>(probs: &[F], t_len: usize, h: usize, t: usize, u: usize) -> F {
    prob_blocked(probs, t_len, h, t, u, ROW_BLOCK)
}

fn prob_blocked<F: Float>(
    probs: &[F],
    t_len: usize,
    h: usize,
    t: usize,
    u: usize,
    block: usize,
) -> F {
    let head = head_len(t_len, block);
    for (t0, r, w, off) in row_blocks(t_len, block) {
        if (t0..t0 + r).contains(&t) {
            return if u < w {
                probs[h * head + off + (t - t0) * w + u]
            } else {
                F::ZERO
            };
        }
    }
    F::ZERO
}

/// [`forward_loops`] as matrix products per head and row block:
/// `S = Q_h K_gᵀ · scale`, causal softmax per row, `O_h = P V_g`, over the keys each
/// row block sees. The products are threaded inside the GEMM, the softmax by rows.
/// `probs` holds at least [`probs_len`] values.
pub fn forward<F: Float>(
    pool: &ThreadPool,
    out: &mut [F],
    probs: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    hs: Heads,
) {
    forward_blocked(pool, out, probs, q, k, v, hs, ROW_BLOCK);
}

#[allow(clippy::too_many_arguments)]
fn forward_blocked<F: Float>(
    pool: &ThreadPool,
    out: &mut [F],
    probs: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    hs: Heads,
    block: usize,
) {
    let hd = hs.head_dim;
    let (qw, kw) = (hs.q_width(), hs.kv_width());
    let t_len = q.len() / qw;
    let head = head_len(t_len, block);
    let scale = F::ONE / F::from_f64(hd as f64).sqrt();
    let mut qh = vec![F::ZERO; t_len * hd];
    let mut kg = vec![F::ZERO; t_len * hd];
    let mut vg = vec![F::ZERO; t_len * hd];
    let mut oh = vec![F::ZERO; t_len * hd];
    let mut gathered = usize::MAX;
    for h in 0..hs.n_heads {
        let g = hs.kv_head(h);
        if gathered != g {
            gather(&mut kg, k, kw, g, hd);
            gather(&mut vg, v, kw, g, hd);
            gathered = g;
        }
        gather(&mut qh, q, qw, h, hd);
        for (t0, r, w, off) in row_blocks(t_len, block) {
            let p = &mut probs[h * head + off..h * head + off + r * w];
            let qb = &qh[t0 * hd..(t0 + r) * hd];
            F::gemm(pool, p, qb, &kg[..w * hd], Layout::Rows, hd, w, false); // (r, w) q · k
            let ps = SyncSlice::new(p);
            super::par_ranges(pool, r, r * w, &|rows| {
                for i in rows {
                    let t = t0 + i;
                    // SAFETY: each row is written by the one thread that has it.
                    let row = unsafe { ps.slice_mut(i * w, w) };
                    let mut max = F::from_f64(f64::NEG_INFINITY);
                    for x in &mut row[..=t] {
                        *x *= scale;
                        max = max.max(*x);
                    }
                    let mut sum = F::ZERO;
                    for x in &mut row[..=t] {
                        *x = (*x - max).exp();
                        sum += *x;
                    }
                    let inv = F::ONE / sum;
                    row[..=t].iter_mut().for_each(|x| *x *= inv);
                    row[t + 1..].fill(F::ZERO);
                }
            });
            // O_h rows (r, hd) = P (r, w) · V_g[..w] (w, hd): the matrix V_gᵀ is stored as V_g.
            let ob = &mut oh[t0 * hd..(t0 + r) * hd];
            F::gemm(pool, ob, p, &vg[..w * hd], Layout::Transposed, w, hd, false);
        }
        for (row, o) in out.chunks_exact_mut(qw).zip(oh.chunks_exact(hd)) {
            row[h * hd..(h + 1) * hd].copy_from_slice(o);
        }
    }
}

/// [`backward_loops`] as matrix products per head and row block: `dP = dO_h V_gᵀ`,
/// `dV_g += Pᵀ dO_h`, `dS = P ⊙ (dP - rowsum(P ⊙ dP)) · scale`, `dQ_h += dS K_g`,
/// `dK_g += dSᵀ Q_h`. The two products with a transposed probability block are computed
/// transposed (`dV_gᵀ += dO_hᵀ P`, `dK_gᵀ += Q_hᵀ dS`), so the blocks are read as
/// stored and only the small `(hd, rows)` operands are transposed.
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(
    pool: &ThreadPool,
    dq: &mut [F],
    dk: &mut [F],
    dv: &mut [F],
    dout: &[F],
    q: &[F],
    k: &[F],
    v: &[F],
    probs: &[F],
    hs: Heads,
) {
    backward_blocked(pool, dq, dk, dv, dout, q, k, v, probs, hs, ROW_BLOCK);
}

#[allow(clippy::too_many_arguments)]
fn backward_blocked<F: Float>(
    pool: &ThreadPool,
    dq: &mut [F],
    dk: &mut [F],
    dv: &mut [F],
    dout: &[F],
    q: &[F],
    k: &[F],
    v: &[F],
    probs: &[F],
    hs: Heads,
    block: usize,
) {
    let hd = hs.head_dim;
    let (qw, kw) = (hs.q_width(), hs.kv_width());
    let t_len = q.len() / qw;
    let head = head_len(t_len, block);
    let scale = F::ONE / F::from_f64(hd as f64).sqrt();
    let n = t_len * hd;
    let (mut kg, mut vg, mut doh, mut dqh) = (
        vec![F::ZERO; n],
        vec![F::ZERO; n],
        vec![F::ZERO; n],
        vec![F::ZERO; n],
    );
    // Per row block: Q_hᵀ and dO_hᵀ of its rows (hd, r), and a product (hd, w).
    let (mut qb_t, mut dob_t, mut tmp) = (vec![F::ZERO; n], vec![F::ZERO; n], vec![F::ZERO; n]);
    let (mut dkg_t, mut dvg_t) = (vec![F::ZERO; n], vec![F::ZERO; n]);
    let mut ds = vec![F::ZERO; head];
    let n_rep = hs.n_heads / hs.n_kv_heads;
    for g in 0..hs.n_kv_heads {
        gather(&mut kg, k, kw, g, hd);
        gather(&mut vg, v, kw, g, hd);
        dkg_t.fill(F::ZERO);
        dvg_t.fill(F::ZERO);
        for h in g * n_rep..(g + 1) * n_rep {
            gather(&mut doh, dout, qw, h, hd);
            for (t0, r, w, off) in row_blocks(t_len, block) {
                let p = &probs[h * head + off..h * head + off + r * w];
                let rows = t0 * qw..(t0 + r) * qw;
                gather_t(&mut qb_t[..hd * r], &q[rows.clone()], qw, h, hd);
                gather_t(&mut dob_t[..hd * r], &dout[rows], qw, h, hd);
                // dV_gᵀ[:, ..w] (hd, w) += dO_hᵀ (hd, r) · P (r, w): Pᵀ is stored as P.
                let tw = &mut tmp[..hd * w];
                F::gemm(
                    pool,
                    tw,
                    &dob_t[..hd * r],
                    p,
                    Layout::Transposed,
                    r,
                    w,
                    false,
                );
                add_columns(&mut dvg_t, tw, t_len, w);
                // dP (r, w) = dO_h rows (r, hd) · V_g[..w]ᵀ.
                let dsb = &mut ds[off..off + r * w];
                let dob = &doh[t0 * hd..(t0 + r) * hd];
                F::gemm(pool, dsb, dob, &vg[..w * hd], Layout::Rows, hd, w, false);
                let dss = SyncSlice::new(&mut *dsb);
                super::par_ranges(pool, r, r * w, &|rows| {
                    for i in rows {
                        let t = t0 + i;
                        // SAFETY: each row is written by the one thread that has it.
                        let drow = unsafe { dss.slice_mut(i * w, w) };
                        let prow = &p[i * w..(i + 1) * w];
                        let mut pdp = F::ZERO;
                        for u in 0..=t {
                            pdp += prow[u] * drow[u];
                        }
                        for u in 0..=t {
                            drow[u] = prow[u] * (drow[u] - pdp) * scale;
                        }
                        drow[t + 1..].fill(F::ZERO);
                    }
                });
                // dQ_h rows (r, hd) = dS (r, w) · K_g[..w]: K_gᵀ is stored as K_g.
                let dqb = &mut dqh[t0 * hd..(t0 + r) * hd];
                F::gemm(
                    pool,
                    dqb,
                    dsb,
                    &kg[..w * hd],
                    Layout::Transposed,
                    w,
                    hd,
                    false,
                );
                // dK_gᵀ[:, ..w] (hd, w) += Q_hᵀ (hd, r) · dS (r, w): dSᵀ is stored as dS.
                let tw = &mut tmp[..hd * w];
                F::gemm(
                    pool,
                    tw,
                    &qb_t[..hd * r],
                    dsb,
                    Layout::Transposed,
                    r,
                    w,
                    false,
                );
                add_columns(&mut dkg_t, tw, t_len, w);
            }
            scatter_add(dq, &dqh, qw, h, hd);
        }
        scatter_add_t(dk, &dkg_t, kw, g, hd);
        scatter_add_t(dv, &dvg_t, kw, g, hd);
    }
}

/// `dst (hd, t_len)[:, ..w] += src (hd, w)`.
fn add_columns<F: Float>(dst: &mut [F], src: &[F], t_len: usize, w: usize) {
    for (d, s) in dst.chunks_exact_mut(t_len).zip(src.chunks_exact(w)) {
        super::add_into(&mut d[..w], s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GEMM path (f32, 1 and 2 threads, several row blocks) against the loops (f64).
    #[test]
    fn matrix_products_match_the_loops() {
        let hs = Heads {
            n_heads: 6,
            n_kv_heads: 2,
            head_dim: 16,
        };
        for (t, block) in [(37, ROW_BLOCK), (37, 8), (50, 16), (9, 4)] {
            check(hs, t, block);
        }
    }

    fn check(hs: Heads, t: usize, block: usize) {
        let mut s = 0x1234_5678_9abc_def1u64;
        let mut rnd = move |n: usize| -> Vec<f64> {
            (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s % 2001) as f64 / 1000.0 - 1.0
                })
                .collect()
        };
        let (q, k, v, dout) = (rnd(t * 96), rnd(t * 32), rnd(t * 32), rnd(t * 96));
        let f = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let one = ThreadPool::new(1);
        let mut o64 = vec![0.0; t * 96];
        let mut p64 = vec![0.0; 6 * t * t];
        forward_loops(&one, &mut o64, &mut p64, &q, &k, &v, hs);
        let (mut dq64, mut dk64, mut dv64) =
            (vec![0.0; t * 96], vec![0.0; t * 32], vec![0.0; t * 32]);
        backward_loops(
            &one, &mut dq64, &mut dk64, &mut dv64, &dout, &q, &k, &v, &p64, hs,
        );
        for threads in [1, 2] {
            let pool = ThreadPool::new(threads);
            let mut o = vec![0.0f32; t * 96];
            let mut p = vec![7.0f32; hs.n_heads * head_len(t, block)];
            forward_blocked(&pool, &mut o, &mut p, &f(&q), &f(&k), &f(&v), hs, block);
            let (mut dq, mut dk, mut dv) = (
                vec![0.5f32; t * 96],
                vec![0.5f32; t * 32],
                vec![0.5f32; t * 32],
            );
            backward_blocked(
                &pool,
                &mut dq,
                &mut dk,
                &mut dv,
                &f(&dout),
                &f(&q),
                &f(&k),
                &f(&v),
                &p,
                hs,
                block,
            );
            let close = |got: &[f32], want: &[f64], plus: f64, what: &str| {
                for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                    assert!(
                        (f64::from(g) - (w + plus)).abs() < 2e-5 * (1.0 + w.abs()),
                        "{what}[{i}] (T {t}, block {block}): {g} vs {}",
                        w + plus
                    );
                }
            };
            let square: Vec<f32> = (0..6 * t * t)
                .map(|i| prob_blocked(&p, t, i / (t * t), i / t % t, i % t, block))
                .collect();
            close(&o, &o64, 0.0, "out");
            close(&square, &p64, 0.0, "probs");
            close(&dq, &dq64, 0.5, "dq");
            close(&dk, &dk64, 0.5, "dk");
            close(&dv, &dv64, 0.5, "dv");
        }
    }
}
