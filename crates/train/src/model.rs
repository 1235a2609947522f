//! The Llama training pass: the forward of `model::llama` (Meta's `model.py`) written
//! over [`crate::ops`], saving what each backward needs, then the backward in reverse.
//!
//! ```text
//! x₀  = tok_embeddings[tokens]
//! h   = x + wo · attention(rope(wq · norm(x)), rope(wk · norm(x)), wv · norm(x))
//! x'  = h + w2 · (silu(w1 · norm(h)) * (w3 · norm(h)))
//! out = output · norm(x_L)          (output = tok_embeddings when tied)
//! loss = mean over counted tokens of -log softmax(out)[target]
//! ```
//!
//! With `recompute` (activation checkpointing) only each layer's input is kept; the
//! backward runs the layer's forward again before its backward, so memory holds one
//! layer's activations instead of all of them.

use ferrollama_model::LlamaConfig;
use ferrollama_tensor::ThreadPool;

use crate::Float;
use crate::error::{Result, TrainError};
use crate::ops::attention::Heads;
use crate::ops::rope::RopeTables;
use crate::ops::{add_into, attention, cross_entropy, embedding, matmul, rmsnorm, rope, swiglu};
use crate::params::{LayerParams, Params};

/// One training sequence: `inputs[t]` predicts `targets[t]`, counted in the loss where
/// `counted[t]` (prompt tokens, padding and system text are not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub counted: Vec<bool>,
}

impl Sequence {
    /// Next-token prediction over `tokens`, every target counted.
    pub fn causal(tokens: &[u32]) -> Sequence {
        let n = tokens.len().saturating_sub(1);
        Sequence {
            inputs: tokens[..n].to_vec(),
            targets: tokens[1..].to_vec(),
            counted: vec![true; n],
        }
    }

    pub fn n_counted(&self) -> usize {
        self.counted.iter().filter(|&&c| c).count()
    }
}

/// What the pass needs of the model beyond its tensors.
#[derive(Debug, Clone)]
pub struct Shape {
    pub dim: usize,
    pub heads: Heads,
    pub ffn_dim: usize,
    pub vocab: usize,
    pub eps: f64,
    pub rope_dims: usize,
    pub theta: f32,
    /// RoPE frequency divisors per pair (Llama 3.1 scaling); empty for none.
    pub rope_divisors: Vec<f32>,
}

impl Shape {
    pub fn of(cfg: &LlamaConfig) -> Shape {
        Shape {
            dim: cfg.dim,
            heads: Heads {
                n_heads: cfg.n_heads,
                n_kv_heads: cfg.n_kv_heads,
                head_dim: cfg.head_dim,
            },
            ffn_dim: cfg.ffn_dim,
            vocab: cfg.vocab_size,
            eps: f64::from(cfg.norm_eps),
            rope_dims: cfg.rope_dims,
            theta: cfg.rope_theta,
            rope_divisors: cfg
                .rope_scaling
                .map(|s| s.freq_divisors(cfg.rope_dims, cfg.rope_theta))
                .unwrap_or_default(),
        }
    }
    fn q_width(&self) -> usize {
        self.heads.n_heads * self.heads.head_dim
    }
    fn kv_width(&self) -> usize {
        self.heads.n_kv_heads * self.heads.head_dim
    }
}

/// One layer's saved activations for a sequence of `T` tokens.
#[derive(Debug, Default)]
struct LayerActs<F> {
    xn: Vec<F>,    // (T, dim) attention_norm(x)
    rstd1: Vec<F>, // (T)
    q: Vec<F>,     // (T, q_width) after RoPE
    k: Vec<F>,     // (T, kv_width) after RoPE
    v: Vec<F>,     // (T, kv_width)
    probs: Vec<F>, // (n_heads, T, T)
    att: Vec<F>,   // (T, q_width) attention output
    h: Vec<F>,     // (T, dim) x + wo · att
    hn: Vec<F>,    // (T, dim) ffn_norm(h)
    rstd2: Vec<F>, // (T)
    a: Vec<F>,     // (T, ffn) w1 · hn
    b: Vec<F>,     // (T, ffn) w3 · hn
    g: Vec<F>,     // (T, ffn) silu(a) * b
}

fn resize<F: Float>(v: &mut Vec<F>, n: usize) {
    v.clear();
    v.resize(n, F::ZERO);
}

/// `x_out = block(x)`, saving the activations into `s`.
fn layer_forward<F: Float>(
    pool: &ThreadPool,
    sh: &Shape,
    l: &LayerParams<F>,
    tab: &RopeTables<F>,
    x: &[F],
    s: &mut LayerActs<F>,
    x_out: &mut [F],
) {
    let (d, qw, kw, ff) = (sh.dim, sh.q_width(), sh.kv_width(), sh.ffn_dim);
    let t = x.len() / d;
    let hd = sh.heads.head_dim;
    let eps = F::from_f64(sh.eps);
    resize(&mut s.xn, t * d);
    resize(&mut s.rstd1, t);
    rmsnorm::forward(&mut s.xn, &mut s.rstd1, x, &l.attention_norm, eps); // (T, dim)
    let mut tmp = vec![F::ZERO; t * qw.max(kw)];
    resize(&mut s.q, t * qw);
    matmul::forward(pool, &mut tmp[..t * qw], &s.xn, &l.wq, d, qw); // (T, q_width)
    rope::forward(&mut s.q, &tmp[..t * qw], qw, hd, tab);
    resize(&mut s.k, t * kw);
    matmul::forward(pool, &mut tmp[..t * kw], &s.xn, &l.wk, d, kw); // (T, kv_width)
    rope::forward(&mut s.k, &tmp[..t * kw], kw, hd, tab);
    resize(&mut s.v, t * kw);
    matmul::forward(pool, &mut s.v, &s.xn, &l.wv, d, kw); // (T, kv_width)
    resize(&mut s.probs, sh.heads.n_heads * t * t);
    resize(&mut s.att, t * qw);
    attention::forward(pool, &mut s.att, &mut s.probs, &s.q, &s.k, &s.v, sh.heads); // (T, q_width)
    resize(&mut s.h, t * d);
    matmul::forward(pool, &mut s.h, &s.att, &l.wo, qw, d); // (T, dim)
    add_into(&mut s.h, x);
    resize(&mut s.hn, t * d);
    resize(&mut s.rstd2, t);
    rmsnorm::forward(&mut s.hn, &mut s.rstd2, &s.h, &l.ffn_norm, eps); // (T, dim)
    resize(&mut s.a, t * ff);
    resize(&mut s.b, t * ff);
    resize(&mut s.g, t * ff);
    matmul::forward(pool, &mut s.a, &s.hn, &l.w1, d, ff); // (T, ffn)
    matmul::forward(pool, &mut s.b, &s.hn, &l.w3, d, ff); // (T, ffn)
    swiglu::forward(&mut s.g, &s.a, &s.b); // (T, ffn)
    matmul::forward(pool, x_out, &s.g, &l.w2, ff, d); // (T, dim)
    add_into(x_out, &s.h);
}

/// Given `dout` (the gradient of the block's output), adds the block's parameter
/// gradients into `gl` and writes the gradient of its input into `dx`.
#[allow(clippy::too_many_arguments)]
fn layer_backward<F: Float>(
    pool: &ThreadPool,
    sh: &Shape,
    l: &LayerParams<F>,
    gl: &mut LayerParams<F>,
    tab: &RopeTables<F>,
    x: &[F],
    s: &LayerActs<F>,
    dout: &[F],
    dx: &mut [F],
) {
    let (d, qw, kw, ff) = (sh.dim, sh.q_width(), sh.kv_width(), sh.ffn_dim);
    let t = x.len() / d;
    let hd = sh.heads.head_dim;
    // x' = h + w2 · g
    let mut dh = dout.to_vec(); // (T, dim)
    let mut dg = vec![F::ZERO; t * ff];
    matmul::backward(pool, Some(&mut dg), &mut gl.w2, dout, &s.g, &l.w2, ff, d);
    let mut da = vec![F::ZERO; t * ff];
    let mut db = vec![F::ZERO; t * ff];
    swiglu::backward(&mut da, &mut db, &dg, &s.a, &s.b);
    let mut dhn = vec![F::ZERO; t * d];
    matmul::backward(pool, Some(&mut dhn), &mut gl.w1, &da, &s.hn, &l.w1, d, ff);
    matmul::backward(pool, Some(&mut dhn), &mut gl.w3, &db, &s.hn, &l.w3, d, ff);
    rmsnorm::backward(&mut dh, &mut gl.ffn_norm, &dhn, &s.h, &l.ffn_norm, &s.rstd2);
    // h = x + wo · att
    dx.copy_from_slice(&dh);
    let mut datt = vec![F::ZERO; t * qw];
    matmul::backward(pool, Some(&mut datt), &mut gl.wo, &dh, &s.att, &l.wo, qw, d);
    let mut dq = vec![F::ZERO; t * qw];
    let mut dk = vec![F::ZERO; t * kw];
    let mut dv = vec![F::ZERO; t * kw];
    attention::backward(
        pool, &mut dq, &mut dk, &mut dv, &datt, &s.q, &s.k, &s.v, &s.probs, sh.heads,
    );
    let mut dq0 = vec![F::ZERO; t * qw];
    let mut dk0 = vec![F::ZERO; t * kw];
    rope::backward(&mut dq0, &dq, qw, hd, tab);
    rope::backward(&mut dk0, &dk, kw, hd, tab);
    let mut dxn = vec![F::ZERO; t * d];
    matmul::backward(pool, Some(&mut dxn), &mut gl.wq, &dq0, &s.xn, &l.wq, d, qw);
    matmul::backward(pool, Some(&mut dxn), &mut gl.wk, &dk0, &s.xn, &l.wk, d, kw);
    matmul::backward(pool, Some(&mut dxn), &mut gl.wv, &dv, &s.xn, &l.wv, d, kw);
    rmsnorm::backward(
        dx,
        &mut gl.attention_norm,
        &dxn,
        x,
        &l.attention_norm,
        &s.rstd1,
    );
}

/// Checks a sequence against the model's vocabulary and context.
pub fn check_sequence(sh: &Shape, s: &Sequence) -> Result<()> {
    let n = s.inputs.len();
    if n == 0 || s.targets.len() != n || s.counted.len() != n {
        return Err(TrainError::Data(format!(
            "a sequence needs as many inputs, targets and loss flags, at least one ({n}, {}, {})",
            s.targets.len(),
            s.counted.len()
        )));
    }
    if let Some(&bad) = s
        .inputs
        .iter()
        .chain(&s.targets)
        .find(|&&id| id as usize >= sh.vocab)
    {
        return Err(TrainError::Data(format!(
            "token id {bad} is outside the model's vocabulary of {}",
            sh.vocab
        )));
    }
    Ok(())
}

/// Options of one forward and backward.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassOptions {
    /// Activation checkpointing: keep only layer inputs, recompute in the backward.
    pub recompute: bool,
}

/// Runs forward and backward over `batch`, adds `scale · ∂(Σ loss)/∂θ` into `grads`
/// (`scale` = 1 / the counted tokens the caller averages over) and returns the summed
/// loss of the counted tokens (not yet averaged).
pub fn forward_backward<F: Float>(
    pool: &ThreadPool,
    sh: &Shape,
    p: &Params<F>,
    grads: &mut Params<F>,
    batch: &[Sequence],
    scale: F,
    opts: PassOptions,
) -> Result<F> {
    let mut total = F::ZERO;
    for s in batch {
        check_sequence(sh, s)?;
        total += sequence_pass(pool, sh, p, Some(grads), s, scale, opts);
    }
    Ok(total)
}

/// The summed loss of the counted tokens of `batch`, forward only.
pub fn loss<F: Float>(
    pool: &ThreadPool,
    sh: &Shape,
    p: &Params<F>,
    batch: &[Sequence],
) -> Result<F> {
    let mut total = F::ZERO;
    for s in batch {
        check_sequence(sh, s)?;
        total += sequence_pass(pool, sh, p, None, s, F::ONE, PassOptions::default());
    }
    Ok(total)
}

fn sequence_pass<F: Float>(
    pool: &ThreadPool,
    sh: &Shape,
    p: &Params<F>,
    grads: Option<&mut Params<F>>,
    s: &Sequence,
    scale: F,
    opts: PassOptions,
) -> F {
    let (d, v) = (sh.dim, sh.vocab);
    let t = s.inputs.len();
    let n_layers = p.layers.len();
    let tab = RopeTables::<F>::new(t, sh.rope_dims, sh.theta, &sh.rope_divisors);
    let keep_all = grads.is_some() && !opts.recompute;
    // xs[l] is layer l's input; xs[n_layers] the last block's output.
    let mut xs: Vec<Vec<F>> = vec![vec![F::ZERO; t * d]; n_layers + 1];
    embedding::forward(&mut xs[0], &s.inputs, &p.tok_embeddings, d); // (T, dim)
    let mut acts: Vec<LayerActs<F>> = Vec::new();
    let mut scratch = LayerActs::default();
    for (i, l) in p.layers.iter().enumerate() {
        let (before, after) = xs.split_at_mut(i + 1);
        if keep_all {
            acts.push(LayerActs::default());
        }
        let sa = if keep_all { &mut acts[i] } else { &mut scratch };
        layer_forward(pool, sh, l, &tab, &before[i], sa, &mut after[0]);
    }
    let out_w = p.output.as_ref().unwrap_or(&p.tok_embeddings);
    let mut xf = vec![F::ZERO; t * d];
    let mut rstd = vec![F::ZERO; t];
    let eps = F::from_f64(sh.eps);
    rmsnorm::forward(&mut xf, &mut rstd, &xs[n_layers], &p.norm, eps); // (T, dim)
    let mut logits = vec![F::ZERO; t * v];
    matmul::forward(pool, &mut logits, &xf, out_w, d, v); // (T, vocab)
    let loss = cross_entropy::forward(&logits, &s.targets, &s.counted, v);
    let Some(g) = grads else { return loss };

    let mut dlogits = vec![F::ZERO; t * v];
    cross_entropy::backward(&mut dlogits, &logits, &s.targets, &s.counted, v, scale);
    let mut dxf = vec![F::ZERO; t * d];
    match g.output.as_mut() {
        Some(go) => matmul::backward(pool, Some(&mut dxf), go, &dlogits, &xf, out_w, d, v),
        None => matmul::backward(
            pool,
            Some(&mut dxf),
            &mut g.tok_embeddings,
            &dlogits,
            &xf,
            out_w,
            d,
            v,
        ),
    }
    let mut dx = vec![F::ZERO; t * d];
    rmsnorm::backward(&mut dx, &mut g.norm, &dxf, &xs[n_layers], &p.norm, &rstd);
    let mut dprev = vec![F::ZERO; t * d];
    for i in (0..n_layers).rev() {
        let l = &p.layers[i];
        let sa = if keep_all {
            &acts[i]
        } else {
            // Recompute this layer's activations from its saved input.
            let mut out = vec![F::ZERO; t * d];
            layer_forward(pool, sh, l, &tab, &xs[i], &mut scratch, &mut out);
            &scratch
        };
        layer_backward(
            pool,
            sh,
            l,
            &mut g.layers[i],
            &tab,
            &xs[i],
            sa,
            &dx,
            &mut dprev,
        );
        std::mem::swap(&mut dx, &mut dprev);
    }
    embedding::backward(&mut g.tok_embeddings, &dx, &s.inputs, d);
    loss
}
