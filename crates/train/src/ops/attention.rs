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
/// row block sees. `probs` holds at least [`probs_len`] values.
///
/// Threading: the (head, row block) pairs are independent, so one pool section hands
/// each thread a run of them of about equal arithmetic ([`super::par_by_cost`]; a row
/// block's cost grows with the keys it sees), and each pair's products run on that
/// thread alone (the GEMM called inside a pool section is single-threaded). Splitting
/// every small product over the threads instead took hundreds of sections per layer,
/// each ending with a thread waiting for the other. Every value is computed by the same
/// code in the same order whatever the thread count.
pub fn forward<F: Float>(
    pool: &ThreadPool,
    out: &mut [F],
    probs: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    hs: Heads,
) {
    let mut scratch = Scratch::default();
    forward_blocked(pool, &mut scratch, out, probs, q, k, v, hs, ROW_BLOCK);
}

/// [`forward`] with its working memory in `scratch`, kept by the caller for the next
/// call: a training pass runs attention twice per layer, and fresh buffers of these
/// sizes fault their pages in anew each time.
#[allow(clippy::too_many_arguments)]
pub fn forward_with<F: Float>(
    pool: &ThreadPool,
    scratch: &mut Scratch<F>,
    out: &mut [F],
    probs: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    hs: Heads,
) {
    forward_blocked(pool, scratch, out, probs, q, k, v, hs, ROW_BLOCK);
}

/// The working memory of [`forward_with`] and [`backward_with`]: every KV head's keys and
/// values gathered, the backward's per-pair `dK`, `dV` contributions, and each pool
/// thread's block-sized buffers. Every use overwrites what it reads.
#[derive(Debug, Default)]
pub struct Scratch<F: Float> {
    kg: Vec<F>,
    vg: Vec<F>,
    /// Per KV head, its keys and values prepared once for the products of every query
    /// head and row block that reads them ([`Float::prepare`]; each block reads the
    /// keys it sees, a leading part): packing them per pair cost as much as a pair's
    /// products.
    k_prep: Vec<F::Prepared>,
    v_prep: Vec<F::Prepared>,
    dk_parts: Vec<F>,
    dv_parts: Vec<F>,
    per_thread: Vec<F>,
}

/// Makes `v` `n` long, keeping what it holds (every user overwrites it).
fn resize<F: Float>(v: &mut Vec<F>, n: usize) {
    if v.len() != n {
        v.clear();
        v.resize(n, F::ZERO);
    }
}

/// A row block: `(first row, rows, keys seen, offset of its probabilities)`.
type RowBlock = (usize, usize, usize, usize);

/// The (head, row block) pairs of a pass in order: the row blocks ([`row_blocks`]), and
/// each pair's cost (`rows · keys`), head-major.
fn items(t_len: usize, hs: Heads, block: usize) -> (Vec<RowBlock>, Vec<usize>) {
    let blocks: Vec<_> = row_blocks(t_len, block).collect();
    let costs = (0..hs.n_heads)
        .flat_map(|_| blocks.iter().map(|&(_, r, w, _)| r * w))
        .collect();
    (blocks, costs)
}

/// Every KV head's `(T, hd)` block of `x` (gathered by [`gather_all`]) prepared as
/// the matrix `M` of `layout` ([`Layout::Rows`]: `M = X_g`, `(T, hd)`; transposed:
/// `M = X_gᵀ`, `(hd, T)`).
fn prepare_all<F: Float>(
    pool: &ThreadPool,
    prep: &mut Vec<F::Prepared>,
    xg: &[F],
    hs: Heads,
    layout: Layout,
) {
    let hd = hs.head_dim;
    let t_len = xg.len() / (hs.n_kv_heads * hd).max(1);
    prep.resize_with(hs.n_kv_heads, Default::default);
    for (p, x) in prep.iter_mut().zip(xg.chunks_exact(t_len * hd)) {
        match layout {
            Layout::Rows => F::prepare(pool, p, x, layout, hd, t_len),
            Layout::Transposed => F::prepare(pool, p, x, layout, t_len, hd),
        }
    }
}

/// Every KV head's columns of `x (T, Hkv·hd)`, one after the other, into `out`:
/// `(Hkv, T, hd)`.
fn gather_all<F: Float>(out: &mut Vec<F>, x: &[F], hs: Heads) {
    let hd = hs.head_dim;
    let kw = hs.kv_width();
    let t_len = x.len() / kw.max(1);
    resize(out, x.len());
    for (g, o) in out.chunks_exact_mut(t_len * hd).enumerate() {
        gather(o, x, kw, g, hd);
    }
}

#[allow(clippy::too_many_arguments)]
fn forward_blocked<F: Float>(
    pool: &ThreadPool,
    scratch: &mut Scratch<F>,
    out: &mut [F],
    probs: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    hs: Heads,
    block: usize,
) {
    let hd = hs.head_dim;
    let qw = hs.q_width();
    let t_len = q.len() / qw;
    let head = head_len(t_len, block);
    let scale = F::ONE / F::from_f64(hd as f64).sqrt();
    gather_all(&mut scratch.kg, k, hs);
    gather_all(&mut scratch.vg, v, hs);
    // S reads K_g (rows: keys), O reads V_gᵀ (columns: keys).
    prepare_all(pool, &mut scratch.k_prep, &scratch.kg, hs, Layout::Rows);
    prepare_all(
        pool,
        &mut scratch.v_prep,
        &scratch.vg,
        hs,
        Layout::Transposed,
    );
    let (kp, vp) = (&scratch.k_prep, &scratch.v_prep);
    let (blocks, costs) = items(t_len, hs, block);
    let nb = blocks.len();
    let per = 2 * block * hd;
    resize(&mut scratch.per_thread, pool.n_threads() * per);
    let (outs, ps) = (SyncSlice::new(out), SyncSlice::new(probs));
    let mine = SyncSlice::new(&mut scratch.per_thread);
    super::par_by_cost(pool, &costs, &|th, range| {
        // SAFETY: each thread index has its own part of the buffer.
        let buf = unsafe { mine.slice_mut(th * per, per) };
        let (qb, ob) = buf.split_at_mut(block * hd);
        for item in range {
            let (h, (t0, r, w, off)) = (item / nb, blocks[item % nb]);
            let g = hs.kv_head(h);
            let qb = &mut qb[..r * hd];
            gather(qb, &q[t0 * qw..(t0 + r) * qw], qw, h, hd);
            // SAFETY: each (head, row block) has its own probabilities, and its own rows
            // of the head's output columns, and is handled by one thread.
            let p = unsafe { ps.slice_mut(h * head + off, r * w) };
            F::gemm_prepared(pool, p, qb, &kp[g], hd, w, false); // (r, w) q · k[..w]
            for (i, row) in p.chunks_exact_mut(w).enumerate() {
                let t = t0 + i;
                let mut max = F::from_f64(f64::NEG_INFINITY);
                for x in &mut row[..=t] {
                    *x *= scale;
                    max = max.max(*x);
                }
                let sum = F::exp_shifted_sum(&mut row[..=t], max);
                let inv = F::ONE / sum;
                row[..=t].iter_mut().for_each(|x| *x *= inv);
                row[t + 1..].fill(F::ZERO);
            }
            // O_h rows (r, hd) = P (r, w) · V_g[..w] (w, hd): keys 0..w of V_gᵀ.
            let ob = &mut ob[..r * hd];
            F::gemm_prepared(pool, ob, p, &vp[g], w, hd, false);
            for (i, o) in ob.chunks_exact(hd).enumerate() {
                // SAFETY: as above.
                let row = unsafe { outs.slice_mut((t0 + i) * qw + h * hd, hd) };
                row.copy_from_slice(o);
            }
        }
    });
}

/// [`backward_loops`] as matrix products per head and row block: `dP = dO_h V_gᵀ`,
/// `dV_g += Pᵀ dO_h`, `dS = P ⊙ (dP - rowsum(P ⊙ dP)) · scale`, `dQ_h += dS K_g`,
/// `dK_g += dSᵀ Q_h`. The two products with a transposed probability block are computed
/// transposed (`dV_gᵀ += dO_hᵀ P`, `dK_gᵀ += Q_hᵀ dS`), so the blocks are read as
/// stored and only the small `(hd, rows)` operands are transposed.
///
/// Threaded as [`forward`]: one section over the (head, row block) pairs, each on one
/// thread. A pair's `dQ` rows are its own; its `dK_gᵀ`, `dV_gᵀ` contributions (hd, keys
/// seen) are kept apart and summed afterwards, per KV head, over its query heads and
/// their row blocks in that order, so the sums do not depend on the thread count.
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
    let mut scratch = Scratch::default();
    backward_blocked(
        pool,
        &mut scratch,
        dq,
        dk,
        dv,
        dout,
        q,
        k,
        v,
        probs,
        hs,
        ROW_BLOCK,
        true,
    );
}

/// [`backward`] with its working memory in `scratch` (see [`forward_with`]), writing
/// `dq`, `dk`, `dv` instead of adding to them (a pass's buffers that hold no gradient
/// yet: every value has one writer, so this costs nothing and saves zeroing them).
#[allow(clippy::too_many_arguments)]
pub fn backward_into<F: Float>(
    pool: &ThreadPool,
    scratch: &mut Scratch<F>,
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
    backward_blocked(
        pool, scratch, dq, dk, dv, dout, q, k, v, probs, hs, ROW_BLOCK, false,
    );
}

#[allow(clippy::too_many_arguments)]
fn backward_blocked<F: Float>(
    pool: &ThreadPool,
    scratch: &mut Scratch<F>,
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
    add: bool,
) {
    let hd = hs.head_dim;
    let (qw, kw) = (hs.q_width(), hs.kv_width());
    let t_len = q.len() / qw;
    let head = head_len(t_len, block);
    let scale = F::ONE / F::from_f64(hd as f64).sqrt();
    gather_all(&mut scratch.kg, k, hs);
    gather_all(&mut scratch.vg, v, hs);
    // dP reads V_g (rows: keys), dQ reads K_gᵀ (columns: keys).
    prepare_all(pool, &mut scratch.v_prep, &scratch.vg, hs, Layout::Rows);
    prepare_all(
        pool,
        &mut scratch.k_prep,
        &scratch.kg,
        hs,
        Layout::Transposed,
    );
    let (kp, vp) = (&scratch.k_prep, &scratch.v_prep);
    let (blocks, costs) = items(t_len, hs, block);
    let nb = blocks.len();
    // Each pair's dK_gᵀ and dV_gᵀ contributions, (hd, keys seen), at `part_off[item]`.
    let mut part_off = Vec::with_capacity(costs.len() + 1);
    let mut total = 0;
    for item in 0..costs.len() {
        part_off.push(total);
        total += hd * blocks[item % nb].2;
    }
    resize(&mut scratch.dk_parts, total);
    resize(&mut scratch.dv_parts, total);
    let n = block * hd;
    let per = 4 * n + block * t_len;
    resize(&mut scratch.per_thread, pool.n_threads() * per);
    let (dqs, dks, dvs) = (
        SyncSlice::new(dq),
        SyncSlice::new(&mut scratch.dk_parts),
        SyncSlice::new(&mut scratch.dv_parts),
    );
    let mine = SyncSlice::new(&mut scratch.per_thread);
    super::par_by_cost(pool, &costs, &|th, range| {
        // SAFETY: each thread index has its own part of the buffer.
        let buf = unsafe { mine.slice_mut(th * per, per) };
        let (dob, rest) = buf.split_at_mut(n);
        let (dob_t, rest) = rest.split_at_mut(n);
        let (qb_t, rest) = rest.split_at_mut(n);
        let (dqb, ds) = rest.split_at_mut(n);
        for item in range {
            let (h, (t0, r, w, off)) = (item / nb, blocks[item % nb]);
            let g = hs.kv_head(h);
            let p = &probs[h * head + off..h * head + off + r * w];
            let rows = t0 * qw..(t0 + r) * qw;
            let (dob, dob_t, qb_t) = (
                &mut dob[..r * hd],
                &mut dob_t[..hd * r],
                &mut qb_t[..hd * r],
            );
            gather(dob, &dout[rows.clone()], qw, h, hd);
            gather_t(dob_t, &dout[rows.clone()], qw, h, hd);
            gather_t(qb_t, &q[rows], qw, h, hd);
            // SAFETY: each pair has its own contribution buffers, and its own rows of
            // head h's dq columns, and is handled by one thread.
            let (dkp, dvp) = unsafe {
                (
                    dks.slice_mut(part_off[item], hd * w),
                    dvs.slice_mut(part_off[item], hd * w),
                )
            };
            // dV_gᵀ[:, ..w] (hd, w) += dO_hᵀ (hd, r) · P (r, w): Pᵀ is stored as P.
            F::gemm(pool, dvp, dob_t, p, Layout::Transposed, r, w, false);
            // dP (r, w) = dO_h rows (r, hd) · V_g[..w]ᵀ.
            let dsb = &mut ds[..r * w];
            F::gemm_prepared(pool, dsb, dob, &vp[g], hd, w, false);
            for (i, (drow, prow)) in dsb.chunks_exact_mut(w).zip(p.chunks_exact(w)).enumerate() {
                let t = t0 + i;
                let mut pdp = F::ZERO;
                for u in 0..=t {
                    pdp += prow[u] * drow[u];
                }
                for u in 0..=t {
                    drow[u] = prow[u] * (drow[u] - pdp) * scale;
                }
                drow[t + 1..].fill(F::ZERO);
            }
            // dQ_h rows (r, hd) = dS (r, w) · K_g[..w]: keys 0..w of K_gᵀ.
            let dqb = &mut dqb[..r * hd];
            F::gemm_prepared(pool, dqb, dsb, &kp[g], w, hd, false);
            for (i, d) in dqb.chunks_exact(hd).enumerate() {
                // SAFETY: as above.
                let row = unsafe { dqs.slice_mut((t0 + i) * qw + h * hd, hd) };
                if add {
                    super::add_into(row, d);
                } else {
                    row.copy_from_slice(d);
                }
            }
            // dK_gᵀ[:, ..w] (hd, w) += Q_hᵀ (hd, r) · dS (r, w): dSᵀ is stored as dS.
            F::gemm(pool, dkp, qb_t, dsb, Layout::Transposed, r, w, false);
        }
    });
    // dk[u, g·hd + d] += Σ over g's query heads h, then h's row blocks seeing key u, of
    // the pairs' contributions [d][u]: each (g, d) row of dK_gᵀ summed whole (the pairs'
    // rows are contiguous), then added into its column of dk. The rows are spread over
    // the pool.
    let n_rep = hs.n_heads / hs.n_kv_heads;
    for (dx, parts) in [(dk, &scratch.dk_parts), (dv, &scratch.dv_parts)] {
        let dxs = SyncSlice::new(dx);
        super::par_ranges(pool, kw, kw * t_len * n_rep, &|gds| {
            let mut sum = vec![F::ZERO; t_len];
            for gd in gds {
                let (g, d) = (gd / hd, gd % hd);
                sum.fill(F::ZERO);
                for h in g * n_rep..(g + 1) * n_rep {
                    for (b, &(_, _, w, _)) in blocks.iter().enumerate() {
                        let part = &parts[part_off[h * nb + b] + d * w..][..w];
                        super::add_into(&mut sum[..w], part);
                    }
                }
                for (u, &v) in sum.iter().enumerate() {
                    // SAFETY: column gd of dk belongs to this thread alone.
                    let x = unsafe { dxs.slice_mut(u * kw + gd, 1) };
                    if add {
                        x[0] += v;
                    } else {
                        x[0] = v;
                    }
                }
            }
        });
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
        // One scratch for all: reused storage from another shape must not matter.
        let mut scratch = Scratch::default();
        for (t, block) in [(37, ROW_BLOCK), (37, 8), (50, 16), (9, 4), (37, 8)] {
            check(hs, t, block, &mut scratch);
        }
    }

    fn check(hs: Heads, t: usize, block: usize, scratch: &mut Scratch<f32>) {
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
            let sc = &mut *scratch;
            forward_blocked(&pool, sc, &mut o, &mut p, &f(&q), &f(&k), &f(&v), hs, block);
            let (mut dq, mut dk, mut dv) = (
                vec![0.5f32; t * 96],
                vec![0.5f32; t * 32],
                vec![0.5f32; t * 32],
            );
            backward_blocked(
                &pool,
                scratch,
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
                true,
            );
            // Writing instead of adding: what the buffers held does not matter.
            let (mut wq, mut wk, mut wv) = (
                vec![f32::NAN; t * 96],
                vec![f32::NAN; t * 32],
                vec![f32::NAN; t * 32],
            );
            backward_blocked(
                &pool,
                scratch,
                &mut wq,
                &mut wk,
                &mut wv,
                &f(&dout),
                &f(&q),
                &f(&k),
                &f(&v),
                &p,
                hs,
                block,
                false,
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
            close(&wq, &dq64, 0.0, "dq written");
            close(&wk, &dk64, 0.0, "dk written");
            close(&wv, &dv64, 0.0, "dv written");
        }
    }
}
