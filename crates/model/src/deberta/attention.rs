//! Disentangled self-attention (HF `DisentangledSelfAttention`), one call per layer,
//! heads spread over the pool.
//!
//! For query `i`, key `j` and one head, with `s = 1 / sqrt(head_dim * scale_factor)`:
//!
//! ```text
//! score(i, j) = s·q_i·k_j                      content to content
//!             + s·q_i·pos_key[c2p(i, j)]       content to position (c2p)
//!             + s·k_j·pos_query[p2c(i, j)]     position to content (p2c)
//! ```
//!
//! `pos_key` / `pos_query` are the layer's key/query projections of the normed relative
//! embeddings (precomputed at load, `pos_query` already times `s`), the row indices come
//! from [`RelIndex`]. Instead of gathering per pair from full `(n, 2 span)` products as HF
//! does, we compute the products only for the position rows the sequence can reach, with
//! the 16-key attention tiles of the tensor crate, then add them while the scores are hot.
//! All three matrices are tiled `[key tile][query][16]`, the layout `pv_tile` reads back.

use ferrollama_tensor::{ATT_TILE, SyncSlice, ThreadPool, pv_tile, qk_tile};

use super::config::DebertaConfig;
use super::position::RelIndex;
use super::weights::{DebertaLayer, pos_tiles};

/// Sizes shared by all heads of one call.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    /// Query rows computed (all tokens, or only `[CLS]` in the last layer).
    pub nq: usize,
    /// Key rows (tokens).
    pub n: usize,
    pub hidden: usize,
    pub heads: usize,
    pub hd: usize,
}

/// `ctx (nq, hidden) = softmax(scores) · v` per head. `q` is (≥ nq, hidden) and already
/// times the score scale; `k`, `v` are (n, hidden).
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    pool: &ThreadPool,
    cfg: &DebertaConfig,
    layer: &DebertaLayer,
    rel: Option<&RelIndex>,
    sh: Shape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    ctx: &mut [f32],
) {
    let ctx = SyncSlice::new(&mut ctx[..sh.nq * sh.hidden]);
    let span_tiles = pos_tiles(cfg.att_span());
    let c2p = rel
        .filter(|_| !layer.pos_key.is_empty())
        .map(|r| (r, RelIndex::range(&r.c2p)));
    let p2c = rel
        .filter(|_| !layer.pos_query.is_empty())
        .map(|r| (r, RelIndex::range(&r.p2c)));
    pool.run(&|t, nt| {
        let mut s = Scratch::new(sh, c2p.map(|c| c.1), p2c.map(|c| c.1));
        for head in (t..sh.heads).step_by(nt.max(1)) {
            s.head(sh, layer, span_tiles, head, q, k, v, c2p, p2c);
            for (i, row) in s.out.chunks_exact(sh.hd).enumerate() {
                // SAFETY: each head writes only its own `hd` columns of each row, and
                // every head is handled by exactly one thread.
                let dst = unsafe { ctx.slice_mut(i * sh.hidden + head * sh.hd, sh.hd) };
                dst.copy_from_slice(row);
            }
        }
    });
}

/// One thread's buffers, reused for each head it takes.
struct Scratch {
    qh: Vec<f32>,     // (nq, hd)
    kh: Vec<f32>,     // (n, hd)
    kt: Vec<f32>,     // (key tiles, hd, 16)
    vh: Vec<f32>,     // (key tiles * 16, hd), zero padded
    scores: Vec<f32>, // (key tiles, nq, 16)
    c2p: Vec<f32>,    // (nq, c2p position tiles * 16): row i holds q_i · pos_key[lo..]
    p2c: Vec<f32>,    // (n, p2c position tiles * 16): row j holds k_j · pos_query[lo..]
    tmp: Vec<f32>,    // (n, 16): one qk_tile result
    out: Vec<f32>,    // (nq, hd)
}

fn tile_span((lo, hi): (usize, usize)) -> (usize, usize) {
    (lo / ATT_TILE, hi / ATT_TILE - lo / ATT_TILE + 1)
}

impl Scratch {
    fn new(sh: Shape, c2p: Option<(usize, usize)>, p2c: Option<(usize, usize)>) -> Scratch {
        let nt = sh.n.div_ceil(ATT_TILE);
        let c2p_tiles = c2p.map_or(0, |r| tile_span(r).1);
        let p2c_tiles = p2c.map_or(0, |r| tile_span(r).1);
        Scratch {
            qh: vec![0.0; sh.nq * sh.hd],
            kh: vec![0.0; sh.n * sh.hd],
            kt: vec![0.0; nt * sh.hd * ATT_TILE],
            vh: vec![0.0; nt * ATT_TILE * sh.hd],
            scores: vec![0.0; nt * sh.nq * ATT_TILE],
            c2p: vec![0.0; c2p_tiles * sh.nq * ATT_TILE],
            p2c: vec![0.0; p2c_tiles * sh.n * ATT_TILE],
            tmp: vec![0.0; sh.n * ATT_TILE],
            out: vec![0.0; sh.nq * sh.hd],
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn head(
        &mut self,
        sh: Shape,
        layer: &DebertaLayer,
        span_tiles: usize,
        head: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        c2p: Option<(&RelIndex, (usize, usize))>,
        p2c: Option<(&RelIndex, (usize, usize))>,
    ) {
        let (nq, n, hd, h) = (sh.nq, sh.n, sh.hd, sh.hidden);
        let col = head * hd;
        let nt = n.div_ceil(ATT_TILE);
        let tile = hd * ATT_TILE;
        // Gather this head's rows: q (nq, hd), k (n, hd) and kᵀ tiles, v (n, hd).
        for i in 0..nq {
            self.qh[i * hd..(i + 1) * hd].copy_from_slice(&q[i * h + col..i * h + col + hd]);
        }
        for j in 0..n {
            let kr = &k[j * h + col..j * h + col + hd];
            self.kh[j * hd..(j + 1) * hd].copy_from_slice(kr);
            let (t, lane) = (j / ATT_TILE, j % ATT_TILE);
            for (d, &x) in kr.iter().enumerate() {
                self.kt[t * tile + d * ATT_TILE + lane] = x;
            }
            self.vh[j * hd..(j + 1) * hd].copy_from_slice(&v[j * h + col..j * h + col + hd]);
        }
        // Content to content: scores[t][i][lane] = q_i · k_(16t + lane).
        let st = nq * ATT_TILE;
        for t in 0..nt {
            let kt = &self.kt[t * tile..(t + 1) * tile];
            qk_tile(
                &self.qh,
                nq,
                hd,
                kt,
                1.0,
                &mut self.scores[t * st..(t + 1) * st],
            );
        }
        // Position products for the reachable rows only, stored row-major so that the
        // gathers below read along rows: c2p (nq, C) for a fixed query, p2c (n, P) for a
        // fixed key.
        let head_pos = head * span_tiles * tile;
        let c2p = c2p.map(|(r, range)| {
            let (lo, count) = tile_span(range);
            let width = count * ATT_TILE;
            for c in 0..count {
                let pk = &layer.pos_key[head_pos + (lo + c) * tile..][..tile];
                qk_tile(&self.qh, nq, hd, pk, 1.0, &mut self.tmp);
                for (i, t) in self.tmp[..nq * ATT_TILE].chunks_exact(ATT_TILE).enumerate() {
                    self.c2p[i * width + c * ATT_TILE..][..ATT_TILE].copy_from_slice(t);
                }
            }
            (r, lo * ATT_TILE, width)
        });
        let p2c = p2c.map(|(r, range)| {
            let (lo, count) = tile_span(range);
            let width = count * ATT_TILE;
            for c in 0..count {
                let pq = &layer.pos_query[head_pos + (lo + c) * tile..][..tile];
                qk_tile(&self.kh, n, hd, pq, 1.0, &mut self.tmp);
                for (j, t) in self.tmp[..n * ATT_TILE].chunks_exact(ATT_TILE).enumerate() {
                    self.p2c[j * width + c * ATT_TILE..][..ATT_TILE].copy_from_slice(t);
                }
            }
            (r, lo * ATT_TILE, width)
        });
        // score(i, j) += c2p[i][c2p(i - j)], query by query.
        if let Some((r, lo, width)) = c2p {
            for i in 0..nq {
                let row = &self.c2p[i * width..(i + 1) * width];
                // r.c2p is indexed by delta + n - 1 = i + n - 1 - j.
                let tab = &r.c2p[i..i + n];
                for (j, &p) in tab.iter().rev().enumerate() {
                    let si = (j / ATT_TILE) * st + i * ATT_TILE + j % ATT_TILE;
                    self.scores[si] += row[p as usize - lo];
                }
            }
        }
        // score(i, j) += p2c[j][p2c(i - j)], key by key.
        if let Some((r, lo, width)) = p2c {
            for j in 0..n {
                let row = &self.p2c[j * width..(j + 1) * width];
                let tab = &r.p2c[n - 1 - j..n - 1 - j + nq];
                let base = (j / ATT_TILE) * st + j % ATT_TILE;
                for (i, &p) in tab.iter().enumerate() {
                    self.scores[base + i * ATT_TILE] += row[p as usize - lo];
                }
            }
        }
        // Softmax over each query's keys; padding keys get probability 0.
        for i in 0..nq {
            let mut max = f32::NEG_INFINITY;
            for j in 0..n {
                max = max.max(self.scores[(j / ATT_TILE) * st + i * ATT_TILE + j % ATT_TILE]);
            }
            let mut sum = 0.0f32;
            for j in 0..n {
                let e = &mut self.scores[(j / ATT_TILE) * st + i * ATT_TILE + j % ATT_TILE];
                *e = (*e - max).exp();
                sum += *e;
            }
            let inv = 1.0 / sum;
            for j in 0..nt * ATT_TILE {
                let e = &mut self.scores[(j / ATT_TILE) * st + i * ATT_TILE + j % ATT_TILE];
                *e = if j < n { *e * inv } else { 0.0 };
            }
        }
        // out (nq, hd) = probs · v.
        self.out.fill(0.0);
        for t in 0..nt {
            let tl = (n - t * ATT_TILE).min(ATT_TILE);
            let w = &self.scores[t * st..(t + 1) * st];
            pv_tile(
                w,
                nq,
                &self.vh[t * tile..(t + 1) * tile],
                tl,
                hd,
                &mut self.out,
            );
        }
    }
}
