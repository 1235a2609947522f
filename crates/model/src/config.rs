//! Llama hyperparameters, from GGUF metadata or a Hugging Face `config.json`.

use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, MetadataExt};

/// Llama 3.1 RoPE frequency scaling (`rope_scaling` with `rope_type: "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: f32,
}

impl RopeScaling {
    /// Per-pair frequency divisors, exactly as llama.cpp's converter writes `rope_freqs`
    /// and Meta's `apply_scaling` implies: 1 for high frequencies, `factor` for low ones,
    /// and a smooth blend between (spec §3).
    pub fn freq_divisors(&self, head_dim: usize, theta: f32) -> Vec<f32> {
        let old = self.original_max_position_embeddings;
        let low_wavelen = old / self.low_freq_factor;
        let high_wavelen = old / self.high_freq_factor;
        (0..head_dim / 2)
            .map(|i| {
                let freq = 1.0 / theta.powf((2 * i) as f32 / head_dim as f32);
                let wavelen = 2.0 * std::f32::consts::PI / freq;
                if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    self.factor
                } else {
                    let smooth = (old / wavelen - self.low_freq_factor)
                        / (self.high_freq_factor - self.low_freq_factor);
                    1.0 / ((1.0 - smooth) / self.factor + smooth)
                }
            })
            .collect()
    }
}

/// A model architecture the one forward pass runs. Each differs from Llama only in what the
/// loaders map away at load time: Qwen2 adds q/k/v biases (optional for every
/// architecture) and stores `wq`/`wk` in rotate-half order, which the loader permutes into
/// the adjacent pairs the forward pass rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
}

impl Arch {
    /// Every architecture ferrollama runs, by its GGUF name.
    pub const ALL: [Arch; 2] = [Arch::Llama, Arch::Qwen2];

    /// GGUF's `general.architecture` name (also the prefix of its metadata keys), which is
    /// Hugging Face's `model_type` too.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    /// The architecture called `name`, or [`ModelError::UnsupportedArch`].
    pub fn from_name(name: &str) -> Result<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| ModelError::UnsupportedArch(name.to_string()))
    }

    /// A GGUF file's architecture (`llama` when the key is absent, as in old files).
    pub fn of_gguf(f: &GgufFile) -> Result<Arch> {
        Arch::from_name(f.get_str("general.architecture")?.unwrap_or("llama"))
    }

    /// Whether this architecture's GGUF files store `wq`/`wk` rows (and the q/k biases) in
    /// rotate-half order: llama.cpp runs these with `LLAMA_ROPE_TYPE_NEOX`, and its
    /// converter permutes only `llama` models into adjacent pairs.
    pub fn gguf_rotate_half(self) -> bool {
        match self {
            Arch::Llama => false,
            Arch::Qwen2 => true,
        }
    }
}

/// The names of [`Arch::ALL`], for error messages: `llama, qwen2`.
pub fn supported_arches() -> String {
    Arch::ALL.map(Arch::name).join(", ")
}

/// The numbers that shape a Llama model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Model width.
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Leading dimensions of each head that RoPE rotates (usually all of them).
    pub rope_dims: usize,
    /// Feed-forward hidden width (w1/w3 rows).
    pub ffn_dim: usize,
    pub vocab_size: usize,
    pub norm_eps: f32,
    pub rope_theta: f32,
    /// Training context length.
    pub max_seq_len: usize,
    /// Llama 3.1 scaling given as parameters (HF configs); GGUF files carry divisors as the
    /// `rope_freqs` tensor instead.
    pub rope_scaling: Option<RopeScaling>,
}

impl LlamaConfig {
    /// Reads `<arch>.*` metadata (`llama.*`, `qwen2.*`) from a GGUF file.
    pub fn from_gguf(f: &GgufFile) -> Result<LlamaConfig> {
        let arch = Arch::of_gguf(f)?.name();
        let k = |s: &str| format!("{arch}.{s}");
        let dim = f.require_usize(&k("embedding_length"))?;
        let n_heads = f.require_usize(&k("attention.head_count"))?;
        let n_kv_heads = f
            .get_u64(&k("attention.head_count_kv"))?
            .map_or(n_heads, |v| v as usize);
        let vocab_size = match f.get_u64(&k("vocab_size"))? {
            Some(v) => v as usize,
            None => f
                .tensor("token_embd.weight")
                .map(|t| t.matrix_shape().0)
                .ok_or_else(|| ModelError::Metadata {
                    key: k("vocab_size"),
                    what: "missing, and no token_embd.weight to infer it from".into(),
                })?,
        };
        let head_dim = match f.get_u64(&k("attention.key_length"))? {
            Some(v) => v as usize,
            None if n_heads > 0 => dim / n_heads,
            None => 0,
        };
        let cfg = LlamaConfig {
            dim,
            n_layers: f.require_usize(&k("block_count"))?,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_dims: f
                .get_u64(&k("rope.dimension_count"))?
                .map_or(head_dim, |v| v as usize),
            ffn_dim: f.require_usize(&k("feed_forward_length"))?,
            vocab_size,
            norm_eps: f
                .get_f64(&k("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5) as f32,
            rope_theta: f.get_f64(&k("rope.freq_base"))?.unwrap_or(10_000.0) as f32,
            max_seq_len: f
                .get_u64(&k("context_length"))?
                .map_or(4096, |v| v as usize),
            rope_scaling: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(text: &str) -> Result<LlamaConfig> {
        #[derive(Deserialize)]
        struct Hf {
            hidden_size: usize,
            num_hidden_layers: usize,
            num_attention_heads: usize,
            num_key_value_heads: Option<usize>,
            head_dim: Option<usize>,
            intermediate_size: usize,
            vocab_size: usize,
            rms_norm_eps: Option<f32>,
            rope_theta: Option<f32>,
            max_position_embeddings: Option<usize>,
            rope_scaling: Option<serde_json::Value>,
            /// transformers 5 writes `rope_parameters` (with `rope_theta` inside) instead of
            /// `rope_scaling` and a top-level `rope_theta`.
            rope_parameters: Option<serde_json::Value>,
            model_type: Option<String>,
            use_sliding_window: Option<bool>,
        }
        let hf: Hf = serde_json::from_str(text)
            .map_err(|e| ModelError::Invalid(format!("config.json: {e}")))?;
        // Older Llama configs may lack `model_type`.
        Arch::from_name(hf.model_type.as_deref().unwrap_or("llama"))?;
        if hf.use_sliding_window == Some(true) {
            // Qwen2 configs carry the key, off in every released model; llama.cpp ignores it.
            return Err(ModelError::Unsupported(
                "config.json use_sliding_window: sliding-window attention".into(),
            ));
        }
        let params = hf.rope_parameters.filter(|v| !v.is_null());
        let theta_in_params = params
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(|t| t.as_f64())
            .map(|t| t as f32);
        let scaling = match hf.rope_scaling {
            Some(v) if !v.is_null() => Some(v),
            _ => params,
        };
        let rope_type = |v: &serde_json::Value| {
            v.get("rope_type")
                .or_else(|| v.get("type"))
                .and_then(|t| t.as_str())
                .map(str::to_string)
        };
        let rope_scaling = match scaling {
            // rope_parameters always names a type; "default" is plain RoPE.
            Some(v) if rope_type(&v).as_deref() == Some("default") => None,
            Some(v) if rope_type(&v).as_deref() == Some("llama3") => Some(
                serde_json::from_value::<RopeScaling>(v)
                    .map_err(|e| ModelError::Invalid(format!("config.json rope_scaling: {e}")))?,
            ),
            Some(serde_json::Value::Null) | None => None,
            Some(other) => {
                return Err(ModelError::Unsupported(format!("rope_scaling {other}")));
            }
        };
        let n_heads = hf.num_attention_heads;
        let head_dim = hf
            .head_dim
            .unwrap_or_else(|| hf.hidden_size.checked_div(n_heads).unwrap_or(0));
        let cfg = LlamaConfig {
            dim: hf.hidden_size,
            n_layers: hf.num_hidden_layers,
            n_heads,
            n_kv_heads: hf.num_key_value_heads.unwrap_or(n_heads),
            head_dim,
            rope_dims: head_dim,
            ffn_dim: hf.intermediate_size,
            vocab_size: hf.vocab_size,
            norm_eps: hf.rms_norm_eps.unwrap_or(1e-5),
            rope_theta: hf.rope_theta.or(theta_in_params).unwrap_or(10_000.0),
            max_seq_len: hf.max_position_embeddings.unwrap_or(4096),
            rope_scaling,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects shapes the forward pass cannot run (and absurd sizes from crafted files).
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(ModelError::Invalid(format!("model shape: {what}")));
        if self.dim == 0 || self.n_layers == 0 || self.n_heads == 0 || self.n_kv_heads == 0 {
            return bad(format!("{self:?} has a zero dimension"));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} heads do not divide into {} KV heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) || self.head_dim > 1024 {
            return bad(format!(
                "head_dim {} must be even and at most 1024",
                self.head_dim
            ));
        }
        if !self.rope_dims.is_multiple_of(2) || self.rope_dims > self.head_dim {
            return bad(format!(
                "rope dims {} for head_dim {}",
                self.rope_dims, self.head_dim
            ));
        }
        // Heads are bounded too, so q_dim() and kv_dim() cannot overflow (with head_dim
        // at most 1024 they stay under 2^22).
        if self.dim > 1 << 16
            || self.n_heads > 1 << 12
            || self.ffn_dim > 1 << 18
            || self.n_layers > 1024
            || self.vocab_size > 1 << 22
        {
            return bad("absurdly large".into());
        }
        let eps_ok = self.norm_eps > 0.0 && self.norm_eps < 1.0;
        let theta_ok = self.rope_theta > 1.0; // false for NaN too
        if !eps_ok || !theta_ok {
            return bad(format!(
                "norm_eps {} / rope_theta {}",
                self.norm_eps, self.rope_theta
            ));
        }
        Ok(())
    }

    /// Heads sharing one KV head.
    pub fn n_rep(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Width of the K and V projections.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Width of the Q projection.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama31_divisors_blend_between_bands() {
        let s = RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let d = s.freq_divisors(128, 500_000.0);
        assert_eq!(d.len(), 64);
        assert_eq!(d[0], 1.0, "highest frequency untouched");
        assert_eq!(d[63], 8.0, "lowest frequency divided by the factor");
        assert!(d.windows(2).all(|w| w[0] <= w[1]), "monotone");
        assert!(
            d.iter().any(|&x| x > 1.0 && x < 8.0),
            "a smooth middle band exists"
        );
    }

    /// Found by review while writing the `config` fuzz target, reproduced with it (panic
    /// "attempt to multiply with overflow" in `q_dim`): `validate` bounded `head_dim` but
    /// not the head count, so 2^62 heads of 4 passed and `n_heads * head_dim` overflowed
    /// (wrapping to a zero-row `wq` in release builds).
    #[test]
    fn head_count_overflow() {
        let text = r#"{"hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 4611686018427387904, "num_key_value_heads": 1,
            "head_dim": 4, "intermediate_size": 16, "vocab_size": 16}"#;
        let e = LlamaConfig::from_hf_json(text).expect_err("absurd head count");
        assert!(e.to_string().contains("absurdly large"), "{e}");
        // A real head count still validates.
        let ok = text.replace("4611686018427387904", "2");
        assert_eq!(LlamaConfig::from_hf_json(&ok).expect("config").q_dim(), 8);
    }

    #[test]
    fn other_architectures_are_named_in_the_error() {
        let e = Arch::from_name("gemma2").expect_err("gemma2");
        assert_eq!(
            e.to_string(),
            "unsupported architecture \"gemma2\" (supported: llama, qwen2)"
        );
        assert_eq!(Arch::from_name("qwen2").ok(), Some(Arch::Qwen2));
        let text = r#"{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 16, "vocab_size": 16, "model_type": "MODEL"}"#;
        let e = LlamaConfig::from_hf_json(&text.replace("MODEL", "mistral")).expect_err("type");
        assert!(
            matches!(e, ModelError::UnsupportedArch(ref a) if a == "mistral"),
            "{e}"
        );
        for ok in ["llama", "qwen2"] {
            assert!(
                LlamaConfig::from_hf_json(&text.replace("MODEL", ok)).is_ok(),
                "{ok}"
            );
        }
        let sliding = text
            .replace("MODEL", "qwen2")
            .replace('}', r#", "use_sliding_window": true}"#);
        assert!(LlamaConfig::from_hf_json(&sliding).is_err());
    }

    #[test]
    fn hf_config_with_llama3_scaling() {
        let c = LlamaConfig::from_hf_json(
            r#"{"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
                "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256,
                "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072,
                "rope_scaling": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192, "rope_type": "llama3"}}"#,
        )
        .expect("config");
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.n_rep(), 4);
        assert_eq!(c.rope_scaling.map(|s| s.factor), Some(32.0));
        assert!(LlamaConfig::from_hf_json("{}").is_err());
    }

    /// Regression: transformers 5 saves `rope_parameters` (theta inside, no top-level
    /// `rope_theta`, no `rope_scaling`); the loader read theta 10000 and no scaling, so an
    /// HF folder saved by transformers 5 ran with the wrong RoPE.
    #[test]
    fn transformers_v5_rope_parameters_are_read() {
        let base = r#"{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 64,
            "rope_parameters": PARAMS}"#;
        let c = LlamaConfig::from_hf_json(&base.replace(
            "PARAMS",
            r#"{"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                "original_max_position_embeddings": 64, "rope_theta": 500000.0,
                "rope_type": "llama3"}"#,
        ))
        .expect("config");
        assert_eq!(c.rope_theta, 500_000.0);
        assert_eq!(
            c.rope_scaling.map(|s| s.original_max_position_embeddings),
            Some(64.0)
        );
        let plain = LlamaConfig::from_hf_json(&base.replace(
            "PARAMS",
            r#"{"rope_theta": 100000.0, "rope_type": "default"}"#,
        ))
        .expect("config");
        assert_eq!((plain.rope_theta, plain.rope_scaling), (100_000.0, None));
        let yarn = base.replace(
            "PARAMS",
            r#"{"rope_theta": 1e6, "rope_type": "yarn", "factor": 4.0}"#,
        );
        assert!(
            LlamaConfig::from_hf_json(&yarn).is_err(),
            "unsupported scaling is refused"
        );
    }
}
