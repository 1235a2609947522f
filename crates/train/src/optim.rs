//! AdamW with decoupled weight decay, gradient clipping by global norm, and the cosine
//! learning-rate schedule with linear warmup — each with PyTorch's exact arithmetic
//! (`torch.optim.AdamW`, `clip_grad_norm_`, torchtune's
//! `get_cosine_schedule_with_warmup`), so runs can be pinned to PyTorch's losses.

use ferrollama_tensor::{SyncSlice, ThreadPool};

use crate::Float;
use crate::params::{ParamSet, Params};

/// AdamW's hyperparameters (PyTorch's defaults but the learning rate, which the schedule
/// gives per step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// The optimizer's state: first and second moments per parameter, and the step count.
/// `P` is what is trained: the whole model, or a LoRA adapter.
#[derive(Debug, Clone)]
pub struct AdamW<F, P = Params<F>> {
    pub config: AdamWConfig,
    pub step: u64,
    pub m: P,
    pub v: P,
    _f: std::marker::PhantomData<F>,
}

impl<F: Float, P: ParamSet<F>> AdamW<F, P> {
    pub fn new(config: AdamWConfig, like: &P) -> AdamW<F, P> {
        AdamW {
            config,
            step: 0,
            m: like.zeros_like(),
            v: like.zeros_like(),
            _f: std::marker::PhantomData,
        }
    }

    /// One update with learning rate `lr`, as `torch.optim.AdamW` (single-tensor path):
    /// `θ ← θ(1 - lr·λ)`, `m ← β₁m + (1-β₁)g`, `v ← β₂v + (1-β₂)g²`,
    /// `θ ← θ - lr/(1-β₁ᵗ) · m / (sqrt(v)/sqrt(1-β₂ᵗ) + ε)`.
    pub fn update(&mut self, params: &mut P, grads: &P, lr: f64) {
        self.update_impl(None, params, grads, lr, None);
    }

    /// [`AdamW::update`] with every tensor's elements spread over `pool` (element-wise:
    /// the same bits as `update`). Full fine-tuning updates every weight of the model
    /// each step; on one thread that is time the other threads wait.
    pub fn update_on(&mut self, pool: &ThreadPool, params: &mut P, grads: &P, lr: f64) {
        let _s = crate::profile::span(pool, crate::profile::Phase::AdamW);
        self.update_impl(Some(pool), params, grads, lr, None);
    }

    /// [`AdamW::update_on`] with every gradient multiplied by `scale` first (in `F`, as
    /// clipping would have left it): clipping by global norm without its own pass over
    /// the gradients ([`clip_coefficient`]). `None` is no scaling.
    pub fn update_scaled_on(
        &mut self,
        pool: &ThreadPool,
        params: &mut P,
        grads: &P,
        lr: f64,
        scale: Option<F>,
    ) {
        let _s = crate::profile::span(pool, crate::profile::Phase::AdamW);
        self.update_impl(Some(pool), params, grads, lr, scale);
    }

    fn update_impl(
        &mut self,
        pool: Option<&ThreadPool>,
        params: &mut P,
        grads: &P,
        lr: f64,
        scale: Option<F>,
    ) {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let decay = F::from_f64(1.0 - lr * c.weight_decay);
        let step_size = F::from_f64(lr / (1.0 - c.beta1.powi(t)));
        let bc2_sqrt = F::from_f64((1.0 - c.beta2.powi(t)).sqrt());
        let (b1, b2, eps) = (
            F::from_f64(c.beta1),
            F::from_f64(c.beta2),
            F::from_f64(c.eps),
        );
        let (one_b1, one_b2) = (F::from_f64(1.0 - c.beta1), F::from_f64(1.0 - c.beta2));
        // One loop per case, the scale's test outside it.
        let update = |p: &mut [F], g: &[F], m: &mut [F], v: &mut [F]| match scale {
            Some(c) => adamw_elements(
                p,
                g,
                m,
                v,
                |g| g * c,
                [decay, b1, b2, one_b1, one_b2, bc2_sqrt, eps, step_size],
            ),
            None => adamw_elements(
                p,
                g,
                m,
                v,
                |g| g,
                [decay, b1, b2, one_b1, one_b2, bc2_sqrt, eps, step_size],
            ),
        };
        let ps = params.tensors_mut();
        let gs = grads.tensors();
        let ms = self.m.tensors_mut();
        let vs = self.v.tensors_mut();
        for (((p, g), m), v) in ps.into_iter().zip(gs).zip(ms).zip(vs) {
            let n = p.1.len().min(g.1.len()).min(m.1.len()).min(v.1.len());
            match pool {
                None => update(&mut p.1[..n], &g.1[..n], &mut m.1[..n], &mut v.1[..n]),
                Some(pool) => {
                    let (pp, mm, vv) = (
                        SyncSlice::new(p.1.as_mut_slice()),
                        SyncSlice::new(m.1.as_mut_slice()),
                        SyncSlice::new(v.1.as_mut_slice()),
                    );
                    let g = g.1.as_slice();
                    crate::ops::par_ranges(pool, n, n, &|r| {
                        // SAFETY: the ranges of different threads are disjoint.
                        let (p, m, v) = unsafe {
                            (
                                pp.slice_mut(r.start, r.len()),
                                mm.slice_mut(r.start, r.len()),
                                vv.slice_mut(r.start, r.len()),
                            )
                        };
                        update(p, &g[r], m, v);
                    });
                }
            }
        }
    }
}

/// AdamW on one run of elements, the gradient read through `grad` (a clip scale or
/// none): `k` is `[decay, β₁, β₂, 1-β₁, 1-β₂, sqrt(1-β₂ᵗ), ε, step size]`.
#[inline(always)]
fn adamw_elements<F: Float>(
    p: &mut [F],
    g: &[F],
    m: &mut [F],
    v: &mut [F],
    grad: impl Fn(F) -> F,
    k: [F; 8],
) {
    let [decay, b1, b2, one_b1, one_b2, bc2_sqrt, eps, step_size] = k;
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = grad(g[i]);
        p[i] *= decay;
        m[i] = b1 * m[i] + one_b1 * gi;
        v[i] = b2 * v[i] + one_b2 * gi * gi;
        let denom = v[i].sqrt() / bc2_sqrt + eps;
        p[i] -= step_size * m[i] / denom;
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)`, clamped to 1) and returns
/// the norm before clipping.
pub fn clip_grad_norm<F: Float, P: ParamSet<F>>(grads: &mut P, max_norm: f64) -> f64 {
    let norm = grad_norm_on(&ThreadPool::new(1), grads);
    if let Some(c) = clip_coefficient::<F>(norm, max_norm) {
        for (_, g) in grads.tensors_mut() {
            g.iter_mut().for_each(|x| *x *= c);
        }
    }
    norm
}

/// `clip_grad_norm_`'s factor for a global norm `norm`: `max_norm / (norm + 1e-6)`, or
/// `None` where that is not below 1 (no clipping).
pub fn clip_coefficient<F: Float>(norm: f64, max_norm: f64) -> Option<F> {
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    (coef < 1.0).then(|| F::from_f64(coef))
}

/// Elements per partial sum of [`grad_norm_on`]: the split does not depend on the
/// thread count, so neither does the norm.
const NORM_CHUNK: usize = 1 << 16;
/// Independent lanes of a chunk's sum of squares (LLVM vectorizes lanes, not one sum).
const NORM_LANES: usize = 16;
/// Elements summed in `F` lanes before the lanes go to f64 (64 per lane).
const NORM_BLOCK: usize = 1024;

/// The global L2 norm of `grads` (every tensor's values as one vector), on the pool:
/// sums of squares over fixed chunks of each tensor, in `F` lanes, then the chunks' sums
/// added in f64 in order. A pass over the gradients of a whole model (135M values for
/// SmolLM2) was single-threaded and one dependent add per value.
pub fn grad_norm_on<F: Float, P: ParamSet<F>>(pool: &ThreadPool, grads: &P) -> f64 {
    let tensors = grads.tensors();
    // (tensor, first element) of every chunk, in order.
    let chunks: Vec<(usize, usize)> = tensors
        .iter()
        .enumerate()
        .flat_map(|(i, (_, g))| (0..g.len()).step_by(NORM_CHUNK).map(move |s| (i, s)))
        .collect();
    let mut sums = vec![0.0f64; chunks.len()];
    let ss = SyncSlice::new(&mut sums);
    let total: usize = tensors.iter().map(|(_, g)| g.len()).sum();
    crate::ops::par_ranges(pool, chunks.len(), total, &|r| {
        for c in r {
            let (i, s) = chunks[c];
            let g = &tensors[i].1[s..(s + NORM_CHUNK).min(tensors[i].1.len())];
            // Lanes in F over blocks short enough to keep F's rounding small, each
            // block's lanes then added in f64.
            let mut sum = 0.0f64;
            for block in g.chunks(NORM_BLOCK) {
                let mut lanes = [F::ZERO; NORM_LANES];
                let mut it = block.chunks_exact(NORM_LANES);
                for x in &mut it {
                    for (l, &v) in lanes.iter_mut().zip(x) {
                        *l += v * v;
                    }
                }
                sum += it
                    .remainder()
                    .iter()
                    .fold(0.0f64, |a, &v| a + (v * v).to_f64());
                sum += lanes.iter().map(|l| l.to_f64()).sum::<f64>();
            }
            // SAFETY: each chunk's sum is written by the one thread that has the chunk.
            unsafe { ss.write(c, sum) };
        }
    });
    sums.iter().sum::<f64>().sqrt()
}

/// Sets every gradient to zero, the tensors' elements spread over the pool.
pub fn zero_on<F: Float, P: ParamSet<F>>(pool: &ThreadPool, grads: &mut P) {
    let _s = crate::profile::span(pool, crate::profile::Phase::ZeroGrads);
    for (_, g) in grads.tensors_mut() {
        let n = g.len();
        let gs = SyncSlice::new(g.as_mut_slice());
        crate::ops::par_ranges(pool, n, n, &|r| {
            // SAFETY: the ranges of different threads are disjoint.
            unsafe { gs.slice_mut(r.start, r.len()) }.fill(F::ZERO);
        });
    }
}

/// Learning rate at `step` (0-based): linear warmup from 0 over `warmup` steps, then a
/// half cosine down to 0 at `total` steps (torchtune's `get_cosine_schedule_with_warmup`
/// with `num_cycles = 0.5`, as a `LambdaLR` multiplier of `base`).
pub fn cosine_lr(base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    base * cosine.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_hand_values() {
        // Warmup 4 of 20: 0, 1/4, 2/4, 3/4 of base, then cos from 1 down to 0.
        assert_eq!(cosine_lr(1.0, 0, 4, 20), 0.0);
        assert_eq!(cosine_lr(1.0, 2, 4, 20), 0.5);
        assert_eq!(cosine_lr(1.0, 4, 4, 20), 1.0);
        assert!((cosine_lr(1.0, 12, 4, 20) - 0.5).abs() < 1e-12);
        assert!(cosine_lr(1.0, 20, 4, 20).abs() < 1e-12);
    }

    /// An adapter with every gradient set to a fixed pattern.
    fn adapter_and_grads() -> (crate::Lora<f32>, crate::Lora<f32>) {
        use crate::{Lora, LoraConfig, Target};
        let cfg = ferrollama_model::LlamaConfig {
            dim: 64,
            n_layers: 1,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            rope_dims: 16,
            ffn_dim: 1024,
            vocab_size: 10,
            norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_seq_len: 16,
            rope_scaling: None,
        };
        let lc = LoraConfig {
            dropout: 0.0,
            rank: 300,
            alpha: 8.0,
            targets: Target::ALL.to_vec(),
        };
        let Ok(a) = Lora::<f32>::new(&cfg, lc, 5) else {
            panic!("adapter");
        };
        let mut g = a.zeros_like();
        for (_, t) in g.tensors_mut() {
            for (i, x) in t.iter_mut().enumerate() {
                *x = ((i * 7919) % 201) as f32 * 1e-3 - 0.1;
            }
        }
        (a, g)
    }

    /// The pooled norm: the same bits for any thread count (tensors longer than a chunk
    /// included), the f64 norm to f32 rounding, and clipping through AdamW's gradient
    /// scale is clipping first, bit for bit.
    #[test]
    fn pooled_norm_and_scaled_update_match_the_serial_ones() {
        let (a, mut g) = adapter_and_grads();
        assert!(g.tensors().iter().any(|(_, t)| t.len() > NORM_CHUNK));
        let one = grad_norm_on(&ThreadPool::new(1), &g);
        let three = grad_norm_on(&ThreadPool::new(3), &g);
        assert_eq!(one.to_bits(), three.to_bits());
        let exact: f64 = g
            .tensors()
            .iter()
            .flat_map(|(_, t)| t.iter())
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        assert!((one - exact).abs() < 1e-7 * exact, "{one} vs {exact}");
        let pool = ThreadPool::new(2);
        let (mut p1, mut p2) = (a.clone(), a);
        let mut o1 = AdamW::new(AdamWConfig::default(), &p1);
        let mut o2 = AdamW::new(AdamWConfig::default(), &p2);
        let g0 = g.clone();
        let n = clip_grad_norm(&mut g, 1.0);
        assert!(n > 1.0, "the pattern's norm {n} must clip");
        o1.update_on(&pool, &mut p1, &g, 1e-2);
        let c = clip_coefficient::<f32>(n, 1.0);
        assert!(c.is_some());
        o2.update_scaled_on(&pool, &mut p2, &g0, 1e-2, c);
        for ((_, x), (_, y)) in p1.tensors().into_iter().zip(p2.tensors()) {
            assert!(x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
        zero_on(&pool, &mut g);
        assert!(g.tensors().iter().all(|(_, t)| t.iter().all(|&x| x == 0.0)));
    }

    /// The pool's update is the serial one, bit for bit, over several steps.
    #[test]
    fn update_on_a_pool_matches_the_serial_update() {
        use crate::{Lora, LoraConfig, Target};
        let cfg = ferrollama_model::LlamaConfig {
            dim: 64,
            n_layers: 1,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            rope_dims: 16,
            ffn_dim: 128,
            vocab_size: 10,
            norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_seq_len: 16,
            rope_scaling: None,
        };
        let lc = LoraConfig {
            dropout: 0.0,
            rank: 80,
            alpha: 8.0,
            targets: Target::ALL.to_vec(),
        };
        let Ok(mut a) = Lora::<f32>::new(&cfg, lc, 5) else {
            panic!("adapter");
        };
        let mut b = a.clone();
        let mut g = a.zeros_like();
        for (_, t) in g.tensors_mut() {
            for (i, x) in t.iter_mut().enumerate() {
                *x = ((i * 7919) % 201) as f32 * 1e-3 - 0.1;
            }
        }
        let mut oa = AdamW::new(AdamWConfig::default(), &a);
        let mut ob = AdamW::new(AdamWConfig::default(), &b);
        let pool = ThreadPool::new(3);
        for _ in 0..3 {
            oa.update(&mut a, &g, 1e-2);
            ob.update_on(&pool, &mut b, &g, 1e-2);
        }
        for ((_, x), (_, y)) in a.tensors().into_iter().zip(b.tensors()) {
            assert!(x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
    }
}
