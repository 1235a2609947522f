//! Adapter files: PEFT's layout (names, shapes, Hugging Face's q/k row order, the config
//! keys PEFT reads) and llama.cpp's GGUF adapter layout, written and read back.

#![allow(clippy::unwrap_used)]

use ferrollama_model::gguf::{GgufFile, MetadataExt};
use ferrollama_model::{LlamaConfig, RopeScaling};
use ferrollama_train::adapter::{load_peft, save_gguf, save_peft};
use ferrollama_train::{Lora, LoraConfig, ParamSet, Target};
use safetensors::SafeTensors;

fn cfg() -> LlamaConfig {
    LlamaConfig {
        dim: 16,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 4,
        rope_dims: 4,
        ffn_dim: 24,
        vocab_size: 12,
        norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_seq_len: 64,
        rope_scaling: Some(RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 32.0,
        }),
    }
}

fn adapter(targets: &str) -> Lora<f32> {
    let mut l = Lora::<f32>::new(
        &cfg(),
        LoraConfig {
            dropout: 0.0,
            rank: 2,
            alpha: 16.0,
            targets: Target::parse_list(targets).unwrap(),
        },
        5,
    )
    .unwrap();
    let mut x = 0.0f32;
    for (name, t) in l.tensors_mut() {
        if name.ends_with("lora_b") {
            t.iter_mut().for_each(|v| {
                x += 0.25;
                *v = x;
            });
        }
    }
    l
}

#[test]
fn peft_files_have_peft_names_shapes_and_hf_row_order() {
    let dir = tempfile_dir("peft");
    let l = adapter("all");
    save_peft(&dir, &l, &cfg(), "SmolLM2-135M").unwrap();
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(c["peft_type"], "LORA");
    assert_eq!(c["r"], 2);
    assert_eq!(c["lora_alpha"], 16.0);
    assert_eq!(c["base_model_name_or_path"], "SmolLM2-135M");
    let mut targets: Vec<&str> = c["target_modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    targets.sort_unstable();
    assert_eq!(
        targets,
        [
            "down_proj",
            "gate_proj",
            "k_proj",
            "o_proj",
            "q_proj",
            "up_proj",
            "v_proj"
        ]
    );
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names().len(), 2 * 7 * 2);
    let shape = |n: &str| st.tensor(n).unwrap().shape().to_vec();
    let p = "base_model.model.model.layers.1";
    assert_eq!(
        shape(&format!("{p}.self_attn.q_proj.lora_A.weight")),
        [2, 16]
    );
    assert_eq!(
        shape(&format!("{p}.self_attn.q_proj.lora_B.weight")),
        [16, 2]
    );
    assert_eq!(
        shape(&format!("{p}.self_attn.k_proj.lora_B.weight")),
        [8, 2]
    );
    assert_eq!(shape(&format!("{p}.mlp.down_proj.lora_A.weight")), [2, 24]);
    assert_eq!(shape(&format!("{p}.mlp.gate_proj.lora_B.weight")), [24, 2]);
    // q's B rows: HF row 1 of head 0 is Meta row 2 (pair 1's first value); v's are as is.
    let row = |n: &str, r: usize| -> Vec<f32> {
        let t = st.tensor(n).unwrap();
        t.data()[r * 8..(r + 1) * 8]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let meta_q = &l.get(1, Target::Q).unwrap().b;
    assert_eq!(
        row(&format!("{p}.self_attn.q_proj.lora_B.weight"), 1),
        meta_q[4..6]
    );
    assert_eq!(
        row(&format!("{p}.self_attn.q_proj.lora_B.weight"), 2),
        meta_q[2..4]
    );
    let meta_v = &l.get(1, Target::V).unwrap().b;
    assert_eq!(
        row(&format!("{p}.self_attn.v_proj.lora_B.weight"), 1),
        meta_v[2..4]
    );
    // Read back: the same adapter, Meta order restored.
    assert_eq!(load_peft(&dir, &cfg()).unwrap(), l);
}

#[test]
fn bad_peft_adapters_are_refused_with_the_reason() {
    let dir = tempfile_dir("peft-bad");
    save_peft(&dir, &adapter("q,v"), &cfg(), "base").unwrap();
    assert_eq!(load_peft(&dir, &cfg()).unwrap().tensors().len(), 2 * 2 * 2);
    let cpath = dir.join("adapter_config.json");
    let good = std::fs::read_to_string(&cpath).unwrap();
    let mut c: serde_json::Value = serde_json::from_str(&good).unwrap();
    c["use_dora"] = true.into();
    std::fs::write(&cpath, c.to_string()).unwrap();
    let e = load_peft(&dir, &cfg()).unwrap_err().to_string();
    assert!(e.contains("use_dora"), "{e}");
    std::fs::write(&cpath, &good).unwrap();
    // A model with other shapes: the adapter does not fit.
    let mut wide = cfg();
    wide.dim = 32;
    let e = load_peft(&dir, &wide).unwrap_err().to_string();
    assert!(e.contains("shape"), "{e}");
    let e = load_peft(&dir.join("missing"), &cfg())
        .unwrap_err()
        .to_string();
    assert!(e.contains("adapter_config.json"), "{e}");
}

#[test]
fn gguf_adapter_is_what_llama_cpp_reads() {
    let dir = tempfile_dir("gguf");
    let path = dir.join("adapter.gguf");
    let l = adapter("q,down");
    save_gguf(&path, &l, &cfg(), "llama").unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.get_str("general.type").unwrap(), Some("adapter"));
    assert_eq!(f.get_str("adapter.type").unwrap(), Some("lora"));
    assert_eq!(f.get_str("general.architecture").unwrap(), Some("llama"));
    assert_eq!(f.get_f64("adapter.lora.alpha").unwrap(), Some(16.0));
    // llama.cpp checks a.ne[0] == the weight's ne[0] (in), b.ne[1] == its ne[1] (out),
    // a.ne[1] == b.ne[0] (rank).
    let a = f.tensor("blk.1.ffn_down.weight.lora_a").unwrap();
    let b = f.tensor("blk.1.ffn_down.weight.lora_b").unwrap();
    assert_eq!((a.dims.clone(), b.dims.clone()), (vec![24, 2], vec![2, 16]));
    let q = f.tensor("blk.0.attn_q.weight.lora_b").unwrap();
    let got: Vec<f32> = f
        .data(q)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(
        got,
        l.get(0, Target::Q).unwrap().b,
        "GGUF keeps Meta's row order"
    );
    assert!(f.tensor("blk.0.attn_k.weight.lora_a").is_none());
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ferrollama-adapter-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
