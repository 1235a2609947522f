//! llama.cpp, loading a LoRA adapter that ferrollama wrote, gives the logits ferrollama gives
//! with that adapter: the GGUF adapter format (`general.type = adapter`,
//! `adapter.lora.alpha`, `blk.N.*.weight.lora_a` / `lora_b`) means the same thing to both.
//!
//! Fixture (`testdata/train/lora_parity`, made by `make_lora_parity.py`): a rank-4 adapter on
//! every projection of the tiny model, trained by `ferrollama finetune --method lora`, and
//! llama.cpp's (llama-cpp-python 0.3.36) logits for the tiny model's 24-token prompt with the
//! adapter over the F16, Q8_0 and Q4_K_M bases.
//!
//! Two checks, so that neither side can drift unnoticed:
//! - our forward pass with the adapter matches llama.cpp's logits within the budget the base
//!   alone is held to (`crates/model/tests/tiny_llamacpp.rs`), while the adapter moves
//!   llama.cpp's logits by far more than that budget (recorded in the manifest, checked here);
//! - our GGUF writer, given the adapter we read, writes the committed file byte for byte, so
//!   what llama.cpp was shown to read is what `finetune` writes today.
//!
//! Measured when written (relative max error, with the adapter / base alone): F16 4.6e-4 /
//! 2.4e-4, Q8_0 7.7e-3 / 7.1e-3, Q4_K_M 8.0e-3 / 7.9e-3; the adapter moves the logits by up
//! to 9.05 (F16) over a range of about 10.8, ours and llama.cpp's by the same amount within
//! 0.2%.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferrollama_model::gguf::GgufFile;
use ferrollama_model::{Adapter, KvCache, KvType, Llama};
use ferrollama_tensor::ThreadPool;

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

fn manifest() -> serde_json::Value {
    let p = testdata("train/lora_parity/manifest.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[path = "../../model/tests/support/npy.rs"]
mod npy;

fn prompt() -> Vec<u32> {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("tiny/tiny.json")).unwrap())
            .unwrap();
    m["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn adapter_path() -> PathBuf {
    testdata("train/lora_parity/adapter.gguf")
}

/// Every position's logits of the prompt, in one batch, with or without the adapter.
fn our_logits(base: &str, with_adapter: bool) -> Vec<f32> {
    let model =
        Llama::from_gguf(&GgufFile::open(testdata(&format!("tiny/tiny-{base}.gguf"))).unwrap())
            .unwrap();
    let adapter = Adapter::load(&adapter_path(), &model.config).unwrap();
    let tokens = prompt();
    let pool = ThreadPool::new(2);
    let mut kv = KvCache::new(&model.config, 64, KvType::F16).unwrap();
    let mut st = model.new_state(tokens.len(), 64, pool.n_threads());
    model
        .forward_lora(
            &pool,
            &tokens,
            &mut kv,
            &mut st,
            true,
            with_adapter.then_some(&adapter),
        )
        .unwrap()
        .to_vec()
}

/// max |ours − llama.cpp| ÷ llama.cpp's logit range, with the adapter, must stay within the
/// budget the base model alone meets against llama.cpp (tiny_llamacpp.rs: 2e-3 for F16,
/// 1e-2 for the quantized bases: llama.cpp rounds activations to 8 bits for those, we round
/// the KV cache to F16). The adapter's own effect, divided the same way, must be at least
/// ten times the budget, or agreement would say nothing about the adapter.
fn check(base: &str, budget: f32) {
    let (shape, want) = npy::read(&testdata(&format!(
        "train/lora_parity/tiny-{base}.lora.logits.npy"
    )));
    assert_eq!(shape, vec![prompt().len(), 512]);
    let got = our_logits(base, true);
    let range = want.iter().cloned().fold(f32::NEG_INFINITY, f32::max)
        - want.iter().cloned().fold(f32::INFINITY, f32::min);
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let moved = manifest()["max_abs_moved_by_adapter"][base]
        .as_f64()
        .unwrap() as f32;
    // Our own logits must move by about as much as llama.cpp's did.
    let ours_base = our_logits(base, false);
    let ours_moved = got
        .iter()
        .zip(&ours_base)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    eprintln!(
        "{base}: max |ours - llama.cpp| {diff:.2e} (relative {:.2e}, budget {budget:.0e}); \
         the adapter moves llama.cpp's logits by {moved:.3}, ours by {ours_moved:.3}",
        diff / range
    );
    assert!(
        moved / range >= 10.0 * budget,
        "{base}: the fixture's adapter barely changes the logits ({moved} over a range of {range}); \
         regenerate it with a stronger adapter"
    );
    assert!(
        (ours_moved - moved).abs() <= 0.1 * moved,
        "{base}: the adapter moves our logits by {ours_moved}, llama.cpp's by {moved}"
    );
    assert!(
        diff / range < budget,
        "{base}: with the adapter, ours and llama.cpp differ by {diff} (relative {:.3e} > {budget:.0e})",
        diff / range
    );
}

#[test]
fn f16_base_with_our_adapter_matches_llama_cpp() {
    check("f16", 2e-3);
}

#[test]
fn q8_0_base_with_our_adapter_matches_llama_cpp() {
    check("q8_0", 1e-2);
}

#[test]
fn q4_k_m_base_with_our_adapter_matches_llama_cpp() {
    check("q4_k_m", 1e-2);
}

/// The committed adapter is what our writer produces from its contents, byte for byte, and
/// is the file llama.cpp ran (sha256 in the manifest).
#[test]
fn our_gguf_writer_reproduces_the_adapter_llama_cpp_read() {
    use sha2::Digest;
    let committed = std::fs::read(adapter_path()).unwrap();
    let sha: String = sha2::Sha256::digest(&committed)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        sha,
        manifest()["adapter"]["sha256"].as_str().unwrap(),
        "adapter.gguf is not the file llama.cpp ran"
    );
    let f = GgufFile::open(testdata("tiny/tiny-f16.gguf")).unwrap();
    let cfg = ferrollama_model::LlamaConfig::from_gguf(&f).unwrap();
    let lora =
        ferrollama_train::adapter::from_adapter(Adapter::load(&adapter_path(), &cfg).unwrap());
    let dir = std::env::temp_dir().join(format!("ferrollama-lora-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("adapter.gguf");
    ferrollama_train::adapter::save_gguf(&out, &lora, &cfg, "llama").unwrap();
    let written = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(written.len(), committed.len(), "size differs");
    assert!(
        written == committed,
        "our writer no longer writes the adapter llama.cpp read"
    );
}
