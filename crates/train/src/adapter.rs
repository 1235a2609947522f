//! LoRA adapter files, in the two formats people load them with:
//! - **PEFT** (`adapter_config.json` + `adapter_model.safetensors`), with Hugging Face's
//!   module names (`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`, ...);
//! - **GGUF** as llama.cpp reads adapters (`general.type = adapter`, `adapter.type = lora`,
//!   `adapter.lora.alpha`, tensors `blk.N.attn_q.weight.lora_a` / `.lora_b`).
//!
//! Our matrices follow Meta's layout, where RoPE rotates adjacent pairs of each head.
//! Hugging Face's Llama stores `q_proj` / `k_proj` rows permuted to rotate halves instead
//! (its conversion script's `permute`), so the output rows of `B` of q and k are permuted
//! the same way for PEFT, and back when a PEFT adapter is read. GGUF keeps Meta's layout.

use std::collections::BTreeMap;
use std::path::Path;

use ferrollama_model::gguf::{GgufWriter, Value};
use ferrollama_model::{Adapter, LlamaConfig, Proj};
use ferrollama_tensor::DType;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::error::{Result, TrainError};
use crate::lora::{Lora, LoraConfig, LoraPair, Target};

/// The model crate's name for a target (the two enums list the projections in one order).
fn proj(t: Target) -> Proj {
    Proj::ALL[t as usize]
}

fn hf_module(t: Target) -> &'static str {
    proj(t).hf_module()
}

fn gguf_name(t: Target) -> &'static str {
    proj(t).gguf_name()
}

/// Meta's row order to Hugging Face's (`to_hf`) or back; the model crate's permutation.
fn permute_rows(m: &[f32], heads: usize, cols: usize, to_hf: bool) -> Vec<f32> {
    if to_hf {
        ferrollama_model::adapter::permute_rows(m, heads, cols)
    } else {
        ferrollama_model::adapter::unpermute_rows(m, heads, cols)
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors` (f32), each
/// atomically. `base` names the base model in the config.
pub fn save_peft(dir: &Path, lora: &Lora<f32>, cfg: &LlamaConfig, base: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (i, layer) in lora.layers.iter().enumerate() {
        for t in Target::ALL {
            let Some(p) = &layer[t as usize] else {
                continue;
            };
            let (inp, out) = t.dims(cfg);
            let r = lora.config.rank;
            let b = match t {
                Target::Q => permute_rows(&p.b, cfg.n_heads, r, true),
                Target::K => permute_rows(&p.b, cfg.n_kv_heads, r, true),
                _ => p.b.clone(),
            };
            let name = |ab: &str| {
                format!(
                    "base_model.model.model.layers.{i}.{}.lora_{ab}.weight",
                    hf_module(t)
                )
            };
            tensors.insert(name("A"), (vec![r, inp], f32_bytes(&p.a)));
            tensors.insert(name("B"), (vec![out, r], f32_bytes(&b)));
        }
    }
    let views = tensors
        .iter()
        .map(|(n, (shape, bytes))| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| TrainError::Weights {
                    path: n.clone(),
                    what: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| TrainError::Weights {
        path: dir.display().to_string(),
        what: e.to_string(),
    })?;
    let mut targets: Vec<&str> = lora
        .config
        .targets
        .iter()
        .map(|&t| hf_module(t).rsplit('.').next().unwrap_or_default())
        .collect();
    targets.sort_unstable();
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": lora.config.rank,
        "lora_alpha": lora.config.alpha,
        "lora_dropout": lora.config.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
        "layers_to_transform": null,
        "revision": null
    });
    let text =
        serde_json::to_string_pretty(&config).map_err(|e| TrainError::Config(e.to_string()))?;
    write_atomic(&dir.join("adapter_model.safetensors"), &bytes)?;
    write_atomic(&dir.join("adapter_config.json"), text.as_bytes())
}

/// Reads a PEFT LoRA adapter for a model shaped by `cfg` (F32, F16 or BF16 tensors), with
/// the model crate's reader ([`Adapter::read_peft`], the one the engine serves adapters
/// with). Anything PEFT can express that this model cannot run is an error: another PEFT
/// type, DoRA, rsLoRA, biases, per-module ranks, unknown modules, wrong shapes.
pub fn load_peft(dir: &Path, cfg: &LlamaConfig) -> Result<Lora<f32>> {
    let a = Adapter::read_peft(dir, cfg).map_err(|e| TrainError::Weights {
        path: dir.display().to_string(),
        what: e.to_string(),
    })?;
    Ok(from_adapter(a))
}

/// An inference adapter as trainable LoRA matrices.
pub fn from_adapter(a: Adapter) -> Lora<f32> {
    let targets = a
        .targets()
        .into_iter()
        .map(|p| Target::ALL[p.index()])
        .collect();
    let layers = a
        .layers
        .into_iter()
        .map(|l| l.map(|p| p.map(|p| LoraPair { a: p.a, b: p.b })))
        .collect();
    Lora {
        config: LoraConfig {
            rank: a.rank,
            alpha: a.alpha,
            targets,
            // Serving ignores it; a run continuing this adapter sets its own.
            dropout: 0.0,
        },
        layers,
    }
}

/// Writes a llama.cpp LoRA adapter (f32 tensors) for a base of architecture `arch`.
pub fn save_gguf(path: &Path, lora: &Lora<f32>, cfg: &LlamaConfig, arch: &str) -> Result<()> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String(arch.into()));
    w.set("general.type", Value::String("adapter".into()));
    w.set("adapter.type", Value::String("lora".into()));
    w.set("adapter.lora.alpha", Value::F32(lora.config.alpha as f32));
    let bad = |e: ferrollama_model::ModelError| TrainError::Weights {
        path: path.display().to_string(),
        what: e.to_string(),
    };
    for (i, layer) in lora.layers.iter().enumerate() {
        for t in Target::ALL {
            let Some(p) = &layer[t as usize] else {
                continue;
            };
            let (inp, out) = t.dims(cfg);
            let r = lora.config.rank;
            let base = format!("blk.{i}.{}.weight", gguf_name(t));
            // ggml order: a is [in, r] (r rows of `in`), b is [r, out].
            w.add_tensor(
                &format!("{base}.lora_a"),
                &[inp, r],
                DType::F32,
                f32_bytes(&p.a),
            )
            .map_err(bad)?;
            w.add_tensor(
                &format!("{base}.lora_b"),
                &[r, out],
                DType::F32,
                f32_bytes(&p.b),
            )
            .map_err(bad)?;
        }
    }
    w.write(path).map_err(bad)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Temporary file in the same directory, fsync, rename: a crash leaves the old file or
/// the new one, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("partial");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}
