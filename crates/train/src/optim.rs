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
        self.update_impl(None, params, grads, lr);
    }

    /// [`AdamW::update`] with every tensor's elements spread over `pool` (element-wise:
    /// the same bits as `update`). Full fine-tuning updates every weight of the model
    /// each step; on one thread that is time the other threads wait.
    pub fn update_on(&mut self, pool: &ThreadPool, params: &mut P, grads: &P, lr: f64) {
        let _s = crate::profile::span(pool, crate::profile::Phase::AdamW);
        self.update_impl(Some(pool), params, grads, lr);
    }

    fn update_impl(&mut self, pool: Option<&ThreadPool>, params: &mut P, grads: &P, lr: f64) {
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
        let update = |p: &mut [F], g: &[F], m: &mut [F], v: &mut [F]| {
            for i in 0..p.len() {
                let gi = g[i];
                p[i] *= decay;
                m[i] = b1 * m[i] + one_b1 * gi;
                v[i] = b2 * v[i] + one_b2 * gi * gi;
                let denom = v[i].sqrt() / bc2_sqrt + eps;
                p[i] -= step_size * m[i] / denom;
            }
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

/// Scales `grads` so their global L2 norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)`, clamped to 1) and returns
/// the norm before clipping.
pub fn clip_grad_norm<F: Float, P: ParamSet<F>>(grads: &mut P, max_norm: f64) -> f64 {
    let mut ss = 0.0f64;
    for (_, g) in grads.tensors() {
        // Per-tensor norms first, as PyTorch's foreach norm does.
        let mut t = F::ZERO;
        for &x in g.iter() {
            t += x * x;
        }
        ss += t.to_f64();
    }
    let norm = ss.sqrt();
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    if coef < 1.0 {
        let c = F::from_f64(coef);
        for (_, g) in grads.tensors_mut() {
            g.iter_mut().for_each(|x| *x *= c);
        }
    }
    norm
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
