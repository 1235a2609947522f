//! The trainable tensors of a Llama model, by Meta's names, in one `F` type. Gradients
//! and the optimizer's moments have the same shape, so they are `Params` too.

use ferrollama_model::LlamaConfig;

use crate::Float;

/// A set of named trainable tensors: what the optimizer and gradient clipping walk
/// (the whole model's [`Params`], or a LoRA adapter).
pub trait ParamSet<F>: Clone {
    /// Every tensor with its name, in a fixed order.
    fn tensors(&self) -> Vec<(String, &Vec<F>)>;
    /// The same tensors, mutable, in the same order.
    fn tensors_mut(&mut self) -> Vec<(String, &mut Vec<F>)>;
    /// A zeroed copy with the same shapes.
    fn zeros_like(&self) -> Self;
}

impl<F: Float> ParamSet<F> for Params<F> {
    fn tensors(&self) -> Vec<(String, &Vec<F>)> {
        Params::tensors(self)
    }
    fn tensors_mut(&mut self) -> Vec<(String, &mut Vec<F>)> {
        Params::tensors_mut(self)
    }
    fn zeros_like(&self) -> Self {
        Params::zeros_like(self)
    }
}

/// One transformer block's tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerParams<F> {
    pub attention_norm: Vec<F>, // (dim)
    pub wq: Vec<F>,             // (n_heads · head_dim, dim)
    pub wk: Vec<F>,             // (n_kv_heads · head_dim, dim)
    pub wv: Vec<F>,             // (n_kv_heads · head_dim, dim)
    pub wo: Vec<F>,             // (dim, n_heads · head_dim)
    pub ffn_norm: Vec<F>,       // (dim)
    pub w1: Vec<F>,             // (ffn_dim, dim) gate
    pub w3: Vec<F>,             // (ffn_dim, dim) up
    pub w2: Vec<F>,             // (dim, ffn_dim) down
}

/// Every trainable tensor of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Params<F> {
    pub tok_embeddings: Vec<F>, // (vocab, dim)
    pub layers: Vec<LayerParams<F>>,
    pub norm: Vec<F>, // (dim)
    /// `(vocab, dim)`; `None` when the output projection is tied to `tok_embeddings`.
    pub output: Option<Vec<F>>,
}

impl<F: Float> Params<F> {
    /// All zeros, shaped by `cfg` (`tied`: no separate output matrix).
    pub fn zeros(cfg: &LlamaConfig, tied: bool) -> Params<F> {
        let (d, q, kv, ff, v) = (
            cfg.dim,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.ffn_dim,
            cfg.vocab_size,
        );
        let z = |n: usize| vec![F::ZERO; n];
        Params {
            tok_embeddings: z(v * d),
            layers: (0..cfg.n_layers)
                .map(|_| LayerParams {
                    attention_norm: z(d),
                    wq: z(q * d),
                    wk: z(kv * d),
                    wv: z(kv * d),
                    wo: z(d * q),
                    ffn_norm: z(d),
                    w1: z(ff * d),
                    w3: z(ff * d),
                    w2: z(d * ff),
                })
                .collect(),
            norm: z(d),
            output: if tied { None } else { Some(z(v * d)) },
        }
    }

    /// No tensors, only `n_layers` empty layers: what a LoRA run over a base held in its
    /// stored type ([`crate::FrozenBase`]) keeps in place of f32 parameters.
    pub fn shell(n_layers: usize) -> Params<F> {
        let layer = || LayerParams {
            attention_norm: Vec::new(),
            wq: Vec::new(),
            wk: Vec::new(),
            wv: Vec::new(),
            wo: Vec::new(),
            ffn_norm: Vec::new(),
            w1: Vec::new(),
            w3: Vec::new(),
            w2: Vec::new(),
        };
        Params {
            tok_embeddings: Vec::new(),
            layers: (0..n_layers).map(|_| layer()).collect(),
            norm: Vec::new(),
            output: None,
        }
    }

    /// A zeroed copy with the same shapes.
    pub fn zeros_like(&self) -> Params<F> {
        let mut p = self.clone();
        p.fill(F::ZERO);
        p
    }

    pub fn fill(&mut self, x: F) {
        for t in self.tensors_mut() {
            t.1.fill(x);
        }
    }

    /// Every tensor with its Meta name (`tok_embeddings.weight`,
    /// `layers.0.attention.wq.weight`, ...), in a fixed order.
    pub fn tensors(&self) -> Vec<(String, &Vec<F>)> {
        let mut out = vec![("tok_embeddings.weight".to_string(), &self.tok_embeddings)];
        for (i, l) in self.layers.iter().enumerate() {
            let p = |n: &str| format!("layers.{i}.{n}.weight");
            out.push((p("attention_norm"), &l.attention_norm));
            out.push((p("attention.wq"), &l.wq));
            out.push((p("attention.wk"), &l.wk));
            out.push((p("attention.wv"), &l.wv));
            out.push((p("attention.wo"), &l.wo));
            out.push((p("ffn_norm"), &l.ffn_norm));
            out.push((p("feed_forward.w1"), &l.w1));
            out.push((p("feed_forward.w3"), &l.w3));
            out.push((p("feed_forward.w2"), &l.w2));
        }
        out.push(("norm.weight".to_string(), &self.norm));
        if let Some(o) = &self.output {
            out.push(("output.weight".to_string(), o));
        }
        out
    }

    /// [`Params::tensors`], mutable, in the same order.
    pub fn tensors_mut(&mut self) -> Vec<(String, &mut Vec<F>)> {
        let mut out = vec![(
            "tok_embeddings.weight".to_string(),
            &mut self.tok_embeddings,
        )];
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = |n: &str| format!("layers.{i}.{n}.weight");
            out.push((p("attention_norm"), &mut l.attention_norm));
            out.push((p("attention.wq"), &mut l.wq));
            out.push((p("attention.wk"), &mut l.wk));
            out.push((p("attention.wv"), &mut l.wv));
            out.push((p("attention.wo"), &mut l.wo));
            out.push((p("ffn_norm"), &mut l.ffn_norm));
            out.push((p("feed_forward.w1"), &mut l.w1));
            out.push((p("feed_forward.w3"), &mut l.w3));
            out.push((p("feed_forward.w2"), &mut l.w2));
        }
        out.push(("norm.weight".to_string(), &mut self.norm));
        if let Some(o) = &mut self.output {
            out.push(("output.weight".to_string(), o));
        }
        out
    }

    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.tensors().iter().map(|t| t.1.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy in another number type.
    pub fn cast<G: Float>(&self) -> Params<G> {
        let c = |v: &Vec<F>| {
            v.iter()
                .map(|x| G::from_f64(x.to_f64()))
                .collect::<Vec<G>>()
        };
        Params {
            tok_embeddings: c(&self.tok_embeddings),
            layers: self
                .layers
                .iter()
                .map(|l| LayerParams {
                    attention_norm: c(&l.attention_norm),
                    wq: c(&l.wq),
                    wk: c(&l.wk),
                    wv: c(&l.wv),
                    wo: c(&l.wo),
                    ffn_norm: c(&l.ffn_norm),
                    w1: c(&l.w1),
                    w3: c(&l.w3),
                    w2: c(&l.w2),
                })
                .collect(),
            norm: c(&self.norm),
            output: self.output.as_ref().map(c),
        }
    }
}
