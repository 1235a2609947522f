//! The Llama forward pass — the only one in ferrollama.
//!
//! It follows Meta's `model.py` (names `wq wk wv wo w1 w2 w3 attention_norm ffn_norm`):
//!
//! ```text
//! h   = x + wo · attention(rope(wq · norm(x) + bq), rope(wk · norm(x) + bk), wv · norm(x) + bv)
//! out = h + w2 · (silu(w1 · norm(h)) * (w3 · norm(h)))
//! ```
//!
//! The biases `bq bk bv` are Qwen2's (absent, i.e. zero, for Llama). Other architectures
//! join at load time, never here: Qwen2's rotate-half `wq`/`wk` rows are permuted into
//! adjacent pairs by the loader (`Weights::assemble`).
//!
//! with grouped-query attention (each KV head serves `n_heads / n_kv_heads` query heads),
//! RMSNorm, SwiGLU and RoPE on adjacent pairs (Meta's and GGUF's layout) with Llama 3.1
//! frequency divisors. A call processes a run of tokens of one sequence at consecutive
//! positions, appending their keys and values to the cache; all buffers live in [`State`],
//! allocated once, so the hot path does not allocate.
//!
//! LoRA adapters ride along per sequence ([`Llama::forward_batch_lora`]): after each adapted
//! projection, the rows of a sequence with an adapter get `scale · (x Aᵀ) Bᵀ` added. The
//! base weights are read once for the whole batch whatever the adapters, so sequences of
//! different adapters and of the base share one step.

use ferrollama_tensor::{
    ATT_TILE, SyncSlice, ThreadPool, axpy_f32, dot_rows_f32, matmul, matmul_packed, pv_rows_f16,
    pv_tile, qk_rows_f16, qk_tile, quantize_acts,
};

use crate::adapter::{Adapter, Proj};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::kv_cache::{KV_BLOCK, KvCache, KvType};
use crate::weights::{Tensor, Weights};

/// A loaded Llama model.
#[derive(Debug, Clone)]
pub struct Llama {
    pub config: LlamaConfig,
    pub weights: Weights,
}

/// Which logits a sequence of a batched call wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None (a prefill chunk that is not the prompt's last).
    None,
    /// The last token's: the next-token distribution.
    Last,
    /// Every token's (scoring, perplexity).
    All,
}

/// One sequence's part of a [`Llama::forward_batch`] call.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    /// New tokens, at positions `pos0..pos0 + tokens.len()`.
    pub tokens: &'a [u32],
    /// Positions before `pos0` are already in the cache.
    pub pos0: usize,
    /// The sequence's cache blocks in position order: position `p` lives in slot
    /// `blocks[p / KV_BLOCK] * KV_BLOCK + p % KV_BLOCK`. Must cover every new position.
    pub blocks: &'a [u32],
    pub logits: Logits,
}

/// Scratch buffers for up to `n_max` tokens per call.
#[derive(Debug)]
pub struct State {
    n_max: usize,
    x: Vec<f32>,                // (n, dim) residual stream
    xb: Vec<f32>,               // (n, dim) normed input / block output
    q: Vec<f32>,                // (n, n_heads * head_dim)
    k: Vec<f32>,                // (n, n_kv_heads * head_dim)
    v: Vec<f32>,                // (n, n_kv_heads * head_dim)
    att: Vec<f32>,              // (n, n_heads * head_dim) attention output
    hb: Vec<f32>,               // (n, ffn_dim) gate
    hb2: Vec<f32>,              // (n, ffn_dim) up
    logits: Vec<f32>, // (1, vocab); grown to (n, vocab) the first time all logits are asked for
    acts: Vec<u8>,    // activations quantized for the integer kernels
    scores: Vec<f32>, // (threads, ctx) attention scores
    tmp: Vec<f32>,    // (threads, att_scratch_len) attention tiles and buffers
    cos: Vec<f32>,    // (n, rope_dims / 2)
    sin: Vec<f32>,    // (n, rope_dims / 2)
    slots: Vec<usize>, // (n) cache slot of each row
    rows: Vec<(usize, usize)>, // per sequence of a call: first row, tokens
    items: Vec<(usize, usize)>, // attention work: (sequence, first token of a block)
    identity: Vec<u32>, // one-to-one block table for single-sequence calls
    lora: Vec<f32>,   // (threads, rank) LoRA `x Aᵀ` rows; grown to the largest rank seen
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
            slots: vec![0; n],
            rows: Vec::with_capacity(n),
            items: Vec::with_capacity(n),
            identity: Vec::new(),
            lora: Vec::new(),
            ctx,
            threads: t,
        }
    }

    /// Runs `tokens` at the next positions of `kv` (one sequence owning the whole cache) and
    /// returns logits: `(vocab)` for the last token, or `(tokens.len(), vocab)` with
    /// `all_logits`.
    pub fn forward<'s>(
        &self,
        pool: &ThreadPool,
        tokens: &[u32],
        kv: &mut KvCache,
        st: &'s mut State,
        all_logits: bool,
    ) -> Result<&'s [f32]> {
        self.forward_lora(pool, tokens, kv, st, all_logits, None)
    }

    /// [`Llama::forward`] with an optional LoRA adapter on the sequence.
    pub fn forward_lora<'s>(
        &self,
        pool: &ThreadPool,
        tokens: &[u32],
        kv: &mut KvCache,
        st: &'s mut State,
        all_logits: bool,
        adapter: Option<&Adapter>,
    ) -> Result<&'s [f32]> {
        let n_blocks = kv.n_blocks();
        if st.identity.len() < n_blocks {
            // Once per cache size: a one-to-one block table.
            st.identity = (0..n_blocks as u32).collect();
        }
        let identity = std::mem::take(&mut st.identity);
        let pos0 = kv.len;
        if pos0 + tokens.len() > kv.ctx() {
            st.identity = identity;
            return Err(ModelError::Invalid(format!(
                "context full: {pos0} + {} tokens exceed the context size {}",
                tokens.len(),
                kv.ctx()
            )));
        }
        let seq = SeqChunk {
            tokens,
            pos0,
            blocks: &identity[..n_blocks],
            logits: if all_logits {
                Logits::All
            } else {
                Logits::Last
            },
        };
        let r = self
            .forward_batch_lora(pool, std::slice::from_ref(&seq), &[adapter], kv, st)
            .map(|_| ());
        st.identity = identity;
        r?;
        kv.len = pos0 + tokens.len();
        let rows = if all_logits { tokens.len() } else { 1 };
        Ok(&st.logits[..rows * self.config.vocab_size])
    }

    /// One step for several sequences at once: every matrix product runs over all their
    /// tokens together, so each weight block is read once per step for all of them (what
    /// makes serving many streams cheaper than serving them one after another). Each
    /// sequence brings its own positions and cache blocks; attention stays per sequence.
    /// Returns the logits asked for, sequence by sequence: `(rows, vocab)`.
    pub fn forward_batch<'s>(
        &self,
        pool: &ThreadPool,
        seqs: &[SeqChunk<'_>],
        kv: &mut KvCache,
        st: &'s mut State,
    ) -> Result<&'s [f32]> {
        self.forward_batch_lora(pool, seqs, &[], kv, st)
    }

    /// [`Llama::forward_batch`] where sequence `i` runs with adapter `adapters[i]` (`None`:
    /// the base model). `adapters` is empty (no adapter anywhere) or one per sequence. Each
    /// row's update depends only on its own input and adapter, so a sequence gets the same
    /// logits batched with any others as alone.
    pub fn forward_batch_lora<'s>(
        &self,
        pool: &ThreadPool,
        seqs: &[SeqChunk<'_>],
        adapters: &[Option<&Adapter>],
        kv: &mut KvCache,
        st: &'s mut State,
    ) -> Result<&'s [f32]> {
        let c = &self.config;
        if !adapters.is_empty() && adapters.len() != seqs.len() {
            return Err(ModelError::Invalid(format!(
                "{} adapters for {} sequences",
                adapters.len(),
                seqs.len()
            )));
        }
        if let Some(a) = adapters
            .iter()
            .flatten()
            .find(|a| a.layers.len() != c.n_layers)
        {
            return Err(ModelError::Invalid(format!(
                "an adapter of {} layers on a model of {}",
                a.layers.len(),
                c.n_layers
            )));
        }
        let n: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        if seqs.is_empty() || n == 0 || n > st.n_max {
            return Err(ModelError::Invalid(format!(
                "{n} tokens in one call (1..={} allowed)",
                st.n_max
            )));
        }
        if pool.n_threads() > st.threads {
            return Err(ModelError::Invalid(
                "thread pool larger than the state".into(),
            ));
        }
        st.rows.clear();
        st.items.clear();
        let mut out_rows = 0;
        for (si, s) in seqs.iter().enumerate() {
            let end = s.pos0 + s.tokens.len();
            if s.tokens.is_empty() || end > st.ctx || end > s.blocks.len() * KV_BLOCK {
                return Err(ModelError::Invalid(format!(
                    "sequence {si}: positions {}..{end} exceed its context ({} positions, {} blocks)",
                    s.pos0,
                    st.ctx,
                    s.blocks.len()
                )));
            }
            if let Some(&b) = s.blocks[..end.div_ceil(KV_BLOCK)]
                .iter()
                .find(|&&b| b as usize >= kv.n_blocks())
            {
                return Err(ModelError::Invalid(format!(
                    "sequence {si}: block {b} is outside the cache ({} blocks)",
                    kv.n_blocks()
                )));
            }
            if let Some(&t) = s.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
                return Err(ModelError::Invalid(format!(
                    "token id {t} is outside the vocabulary ({})",
                    c.vocab_size
                )));
            }
            let row0 = st.rows.last().map_or(0, |r: &(usize, usize)| r.0 + r.1);
            st.rows.push((row0, s.tokens.len()));
            for b in 0..s.tokens.len().div_ceil(ATT_BLOCK) {
                st.items.push((si, b * ATT_BLOCK));
            }
            out_rows += match s.logits {
                Logits::None => 0,
                Logits::Last => 1,
                Logits::All => s.tokens.len(),
            };
        }
        let (dim, qd, kvd, ffn) = (c.dim, c.q_dim(), c.kv_dim(), c.ffn_dim);
        let w = &self.weights;

        for (si, s) in seqs.iter().enumerate() {
            let row0 = st.rows[si].0;
            for (i, &t) in s.tokens.iter().enumerate() {
                let r = row0 + i;
                w.tok_embeddings
                    .row_f32(t as usize, &mut st.x[r * dim..(r + 1) * dim])?; // (n, dim)
                st.slots[r] = slot(s.blocks, s.pos0 + i);
                self.rope_row(s.pos0 + i, r, st);
            }
        }

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
            if !adapters.is_empty() {
                let lo = Lora {
                    pool,
                    l,
                    adapters,
                    rows: &st.rows,
                };
                lo.apply(Proj::Q, &st.xb, dim, &mut st.q, qd, &mut st.lora)?; // (n, n_heads * head_dim)
                lo.apply(Proj::K, &st.xb, dim, &mut st.k, kvd, &mut st.lora)?; // (n, n_kv_heads * head_dim)
                lo.apply(Proj::V, &st.xb, dim, &mut st.v, kvd, &mut st.lora)?; // (n, n_kv_heads * head_dim)
            }
            add_bias(&mut st.q[..n * qd], layer.bq.as_deref()); // (n, n_heads * head_dim)
            add_bias(&mut st.k[..n * kvd], layer.bk.as_deref()); // (n, n_kv_heads * head_dim)
            add_bias(&mut st.v[..n * kvd], layer.bv.as_deref()); // (n, n_kv_heads * head_dim)
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
            for r in 0..n {
                kv.store(
                    l,
                    st.slots[r],
                    &st.k[r * kvd..(r + 1) * kvd],
                    &st.v[r * kvd..(r + 1) * kvd],
                )?;
            }
            self.attention(pool, l, seqs, kv, st); // (n, n_heads * head_dim)
            linear(pool, &layer.wo, &st.att, n, &mut st.xb, &mut st.acts)?; // (n, dim)
            if !adapters.is_empty() {
                let lo = Lora {
                    pool,
                    l,
                    adapters,
                    rows: &st.rows,
                };
                lo.apply(Proj::O, &st.att, qd, &mut st.xb, dim, &mut st.lora)?; // (n, dim)
            }
            add(&mut st.x[..n * dim], &st.xb[..n * dim]); // (n, dim)

            rmsnorm(
                &mut st.xb[..n * dim],
                &st.x[..n * dim],
                &layer.ffn_norm,
                c.norm_eps,
            ); // (n, dim)
            linear(pool, &layer.w1, &st.xb, n, &mut st.hb, &mut st.acts)?; // (n, ffn_dim)
            linear(pool, &layer.w3, &st.xb, n, &mut st.hb2, &mut st.acts)?; // (n, ffn_dim)
            if !adapters.is_empty() {
                let lo = Lora {
                    pool,
                    l,
                    adapters,
                    rows: &st.rows,
                };
                lo.apply(Proj::Gate, &st.xb, dim, &mut st.hb, ffn, &mut st.lora)?; // (n, ffn_dim)
                lo.apply(Proj::Up, &st.xb, dim, &mut st.hb2, ffn, &mut st.lora)?; // (n, ffn_dim)
            }
            swiglu(&mut st.hb[..n * ffn], &st.hb2[..n * ffn]); // (n, ffn_dim)
            linear(pool, &layer.w2, &st.hb, n, &mut st.xb, &mut st.acts)?; // (n, dim)
            if !adapters.is_empty() {
                let lo = Lora {
                    pool,
                    l,
                    adapters,
                    rows: &st.rows,
                };
                lo.apply(Proj::Down, &st.hb, ffn, &mut st.xb, dim, &mut st.lora)?; // (n, dim)
            }
            add(&mut st.x[..n * dim], &st.xb[..n * dim]); // (n, dim)
        }

        // Only the rows whose logits are wanted go through the final norm and output.
        if out_rows == 0 {
            return Ok(&st.logits[..0]);
        }
        if st.logits.len() < out_rows * c.vocab_size {
            // Grows once to the most rows ever asked for (scoring, or the batch size).
            st.logits.resize(out_rows * c.vocab_size, 0.0);
        }
        let mut o = 0;
        for (si, s) in seqs.iter().enumerate() {
            let (row0, len) = st.rows[si];
            let first = match s.logits {
                Logits::None => continue,
                Logits::Last => len - 1,
                Logits::All => 0,
            };
            let k = len - first;
            rmsnorm(
                &mut st.xb[o * dim..(o + k) * dim],
                &st.x[(row0 + first) * dim..(row0 + len) * dim],
                &w.norm,
                c.norm_eps,
            ); // (rows, dim)
            o += k;
        }
        linear(
            pool,
            &w.output,
            &st.xb,
            out_rows,
            &mut st.logits,
            &mut st.acts,
        )?; // (rows, vocab)
        Ok(&st.logits[..out_rows * c.vocab_size])
    }

    /// cos/sin of every pair for row `r` at position `pos`, computed as ggml does (theta
    /// multiplied up in f32) so positions match llama.cpp bit for bit before the
    /// trigonometry.
    fn rope_row(&self, pos: usize, r: usize, st: &mut State) {
        let c = &self.config;
        let half = c.rope_dims / 2;
        let theta_scale = c.rope_theta.powf(-2.0 / c.rope_dims as f32);
        let mut theta = pos as f32;
        for p in 0..half {
            let div = self.weights.rope_freqs.as_ref().map_or(1.0, |f| f[p]);
            let t = theta / div;
            st.cos[r * half + p] = t.cos();
            st.sin[r * half + p] = t.sin();
            theta *= theta_scale;
        }
    }

    /// Causal grouped-query attention of each sequence's new tokens over its cache blocks.
    ///
    /// A work item is one KV head and a block of up to `ATT_BLOCK` new tokens of one
    /// sequence, i.e. up to `ATT_BLOCK * n_rep` query rows. Keys and values are converted to
    /// f32 once per tile of 16 positions (one cache block) and used by every query row of the
    /// item (`qk_tile`, `pv_tile`); the causal mask is applied in the softmax. Items are
    /// spread over the pool; each thread has its own buffers.
    fn attention(
        &self,
        pool: &ThreadPool,
        l: usize,
        seqs: &[SeqChunk<'_>],
        kv: &KvCache,
        st: &mut State,
    ) {
        let c = &self.config;
        let (hd, qd, n_rep, ctx) = (c.head_dim, c.q_dim(), c.n_rep(), st.ctx);
        let rows = ATT_BLOCK * n_rep;
        let scale = 1.0 / (hd as f32).sqrt();
        let n_items = st.items.len() * c.n_kv_heads;
        let n: usize = st.rows.last().map_or(0, |r| r.0 + r.1);
        let per_thread = att_scratch_len(rows, hd);
        let (q, items, seq_rows) = (&st.q, &st.items, &st.rows);
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
                let ((si, i0), kvh) = (items[item / c.n_kv_heads], item % c.n_kv_heads);
                let (seq, (row0, len)) = (&seqs[si], seq_rows[si]);
                let (pos0, blocks) = (seq.pos0, seq.blocks);
                let i1 = (i0 + ATT_BLOCK).min(len);
                let nq = (i1 - i0) * n_rep; // query row (i - i0) * n_rep + r is head kvh * n_rep + r of token i
                let h0 = kvh * n_rep;
                for i in i0..i1 {
                    qbuf[(i - i0) * n_rep * hd..][..n_rep * hd]
                        .copy_from_slice(&q[(row0 + i) * qd + h0 * hd..][..n_rep * hd]);
                }
                let longest = pos0 + i1; // token i sees positions 0..=pos0+i
                if i1 - i0 == 1 && kv.kv_type() == KvType::F16 {
                    // One new token (decoding): its n_rep query rows read each f16 key and
                    // value row in place; converting whole tiles only pays off when a block
                    // of tokens shares them.
                    let qrow = &q[(row0 + i0) * qd + h0 * hd..][..n_rep * hd];
                    let stride = kv.kv_dim();
                    let mut t0 = 0;
                    while t0 < longest {
                        let tl = (longest - t0).min(ATT_TILE);
                        let base = blocks[t0 / KV_BLOCK] as usize * KV_BLOCK;
                        if let Some(k) = kv.keys_f16(l, base, kvh, tl) {
                            qk_rows_f16(qrow, n_rep, hd, k, stride, tl, scale, tsc); // (n_rep, 16)
                        }
                        for r in 0..n_rep {
                            sc[r * ctx + t0..][..tl].copy_from_slice(&tsc[r * ATT_TILE..][..tl]);
                        }
                        t0 += ATT_TILE;
                    }
                    for r in 0..n_rep {
                        softmax_in_place(&mut sc[r * ctx..][..longest]);
                    }
                    obuf[..n_rep * hd].fill(0.0);
                    let mut t0 = 0;
                    while t0 < longest {
                        let tl = (longest - t0).min(ATT_TILE);
                        let base = blocks[t0 / KV_BLOCK] as usize * KV_BLOCK;
                        for r in 0..n_rep {
                            tsc[r * ATT_TILE..][..tl].copy_from_slice(&sc[r * ctx + t0..][..tl]);
                        }
                        if let Some(v) = kv.values_f16(l, base, kvh, tl) {
                            pv_rows_f16(tsc, n_rep, v, stride, tl, hd, obuf); // (n_rep, hd)
                        }
                        t0 += ATT_TILE;
                    }
                    // SAFETY: see above; this item owns att[row0 + i0, kvh * n_rep .. (kvh + 1) * n_rep].
                    unsafe { att.slice_mut((row0 + i0) * qd + h0 * hd, n_rep * hd) }
                        .copy_from_slice(&obuf[..n_rep * hd]);
                    item += nt;
                    continue;
                }
                let mut t0 = 0;
                while t0 < longest {
                    let tl = (longest - t0).min(ATT_TILE);
                    let base = blocks[t0 / KV_BLOCK] as usize * KV_BLOCK;
                    tile.fill(0.0);
                    for j in 0..tl {
                        kv.key_f32(l, base + j, kvh, row);
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
                    softmax_in_place(&mut s[..len]);
                    s[len..].fill(0.0); // causal mask
                }
                obuf[..nq * hd].fill(0.0);
                let mut t0 = 0;
                while t0 < longest {
                    let tl = (longest - t0).min(ATT_TILE);
                    let base = blocks[t0 / KV_BLOCK] as usize * KV_BLOCK;
                    for j in 0..tl {
                        kv.value_f32(l, base + j, kvh, &mut tile[j * hd..(j + 1) * hd]);
                    }
                    for r in 0..nq {
                        tsc[r * ATT_TILE..][..tl].copy_from_slice(&sc[r * ctx + t0..][..tl]);
                    }
                    pv_tile(tsc, nq, tile, tl, hd, obuf); // (nq, hd)
                    t0 += ATT_TILE;
                }
                for i in i0..i1 {
                    // SAFETY: see above; this item owns att[row0 + i, kvh * n_rep .. (kvh + 1) * n_rep].
                    unsafe { att.slice_mut((row0 + i) * qd + h0 * hd, n_rep * hd) }
                        .copy_from_slice(&obuf[(i - i0) * n_rep * hd..][..n_rep * hd]);
                }
                item += nt;
            }
        });
    }
}

/// Softmax of attention scores, the sum in f64.
fn softmax_in_place(s: &mut [f32]) {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for x in s.iter_mut() {
        *x = (*x - max).exp();
        sum += f64::from(*x);
    }
    let inv = (1.0 / sum) as f32;
    s.iter_mut().for_each(|x| *x *= inv);
}

/// Slot of position `pos` of a sequence with cache blocks `blocks`.
#[inline]
fn slot(blocks: &[u32], pos: usize) -> usize {
    blocks[pos / KV_BLOCK] as usize * KV_BLOCK + pos % KV_BLOCK
}

/// Per-thread attention scratch: queries and outputs of an item, a key/value tile, one
/// converted row, and a tile of scores.
fn att_scratch_len(rows: usize, hd: usize) -> usize {
    2 * rows * hd + ATT_TILE * hd + hd + rows * ATT_TILE
}

/// New tokens per attention work item: each key/value row converted to f32 serves this
/// many tokens' queries (times the query heads per KV head).
const ATT_BLOCK: usize = 16;

/// The per-sequence adapters of one layer of a batched call.
struct Lora<'a> {
    pool: &'a ThreadPool,
    l: usize,
    adapters: &'a [Option<&'a Adapter>],
    /// Per sequence: first row, tokens.
    rows: &'a [(usize, usize)],
}

impl Lora<'_> {
    /// `out[r] += scale · (x[r] Aᵀ) Bᵀ` for every row `r` of a sequence whose adapter adapts
    /// projection `p` of this layer (`x` is `(n, inp)`, `out` is `(n, outd)`). Rows are
    /// spread over the pool; each row's result depends only on its row and adapter (same
    /// kernels, same summation order), never on what else is in the batch. `scratch` holds
    /// one `x Aᵀ` row per thread and grows only when a larger rank first appears.
    fn apply(
        &self,
        p: Proj,
        x: &[f32],
        inp: usize,
        out: &mut [f32],
        outd: usize,
        scratch: &mut Vec<f32>,
    ) -> Result<()> {
        let (l, adapters, rows) = (self.l, self.adapters, self.rows);
        let mut n_rows = 0;
        let mut rank = 0;
        for (si, a) in adapters.iter().enumerate() {
            let Some((a, pair)) = a.and_then(|a| Some((a, a.pair(l, p)?))) else {
                continue;
            };
            if pair.a.len() != a.rank * inp || pair.bt().len() != a.rank * outd {
                return Err(ModelError::Invalid(format!(
                    "layer {l} {}: the adapter's matrices do not fit this model",
                    p.hf_name()
                )));
            }
            n_rows += rows[si].1;
            rank = rank.max(a.rank);
        }
        if n_rows == 0 {
            return Ok(());
        }
        let nt = self.pool.n_threads().max(1);
        if scratch.len() < nt * rank {
            scratch.resize(nt * rank, 0.0);
        }
        let outs = SyncSlice::new(out);
        let tmp = SyncSlice::new(&mut scratch[..]);
        let work = |ti: usize, nt: usize| {
            // SAFETY: thread `ti` alone uses its `rank` floats of scratch, and row `r` (taken
            // by exactly one thread: the `k % nt == ti` one) alone writes out[r].
            let t = unsafe { tmp.slice_mut(ti * rank, rank) };
            let mut k = 0;
            for (si, a) in adapters.iter().enumerate() {
                let Some((a, pair)) = a.and_then(|a| Some((a, a.pair(l, p)?))) else {
                    continue;
                };
                let (row0, len) = rows[si];
                for r in row0..row0 + len {
                    if k % nt == ti {
                        let t = &mut t[..a.rank];
                        dot_rows_f32(&x[r * inp..(r + 1) * inp], &pair.a, inp, t); // (rank)
                        let o = unsafe { outs.slice_mut(r * outd, outd) };
                        for (j, &tj) in t.iter().enumerate() {
                            axpy_f32(a.scale * tj, &pair.bt()[j * outd..(j + 1) * outd], o); // (outd)
                        }
                    }
                    k += 1;
                }
            }
        };
        if n_rows > 1 && nt > 1 {
            self.pool.run(&work);
        } else {
            work(0, 1);
        }
        Ok(())
    }
}

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

/// Adds a projection's bias (Qwen2's q/k/v; Llama has none) to every row of `x`.
fn add_bias(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias.filter(|b| !b.is_empty()) {
        for row in x.chunks_exact_mut(b.len()) {
            add(row, b);
        }
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
