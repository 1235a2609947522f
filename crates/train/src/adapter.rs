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

use ferrollama_model::LlamaConfig;
use ferrollama_model::gguf::{GgufWriter, Value};
use ferrollama_tensor::DType;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Result, TrainError};
use crate::lora::{Lora, LoraConfig, LoraPair, Target};
use crate::weights::tensor_f32;

/// PEFT's module name of a target (under `self_attn.` or `mlp.`).
fn hf_module(t: Target) -> &'static str {
    match t {
        Target::Q => "self_attn.q_proj",
        Target::K => "self_attn.k_proj",
        Target::V => "self_attn.v_proj",
        Target::O => "self_attn.o_proj",
        Target::Gate => "mlp.gate_proj",
        Target::Up => "mlp.up_proj",
        Target::Down => "mlp.down_proj",
    }
}

/// llama.cpp's tensor name of a target's weight.
fn gguf_name(t: Target) -> &'static str {
    match t {
        Target::Q => "attn_q",
        Target::K => "attn_k",
        Target::V => "attn_v",
        Target::O => "attn_output",
        Target::Gate => "ffn_gate",
        Target::Up => "ffn_up",
        Target::Down => "ffn_down",
    }
}

/// Rows of a `(heads · hd, cols)` matrix from Meta's pair order to Hugging Face's half
/// order (`to_hf`), or back: HF row `h·hd + c·hd/2 + i` is Meta row `h·hd + 2i + c`.
fn permute_rows(m: &[f32], heads: usize, cols: usize, to_hf: bool) -> Vec<f32> {
    let rows = m.len() / cols.max(1);
    let hd = rows / heads.max(1);
    let mut out = vec![0.0; m.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for c in 0..2 {
                let meta = h * hd + 2 * i + c;
                let hf = h * hd + c * (hd / 2) + i;
                let (src, dst) = if to_hf { (meta, hf) } else { (hf, meta) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&m[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
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
        "lora_dropout": 0.0,
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

/// Reads a PEFT LoRA adapter for a model shaped by `cfg` (F32, F16 or BF16 tensors).
/// Anything PEFT can express that this model cannot run is an error: another PEFT type,
/// DoRA, rsLoRA, biases, per-module ranks, unknown modules, wrong shapes.
pub fn load_peft(dir: &Path, cfg: &LlamaConfig) -> Result<Lora<f32>> {
    let cpath = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cpath).map_err(io(&cpath))?;
    let bad = |what: String| TrainError::Weights {
        path: dir.display().to_string(),
        what,
    };
    let c: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("adapter_config.json: {e}")))?;
    if c["peft_type"].as_str() != Some("LORA") {
        return Err(bad(format!("peft_type {} is not LORA", c["peft_type"])));
    }
    for flag in ["use_dora", "use_rslora"] {
        if c[flag].as_bool() == Some(true) {
            return Err(bad(format!("{flag} adapters are not supported")));
        }
    }
    if c["bias"].as_str().is_some_and(|b| b != "none") {
        return Err(bad("adapters with biases are not supported".into()));
    }
    if c["rank_pattern"].as_object().is_some_and(|m| !m.is_empty())
        || c["alpha_pattern"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    {
        return Err(bad("per-module ranks or alphas are not supported".into()));
    }
    let rank = c["r"].as_u64().ok_or_else(|| bad("no rank r".into()))? as usize;
    let alpha = c["lora_alpha"]
        .as_f64()
        .ok_or_else(|| bad("no lora_alpha".into()))?;
    let wpath = dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&wpath).map_err(io(&wpath))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("adapter_model.safetensors: {e}")))?;
    let mut targets = Vec::new();
    for t in Target::ALL {
        let m = hf_module(t);
        if st
            .names()
            .iter()
            .any(|n| n.contains(&format!(".{m}.lora_A")))
        {
            targets.push(t);
        }
    }
    let mut lora = Lora::<f32>::new(
        cfg,
        LoraConfig {
            rank,
            alpha,
            targets: targets.clone(),
        },
        0,
    )?;
    let mut used = 0;
    for (i, layer) in lora.layers.iter_mut().enumerate() {
        for t in Target::ALL {
            let Some(p) = layer[t as usize].as_mut() else {
                continue;
            };
            let (inp, out) = t.dims(cfg);
            let name = |ab: &str| {
                format!(
                    "base_model.model.model.layers.{i}.{}.lora_{ab}.weight",
                    hf_module(t)
                )
            };
            let a = tensor_f32(&st, &name("A"), rank * inp).map_err(&bad)?;
            let b = tensor_f32(&st, &name("B"), out * rank).map_err(&bad)?;
            used += 2;
            *p = LoraPair {
                a,
                b: match t {
                    Target::Q => permute_rows(&b, cfg.n_heads, rank, false),
                    Target::K => permute_rows(&b, cfg.n_kv_heads, rank, false),
                    _ => b,
                },
            };
        }
    }
    if used != st.names().len() {
        let known: Vec<String> = (0..cfg.n_layers)
            .flat_map(|i| {
                targets.iter().flat_map(move |&t| {
                    ["A", "B"].map(|ab| {
                        format!(
                            "base_model.model.model.layers.{i}.{}.lora_{ab}.weight",
                            hf_module(t)
                        )
                    })
                })
            })
            .collect();
        let extra = st
            .names()
            .into_iter()
            .find(|n| !known.iter().any(|k| k == *n))
            .map(|n| n.to_string())
            .unwrap_or_default();
        return Err(bad(format!(
            "tensor {extra} is not a LoRA matrix of this model"
        )));
    }
    Ok(lora)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_hf_conversion_by_hand() {
        // One head of 4 rows, 1 column: Meta rows (pair 0: r0 r1, pair 1: r2 r3) become
        // HF rows [r0 r2 r1 r3] (real parts, then imaginary parts).
        let m = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(permute_rows(&m, 1, 1, true), [0.0, 2.0, 1.0, 3.0]);
        // Two heads of 4 rows, 2 columns; and back again.
        let m: Vec<f32> = (0..16).map(|x| x as f32).collect();
        let hf = permute_rows(&m, 2, 2, true);
        assert_eq!(&hf[..8], &[0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0]);
        assert_eq!(permute_rows(&hf, 2, 2, false), m);
    }
}
