//! The Llama forward pass — the only one in ferrollama.
//!
//! It follows Meta's `model.py` (names `wq wk wv wo w1 w2 w3 attention_norm ffn_norm`):
//!
//! ```text
//! h   = x + wo · attention(rope(wq · norm(x)), rope(wk · norm(x)), wv · norm(x))
//! out = h + w2 · (silu(w1 · norm(h)) * (w3 · norm(h)))
//! ```
//!
//! with grouped-query attention (each KV head serves `n_heads / n_kv_heads` query heads),
//! RMSNorm, SwiGLU and RoPE on adjacent pairs (Meta's and GGUF's layout) with Llama 3.1
//! frequency divisors. A call processes a run of tokens of one sequence at consecutive
//! positions, appending their keys and values to the cache; all buffers live in [`State`],
//! allocated once, so the hot path does not allocate.

use ferrollama_tensor::{
    ATT_TILE, SyncSlice, ThreadPool, matmul, matmul_packed, pv_tile, qk_tile, quantize_acts,
};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::kv_cache::KvCache;
use crate::weights::{Tensor, Weights};

/// A loaded Llama model.
#[derive(Debug, Clone)]
pub struct Llama {
    pub config: LlamaConfig,
    pub weights: Weights,
}

/// Scratch buffers for up to `n_max` tokens per call.
#[derive(Debug)]
pub struct State {
    n_max: usize,
    x: Vec<f32>,      // (n, dim) residual stream
    xb: Vec<f32>,     // (n, dim) normed input / block output
    q: Vec<f32>,      // (n, n_heads * head_dim)
    k: Vec<f32>,      // (n, n_kv_heads * head_dim)
    v: Vec<f32>,      // (n, n_kv_heads * head_dim)
    att: Vec<f32>,    // (n, n_heads * head_dim) attention output
    hb: Vec<f32>,     // (n, ffn_dim) gate
    hb2: Vec<f32>,    // (n, ffn_dim) up
    logits: Vec<f32>, // (1, vocab); grown to (n, vocab) the first time all logits are asked for
    acts: Vec<u8>,    // activations quantized for the integer kernels
    scores: Vec<f32>, // (threads, ctx) attention scores
    tmp: Vec<f32>,    // (threads, att_scratch_len) attention tiles and buffers
    cos: Vec<f32>,    // (n, rope_dims / 2)
    sin: Vec<f32>,    // (n, rope_dims / 2)
    ctx: usize,
    threads: usize,
}

impl Llama {
    /// Loads a Llama model from a GGUF file (weights stay memory-mapped).
    pub fn from_gguf(f: &GgufFile) -> Result<Llama> {
        let config = LlamaConfig::from_gguf(f)?;
        let mut weights = Weights::from_gguf(f, &config)?;
        weights.pack()?;
        Ok(Llama { config, weights })
    }

    /// Loads a Hugging Face folder (config.json + safetensors).
    pub fn from_safetensors(dir: &std::path::Path) -> Result<Llama> {
        let folder = crate::safetensors::SafetensorsFolder::open(dir)?;
        let mut weights = folder.weights()?;
        weights.pack()?;
        Ok(Llama {
            config: folder.config.clone(),
            weights,
        })
    }

    /// Buffers for calls of up to `n_max` tokens, a cache of `ctx` positions and `threads`.
    pub fn new_state(&self, n_max: usize, ctx: usize, threads: usize) -> State {
        let c = &self.config;
        let n = n_max.max(1);
        let t = threads.max(1);
        State {
            n_max: n,
            x: vec![0.0; n * c.dim],
            xb: vec![0.0; n * c.dim],
            q: vec![0.0; n * c.q_dim()],
            k: vec![0.0; n * c.kv_dim()],
            v: vec![0.0; n * c.kv_dim()],
            att: vec![0.0; n * c.q_dim()],
            hb: vec![0.0; n * c.ffn_dim],
            hb2: vec![0.0; n * c.ffn_dim],
            logits: vec![0.0; c.vocab_size],
            acts: Vec::with_capacity(n * (c.ffn_dim.max(c.dim) + 64) * 2),
            scores: vec![0.0; t * ATT_BLOCK * c.n_rep() * ctx],
            tmp: vec![0.0; t * att_scratch_len(ATT_BLOCK * c.n_rep(), c.head_dim)],
            cos: vec![0.0; n * c.rope_dims / 2],
            sin: vec![0.0; n * c.rope_dims / 2],
            ctx,
            threads: t,
        }
    }

    /// Runs `tokens` at the next positions of `kv` and returns logits: `(vocab)` for the
    /// last token, or `(tokens.len(), vocab)` with `all_logits`.
    pub fn forward<'s>(
        &self,
        pool: &ThreadPool,
        tokens: &[u32],
        kv: &mut KvCache,
        st: &'s mut State,
        all_logits: bool,
    ) -> Result<&'s [f32]> {
        let c = &self.config;
        let n = tokens.len();
        let pos0 = kv.len;
        if n == 0 || n > st.n_max {
            return Err(ModelError::Invalid(format!(
                "{n} tokens in one call (1..={} allowed)",
                st.n_max
            )));
        }
        if pos0 + n > kv.ctx().min(st.ctx) {
            return Err(ModelError::Invalid(format!(
                "context full: {} + {n} tokens exceed the context size {}",
                pos0,
                kv.ctx().min(st.ctx)
            )));
        }
        if pool.n_threads() > st.threads {
            return Err(ModelError::Invalid(
                "thread pool larger than the state".into(),
            ));
        }
        let (dim, qd, kvd, ffn) = (c.dim, c.q_dim(), c.kv_dim(), c.ffn_dim);
        let w = &self.weights;

        for (i, &t) in tokens.iter().enumerate() {
            if t as usize >= c.vocab_size {
                return Err(ModelError::Invalid(format!(
                    "token id {t} is outside the vocabulary ({})",
                    c.vocab_size
                )));
            }
            w.tok_embeddings
                .row_f32(t as usize, &mut st.x[i * dim..(i + 1) * dim])?; // (n, dim)
        }
        self.rope_tables(pos0, n, st);

        for (l, layer) in w.layers.iter().enumerate() {
            rmsnorm(
                &mut st.xb[..n * dim],
                &st.x[..n * dim],
                &layer.attention_norm,
                c.norm_eps,
            ); // (n, dim)
            linear(pool, &layer.wq, &st.xb, n, &mut st.q, &mut st.acts)?; // (n, n_heads * head_dim)
            linear(pool, &layer.wk, &st.xb, n, &mut st.k, &mut st.acts)?; // (n, n_kv_heads * head_dim)
            linear(pool, &layer.wv, &st.xb, n, &mut st.v, &mut st.acts)?; // (n, n_kv_heads * head_dim)
            rope(
                &mut st.q[..n * qd],
                c.n_heads,
                c.head_dim,
                c.rope_dims,
                &st.cos,
                &st.sin,
            ); // (n, n_heads * head_dim)
            rope(
                &mut st.k[..n * kvd],
                c.n_kv_heads,
                c.head_dim,
                c.rope_dims,
                &st.cos,
                &st.sin,
            ); // (n, n_kv_heads * head_dim)
            for i in 0..n {
                kv.store(
                    l,
                    pos0 + i,
                    &st.k[i * kvd..(i + 1) * kvd],
                    &st.v[i * kvd..(i + 1) * kvd],
                )?;
            }
            self.attention(pool, l, pos0, n, kv, st); // (n, n_heads * head_dim)
            linear(pool, &layer.wo, &st.att, n, &mut st.xb, &mut st.acts)?; // (n, dim)
            add(&mut st.x[..n * dim], &st.xb[..n * dim]); // (n, dim)

            rmsnorm(
                &mut st.xb[..n * dim],
                &st.x[..n * dim],
                &layer.ffn_norm,
                c.norm_eps,
            ); // (n, dim)
            linear(pool, &layer.w1, &st.xb, n, &mut st.hb, &mut st.acts)?; // (n, ffn_dim)
            linear(pool, &layer.w3, &st.xb, n, &mut st.hb2, &mut st.acts)?; // (n, ffn_dim)
            swiglu(&mut st.hb[..n * ffn], &st.hb2[..n * ffn]); // (n, ffn_dim)
            linear(pool, &layer.w2, &st.hb, n, &mut st.xb, &mut st.acts)?; // (n, dim)
            add(&mut st.x[..n * dim], &st.xb[..n * dim]); // (n, dim)
        }
        kv.len = pos0 + n;

        // Only the rows whose logits are wanted go through the final norm and output.
        let first = if all_logits { 0 } else { n - 1 };
        let rows = n - first;
        if st.logits.len() < rows * c.vocab_size {
            // Only scoring (perplexity, tests) wants every row; decoding never grows this.
            st.logits.resize(rows * c.vocab_size, 0.0);
        }
        rmsnorm(
            &mut st.xb[..rows * dim],
            &st.x[first * dim..n * dim],
            &w.norm,
            c.norm_eps,
        ); // (rows, dim)
        linear(pool, &w.output, &st.xb, rows, &mut st.logits, &mut st.acts)?; // (rows, vocab)
        Ok(&st.logits[..rows * c.vocab_size])
    }

    /// cos/sin of every (token, pair), computed as ggml does (theta multiplied up in f32)
    /// so positions match llama.cpp bit for bit before the trigonometry.
    fn rope_tables(&self, pos0: usize, n: usize, st: &mut State) {
        let c = &self.config;
        let half = c.rope_dims / 2;
        let theta_scale = c.rope_theta.powf(-2.0 / c.rope_dims as f32);
        for i in 0..n {
            let mut theta = (pos0 + i) as f32;
            for p in 0..half {
                let div = self.weights.rope_freqs.as_ref().map_or(1.0, |f| f[p]);
                let t = theta / div;
                st.cos[i * half + p] = t.cos();
                st.sin[i * half + p] = t.sin();
                theta *= theta_scale;
            }
        }
    }

    /// Causal grouped-query attention of the `n` new tokens over the cache.
    ///
    /// A work item is one KV head and a block of up to `ATT_BLOCK` new tokens, i.e. up to
    /// `ATT_BLOCK * n_rep` query rows. Keys and values are converted to f32 once per tile of
    /// 16 positions and used by every query row of the item (`qk_tile`, `pv_tile`); the
    /// causal mask is applied in the softmax. Items are spread over the pool; each thread
    /// has its own buffers.
    fn attention(
        &self,
        pool: &ThreadPool,
        l: usize,
        pos0: usize,
        n: usize,
        kv: &KvCache,
        st: &mut State,
    ) {
        let c = &self.config;
        let (hd, qd, n_rep, ctx) = (c.head_dim, c.q_dim(), c.n_rep(), st.ctx);
        let rows = ATT_BLOCK * n_rep;
        let scale = 1.0 / (hd as f32).sqrt();
        let n_items = n.div_ceil(ATT_BLOCK) * c.n_kv_heads;
        let per_thread = att_scratch_len(rows, hd);
        let q = &st.q;
        let att = SyncSlice::new(&mut st.att[..n * qd]);
        let scores = SyncSlice::new(&mut st.scores[..]);
        let scratch = SyncSlice::new(&mut st.tmp[..]);
        pool.run(&|ti, nt| {
            // SAFETY: thread `ti` alone uses its slices of `scores` and `scratch`, and each
            // item (token block, KV head) writes only the `att` slices of its own tokens' heads.
            let (sc, buf) = unsafe {
                (
                    scores.slice_mut(ti * rows * ctx, rows * ctx),
                    scratch.slice_mut(ti * per_thread, per_thread),
                )
            };
            let (qbuf, rest) = buf.split_at_mut(rows * hd); // (rows, hd) queries of the item
            let (obuf, rest) = rest.split_at_mut(rows * hd); // (rows, hd) outputs of the item
            let (tile, rest) = rest.split_at_mut(ATT_TILE * hd); // keys (hd, 16) or values (16, hd)
            let (row, tsc) = rest.split_at_mut(hd); // one converted row; (rows, 16) tile scores
            let mut item = ti;
            while item < n_items {
                let (block, kvh) = (item / c.n_kv_heads, item % c.n_kv_heads);
                let (i0, i1) = (block * ATT_BLOCK, ((block + 1) * ATT_BLOCK).min(n));
                let nq = (i1 - i0) * n_rep; // query row (i - i0) * n_rep + r is head kvh * n_rep + r of token i
                for i in i0..i1 {
                    let h0 = kvh * n_rep;
                    qbuf[(i - i0) * n_rep * hd..][..n_rep * hd]
                        .copy_from_slice(&q[i * qd + h0 * hd..][..n_rep * hd]);
                }
                let longest = pos0 + i1; // token i sees positions 0..=pos0+i
                let mut t0 = 0;
                while t0 < longest {
                    let tl = (longest - t0).min(ATT_TILE);
                    tile.fill(0.0);
                    for j in 0..tl {
                        kv.key_f32(l, t0 + j, kvh, row);
                        for (d, &x) in row.iter().enumerate() {
                            tile[d * ATT_TILE + j] = x;
                        }
                    }
                    qk_tile(qbuf, nq, hd, tile, scale, tsc); // (nq, 16)
                    for r in 0..nq {
                        sc[r * ctx + t0..][..tl].copy_from_slice(&tsc[r * ATT_TILE..][..tl]);
                    }
                    t0 += ATT_TILE;
                }
                for r in 0..nq {
                    let len = pos0 + i0 + r / n_rep + 1;
                    let s = &mut sc[r * ctx..][..longest];
                    let max = s[..len].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0f64;
                    for x in s[..len].iter_mut() {
                        *x = (*x - max).exp();
                        sum += f64::from(*x);
                    }
                    let inv = (1.0 / sum) as f32;
                    s[..len].iter_mut().for_each(|x| *x *= inv);
                    s[len..].fill(0.0); // causal mask
                }
                obuf[..nq * hd].fill(0.0);
                let mut t0 = 0;
                while t0 < longest {
                    let tl = (longest - t0).min(ATT_TILE);
                    for j in 0..tl {
                        kv.value_f32(l, t0 + j, kvh, &mut tile[j * hd..(j + 1) * hd]);
                    }
                    for r in 0..nq {
                        tsc[r * ATT_TILE..][..tl].copy_from_slice(&sc[r * ctx + t0..][..tl]);
                    }
                    pv_tile(tsc, nq, tile, tl, hd, obuf); // (nq, hd)
                    t0 += ATT_TILE;
                }
                for i in i0..i1 {
                    let h0 = kvh * n_rep;
                    // SAFETY: see above; this item owns att[i, kvh * n_rep .. (kvh + 1) * n_rep].
                    unsafe { att.slice_mut(i * qd + h0 * hd, n_rep * hd) }
                        .copy_from_slice(&obuf[(i - i0) * n_rep * hd..][..n_rep * hd]);
                }
                item += nt;
            }
        });
    }
}

/// Per-thread attention scratch: queries and outputs of an item, a key/value tile, one
/// converted row, and a tile of scores.
fn att_scratch_len(rows: usize, hd: usize) -> usize {
    2 * rows * hd + ATT_TILE * hd + hd + rows * ATT_TILE
}

/// New tokens per attention work item: each key/value row converted to f32 serves this
/// many tokens' queries (times the query heads per KV head).
const ATT_BLOCK: usize = 16;

/// `out (n, rows) = x (n, cols) · wᵀ`, activations quantized to the weight's dot format.
fn linear(
    pool: &ThreadPool,
    w: &Tensor,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    acts: &mut Vec<u8>,
) -> Result<()> {
    quantize_acts(w.dtype, &x[..n * w.cols], w.cols, acts)?;
    let out = &mut out[..n * w.rows];
    match &w.packed {
        Some(p) => matmul_packed(pool, p, acts, n, out)?,
        None => matmul(pool, w.dtype, w.data(), w.rows, w.cols, acts, n, out)?,
    }
    Ok(())
}

/// RMSNorm per row: `x / sqrt(mean(x²) + eps) * weight`, the sum in f64 as ggml does.
fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let d = weight.len();
    for (o, xr) in out.chunks_mut(d).zip(x.chunks(d)) {
        let ss: f64 = xr.iter().map(|&v| f64::from(v * v)).sum();
        let scale = 1.0 / ((ss / d as f64) as f32 + eps).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(xr).zip(weight) {
            *o = v * scale * g;
        }
    }
}

/// RoPE on adjacent pairs of the first `rope_dims` dimensions of each head.
fn rope(x: &mut [f32], n_heads: usize, hd: usize, rope_dims: usize, cos: &[f32], sin: &[f32]) {
    let half = rope_dims / 2;
    for (i, row) in x.chunks_mut(n_heads * hd).enumerate() {
        let (c, s) = (
            &cos[i * half..(i + 1) * half],
            &sin[i * half..(i + 1) * half],
        );
        for head in row.chunks_mut(hd) {
            for p in 0..half {
                let (a, b) = (head[2 * p], head[2 * p + 1]);
                head[2 * p] = a * c[p] - b * s[p];
                head[2 * p + 1] = a * s[p] + b * c[p];
            }
        }
    }
}

/// `gate = silu(gate) * up`.
fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
