//! The frozen base of a LoRA run in its stored types: every projection and the output
//! matrix a [`FrozenMatrix`] (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q6_K,
//! mixed as the file has them), the norms in f32 (a few KiB). Built straight from the
//! loaded [`Weights`] without converting or copying a matrix: a Q4_K model trains its
//! adapter with about 4.5 bits per base weight in memory, not 32.

use ferrollama_model::{LlamaConfig, Weights};
use ferrollama_tensor::ThreadPool;

use crate::base::{Base, BaseLayer, Projection};
use crate::error::{Result, TrainError};
use crate::frozen::FrozenMatrix;
use crate::frozen_int::BaseCompute;
use crate::lora::Target;
use crate::model::Shape;

/// One transformer block of a [`FrozenBase`].
#[derive(Debug, Clone)]
pub struct FrozenLayer {
    pub attention_norm: Vec<f32>, // (dim)
    pub ffn_norm: Vec<f32>,       // (dim)
    pub wq: FrozenMatrix,         // (n_heads · head_dim, dim)
    pub wk: FrozenMatrix,         // (n_kv_heads · head_dim, dim)
    pub wv: FrozenMatrix,         // (n_kv_heads · head_dim, dim)
    pub wo: FrozenMatrix,         // (dim, n_heads · head_dim)
    pub w1: FrozenMatrix,         // (ffn_dim, dim) gate
    pub w3: FrozenMatrix,         // (ffn_dim, dim) up
    pub w2: FrozenMatrix,         // (dim, ffn_dim) down
}

/// A model's weights as the frozen base of LoRA training.
#[derive(Debug, Clone)]
pub struct FrozenBase {
    pub tok_embeddings: FrozenMatrix, // (vocab, dim), rows widened on lookup
    pub layers: Vec<FrozenLayer>,
    pub norm: Vec<f32>, // (dim)
    /// `(vocab, dim)`; `None` when the output projection is tied to `tok_embeddings`.
    pub output: Option<FrozenMatrix>,
}

impl FrozenBase {
    /// The frozen base of `w` (as `Weights::from_gguf` or another loader gives it) and
    /// the RoPE divisors to train with (the file's `rope_freqs`, else `cfg`'s Llama 3.1
    /// scaling), as [`crate::weights::params_from_weights`] returns them. No matrix is
    /// converted: each keeps `w`'s bytes (a memory-mapped file stays mapped, its pages
    /// read as the pass touches them). Errors: q/k/v biases (Qwen2, not trained yet), a
    /// matrix type without a decoder (FP8), or shapes that differ from `cfg`.
    pub fn from_weights(w: &Weights, cfg: &LlamaConfig) -> Result<(FrozenBase, Vec<f32>)> {
        let err = |what: String| TrainError::Weights {
            path: "model".into(),
            what,
        };
        let m = |t: &ferrollama_model::Tensor, name: &str, rows: usize, cols: usize| {
            if (t.rows, t.cols) != (rows, cols) {
                return Err(err(format!(
                    "{name} is [{}, {}], the config needs [{rows}, {cols}]",
                    t.rows, t.cols
                )));
            }
            FrozenMatrix::new(t).map_err(|e| err(format!("{name}: {e}")))
        };
        let (d, q, kv, ff, v) = (
            cfg.dim,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.ffn_dim,
            cfg.vocab_size,
        );
        if w.layers.len() != cfg.n_layers {
            return Err(err(format!(
                "{} layers, the config says {}",
                w.layers.len(),
                cfg.n_layers
            )));
        }
        let vector = |x: &Vec<f32>, name: &str| {
            if x.len() == d {
                Ok(x.clone())
            } else {
                Err(err(format!("{name} has {} values, not {d}", x.len())))
            }
        };
        let mut layers = Vec::with_capacity(w.layers.len());
        for (i, l) in w.layers.iter().enumerate() {
            if l.bq.is_some() || l.bk.is_some() || l.bv.is_some() {
                return Err(err(format!(
                    "layer {i} has q/k/v biases (Qwen2): training them is not supported yet"
                )));
            }
            let n = |s: &str| format!("layers.{i}.{s}");
            layers.push(FrozenLayer {
                attention_norm: vector(&l.attention_norm, &n("attention_norm"))?,
                ffn_norm: vector(&l.ffn_norm, &n("ffn_norm"))?,
                wq: m(&l.wq, &n("attention.wq"), q, d)?,
                wk: m(&l.wk, &n("attention.wk"), kv, d)?,
                wv: m(&l.wv, &n("attention.wv"), kv, d)?,
                wo: m(&l.wo, &n("attention.wo"), d, q)?,
                w1: m(&l.w1, &n("feed_forward.w1"), ff, d)?,
                w3: m(&l.w3, &n("feed_forward.w3"), ff, d)?,
                w2: m(&l.w2, &n("feed_forward.w2"), d, ff)?,
            });
        }
        let tied = w.output.same_data(&w.tok_embeddings);
        let base = FrozenBase {
            tok_embeddings: m(&w.tok_embeddings, "tok_embeddings", v, d)?,
            layers,
            norm: vector(&w.norm, "norm")?,
            output: if tied {
                None
            } else {
                Some(m(&w.output, "output", v, d)?)
            },
        };
        let divisors = match (&w.rope_freqs, cfg.rope_scaling) {
            (Some(f), _) => f.clone(),
            (None, Some(s)) => s.freq_divisors(cfg.rope_dims, cfg.rope_theta),
            (None, None) => Vec::new(),
        };
        Ok((base, divisors))
    }

    /// Switches every matrix the pass multiplies (the projections and the output, which
    /// is the embedding when tied) to `compute`, building the integer path's copies on
    /// `pool` for [`BaseCompute::Int8`] (SmolLM2-135M: about a second on 2 threads). The
    /// embedding lookup reads the stored rows either way.
    pub fn set_compute(&mut self, compute: BaseCompute, pool: &ThreadPool) -> Result<()> {
        for l in &mut self.layers {
            for m in [
                &mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w1, &mut l.w3, &mut l.w2,
            ] {
                m.set_compute(compute, pool)?;
            }
        }
        match &mut self.output {
            Some(o) => o.set_compute(compute, pool),
            None => self.tok_embeddings.set_compute(compute, pool),
        }
    }

    /// Bytes the base holds: every stored matrix once (a tied output is the embedding),
    /// the integer path's copies where they were made, and the f32 norms. For a Q4_K
    /// model about 0.56 bytes per weight, for F16 2 (each +1.06 with
    /// [`BaseCompute::Int8`], F16 +2.1).
    pub fn bytes(&self) -> usize {
        let norms: usize = self
            .layers
            .iter()
            .map(|l| l.attention_norm.len() + l.ffn_norm.len())
            .sum::<usize>()
            + self.norm.len();
        let matrices: usize = self
            .layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w3, &l.w2])
            .chain(std::iter::once(&self.tok_embeddings))
            .chain(&self.output)
            .map(FrozenMatrix::bytes)
            .sum();
        matrices + 4 * norms
    }

    /// Weights in the base (each stored matrix once, norms included).
    pub fn n_weights(&self) -> usize {
        let n = |m: &FrozenMatrix| m.rows() * m.cols();
        self.layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w3, &l.w2]
                    .into_iter()
                    .map(n)
                    .sum::<usize>()
                    + l.attention_norm.len()
                    + l.ffn_norm.len()
            })
            .sum::<usize>()
            + n(&self.tok_embeddings)
            + self.output.as_ref().map_or(0, n)
            + self.norm.len()
    }
}

/// A frozen matrix in the pass. `Base::check` has compared every matrix with the pass's
/// shapes before the pass starts, so the products cannot meet a length they refuse; if
/// one ever did, the output is NaN, which the trainer stops on, rather than a plausible
/// wrong number or a panic.
impl Projection<f32> for FrozenMatrix {
    fn forward(&self, pool: &ThreadPool, out: &mut [f32], x: &[f32], c: usize, oc: usize) {
        debug_assert_eq!((self.cols(), self.rows()), (c, oc));
        if FrozenMatrix::forward(self, pool, out, x).is_err() {
            out.fill(f32::NAN);
        }
    }
    fn backward_input(&self, pool: &ThreadPool, dx: &mut [f32], dy: &[f32], c: usize, oc: usize) {
        debug_assert_eq!((self.cols(), self.rows()), (c, oc));
        if FrozenMatrix::backward_input(self, pool, dx, dy).is_err() {
            dx.fill(f32::NAN);
        }
    }
}

impl BaseLayer<f32> for FrozenLayer {
    type Matrix = FrozenMatrix;
    fn attention_norm(&self) -> &[f32] {
        &self.attention_norm
    }
    fn ffn_norm(&self) -> &[f32] {
        &self.ffn_norm
    }
    fn proj(&self, t: Target) -> &FrozenMatrix {
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

impl Base<f32> for FrozenBase {
    type Matrix = FrozenMatrix;
    type Layer = FrozenLayer;
    fn layers(&self) -> &[FrozenLayer] {
        &self.layers
    }
    fn norm(&self) -> &[f32] {
        &self.norm
    }
    fn output(&self) -> &FrozenMatrix {
        self.output.as_ref().unwrap_or(&self.tok_embeddings)
    }
    fn embed(&self, out: &mut [f32], tokens: &[u32], dim: usize) {
        for (o, &tok) in out.chunks_exact_mut(dim).zip(tokens) {
            if self.tok_embeddings.row_f32(tok as usize, o).is_err() {
                // Tokens were checked against the vocabulary; see the note on `Projection`.
                o.fill(f32::NAN);
            }
        }
    }
    fn check(&self, sh: &Shape) -> Result<()> {
        let (d, v) = (sh.dim, sh.vocab);
        let shape = |m: &FrozenMatrix| (m.rows(), m.cols());
        let mut want = vec![
            ("tok_embeddings", shape(&self.tok_embeddings), (v, d)),
            ("output", shape(Base::output(self)), (v, d)),
            ("norm", (1, self.norm.len()), (1, d)),
        ];
        for l in &self.layers {
            want.push(("attention_norm", (1, l.attention_norm.len()), (1, d)));
            want.push(("ffn_norm", (1, l.ffn_norm.len()), (1, d)));
            for t in Target::ALL {
                let (i, o) = t.dims_of(sh);
                want.push((t.weight(), shape(l.proj(t)), (o, i)));
            }
        }
        match want.into_iter().find(|(_, got, need)| got != need) {
            Some((name, got, need)) => Err(TrainError::Config(format!(
                "{name} is {got:?}, the model's shape needs {need:?}"
            ))),
            None => Ok(()),
        }
    }
}
