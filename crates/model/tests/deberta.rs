//! DeBERTa-v3 classifier against the numpy port of HF transformers
//! (`testdata/deberta/make_deberta.py`): logits within 1e-4 relative, with an absolute
//! floor of 1e-4 for logits near zero (|want| < 1).

use std::path::{Path, PathBuf};

use ferrollama_model::deberta::{Deberta, WeightFormat};
use ferrollama_tensor::ThreadPool;
use serde_json::Value;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/deberta")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(testdata().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("json")
}

fn cases(v: &Value, model: &str) -> Vec<(String, Vec<u32>, Vec<f32>)> {
    v[model]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let ids = c["ids"].as_array().expect("ids");
            let logits = c["logits"].as_array().expect("logits");
            (
                c["name"].as_str().expect("name").to_string(),
                ids.iter().map(|x| x.as_u64().expect("id") as u32).collect(),
                logits
                    .iter()
                    .map(|x| x.as_f64().expect("logit") as f32)
                    .collect(),
            )
        })
        .collect()
}

fn check(model: &str, format: WeightFormat, threads: usize, tol_rel: f32, tol_abs: f32) {
    let m = Deberta::load(&testdata().join(model), format).expect("load");
    let pool = ThreadPool::new(threads);
    let all = cases(&expected(), model);
    assert!(all.len() >= 3);
    for (name, ids, want) in all {
        let got = m.forward(&ids, &pool).expect("forward");
        assert_eq!(got.len(), want.len(), "{model}/{name}");
        for (g, w) in got.iter().zip(&want) {
            let tol = (tol_rel * w.abs()).max(tol_abs);
            assert!(
                (g - w).abs() <= tol,
                "{model}/{name} ({format:?}, {threads} threads): got {got:?}, want {want:?}"
            );
        }
    }
}

#[test]
fn logits_match_hf_port_256_buckets_f32() {
    check("model", WeightFormat::F32, 1, 1e-4, 1e-4);
    check("model", WeightFormat::F32, 2, 1e-4, 1e-4);
}

#[test]
fn logits_match_hf_port_16_buckets_separate_position_projections_f16_file() {
    check("model-b16", WeightFormat::F32, 2, 1e-4, 1e-4);
}

#[test]
fn q8_0_stays_close() {
    // 8-bit weights and activations (hidden 32: one Q8_0 block per row, so coarse): a
    // looser budget, still well below the spread of the logits (about 1 to 6).
    check("model", WeightFormat::Q8_0, 2, 0.0, 0.3);
}

#[test]
fn config_is_read() {
    let m = Deberta::load(&testdata().join("model"), WeightFormat::F32).expect("load");
    assert_eq!(m.labels(), ["BENIGN", "INJECTION", "JAILBREAK"]);
    assert_eq!(m.config.att_span(), 256);
    assert_eq!(m.config.max_relative(), 512);
    assert_eq!(m.config.scale_factor(), 3);
    assert!(m.config.share_att_key && m.config.c2p && m.config.p2c);
}

#[test]
fn bad_input_is_an_error() {
    let m = Deberta::load(&testdata().join("model"), WeightFormat::F32).expect("load");
    let pool = ThreadPool::new(1);
    let vocab = m.config.vocab_size as u32;
    let e = m.forward(&[1, vocab, 2], &pool).expect_err("id");
    assert!(e.to_string().contains("outside the vocabulary"), "{e}");
    let e = m.forward(&vec![5; 513], &pool).expect_err("long");
    assert!(e.to_string().contains("513 tokens exceed"), "{e}");
    assert!(m.forward(&[], &pool).is_err());
}

#[test]
fn bad_folders_are_errors() {
    let dir = std::env::temp_dir().join(format!("ferrollama-deberta-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let e = Deberta::load(&dir, WeightFormat::F32).expect_err("no config");
    assert!(format!("{e}").contains("config.json"), "{e}");

    std::fs::write(dir.join("config.json"), "{not json").expect("write");
    assert!(Deberta::load(&dir, WeightFormat::F32).is_err());

    // A valid config whose safetensors has other shapes (intermediate 64 in the file).
    let cfg = std::fs::read_to_string(testdata().join("model/config.json")).expect("cfg");
    let cfg = cfg.replace("\"intermediate_size\": 64", "\"intermediate_size\": 128");
    std::fs::write(dir.join("config.json"), cfg).expect("write");
    let e = Deberta::load(&dir, WeightFormat::F32).expect_err("no safetensors");
    assert!(format!("{e}").contains("model.safetensors"), "{e}");
    std::fs::copy(
        testdata().join("model/model.safetensors"),
        dir.join("model.safetensors"),
    )
    .expect("copy");
    let e = Deberta::load(&dir, WeightFormat::F32).expect_err("shape");
    assert!(format!("{e}").contains("expected ["), "{e}");

    std::fs::write(dir.join("model.safetensors"), b"garbage").expect("write");
    assert!(Deberta::load(&dir, WeightFormat::F32).is_err());

    let other = r#"{"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 1, "intermediate_size": 8, "vocab_size": 8}"#;
    std::fs::write(dir.join("config.json"), other).expect("write");
    let e = Deberta::load(&dir, WeightFormat::F32).expect_err("arch");
    assert!(
        e.to_string().contains("unsupported architecture \"bert\""),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
