//! Perplexity and KL divergence agree with llama.cpp's `llama-perplexity` on the tiny
//! model (`testdata/tiny/perplexity.json`, made by `testdata/tiny/make_perplexity.sh`).
//!
//! Budgets: PPL within 0.05% (measured: 0.001% for F16, 0.013% for Q8_0 — the engines
//! round activations and the KV cache alike but sum in different orders); the mean KL
//! divergence of Q8_0 from F16 within 5% of llama.cpp's (its value is printed with two
//! significant digits); the same-top-token share within one percentage point.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferrollama_engine::Model;
use ferrollama_eval::{PplOptions, perplexity};

fn tiny(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tiny")
        .join(name)
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(tiny("perplexity.json")).unwrap()).unwrap()
}

fn opts() -> PplOptions {
    PplOptions {
        n_ctx: 128,
        batch: 128,
        max_chunks: None,
        threads: 2,
    }
}

fn text() -> String {
    std::fs::read_to_string(tiny("ppl-text.txt")).unwrap()
}

#[test]
fn f16_perplexity_matches_llama_cpp() {
    let r = reference();
    let model = Model::load(&tiny("tiny-f16.gguf")).unwrap();
    let got = perplexity(&model, None, &text(), &opts(), &mut |_, _| {}).unwrap();
    let want = r["f16_ppl"].as_f64().unwrap();
    assert_eq!(got.chunks, 24);
    assert_eq!(got.count, 24 * 63);
    assert!(
        (got.ppl / want - 1.0).abs() < 5e-4,
        "ours {} vs {want}",
        got.ppl
    );
    assert!(got.kl.is_none());
}

#[test]
fn q8_0_kl_divergence_matches_llama_cpp() {
    let r = reference();
    let q = Model::load(&tiny("tiny-q8_0.gguf")).unwrap();
    let base = Model::load(&tiny("tiny-f16.gguf")).unwrap();
    let got = perplexity(&q, Some(&base), &text(), &opts(), &mut |_, _| {}).unwrap();
    let kl = got.kl.as_ref().unwrap();
    let ppl = r["q8_0_ppl"].as_f64().unwrap();
    assert!(
        (got.ppl / ppl - 1.0).abs() < 5e-4,
        "ours {} vs {ppl}",
        got.ppl
    );
    let base_ppl = r["f16_ppl"].as_f64().unwrap();
    assert!((kl.base_ppl / base_ppl - 1.0).abs() < 5e-4);
    let kld = r["q8_0_kld_mean"].as_f64().unwrap();
    assert!(
        (kl.mean / kld - 1.0).abs() < 0.05,
        "ours {} vs {kld}",
        kl.mean
    );
    let same = r["q8_0_same_top_pct"].as_f64().unwrap();
    assert!(
        (100.0 * kl.top1_same - same).abs() < 1.0,
        "{} vs {same}",
        kl.top1_same
    );
    assert!((kl.ln_ppl_ratio - (got.ppl / kl.base_ppl).ln()).abs() < 1e-9);
}

#[test]
fn too_short_a_text_is_a_clear_error() {
    let model = Model::load(&tiny("tiny-f16.gguf")).unwrap();
    let e = perplexity(&model, None, "just a few words", &opts(), &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("at least"), "{e}");
}
