//! What the frozen-base tests share: the SmolLM2 file, loading a GGUF, and an adapter whose
//! B is nonzero.

use std::path::{Path, PathBuf};

use ferrollama_model::gguf::GgufFile;
use ferrollama_model::{LlamaConfig, Weights};
use ferrollama_train::{Lora, LoraConfig, ParamSet, Target};

/// SmolLM2-135M-Instruct Q4_1 (`FERROLLAMA_SMOLLM2`, else the cache `ferrollama fetch
/// smollm2` fills).
pub fn smollm2_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROLLAMA_SMOLLM2") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("FERROLLAMA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("ferrollama")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/ferrollama")))
        .unwrap_or_default();
    cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub fn load(p: &Path) -> (LlamaConfig, Weights) {
    let f = GgufFile::open(p).unwrap_or_else(|e| {
        panic!(
            "{e}: {} is needed; run ./scripts/test (it fetches SmolLM2) or `cargo run -- fetch smollm2`",
            p.display()
        )
    });
    let cfg = LlamaConfig::from_gguf(&f).unwrap();
    let w = Weights::from_gguf(&f, &cfg).unwrap();
    (cfg, w)
}

/// An adapter on every projection with B nonzero too (a fresh B = 0 would leave dA = 0).
pub fn adapter(cfg: &LlamaConfig) -> Lora<f32> {
    let lc = LoraConfig {
        dropout: 0.0,
        rank: 4,
        alpha: 8.0,
        targets: Target::ALL.to_vec(),
    };
    let mut lora = Lora::<f32>::new(cfg, lc, 3).unwrap();
    let mut s = 77u64;
    for (_, t) in lora.tensors_mut() {
        if t.iter().all(|&v| v == 0.0) {
            for v in t.iter_mut() {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *v = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02;
            }
        }
    }
    lora
}
