//! BERT self-attention over a batch of unpadded sequences: one work item per (sequence,
//! head), spread over the pool. Sequences never attend to each other, so a batch needs no
//! padding mask and no padded rows.

use ferrollama_tensor::{ATT_TILE, SyncSlice, ThreadPool, pv_tile, qk_tile, softmax_inplace};

/// `ctx (N, hidden) = softmax(q kᵀ / sqrt(hd)) v` per sequence and head. `qkv` is
/// (N, 3 hidden): each row `[q | k | v]`; `spans` are the sequences' `(start, len)` rows.
pub(super) fn attention(
    pool: &ThreadPool,
    spans: &[(usize, usize)],
    heads: usize,
    hd: usize,
    qkv: &[f32],
    ctx: &mut [f32],
) {
    let hidden = heads * hd;
    let ctx = SyncSlice::new(ctx);
    let items = spans.len() * heads;
    let longest = spans.iter().map(|s| s.1).max().unwrap_or(0);
    let scale = 1.0 / (hd as f32).sqrt();
    pool.run(&|t, nt| {
        let mut s = Scratch::new(longest, hd);
        for item in (t..items).step_by(nt.max(1)) {
            let ((start, n), head) = (spans[item / heads], item % heads);
            s.head(qkv, hidden, start, n, head * hd, hd, scale);
            for (i, row) in s.out[..n * hd].chunks_exact(hd).enumerate() {
                // SAFETY: item (sequence, head) writes only its own rows' `hd` columns,
                // and each item is handled by exactly one thread.
                let dst = unsafe { ctx.slice_mut((start + i) * hidden + head * hd, hd) };
                copy_row(dst, row);
            }
        }
    });
}

/// One thread's buffers, sized for the longest sequence and reused for every item.
struct Scratch {
    q: Vec<f32>,      // (n, hd)
    kt: Vec<f32>,     // (key tiles, hd, 16)
    v: Vec<f32>,      // (key tiles * 16, hd), zero padded
    scores: Vec<f32>, // (key tiles, n, 16)
    row: Vec<f32>,    // (key tiles * 16): one query's scores, contiguous
    out: Vec<f32>,    // (n, hd)
}

impl Scratch {
    fn new(n: usize, hd: usize) -> Scratch {
        let nt = n.div_ceil(ATT_TILE);
        Scratch {
            q: vec![0.0; n * hd],
            kt: vec![0.0; nt * hd * ATT_TILE],
            v: vec![0.0; nt * ATT_TILE * hd],
            scores: vec![0.0; nt * n * ATT_TILE],
            row: vec![0.0; nt * ATT_TILE],
            out: vec![0.0; n * hd],
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn head(
        &mut self,
        qkv: &[f32],
        hidden: usize,
        start: usize,
        n: usize,
        col: usize,
        hd: usize,
        scale: f32,
    ) {
        let nt = n.div_ceil(ATT_TILE);
        let tile = hd * ATT_TILE;
        // Gather this head: q (n, hd), kᵀ in 16-key tiles, v (n, hd) zero padded.
        self.kt[..nt * tile].fill(0.0);
        self.v[..nt * tile].fill(0.0);
        for j in 0..n {
            let row = &qkv[(start + j) * 3 * hidden..][..3 * hidden];
            copy_row(&mut self.q[j * hd..(j + 1) * hd], &row[col..col + hd]);
            let (t, lane) = (j / ATT_TILE, j % ATT_TILE);
            for (d, &x) in row[hidden + col..hidden + col + hd].iter().enumerate() {
                self.kt[t * tile + d * ATT_TILE + lane] = x;
            }
            copy_row(
                &mut self.v[j * hd..(j + 1) * hd],
                &row[2 * hidden + col..][..hd],
            );
        }
        // scores[t][i][lane] = q_i · k_(16t + lane) / sqrt(hd).
        let st = n * ATT_TILE;
        for t in 0..nt {
            let kt = &self.kt[t * tile..(t + 1) * tile];
            qk_tile(
                &self.q,
                n,
                hd,
                kt,
                scale,
                &mut self.scores[t * st..(t + 1) * st],
            );
        }
        // Softmax over each query's n keys, gathered into one contiguous row for the
        // vectorized kernel; the padding lanes of the last tile get 0.
        for i in 0..n {
            let row = &mut self.row[..nt * ATT_TILE];
            for (t, r) in row.chunks_exact_mut(ATT_TILE).enumerate() {
                r.copy_from_slice(&self.scores[t * st + i * ATT_TILE..][..ATT_TILE]);
            }
            softmax_inplace(&mut row[..n]);
            row[n..].fill(0.0);
            for (t, r) in row.chunks_exact(ATT_TILE).enumerate() {
                self.scores[t * st + i * ATT_TILE..][..ATT_TILE].copy_from_slice(r);
            }
        }
        // out (n, hd) = probs · v.
        self.out[..n * hd].fill(0.0);
        for t in 0..nt {
            let tl = (n - t * ATT_TILE).min(ATT_TILE);
            pv_tile(
                &self.scores[t * st..(t + 1) * st],
                n,
                &self.v[t * tile..(t + 1) * tile],
                tl,
                hd,
                &mut self.out,
            );
        }
    }
}

/// `dst = src` for one head's row. `copy_from_slice` of a run-time length is a libc
/// `memcpy` call, which for 32 floats cost more than the copy (a few % of the encoder's
/// time); the common head sizes get fixed-size copies the compiler inlines.
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32]) -> bool {
        match (<&mut [f32; N]>::try_from(dst), <&[f32; N]>::try_from(src)) {
            (Ok(d), Ok(s)) => {
                *d = *s;
                true
            }
            _ => false,
        }
    }
    let done = match dst.len() {
        32 => fixed::<32>(dst, src),
        64 => fixed::<64>(dst, src),
        _ => false,
    };
    if !done {
        dst.copy_from_slice(src);
    }
}
