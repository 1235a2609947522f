//! What a training pass reads of the model under it: the norms, the embedding lookup and
//! each projection's two products. Full fine-tuning and the gradient checks read
//! [`Params`] (f32 or f64, the tensors that also receive gradients); LoRA may instead read
//! a [`crate::frozen_base::FrozenBase`], whose projections stay in the types the model
//! file stores (F16, BF16, Q8_0, Q4_K, ...) because a frozen base only needs
//! `y = x Wᵀ` and `dx += dy W`, never `dW`.

use ferrollama_tensor::ThreadPool;

use crate::Float;
use crate::error::{Result, TrainError};
use crate::lora::Target;
use crate::model::Shape;
use crate::ops::matmul;
use crate::params::{LayerParams, Params};

/// A weight matrix `W (oc, c)` as the pass uses it.
pub trait Projection<F> {
    /// `out (T, oc) = x (T, c) · Wᵀ`.
    fn forward(&self, pool: &ThreadPool, out: &mut [F], x: &[F], c: usize, oc: usize);
    /// `dx (T, c) += dy (T, oc) · W`.
    fn backward_input(&self, pool: &ThreadPool, dx: &mut [F], dy: &[F], c: usize, oc: usize);
    /// `dx (T, c) = dy (T, oc) · W`, whatever `dx` held: a gradient's first contribution
    /// (the pass's buffers are reused, and zeroing them first is a pass over memory).
    fn backward_input_into(&self, pool: &ThreadPool, dx: &mut [F], dy: &[F], c: usize, oc: usize)
    where
        F: Float,
    {
        dx.fill(F::ZERO);
        self.backward_input(pool, dx, dy, c, oc);
    }
}

impl<F: Float> Projection<F> for [F] {
    fn forward(&self, pool: &ThreadPool, out: &mut [F], x: &[F], c: usize, oc: usize) {
        matmul::forward(pool, out, x, self, c, oc);
    }
    fn backward_input(&self, pool: &ThreadPool, dx: &mut [F], dy: &[F], c: usize, oc: usize) {
        // The layer's input is only read for the weight gradient, which is not asked for.
        matmul::backward(pool, Some(dx), None, dy, &[], self, c, oc);
    }
    fn backward_input_into(&self, pool: &ThreadPool, dx: &mut [F], dy: &[F], c: usize, oc: usize) {
        // dx = dy · (Wᵀ)ᵀ: the matrix Wᵀ (C, OC) is stored as W.
        F::gemm(
            pool,
            dx,
            dy,
            self,
            crate::float::Layout::Transposed,
            oc,
            c,
            false,
        );
    }
}

/// One transformer block of a [`Base`].
pub trait BaseLayer<F> {
    type Matrix: Projection<F> + ?Sized;
    fn attention_norm(&self) -> &[F];
    fn ffn_norm(&self) -> &[F];
    /// The projection `t` adapts (`wq` for `Target::Q`, `w1` for `Target::Gate`, ...).
    fn proj(&self, t: Target) -> &Self::Matrix;
}

/// The weights a training pass runs over.
pub trait Base<F> {
    type Matrix: Projection<F> + ?Sized;
    type Layer: BaseLayer<F, Matrix = Self::Matrix>;
    fn layers(&self) -> &[Self::Layer];
    /// The final norm's weight `(dim)`.
    fn norm(&self) -> &[F];
    /// The output projection `(vocab, dim)`: the embedding matrix when tied.
    fn output(&self) -> &Self::Matrix;
    /// `out (T, dim) = tok_embeddings[tokens]`; tokens were checked against the vocabulary.
    fn embed(&self, out: &mut [F], tokens: &[u32], dim: usize);
    /// Every tensor's size against the pass's shapes, so that the pass itself cannot
    /// meet a mismatch.
    fn check(&self, sh: &Shape) -> Result<()>;
}

impl<F: Float> BaseLayer<F> for LayerParams<F> {
    type Matrix = [F];
    fn attention_norm(&self) -> &[F] {
        &self.attention_norm
    }
    fn ffn_norm(&self) -> &[F] {
        &self.ffn_norm
    }
    fn proj(&self, t: Target) -> &[F] {
        match t {
            Target::Q => &self.wq,
            Target::K => &self.wk,
            Target::V => &self.wv,
            Target::O => &self.wo,
            Target::Gate => &self.w1,
            Target::Up => &self.w3,
            Target::Down => &self.w2,
        }
    }
}

impl<F: Float> Base<F> for Params<F> {
    type Matrix = [F];
    type Layer = LayerParams<F>;
    fn layers(&self) -> &[LayerParams<F>] {
        &self.layers
    }
    fn norm(&self) -> &[F] {
        &self.norm
    }
    fn output(&self) -> &[F] {
        self.output.as_ref().unwrap_or(&self.tok_embeddings)
    }
    fn embed(&self, out: &mut [F], tokens: &[u32], dim: usize) {
        crate::ops::embedding::forward(out, tokens, &self.tok_embeddings, dim);
    }
    fn check(&self, sh: &Shape) -> Result<()> {
        let (d, v) = (sh.dim, sh.vocab);
        let mut want = vec![
            ("tok_embeddings", self.tok_embeddings.len(), v * d),
            ("norm", self.norm.len(), d),
            ("output", Base::output(self).len(), v * d),
        ];
        for l in &self.layers {
            want.push(("attention_norm", l.attention_norm.len(), d));
            want.push(("ffn_norm", l.ffn_norm.len(), d));
            for t in Target::ALL {
                let (i, o) = t.dims_of(sh);
                want.push((t.weight(), l.proj(t).len(), i * o));
            }
        }
        match want.into_iter().find(|(_, got, need)| got != need) {
            Some((name, got, need)) => Err(TrainError::Config(format!(
                "{name} has {got} values, the model's shape needs {need}"
            ))),
            None => Ok(()),
        }
    }
}
