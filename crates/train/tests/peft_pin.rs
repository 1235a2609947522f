//! A PEFT adapter made by PyTorch + PEFT on a Hugging Face Llama
//! (`testdata/train/make_peft_reference.py`) gives, in ferrollama, the losses PEFT
//! computed: the HF folder loads through the model crate (q/k rows unpermuted), the
//! adapter through `load_peft` (names, shapes, q/k rows permuted back).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferrollama_model::safetensors::SafetensorsFolder;
use ferrollama_tensor::ThreadPool;
use ferrollama_train::adapter::{load_peft, save_peft};
use ferrollama_train::weights::params_from_weights;
use ferrollama_train::{Sequence, Shape, loss, loss_lora};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/train/peft")
}

#[test]
fn peft_adapter_gives_peft_losses() {
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("reference.json")).unwrap())
            .unwrap();
    let folder = SafetensorsFolder::open(&dir().join("model")).unwrap();
    let cfg = folder.config.clone();
    let (p, divisors) = params_from_weights(&folder.weights().unwrap(), &cfg).unwrap();
    let mut sh = Shape::of(&cfg);
    sh.rope_divisors = divisors;
    let batch: Vec<Sequence> = r["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let t: Vec<u32> = s
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            Sequence::causal(&t)
        })
        .collect();
    let pool = ThreadPool::new(2);
    let base = f64::from(loss(&pool, &sh, &p, &batch).unwrap());
    let want_base = r["base_loss"].as_f64().unwrap();
    assert!(
        (base - want_base).abs() / want_base < 1e-5,
        "base: {base} vs PyTorch {want_base}"
    );
    let lora = load_peft(&dir().join("adapter"), &cfg).unwrap();
    assert_eq!(lora.config.rank, 4);
    let got = f64::from(loss_lora(&pool, &sh, &p, &lora, &batch).unwrap());
    let want = r["lora_loss"].as_f64().unwrap();
    eprintln!("base {base} (PEFT {want_base}), with adapter {got} (PEFT {want})");
    assert!(
        (want - want_base).abs() > 1.0,
        "the adapter must matter for this test to mean anything"
    );
    assert!(
        (got - want).abs() / want < 1e-5,
        "with adapter: {got} vs PEFT {want}"
    );
    // Written back out as PEFT files and read again: the same adapter.
    let out = std::env::temp_dir().join(format!("ferrollama-peft-pin-{}", std::process::id()));
    save_peft(&out, &lora, &cfg, "tiny").unwrap();
    assert_eq!(load_peft(&out, &cfg).unwrap(), lora);
    let _ = std::fs::remove_dir_all(&out);
}
