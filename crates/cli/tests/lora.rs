//! `run --lora` and `merge`: the adapter applied at run time and the adapter merged into a
//! new model file give the same greedy text; bad adapters and quantizing merges are
//! refused with the reason.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use ferrollama_model::Proj;
use ferrollama_model::gguf::{GgufWriter, Value};
use ferrollama_tensor::DType;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-q8_0.gguf")
}

/// A seeded llama.cpp GGUF adapter for the tiny model (every projection, B nonzero).
fn write_adapter(dir: &Path) -> PathBuf {
    let f = ferrollama_model::gguf::GgufFile::open(tiny()).unwrap();
    let cfg = ferrollama_model::LlamaConfig::from_gguf(&f).unwrap();
    let rank = 4;
    let mut s = 3u64;
    let mut uniform = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    };
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("general.type", Value::String("adapter".into()));
    w.set("adapter.type", Value::String("lora".into()));
    w.set("adapter.lora.alpha", Value::F32(64.0));
    for l in 0..cfg.n_layers {
        for p in Proj::ALL {
            let (inp, out) = p.dims(&cfg);
            let a: Vec<u8> = (0..rank * inp)
                .flat_map(|_| uniform().to_le_bytes())
                .collect();
            let b: Vec<u8> = (0..out * rank)
                .flat_map(|_| uniform().to_le_bytes())
                .collect();
            let base = format!("blk.{l}.{}.weight", p.gguf_name());
            w.add_tensor(&format!("{base}.lora_a"), &[inp, rank], DType::F32, a)
                .unwrap();
            w.add_tensor(&format!("{base}.lora_b"), &[rank, out], DType::F32, b)
                .unwrap();
        }
    }
    let path = dir.join("adapter.gguf");
    w.write(&path).unwrap();
    path
}

fn run(model: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = common::run(
        common::bin()
            .arg("run")
            .arg("-m")
            .arg(model)
            .args(["--temperature", "0", "-n", "24", "-t", "2"])
            .args(extra)
            .arg("Once upon a time"),
        b"",
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_with_lora_equals_the_merged_model() {
    let dir = std::env::temp_dir().join(format!("ferrollama-cli-lora-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let adapter = write_adapter(&dir);
    let a = adapter.to_str().unwrap();
    let (ok, base, e) = run(&tiny(), &[]);
    assert!(ok, "{e}");
    let (ok, with, e) = run(&tiny(), &["--lora", a]);
    assert!(ok, "{e}");
    assert_ne!(base, with, "the adapter changes the greedy text");
    let merged = dir.join("merged.gguf");
    let out = common::run(
        common::bin()
            .args(["merge", "-m"])
            .arg(tiny())
            .args(["--lora", a, "--type", "f32"])
            .arg(&merged),
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, m, e) = run(&merged, &[]);
    assert!(ok, "{e}");
    assert_eq!(m, with, "merged model and --lora give the same greedy text");

    // Refusals, with the reason.
    let (ok, _, e) = run(&tiny(), &["--lora", tiny().to_str().unwrap()]);
    assert!(!ok && e.contains("not a LoRA adapter"), "{e}");
    let out = common::run(
        common::bin()
            .args(["merge", "-m"])
            .arg(tiny())
            .args(["--lora", a, "--type", "q8_0"])
            .arg(dir.join("q.gguf")),
        b"",
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("ferrollama quantize"),
        "{e}"
    );
}
