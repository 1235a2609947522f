//! `export::write_gguf` against llama.cpp's own quantizer, and the FP8 recipe end to end.
//!
//! `testdata/tiny/tiny-q8_0.gguf` and `tiny-q4_k_m.gguf` were written by llama.cpp's
//! `llama_model_quantize` from `tiny-f16.gguf` (`make_tiny.py`). Quantizing the same F16
//! file ourselves must give byte-identical tensors: same types per tensor (the Q4_K_M
//! mixture) and the same bytes (ggml's reference quantizers, transcribed).

use std::path::{Path, PathBuf};

use ferrollama_model::export::{ModelParts, Target, write_gguf};
use ferrollama_model::gguf::GgufFile;
use ferrollama_model::import::Imported;
use ferrollama_model::{KvCache, KvType, Llama, LlamaConfig};
use ferrollama_tensor::{DType, ThreadPool};

fn tiny(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tiny")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrollama-export-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tmp dir");
    d.join(name)
}

/// The GGUF file at `path`, through the importer (config, weights, tokenizer keys).
fn open(path: &Path) -> Imported {
    ferrollama_model::import::open(path).expect("open")
}

fn write(src: &Imported, target: Target, out: &Path) -> ferrollama_model::export::ExportReport {
    let parts = ModelParts {
        config: &src.config,
        weights: &src.weights,
        tokenizer: &src.tokenizer,
        name: Some("tiny"),
    };
    write_gguf(&parts, target, out, 2, &|_, _| {}).expect("write")
}

/// Every tensor of `ours` has the type and bytes of the same tensor in `theirs`.
fn assert_same_tensors(ours: &Path, theirs: &Path) {
    let a = GgufFile::open(ours).expect("ours");
    let b = GgufFile::open(theirs).expect("theirs");
    assert_eq!(a.tensors.len(), b.tensors.len());
    for t in &b.tensors {
        let o = a
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!(o.dtype, t.dtype, "{}", t.name);
        assert!(a.data(o) == b.data(t), "{}: bytes differ", t.name);
    }
}

#[test]
fn q8_0_is_byte_identical_to_llama_cpp_quantize() {
    let src = open(&tiny("tiny-f16.gguf"));
    let out = tmp("q8_0.gguf");
    let r = write(&src, Target::Q8_0, &out);
    assert!(r.fallbacks.is_empty() && r.requantized.is_empty());
    assert_same_tensors(&out, &tiny("tiny-q8_0.gguf"));
}

#[test]
fn q4_k_is_llama_cpp_q4_k_m_byte_for_byte() {
    let src = open(&tiny("tiny-f16.gguf"));
    let out = tmp("q4_k.gguf");
    let r = write(&src, Target::Q4_K, &out);
    // 2 layers: use_more_bits picks layer 1 for wv and w2; output is Q6_K.
    assert_eq!(r.types.get("q6_k"), Some(&3), "{:?}", r.types);
    assert_same_tensors(&out, &tiny("tiny-q4_k_m.gguf"));
}

#[test]
fn written_files_load_and_keep_the_config_and_tokenizer() {
    let src = open(&tiny("tiny-f16.gguf"));
    for target in [Target::F16, Target::Q6_K, Target::BF16] {
        let out = tmp(&format!("rt-{}.gguf", target.name()));
        write(&src, target, &out);
        let f = GgufFile::open(&out).expect("reopen");
        assert_eq!(LlamaConfig::from_gguf(&f).expect("config"), src.config);
        for (k, v) in &src.tokenizer {
            let got = f.metadata.iter().find(|(kk, _)| kk == k).map(|(_, v)| v);
            assert_eq!(got, Some(v), "{k}");
        }
    }
    // F16 in, F16 out: a byte copy of the original tensors.
    assert_same_tensors(&tmp("rt-f16.gguf"), &tiny("tiny-f16.gguf"));
}

/// Logits of the last position of `tokens`.
fn logits(llama: &Llama, tokens: &[u32]) -> Vec<f32> {
    let pool = ThreadPool::new(1);
    let mut kv = KvCache::new(&llama.config, 64, KvType::F16).expect("kv");
    let mut st = llama.new_state(tokens.len(), 64, 1);
    llama
        .forward(&pool, tokens, &mut kv, &mut st, false)
        .expect("forward")
        .to_vec()
}

#[test]
fn fp8_follows_meta_recipe_and_stays_close_to_bf16() {
    // Four layers (tiny's two, twice) so that layers 1 and 2 are "inner".
    let mut src = open(&tiny("tiny-f16.gguf"));
    let l = src.weights.layers.clone();
    src.weights.layers = vec![l[0].clone(), l[1].clone(), l[0].clone(), l[1].clone()];
    src.config.n_layers = 4;
    let fp8 = tmp("fp8.gguf");
    let r = write(&src, Target::Fp8, &fp8);
    assert_eq!(r.types.get("f8e4m3"), Some(&6), "{:?}", r.types);
    let f = GgufFile::open(&fp8).expect("reopen fp8");
    for t in &f.tensors {
        let inner_ffn = ["blk.1.ffn", "blk.2.ffn"]
            .iter()
            .any(|p| t.name.starts_with(p))
            && !t.name.contains("norm");
        let want = if inner_ffn {
            DType::F8E4M3
        } else if t.name.contains("norm") || t.name.starts_with("rope_freqs") {
            DType::F32
        } else {
            DType::BF16
        };
        assert_eq!(t.dtype, want, "{}", t.name);
    }
    assert!(
        f.metadata
            .iter()
            .any(|(k, _)| k == "ferrollama.fp8.activation_scale_ub")
    );
    let q = Llama::from_gguf(&f).expect("load fp8");
    let bf16 = tmp("bf16.gguf");
    write(&src, Target::BF16, &bf16);
    let base = Llama::from_gguf(&GgufFile::open(&bf16).expect("reopen bf16")).expect("load");
    let tokens = [1u32, 17, 42, 99, 256, 311, 5, 8];
    let (a, b) = (logits(&q, &tokens), logits(&base, &tokens));
    let range = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    // E4M3 keeps ~2 significant digits per weight and activation; over 2 of 4 layers the
    // logits move by a few percent of their range, and not at all would mean FP8 never ran.
    assert!(max_diff > 0.0, "FP8 changed nothing");
    assert!(
        max_diff < 0.1 * range,
        "max |Δ| {max_diff} vs range {range}"
    );
}

#[test]
fn a_failed_write_leaves_no_file() {
    let mut src = open(&tiny("tiny-f16.gguf"));
    // A tokenizer whose size disagrees with the embedding is refused before writing.
    src.tokenizer.retain(|(k, _)| k != "tokenizer.ggml.tokens");
    let out = tmp("refused.gguf");
    let parts = ModelParts {
        config: &src.config,
        weights: &src.weights,
        tokenizer: &src.tokenizer,
        name: None,
    };
    let e = write_gguf(&parts, Target::Q8_0, &out, 1, &|_, _| {}).expect_err("refused");
    assert!(e.to_string().contains("tokens"), "{e}");
    assert!(!out.exists());
    assert!(!out.with_file_name("refused.gguf.partial").exists());
}
