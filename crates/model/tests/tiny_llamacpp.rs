//! Final logits agree with llama.cpp on a tiny seeded Llama-3.1-architecture model (GQA,
//! Llama 3.1 RoPE scaling via `rope_freqs`, separate output matrix) in F32, F16, Q8_0 and
//! Q4_K_M. Fixtures and llama.cpp's logits come from `testdata/tiny/make_tiny.py`
//! (llama-cpp-python 0.3.36, KV cache F32, flash attention off).
//!
//! Budget: max |Δ| over all logits ÷ the reference's logit range, per dtype. llama.cpp
//! rounds activations to the weight's dot type (F16 for F16 weights, Q8_0/Q8_K for the
//! quantized ones) and we round the KV cache to F16, so the budgets grow with quantization.

use std::path::PathBuf;

use ferrollama_model::gguf::{Bytes, GgufFile, GgufWriter, MetadataExt};
use ferrollama_model::{KvCache, KvType, Llama};
use ferrollama_tensor::{DType, ThreadPool, dequantize_row};

fn tiny(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tiny")
        .join(name)
}

#[path = "support/npy.rs"]
mod npy;

fn meta() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(tiny("tiny.json")).expect("tiny.json"))
        .expect("json")
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// The F32 model is not committed: it is the F16 file with every tensor widened, written
/// with our GGUF writer (the F16 values are exactly the F32 model's, by construction).
fn f32_from_f16() -> GgufFile {
    let f = GgufFile::open(tiny("tiny-f16.gguf")).expect("f16");
    let mut w = GgufWriter::new();
    for (k, v) in &f.metadata {
        w.set(k, v.clone());
    }
    w.set("general.file_type", ferrollama_model::gguf::Value::U32(0));
    for t in &f.tensors {
        let mut vals = vec![0f32; t.n_elements()];
        for (r, chunk) in vals.chunks_mut(t.dims[0]).enumerate() {
            let rb = t.len / (t.n_elements() / t.dims[0]);
            dequantize_row(t.dtype, &f.data(t)[r * rb..(r + 1) * rb], chunk).expect("dequantize");
        }
        let bytes = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.add_tensor(&t.name, &t.dims, DType::F32, bytes)
            .expect("tensor");
    }
    GgufFile::parse(Bytes::Owned(w.to_bytes())).expect("f32 gguf")
}

fn check(label: &str, file: &GgufFile, budget_short: f32, budget_long: f32) {
    let m = meta();
    let model = Llama::from_gguf(file).expect("model");
    assert!(
        model.weights.rope_freqs.is_some(),
        "Llama 3.1 scaling must be loaded"
    );
    assert_eq!(
        file.get_str("tokenizer.ggml.pre").expect("pre"),
        Some("llama-bpe")
    );
    let pool = ThreadPool::new(2);
    let vocab = model.config.vocab_size;
    for (run, prompt_key, budget) in [
        ("", "prompt_ids", budget_short),
        (".long", "prompt_ids_long", budget_long),
    ] {
        let prompt = ids(&m[prompt_key]);
        let (shape, want) = npy::read(&tiny(&format!("tiny-{label}{run}.logits.npy")));
        let rows = shape[0];
        let mut kv = KvCache::new(&model.config, prompt.len(), KvType::F16).expect("kv");
        let mut st = model.new_state(256, prompt.len(), pool.n_threads());
        // Feed all but the last `rows` tokens in chunks, then the last rows with all logits.
        let (head, tail) = prompt.split_at(prompt.len() - rows);
        for c in head.chunks(256) {
            model
                .forward(&pool, c, &mut kv, &mut st, false)
                .expect("forward");
        }
        let got = model
            .forward(&pool, tail, &mut kv, &mut st, true)
            .expect("forward")
            .to_vec();
        let range = want.iter().cloned().fold(f32::NEG_INFINITY, f32::max)
            - want.iter().cloned().fold(f32::INFINITY, f32::min);
        let max_diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        let mut argmax_agree = 0;
        for r in 0..rows {
            let am = |v: &[f32]| {
                v.iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                    )
                    .0
            };
            if am(&got[r * vocab..(r + 1) * vocab]) == am(&want[r * vocab..(r + 1) * vocab]) {
                argmax_agree += 1;
            }
        }
        let rel = max_diff / range;
        eprintln!(
            "{label}{run}: max |Δ| {max_diff:.2e}, range {range:.2}, relative {rel:.2e}, argmax agree {argmax_agree}/{rows}"
        );
        assert!(
            rel < budget,
            "{label}{run}: relative max error {rel:.3e} exceeds {budget:.1e}"
        );
    }
}

#[test]
fn f32_logits_match_llama_cpp() {
    check("f32", &f32_from_f16(), 2e-4, 2e-4);
}

#[test]
fn f16_logits_match_llama_cpp() {
    check(
        "f16",
        &GgufFile::open(tiny("tiny-f16.gguf")).expect("gguf"),
        2e-3,
        2e-3,
    );
}

#[test]
fn q8_0_logits_match_llama_cpp() {
    check(
        "q8_0",
        &GgufFile::open(tiny("tiny-q8_0.gguf")).expect("gguf"),
        1e-2,
        1e-2,
    );
}

#[test]
fn q4_k_m_logits_match_llama_cpp() {
    check(
        "q4_k_m",
        &GgufFile::open(tiny("tiny-q4_k_m.gguf")).expect("gguf"),
        1e-2,
        1e-2,
    );
}

#[test]
fn fixtures_are_the_ones_llama_cpp_ran() {
    use sha2::Digest;
    let m = meta();
    for name in ["tiny-f16.gguf", "tiny-q8_0.gguf", "tiny-q4_k_m.gguf"] {
        let want = m["sha256"][name]
            .as_str()
            .unwrap_or_else(|| panic!("no sha256 for {name}"));
        let bytes = std::fs::read(tiny(name)).expect("fixture");
        let got: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}
