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
use crate::base::{Base, BaseLayer, Projection};
use crate::distill::SoftTargets;
use crate::error::{Result, TrainError};
use crate::float::Layout;
use crate::lora::{Lora, LoraPair, Target};
use crate::ops::attention::Heads;
use crate::ops::dropout::{Mask, mix};
use crate::ops::rope::RopeTables;
use crate::ops::{
    add_into_par, attention, cross_entropy, embedding, matmul, rmsnorm, rope, soft_target, swiglu,
};
use crate::params::{LayerParams, Params};
use crate::profile::{Phase, span};

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
    probs: Vec<F>, // (n_heads, causal row blocks): attention::probs_len
    att: Vec<F>,   // (T, q_width) attention output
    h: Vec<F>,     // (T, dim) x + wo · att
    hn: Vec<F>,    // (T, dim) ffn_norm(h)
    rstd2: Vec<F>, // (T)
    a: Vec<F>,     // (T, ffn) w1 · hn
    b: Vec<F>,     // (T, ffn) w3 · hn
    g: Vec<F>,     // (T, ffn) silu(a) * b
    /// With an adapter: `x Aᵀ (T, rank)` of each adapted projection, by `Target`.
    xa: [Vec<F>; 7],
}

/// Makes `v` `n` long. A buffer kept from an earlier pass with that length keeps its
/// contents instead of being zeroed again: every user of `resize` overwrites it (the
/// ops' `forward(out, ..)` convention).
fn resize<F: Float>(v: &mut Vec<F>, n: usize) {
    if v.len() != n {
        v.clear();
        v.resize(n, F::ZERO);
    }
}

/// What a pass allocates in proportion to the model (layer inputs, saved activations,
/// the logits), kept on the thread for its next pass: a training step then touches
/// memory it already owns instead of faulting in ~1 GiB of fresh pages (SmolLM2-135M
/// with LoRA at 512 tokens), which the kernel zeroes on one core. The memory held is
/// the peak the pass reached anyway; [`release_pass_buffers`] gives it back.
#[derive(Debug, Default)]
struct PassBuffers<F: Float> {
    xs: Vec<Vec<F>>,
    acts: Vec<LayerActs<F>>,
    scratch: LayerActs<F>,
    logits: Vec<F>,
    work: Work<F>,
}

/// A pass's temporaries, kept with [`PassBuffers`] for the same reason: allocated afresh
/// per layer they faulted ~1 GB of pages in per step (SmolLM2 at 512 tokens), the kernel
/// zeroing each page on the faulting thread.
#[derive(Debug, Default)]
struct Work<F: Float> {
    att: attention::Scratch<F>,
    /// The projections of q and k before RoPE.
    pre_rope: Vec<F>,
    dh: Vec<F>,
    dg: Vec<F>,
    da: Vec<F>,
    db: Vec<F>,
    dhn: Vec<F>,
    datt: Vec<F>,
    dq: Vec<F>,
    dk: Vec<F>,
    dv: Vec<F>,
    dq0: Vec<F>,
    dk0: Vec<F>,
    dxn: Vec<F>,
    /// The final norm's output and its reciprocal RMS, its gradient, the residual
    /// stream's gradient in and out of a layer, a recomputed layer's output.
    xf: Vec<F>,
    rstd: Vec<F>,
    dxf: Vec<F>,
    dx: Vec<F>,
    dprev: Vec<F>,
    out: Vec<F>,
    lora: LoraScratch<F>,
}

/// The adapter path's temporaries (kept for the reason [`Work`] is): the scaled
/// `s · x Aᵀ` and its gradient, and under dropout the dropped input and its gradient.
#[derive(Debug, Default)]
struct LoraScratch<F: Float> {
    xs: Vec<F>,
    dxs: Vec<F>,
    xd: Vec<F>,
    dxd: Vec<F>,
}

thread_local! {
    static SPARE: std::cell::RefCell<Option<Box<dyn std::any::Any>>> =
        const { std::cell::RefCell::new(None) };
}

fn take_buffers<F: Float>() -> PassBuffers<F> {
    SPARE
        .with_borrow_mut(|s| s.take())
        .and_then(|b| b.downcast::<PassBuffers<F>>().ok())
        .map(|b| *b)
        .unwrap_or_default()
}

fn keep_buffers<F: Float>(b: PassBuffers<F>) {
    SPARE.with_borrow_mut(|s| *s = Some(Box::new(b)));
}

/// Frees the buffers the last training pass on this thread kept for the next one, and
/// the f32 GEMM's packing storage (a long-running process that is done training).
pub fn release_pass_buffers() {
    SPARE.with_borrow_mut(|s| *s = None);
    crate::float::release_gemm_buffers();
}

/// One layer's LoRA matrices (by [`Target`] index), the update's scale, and the layer's
/// dropout mask while training with dropout.
#[derive(Clone, Copy)]
struct LayerLora<'a, F> {
    pairs: &'a [Option<LoraPair<F>>; 7],
    scale: F,
    drop: Option<Mask>,
}

/// One adapted projection: its matrices, the update's scale and its input's dropout mask.
#[derive(Clone, Copy)]
struct Adapted<'a, F> {
    pair: &'a LoraPair<F>,
    scale: F,
    drop: Option<Mask>,
}

/// `out (T, oc) = x (T, c) · wᵀ`, plus `scale · (x Aᵀ) Bᵀ` with an adapter; `xa` keeps
/// `x Aᵀ (T, r)` for the backward.
#[allow(clippy::too_many_arguments)]
fn proj_forward<F: Float, M: Projection<F> + ?Sized>(
    pool: &ThreadPool,
    out: &mut [F],
    x: &[F],
    w: &M,
    lora: Option<Adapted<'_, F>>,
    xa: &mut Vec<F>,
    ls: &mut LoraScratch<F>,
    c: usize,
    oc: usize,
) {
    let _s = span(pool, Phase::FwdProj);
    w.forward(pool, out, x, c, oc);
    if let Some(Adapted {
        pair: l,
        scale,
        drop,
    }) = lora
    {
        let r = l.a.len() / c;
        let t = x.len() / c;
        resize(xa, t * r);
        // The adapter reads drop(x) (T, c) under dropout, x otherwise.
        let x = match drop {
            Some(m) => {
                resize(&mut ls.xd, x.len());
                m.apply(pool, &mut ls.xd, x);
                &ls.xd[..]
            }
            None => x,
        };
        matmul::forward(pool, xa, x, &l.a, c, r); // (T, r)
        scaled(&mut ls.xs, xa, scale);
        F::gemm(pool, out, &ls.xs, &l.b, Layout::Rows, r, oc, true); // += s (x Aᵀ) Bᵀ
    }
}

/// The backward of [`proj_forward`]: `dx += dy · w` (+ the adapter's path; `dx = ...`
/// when `first`, whatever it held), `dw += dyᵀ x` where the base is trained, `dA`, `dB`
/// where an adapter is.
#[allow(clippy::too_many_arguments)]
fn proj_backward<F: Float, M: Projection<F> + ?Sized>(
    pool: &ThreadPool,
    first: bool,
    dx: &mut [F],
    dw: Option<&mut Vec<F>>,
    dlora: Option<&mut LoraPair<F>>,
    dout: &[F],
    x: &[F],
    w: &M,
    lora: Option<Adapted<'_, F>>,
    xa: &[F],
    ls: &mut LoraScratch<F>,
    c: usize,
    oc: usize,
) {
    {
        let _s = span(pool, Phase::BwdProjDx);
        if first {
            w.backward_input_into(pool, dx, dout, c, oc);
        } else {
            w.backward_input(pool, dx, dout, c, oc);
        }
    }
    {
        let _s = span(pool, Phase::BwdProjDw);
        weight_grad(pool, dw.map(|v| v.as_mut_slice()), dout, x, c, oc);
    }
    if let (
        Some(Adapted {
            pair: l,
            scale,
            drop,
        }),
        Some(dl),
    ) = (lora, dlora)
    {
        let _s = span(pool, Phase::BwdProjDx);
        let r = l.a.len() / c;
        let t = x.len() / c;
        // y += xs Bᵀ with xs = s · xa: dB += doutᵀ xs, dxs = dout B.
        let LoraScratch { xs, dxs, xd, dxd } = ls;
        scaled(xs, xa, scale);
        // `matmul::backward` accumulates into dxs: it must start at zero.
        dxs.clear();
        dxs.resize(t * r, F::ZERO);
        matmul::backward(pool, Some(dxs), Some(&mut dl.b), dout, xs, &l.b, r, oc);
        // xa = x Aᵀ: dA += dxaᵀ x, dx += dxa A, with dxa = s · dxs.
        dxs.iter_mut().for_each(|v| *v *= scale);
        match drop {
            None => matmul::backward(pool, Some(dx), Some(&mut dl.a), dxs, x, &l.a, c, r),
            Some(m) => {
                // xa = drop(x) Aᵀ: dA += dxaᵀ drop(x) (the forward's mask, drawn again),
                // dx += drop'(dxa A).
                resize(xd, x.len());
                m.apply(pool, xd, x);
                dxd.clear();
                dxd.resize(x.len(), F::ZERO);
                matmul::backward(pool, Some(dxd), Some(&mut dl.a), dxs, xd, &l.a, c, r);
                m.backward(pool, dx, dxd);
            }
        }
    }
}

/// `out = scale · x`, reusing `out`'s allocation.
fn scaled<F: Float>(out: &mut Vec<F>, x: &[F], scale: F) {
    out.clear();
    out.extend(x.iter().map(|&v| v * scale));
}

/// `dw (OC, C) += doutᵀ · x` where the weight is trained (it needs no `W`).
fn weight_grad<F: Float>(
    pool: &ThreadPool,
    dw: Option<&mut [F]>,
    dout: &[F],
    x: &[F],
    c: usize,
    oc: usize,
) {
    if let Some(dw) = dw {
        matmul::backward(pool, None, Some(dw), dout, x, &[], c, oc);
    }
}

fn pick<'a, F>(l: Option<LayerLora<'a, F>>, t: Target) -> Option<Adapted<'a, F>>
where
    F: Copy,
{
    let l = l?;
    Some(Adapted {
        pair: l.pairs[t as usize].as_ref()?,
        scale: l.scale,
        drop: l.drop.map(|m| m.salted(t as u64)),
    })
}

/// `x_out = block(x)`, saving the activations into `s`.
#[allow(clippy::too_many_arguments)]
fn layer_forward<F: Float, L: BaseLayer<F> + ?Sized>(
    pool: &ThreadPool,
    sh: &Shape,
    l: &L,
    lora: Option<LayerLora<'_, F>>,
    tab: &RopeTables<F>,
    x: &[F],
    s: &mut LayerActs<F>,
    x_out: &mut [F],
    w: &mut Work<F>,
) {
    let (d, qw, kw, ff) = (sh.dim, sh.q_width(), sh.kv_width(), sh.ffn_dim);
    let t = x.len() / d;
    let hd = sh.heads.head_dim;
    let eps = F::from_f64(sh.eps);
    let xa = &mut s.xa;
    let [wq, wk, wv, wo, w1, w3, w2] = Target::ALL.map(|tg| l.proj(tg));
    resize(&mut s.xn, t * d);
    resize(&mut s.rstd1, t);
    {
        let _s = span(pool, Phase::FwdElementwise);
        rmsnorm::forward(pool, &mut s.xn, &mut s.rstd1, x, l.attention_norm(), eps); // (T, dim)
    }
    resize(&mut w.pre_rope, t * qw.max(kw));
    let tmp = &mut w.pre_rope;
    resize(&mut s.q, t * qw);
    let q = pick(lora, Target::Q);
    proj_forward(
        pool,
        &mut tmp[..t * qw],
        &s.xn,
        wq,
        q,
        &mut xa[0],
        &mut w.lora,
        d,
        qw,
    ); // (T, q_width)
    {
        let _s = span(pool, Phase::FwdElementwise);
        rope::forward(pool, &mut s.q, &tmp[..t * qw], qw, hd, tab);
    }
    resize(&mut s.k, t * kw);
    let k = pick(lora, Target::K);
    proj_forward(
        pool,
        &mut tmp[..t * kw],
        &s.xn,
        wk,
        k,
        &mut xa[1],
        &mut w.lora,
        d,
        kw,
    ); // (T, kv_width)
    {
        let _s = span(pool, Phase::FwdElementwise);
        rope::forward(pool, &mut s.k, &tmp[..t * kw], kw, hd, tab);
    }
    resize(&mut s.v, t * kw);
    let v = pick(lora, Target::V);
    proj_forward(pool, &mut s.v, &s.xn, wv, v, &mut xa[2], &mut w.lora, d, kw); // (T, kv_width)
    resize(&mut s.probs, attention::probs_len(t, sh.heads));
    resize(&mut s.att, t * qw);
    {
        let _s = span(pool, Phase::FwdAttention);
        attention::forward_with(
            pool,
            &mut w.att,
            &mut s.att,
            &mut s.probs,
            &s.q,
            &s.k,
            &s.v,
            sh.heads,
        ); // (T, q_width)
    }
    resize(&mut s.h, t * d);
    let o = pick(lora, Target::O);
    proj_forward(
        pool,
        &mut s.h,
        &s.att,
        wo,
        o,
        &mut xa[3],
        &mut w.lora,
        qw,
        d,
    ); // (T, dim)
    {
        let _s = span(pool, Phase::FwdElementwise);
        add_into_par(pool, &mut s.h, x);
    }
    resize(&mut s.hn, t * d);
    resize(&mut s.rstd2, t);
    {
        let _s = span(pool, Phase::FwdElementwise);
        rmsnorm::forward(pool, &mut s.hn, &mut s.rstd2, &s.h, l.ffn_norm(), eps); // (T, dim)
    }
    resize(&mut s.a, t * ff);
    resize(&mut s.b, t * ff);
    resize(&mut s.g, t * ff);
    let gate = pick(lora, Target::Gate);
    proj_forward(
        pool,
        &mut s.a,
        &s.hn,
        w1,
        gate,
        &mut xa[4],
        &mut w.lora,
        d,
        ff,
    ); // (T, ffn)
    let up = pick(lora, Target::Up);
    proj_forward(
        pool,
        &mut s.b,
        &s.hn,
        w3,
        up,
        &mut xa[5],
        &mut w.lora,
        d,
        ff,
    ); // (T, ffn)
    {
        let _s = span(pool, Phase::FwdElementwise);
        swiglu::forward(pool, &mut s.g, &s.a, &s.b); // (T, ffn)
    }
    let down = pick(lora, Target::Down);
    proj_forward(pool, x_out, &s.g, w2, down, &mut xa[6], &mut w.lora, ff, d); // (T, dim)
    {
        let _s = span(pool, Phase::FwdElementwise);
        add_into_par(pool, x_out, &s.h);
    }
}

/// Where a layer's gradients go: the base's tensors (full fine-tuning), the adapter's,
/// or both. `None` skips that gradient entirely (a frozen base gets no `dW`).
struct LayerGrads<'a, F> {
    base: Option<&'a mut LayerParams<F>>,
    lora: Option<&'a mut [Option<LoraPair<F>>; 7]>,
}

/// Given `dout` (the gradient of the block's output), adds the block's gradients into
/// `g` and writes the gradient of its input into `dx`.
#[allow(clippy::too_many_arguments)]
fn layer_backward<F: Float, L: BaseLayer<F> + ?Sized>(
    pool: &ThreadPool,
    sh: &Shape,
    l: &L,
    lora: Option<LayerLora<'_, F>>,
    g: &mut LayerGrads<'_, F>,
    tab: &RopeTables<F>,
    x: &[F],
    s: &LayerActs<F>,
    dout: &[F],
    dx: &mut [F],
    work: &mut Work<F>,
) {
    let (d, qw, kw, ff) = (sh.dim, sh.q_width(), sh.kv_width(), sh.ffn_dim);
    let t = x.len() / d;
    let hd = sh.heads.head_dim;
    let [wq, wk, wv, wo, w1, w3, w2] = Target::ALL.map(|tg| l.proj(tg));
    let Work {
        att,
        dh,
        dg,
        da,
        db,
        dhn,
        datt,
        dq,
        dk,
        dv,
        dq0,
        dk0,
        dxn,
        lora: ls,
        ..
    } = work;
    // x' = h + w2 · g
    resize(dh, t * d); // (T, dim): dout, plus the FFN's path below
    resize(dg, t * ff);
    let (dw, dl) = grads_of(g, Target::Down);
    let down = pick(lora, Target::Down);
    proj_backward(
        pool, true, dg, dw, dl, dout, &s.g, w2, down, &s.xa[6], ls, ff, d,
    );
    resize(da, t * ff);
    resize(db, t * ff);
    {
        let _s = span(pool, Phase::BwdElementwise);
        swiglu::backward_into(pool, da, db, dg, &s.a, &s.b);
    }
    resize(dhn, t * d);
    for (tg, dy, i, w) in [(Target::Gate, &*da, 4, w1), (Target::Up, &*db, 5, w3)] {
        let (dw, dl) = grads_of(g, tg);
        proj_backward(
            pool,
            tg == Target::Gate,
            dhn,
            dw,
            dl,
            dy,
            &s.hn,
            w,
            pick(lora, tg),
            &s.xa[i],
            ls,
            d,
            ff,
        );
    }
    // A frozen norm (LoRA) gets no gradient at all.
    let dnorm = g.base.as_deref_mut().map(|b| b.ffn_norm.as_mut_slice());
    {
        let _s = span(pool, Phase::BwdElementwise);
        rmsnorm::backward_into(
            pool,
            dh,
            Some(dout),
            dnorm,
            dhn,
            &s.h,
            l.ffn_norm(),
            &s.rstd2,
        );
    }
    // h = x + wo · att: dx is dh, plus the attention's path below.
    resize(datt, t * qw);
    let (dw, dl) = grads_of(g, Target::O);
    proj_backward(
        pool,
        true,
        datt,
        dw,
        dl,
        dh,
        &s.att,
        wo,
        pick(lora, Target::O),
        &s.xa[3],
        ls,
        qw,
        d,
    );
    resize(dq, t * qw);
    resize(dk, t * kw);
    resize(dv, t * kw);
    {
        let _s = span(pool, Phase::BwdAttention);
        attention::backward_into(
            pool, att, dq, dk, dv, datt, &s.q, &s.k, &s.v, &s.probs, sh.heads,
        );
    }
    resize(dq0, t * qw);
    resize(dk0, t * kw);
    {
        let _s = span(pool, Phase::BwdElementwise);
        rope::inverse(pool, dq0, dq, qw, hd, tab);
    }
    {
        let _s = span(pool, Phase::BwdElementwise);
        rope::inverse(pool, dk0, dk, kw, hd, tab);
    }
    resize(dxn, t * d);
    for (tg, dy, i, w, oc) in [
        (Target::Q, &*dq0, 0, wq, qw),
        (Target::K, &*dk0, 1, wk, kw),
        (Target::V, &*dv, 2, wv, kw),
    ] {
        let (dw, dl) = grads_of(g, tg);
        proj_backward(
            pool,
            tg == Target::Q,
            dxn,
            dw,
            dl,
            dy,
            &s.xn,
            w,
            pick(lora, tg),
            &s.xa[i],
            ls,
            d,
            oc,
        );
    }
    let dnorm = g
        .base
        .as_deref_mut()
        .map(|b| b.attention_norm.as_mut_slice());
    {
        let _s = span(pool, Phase::BwdElementwise);
        let (w, rstd) = (l.attention_norm(), &s.rstd1);
        rmsnorm::backward_into(pool, dx, Some(dh), dnorm, dxn, x, w, rstd);
    }
}

/// The base weight's and the adapter's gradient of target `t`, borrowed together.
fn grads_of<'g, F>(
    g: &'g mut LayerGrads<'_, F>,
    t: Target,
) -> (Option<&'g mut Vec<F>>, Option<&'g mut LoraPair<F>>) {
    let LayerGrads { base, lora } = g;
    let dw = base.as_deref_mut().map(|b| match t {
        Target::Q => &mut b.wq,
        Target::K => &mut b.wk,
        Target::V => &mut b.wv,
        Target::O => &mut b.wo,
        Target::Gate => &mut b.w1,
        Target::Up => &mut b.w3,
        Target::Down => &mut b.w2,
    });
    let dl = lora.as_deref_mut().and_then(|l| l[t as usize].as_mut());
    (dw, dl)
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

/// What the loss end of a pass computes for one sequence, summed over its counted
/// positions.
#[derive(Debug, Clone, Copy)]
pub enum Objective<'a> {
    /// `-log softmax(logits)[target]`: SFT, pretraining, and DPO's log-probabilities
    /// (`log π(y|x) = -Σ cross-entropy` over the completion).
    CrossEntropy,
    /// `τ² · KL(teacher ‖ softmax(logits / τ))` against the teacher's top-k at each position
    /// ([`crate::ops::soft_target`]).
    Distill {
        teacher: &'a SoftTargets,
        temperature: f64,
    },
}

/// One sequence of a [`pass`]: its loss and the factor its gradient is added with (DPO
/// weighs each sequence of a pair by its own, signed, factor).
#[derive(Debug, Clone, Copy)]
pub struct Item<'a, F> {
    pub seq: &'a Sequence,
    pub objective: Objective<'a>,
    pub scale: F,
}

impl<'a, F> Item<'a, F> {
    /// Cross-entropy of `seq` with gradient factor `scale`.
    pub fn cross_entropy(seq: &'a Sequence, scale: F) -> Self {
        Item {
            seq,
            objective: Objective::CrossEntropy,
            scale,
        }
    }
}

/// Checks an item's teacher targets against its sequence and the vocabulary.
fn check_item<F>(sh: &Shape, it: &Item<'_, F>) -> Result<()> {
    check_sequence(sh, it.seq)?;
    if let Objective::Distill {
        teacher,
        temperature,
    } = it.objective
    {
        teacher.check(it.seq.inputs.len(), sh.vocab)?;
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(TrainError::Config(format!(
                "the distillation temperature must be a positive number, not {temperature}"
            )));
        }
    }
    Ok(())
}

/// Options of one forward and backward.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassOptions {
    /// Activation checkpointing: keep only layer inputs, recompute in the backward.
    pub recompute: bool,
    /// The key of this pass's LoRA dropout masks (the adapter's `dropout` is the
    /// probability); `None`, as in evaluation, is no dropout. Each item of the pass, each
    /// layer and each projection gets its own mask from it ([`crate::ops::dropout`]).
    pub dropout_key: Option<u64>,
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
    let g = Grads {
        base: Some(grads),
        lora: None,
    };
    run_batch(pool, sh, p, None, g, batch, scale, opts)
}

/// [`forward_backward`] for LoRA: the base `p` is frozen (no gradient is computed for
/// it), `lora` is applied on its targets, and `scale · ∂(Σ loss)/∂(A, B)` is added into
/// `grads`. The base is f32/f64 [`Params`] or a [`crate::FrozenBase`] in its stored types.
#[allow(clippy::too_many_arguments)]
pub fn forward_backward_lora<F: Float, B: Base<F> + ?Sized>(
    pool: &ThreadPool,
    sh: &Shape,
    p: &B,
    lora: &Lora<F>,
    grads: &mut Lora<F>,
    batch: &[Sequence],
    scale: F,
    opts: PassOptions,
) -> Result<F> {
    let g = Grads {
        base: None,
        lora: Some(grads),
    };
    run_batch(pool, sh, p, Some(lora), g, batch, scale, opts)
}

/// The summed loss of the counted tokens of `batch`, forward only.
pub fn loss<F: Float, B: Base<F> + ?Sized>(
    pool: &ThreadPool,
    sh: &Shape,
    p: &B,
    batch: &[Sequence],
) -> Result<F> {
    run_batch(
        pool,
        sh,
        p,
        None,
        Grads::none(),
        batch,
        F::ONE,
        PassOptions::default(),
    )
}

/// The summed loss of the counted tokens of `batch` with `lora` applied, forward only.
pub fn loss_lora<F: Float, B: Base<F> + ?Sized>(
    pool: &ThreadPool,
    sh: &Shape,
    p: &B,
    lora: &Lora<F>,
    batch: &[Sequence],
) -> Result<F> {
    run_batch(
        pool,
        sh,
        p,
        Some(lora),
        Grads::none(),
        batch,
        F::ONE,
        PassOptions::default(),
    )
}

/// Checks the whole batch (and the adapter) before any gradient is touched, then runs
/// every sequence, its gradients going where `grads` says.
#[allow(clippy::too_many_arguments)]
fn run_batch<F: Float, B: Base<F> + ?Sized>(
    pool: &ThreadPool,
    sh: &Shape,
    p: &B,
    lora: Option<&Lora<F>>,
    grads: Grads<'_, F>,
    batch: &[Sequence],
    scale: F,
    opts: PassOptions,
) -> Result<F> {
    let items: Vec<Item<'_, F>> = batch
        .iter()
        .map(|s| Item::cross_entropy(s, scale))
        .collect();
    let mut total = F::ZERO;
    for l in pass(pool, sh, p, lora, grads, &items, opts)? {
        total += l;
    }
    Ok(total)
}

/// The general pass: returns each item's loss (summed over its counted positions) and
/// adds `Σ_i scale_i · ∂loss_i/∂θ` into `grads` (nothing with [`Grads::none`]). `lora`
/// is applied on the frozen `p` when given. The base's shapes, the whole batch and the
/// adapter are checked before any gradient is touched.
#[allow(clippy::too_many_arguments)]
pub fn pass<F: Float, B: Base<F> + ?Sized>(
    pool: &ThreadPool,
    sh: &Shape,
    p: &B,
    lora: Option<&Lora<F>>,
    mut grads: Grads<'_, F>,
    items: &[Item<'_, F>],
    opts: PassOptions,
) -> Result<Vec<F>> {
    p.check(sh)?;
    if let Some(l) = lora {
        check_lora(p, l)?;
    }
    for it in items {
        check_item(sh, it)?;
    }
    let mut bufs = take_buffers::<F>();
    let out = items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let key = opts.dropout_key.map(|k| mix(k, i as u64));
            sequence_pass(
                pool,
                sh,
                p,
                lora,
                grads.reborrow(),
                it,
                opts,
                key,
                &mut bufs,
            )
        })
        .collect();
    keep_buffers(bufs);
    Ok(out)
}

fn check_lora<F: Float, B: Base<F> + ?Sized>(p: &B, lora: &Lora<F>) -> Result<()> {
    if lora.layers.len() != p.layers().len() {
        return Err(TrainError::Config(format!(
            "the adapter has {} layers, the model {}",
            lora.layers.len(),
            p.layers().len()
        )));
    }
    Ok(())
}

/// Where the pass's gradients go: the base model's tensors (full fine-tuning) and/or an
/// adapter's. With neither it is forward only.
#[derive(Debug)]
pub struct Grads<'a, F> {
    base: Option<&'a mut Params<F>>,
    lora: Option<&'a mut Lora<F>>,
}

impl<'a, F> Grads<'a, F> {
    /// Full fine-tuning: gradients of every base tensor.
    pub fn full(g: &'a mut Params<F>) -> Self {
        Grads {
            base: Some(g),
            lora: None,
        }
    }

    /// LoRA: gradients of the adapter only, the base frozen.
    pub fn lora(g: &'a mut Lora<F>) -> Self {
        Grads {
            base: None,
            lora: Some(g),
        }
    }

    /// The same destinations, borrowed for one sequence.
    fn reborrow(&mut self) -> Grads<'_, F> {
        Grads {
            base: self.base.as_deref_mut(),
            lora: self.lora.as_deref_mut(),
        }
    }

    /// Forward only.
    pub fn none() -> Self {
        Grads {
            base: None,
            lora: None,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn sequence_pass<F: Float, B: Base<F> + ?Sized>(
    pool: &ThreadPool,
    sh: &Shape,
    p: &B,
    lora: Option<&Lora<F>>,
    mut grads: Grads<'_, F>,
    item: &Item<'_, F>,
    opts: PassOptions,
    dropout_key: Option<u64>,
    bufs: &mut PassBuffers<F>,
) -> F {
    let s = item.seq;
    let (d, v) = (sh.dim, sh.vocab);
    let t = s.inputs.len();
    let n_layers = p.layers().len();
    let tab = RopeTables::<F>::new(t, sh.rope_dims, sh.theta, &sh.rope_divisors);
    let backward = grads.base.is_some() || grads.lora.is_some();
    let keep_all = backward && !opts.recompute;
    let lora_scale = lora.map(|l| F::from_f64(l.config.scale()));
    // The sequence's mask (None without dropout, or without a key as in evaluation);
    // layer i's is salted from it.
    let drop = match (lora, dropout_key) {
        (Some(l), Some(k)) => Mask::new(l.config.dropout, k),
        _ => None,
    };
    let layer_lora = |i: usize| {
        Some(LayerLora {
            pairs: lora?.layers.get(i)?,
            scale: lora_scale?,
            drop: drop.map(|m| m.salted(i as u64)),
        })
    };
    // xs[l] is layer l's input; xs[n_layers] the last block's output.
    let PassBuffers {
        xs,
        acts,
        scratch,
        logits,
        work,
    } = bufs;
    if xs.len() < n_layers + 1 {
        xs.resize_with(n_layers + 1, Vec::new);
    }
    for x in xs.iter_mut() {
        resize(x, t * d);
    }
    {
        let _s = span(pool, Phase::FwdElementwise);
        p.embed(&mut xs[0], &s.inputs, d); // (T, dim)
    }
    if keep_all && acts.len() < n_layers {
        acts.resize_with(n_layers, LayerActs::default);
    }
    for (i, l) in p.layers().iter().enumerate() {
        let (before, after) = xs.split_at_mut(i + 1);
        let sa = if keep_all {
            &mut acts[i]
        } else {
            &mut *scratch
        };
        layer_forward(
            pool,
            sh,
            l,
            layer_lora(i),
            &tab,
            &before[i],
            sa,
            &mut after[0],
            work,
        );
    }
    let out_w = p.output();
    // Taken out of `work` while the layers borrow it, put back at the end.
    let (mut xf, mut rstd) = (std::mem::take(&mut work.xf), std::mem::take(&mut work.rstd));
    resize(&mut xf, t * d);
    resize(&mut rstd, t);
    let eps = F::from_f64(sh.eps);
    {
        let _s = span(pool, Phase::FwdElementwise);
        rmsnorm::forward(pool, &mut xf, &mut rstd, &xs[n_layers], p.norm(), eps); // (T, dim)
    }
    resize(logits, t * v);
    {
        let _s = span(pool, Phase::FwdOutput);
        out_w.forward(pool, logits, &xf, d, v); // (T, vocab)
    }
    if !backward {
        (work.xf, work.rstd) = (xf, rstd);
        let _s = span(pool, Phase::Loss);
        return loss_forward(pool, logits, item, v);
    }
    // The logits become their gradient in place.
    let loss = {
        let _s = span(pool, Phase::Loss);
        loss_forward_backward(pool, logits, item, v)
    };
    let dlogits = &*logits;
    let mut dxf = std::mem::take(&mut work.dxf);
    resize(&mut dxf, t * d);
    let d_out_w = grads.base.as_deref_mut().map(|g| match g.output.as_mut() {
        Some(go) => go.as_mut_slice(),
        None => g.tok_embeddings.as_mut_slice(),
    });
    {
        let _s = span(pool, Phase::BwdOutputDx);
        out_w.backward_input_into(pool, &mut dxf, dlogits, d, v);
    }
    {
        let _s = span(pool, Phase::BwdOutputDw);
        weight_grad(pool, d_out_w, dlogits, &xf, d, v);
    }
    let mut dx = std::mem::take(&mut work.dx);
    resize(&mut dx, t * d);
    let dnorm = grads.base.as_deref_mut().map(|g| g.norm.as_mut_slice());
    {
        let _s = span(pool, Phase::BwdElementwise);
        let x_last = &xs[n_layers];
        rmsnorm::backward_into(pool, &mut dx, None, dnorm, &dxf, x_last, p.norm(), &rstd);
    }
    // Every layer overwrites it (`dx.copy_from_slice` first).
    let mut dprev = std::mem::take(&mut work.dprev);
    resize(&mut dprev, t * d);
    let mut out = std::mem::take(&mut work.out);
    for i in (0..n_layers).rev() {
        let l = &p.layers()[i];
        let sa = if keep_all {
            &acts[i]
        } else {
            // Recompute this layer's activations from its saved input.
            resize(&mut out, t * d);
            layer_forward(
                pool,
                sh,
                l,
                layer_lora(i),
                &tab,
                &xs[i],
                scratch,
                &mut out,
                work,
            );
            &*scratch
        };
        let mut lg = LayerGrads {
            base: grads.base.as_deref_mut().map(|g| &mut g.layers[i]),
            lora: grads.lora.as_deref_mut().and_then(|g| g.layers.get_mut(i)),
        };
        layer_backward(
            pool,
            sh,
            l,
            layer_lora(i),
            &mut lg,
            &tab,
            &xs[i],
            sa,
            &dx,
            &mut dprev,
            work,
        );
        std::mem::swap(&mut dx, &mut dprev);
    }
    if let Some(g) = grads.base {
        let _s = span(pool, Phase::BwdEmbedding);
        embedding::backward(pool, &mut g.tok_embeddings, &dx, &s.inputs, d);
    }
    (work.xf, work.rstd, work.dxf, work.dx, work.dprev, work.out) = (xf, rstd, dxf, dx, dprev, out);
    loss
}

/// The item's loss from its logits `(T, vocab)`.
fn loss_forward<F: Float>(pool: &ThreadPool, logits: &[F], it: &Item<'_, F>, v: usize) -> F {
    let s = it.seq;
    match it.objective {
        Objective::CrossEntropy => cross_entropy::forward(pool, logits, &s.targets, &s.counted, v),
        Objective::Distill {
            teacher: t,
            temperature,
        } => soft_target::forward(
            logits,
            &t.ids,
            &t.probs,
            &t.rest,
            t.k,
            &s.counted,
            v,
            F::from_f64(temperature),
        ),
    }
}

/// The item's loss, and its logits replaced by `item.scale · ∂loss/∂logits`.
fn loss_forward_backward<F: Float>(
    pool: &ThreadPool,
    logits: &mut [F],
    it: &Item<'_, F>,
    v: usize,
) -> F {
    let s = it.seq;
    match it.objective {
        Objective::CrossEntropy => {
            cross_entropy::forward_backward(pool, logits, &s.targets, &s.counted, v, it.scale)
        }
        Objective::Distill {
            teacher: t,
            temperature,
        } => {
            let tau = F::from_f64(temperature);
            let loss =
                soft_target::forward(logits, &t.ids, &t.probs, &t.rest, t.k, &s.counted, v, tau);
            let mut d = vec![F::ZERO; logits.len()];
            soft_target::backward(
                &mut d, logits, &t.ids, &t.probs, &t.rest, t.k, &s.counted, v, tau, it.scale,
            );
            logits.copy_from_slice(&d);
            loss
        }
    }
}
