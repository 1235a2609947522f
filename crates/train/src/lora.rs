//! LoRA (Hu et al. 2021): a frozen projection `y = x Wᵀ` learns a low-rank update,
//! `y = x Wᵀ + (α / r) · (x Aᵀ) Bᵀ` with `A (r, in)` and `B (out, r)`. Only `A` and `B`
//! are trained; `B` starts at zero, so step 0 is the base model exactly, and `A` starts
//! as PEFT's (`kaiming_uniform_(a = √5)`: uniform in ±1/√in).
//!
//! The base never gets a weight gradient: its backward is only `dx += dy · W`.

use ferrollama_model::LlamaConfig;

use serde_json::{Value, json};

use crate::Float;
use crate::error::{Result, TrainError};
use crate::model::Shape;
use crate::params::ParamSet;

/// A projection of a transformer block that can carry an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The command line's name (`q,k,v,o,gate,up,down`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }

    /// The Meta name of the weight it adapts, within `layers.N.`.
    pub fn weight(self) -> &'static str {
        match self {
            Target::Q => "attention.wq",
            Target::K => "attention.wk",
            Target::V => "attention.wv",
            Target::O => "attention.wo",
            Target::Gate => "feed_forward.w1",
            Target::Up => "feed_forward.w3",
            Target::Down => "feed_forward.w2",
        }
    }

    /// `q,k,v,...` into targets; `all` is every projection.
    pub fn parse_list(s: &str) -> Result<Vec<Target>> {
        if s.trim() == "all" {
            return Ok(Target::ALL.to_vec());
        }
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let t = Target::ALL
                .into_iter()
                .find(|t| t.name() == part)
                .ok_or_else(|| {
                    TrainError::Config(format!(
                        "unknown LoRA target {part:?}: use q, k, v, o, gate, up, down or all"
                    ))
                })?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if out.is_empty() {
            return Err(TrainError::Config("no LoRA target given".into()));
        }
        Ok(out)
    }

    /// `(in, out)` features of the projection in a model shaped by `cfg`.
    pub fn dims(self, cfg: &LlamaConfig) -> (usize, usize) {
        let (d, q, kv, ff) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);
        match self {
            Target::Q => (d, q),
            Target::K | Target::V => (d, kv),
            Target::O => (q, d),
            Target::Gate | Target::Up => (d, ff),
            Target::Down => (ff, d),
        }
    }

    /// `(in, out)` features of the projection in the training pass's [`Shape`].
    pub fn dims_of(self, sh: &Shape) -> (usize, usize) {
        let (d, ff) = (sh.dim, sh.ffn_dim);
        let q = sh.heads.n_heads * sh.heads.head_dim;
        let kv = sh.heads.n_kv_heads * sh.heads.head_dim;
        match self {
            Target::Q => (d, q),
            Target::K | Target::V => (d, kv),
            Target::O => (q, d),
            Target::Gate | Target::Up => (d, ff),
            Target::Down => (ff, d),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Rank, scale, targets and dropout of an adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<Target>,
    /// PEFT's `lora_dropout`: the probability, in `[0, 1)`, that an element of the
    /// adapter's input is zeroed while training ([`crate::ops::dropout`]); the base path
    /// and evaluation never drop.
    pub dropout: f64,
}

impl LoraConfig {
    /// `α / r`, the factor on the low-rank update.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Rank, alpha and targets as checkpoints store them.
    pub fn to_json(&self) -> Value {
        let targets: Vec<&str> = self.targets.iter().map(|t| t.name()).collect();
        json!({"rank": self.rank, "alpha": self.alpha, "targets": targets, "dropout": self.dropout})
    }

    /// Reads [`LoraConfig::to_json`] back.
    pub fn from_json(v: &Value) -> Result<LoraConfig> {
        let bad = || TrainError::Config(format!("unreadable LoRA settings: {v}"));
        let rank = v.get("rank").and_then(Value::as_u64).ok_or_else(bad)?;
        let alpha = v.get("alpha").and_then(Value::as_f64).ok_or_else(bad)?;
        let names: Vec<&str> = v
            .get("targets")
            .and_then(Value::as_array)
            .ok_or_else(bad)?
            .iter()
            .map(|t| t.as_str().ok_or_else(bad))
            .collect::<Result<_>>()?;
        // Checkpoints from before dropout existed trained without it.
        let dropout = match v.get("dropout") {
            None => 0.0,
            Some(d) => d.as_f64().ok_or_else(bad)?,
        };
        let c = LoraConfig {
            rank: usize::try_from(rank).map_err(|_| bad())?,
            alpha,
            targets: Target::parse_list(&names.join(","))?,
            dropout,
        };
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(TrainError::Config(format!(
                "LoRA dropout is a probability in [0, 1), not {}",
                self.dropout
            )));
        }
        if self.rank == 0 {
            return Err(TrainError::Config("LoRA rank must be at least 1".into()));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(TrainError::Config(format!(
                "LoRA alpha must be a positive number, not {}",
                self.alpha
            )));
        }
        Ok(())
    }
}

/// One adapted projection's matrices.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair<F> {
    pub a: Vec<F>, // (rank, in)
    pub b: Vec<F>, // (out, rank)
}

/// An adapter for every layer: `layers[i][target]` is `None` where that projection is
/// not adapted.
#[derive(Debug, Clone, PartialEq)]
pub struct Lora<F> {
    pub config: LoraConfig,
    pub layers: Vec<[Option<LoraPair<F>>; 7]>,
}

impl<F: Float> Lora<F> {
    /// A fresh adapter: `A` uniform in ±1/√in from `seed`, `B` zero.
    pub fn new(cfg: &LlamaConfig, config: LoraConfig, seed: u64) -> Result<Lora<F>> {
        config.check()?;
        let mut s = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut uniform = move || {
            // splitmix64 -> [-1, 1)
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        let r = config.rank;
        let layers = (0..cfg.n_layers)
            .map(|_| {
                std::array::from_fn(|i| {
                    let t = Target::ALL[i];
                    config.targets.contains(&t).then(|| {
                        let (inp, out) = t.dims(cfg);
                        let bound = 1.0 / (inp as f64).sqrt();
                        LoraPair {
                            a: (0..r * inp)
                                .map(|_| F::from_f64(uniform() * bound))
                                .collect(),
                            b: vec![F::ZERO; out * r],
                        }
                    })
                })
            })
            .collect();
        Ok(Lora { config, layers })
    }

    /// An all-zero adapter for `n_layers` layers of a model shaped `sh` (what a
    /// checkpoint's tensors are read into).
    pub fn zeros(sh: &Shape, n_layers: usize, config: LoraConfig) -> Result<Lora<F>> {
        config.check()?;
        let r = config.rank;
        let layers = (0..n_layers)
            .map(|_| {
                std::array::from_fn(|i| {
                    let t = Target::ALL[i];
                    config.targets.contains(&t).then(|| {
                        let (inp, out) = t.dims_of(sh);
                        LoraPair {
                            a: vec![F::ZERO; r * inp],
                            b: vec![F::ZERO; out * r],
                        }
                    })
                })
            })
            .collect();
        Ok(Lora { config, layers })
    }

    pub fn get(&self, layer: usize, t: Target) -> Option<&LoraPair<F>> {
        self.layers.get(layer)?[t.index()].as_ref()
    }
}

impl<F: Float> ParamSet<F> for Lora<F> {
    fn tensors(&self) -> Vec<(String, &Vec<F>)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for (t, p) in Target::ALL.iter().zip(l) {
                if let Some(p) = p {
                    out.push((format!("layers.{i}.{}.lora_a", t.weight()), &p.a));
                    out.push((format!("layers.{i}.{}.lora_b", t.weight()), &p.b));
                }
            }
        }
        out
    }

    fn tensors_mut(&mut self) -> Vec<(String, &mut Vec<F>)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            for (t, p) in Target::ALL.iter().zip(l.iter_mut()) {
                if let Some(p) = p {
                    out.push((format!("layers.{i}.{}.lora_a", t.weight()), &mut p.a));
                    out.push((format!("layers.{i}.{}.lora_b", t.weight()), &mut p.b));
                }
            }
        }
        out
    }

    fn zeros_like(&self) -> Self {
        let mut z = self.clone();
        for (_, t) in z.tensors_mut() {
            t.fill(F::ZERO);
        }
        z
    }
}
