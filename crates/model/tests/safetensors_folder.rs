//! A Hugging Face folder (config.json + sharded safetensors, HF names, rotate-half q/k row
//! order, llama3 `rope_scaling`) gives the same logits as the GGUF file it was made from.

use std::collections::HashMap;
use std::path::PathBuf;

use ferrollama_model::gguf::GgufFile;
use ferrollama_model::names::{Format, file_name};
use ferrollama_model::safetensors::permute;
use ferrollama_model::{KvCache, KvType, Llama, Tensor};
use ferrollama_tensor::ThreadPool;
use safetensors::tensor::{Dtype, TensorView};

fn tiny(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tiny")
        .join(name)
}

fn logits(model: &Llama, tokens: &[u32]) -> Vec<f32> {
    let pool = ThreadPool::new(2);
    let mut kv = KvCache::new(&model.config, 64, KvType::F16).expect("kv");
    let mut st = model.new_state(64, 64, pool.n_threads());
    model
        .forward(&pool, tokens, &mut kv, &mut st, true)
        .expect("forward")
        .to_vec()
}

#[test]
fn hf_folder_matches_gguf() {
    let f = GgufFile::open(tiny("tiny-f16.gguf")).expect("gguf");
    let gguf = Llama::from_gguf(&f).expect("model");
    let c = &gguf.config;
    let dir = std::env::temp_dir().join(format!("ferrollama-hf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");

    // Weights under HF names; wq/wk back in HF's rotate-half order.
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let name = |l: Option<usize>, n: &str| file_name(Format::HuggingFace, l, n).expect("name");
    tensors.push((
        name(None, "tok_embeddings"),
        gguf.weights.tok_embeddings.clone(),
    ));
    tensors.push((name(None, "output"), gguf.weights.output.clone()));
    for (l, ly) in gguf.weights.layers.iter().enumerate() {
        let l = Some(l);
        tensors.push((
            name(l, "attention.wq"),
            permute(&ly.wq, c.n_heads, c.head_dim).expect("permute"),
        ));
        tensors.push((
            name(l, "attention.wk"),
            permute(&ly.wk, c.n_kv_heads, c.head_dim).expect("permute"),
        ));
        for (n, t) in [
            ("attention.wv", &ly.wv),
            ("attention.wo", &ly.wo),
            ("feed_forward.w1", &ly.w1),
            ("feed_forward.w2", &ly.w2),
            ("feed_forward.w3", &ly.w3),
        ] {
            tensors.push((name(l, n), t.clone()));
        }
    }
    let norms: Vec<(String, Vec<u8>)> =
        std::iter::once((name(None, "norm"), gguf.weights.norm.clone()))
            .chain(gguf.weights.layers.iter().enumerate().flat_map(|(l, ly)| {
                [
                    (name(Some(l), "attention_norm"), ly.attention_norm.clone()),
                    (name(Some(l), "ffn_norm"), ly.ffn_norm.clone()),
                ]
            }))
            .map(|(n, v)| (n, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
    // Two shards plus an index.
    let mut index = serde_json::Map::new();
    let half = tensors.len() / 2;
    for (shard, range) in [(1, 0..half), (2, half..tensors.len())] {
        let file = format!("model-0000{shard}-of-00002.safetensors");
        let mut views: HashMap<String, TensorView> = HashMap::new();
        for (n, t) in &tensors[range] {
            views.insert(
                n.clone(),
                TensorView::new(Dtype::F16, vec![t.rows, t.cols], t.data()).expect("view"),
            );
            index.insert(n.clone(), file.clone().into());
        }
        if shard == 2 {
            for (n, b) in &norms {
                views.insert(
                    n.clone(),
                    TensorView::new(Dtype::F32, vec![c.dim], b).expect("view"),
                );
                index.insert(n.clone(), file.clone().into());
            }
        }
        safetensors::serialize_to_file(views, None, &dir.join(&file)).expect("write shard");
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": index}).to_string(),
    )
    .expect("index");
    let config = serde_json::json!({
        "hidden_size": c.dim, "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads, "intermediate_size": c.ffn_dim, "vocab_size": c.vocab_size,
        "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta, "max_position_embeddings": 131072,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"}
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");

    let hf = Llama::from_safetensors(&dir).expect("hf folder");
    let (a, b) = (
        gguf.weights.rope_freqs.clone().expect("gguf rope"),
        hf.weights.rope_freqs.clone().expect("hf rope"),
    );
    for (x, y) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() < 1e-5,
            "rope divisors from config.json {b:?} vs GGUF {a:?}"
        );
    }
    let tokens: Vec<u32> = (0..20).map(|i| (i * 37 + 11) % 500).collect();
    let (lg, lh) = (logits(&gguf, &tokens), logits(&hf, &tokens));
    let max = lg
        .iter()
        .zip(&lh)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(max < 1e-4, "HF folder logits differ from GGUF by {max}");

    // The folder really holds HF's row order: loading it without undoing the permutation
    // would give different weights.
    let l0 = &gguf.weights.layers[0];
    assert_ne!(
        permute(&l0.wq, c.n_heads, c.head_dim)
            .expect("permute")
            .data(),
        l0.wq.data()
    );
    assert_eq!(hf.weights.layers[0].wq.data(), l0.wq.data());

    std::fs::remove_file(dir.join("config.json")).expect("rm");
    assert!(
        Llama::from_safetensors(&dir).is_err(),
        "missing config.json is an error"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Hugging Face `tokenizer.json` (+ tokenizer_config.json) describing the same vocabulary
/// as the tiny GGUF gives the same ids, special tokens, BOS and chat template.
#[test]
fn hf_tokenizer_json_matches_gguf_vocab() {
    use ferrollama_model::ModelTokenizer;
    use ferrollama_model::gguf::MetadataExt;
    let f = GgufFile::open(tiny("tiny-f16.gguf")).expect("gguf");
    let from_gguf = ModelTokenizer::from_gguf(&f).expect("gguf tokenizer");
    let strings = |key: &str| -> Vec<String> {
        f.get_array(key)
            .expect("array")
            .expect("present")
            .iter()
            .map(|v| v.as_str().expect("str").to_string())
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens");
    let merges = strings("tokenizer.ggml.merges");
    let types: Vec<i64> = f
        .get_array("tokenizer.ggml.token_type")
        .expect("types")
        .expect("present")
        .iter()
        .map(|v| v.as_i64().expect("int"))
        .collect();
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, (t, ty)) in tokens.iter().zip(&types).enumerate() {
        if *ty == 3 {
            added.push(serde_json::json!({"id": i, "content": t, "special": true}));
        } else {
            vocab.insert(t.clone(), i.into());
        }
    }
    let meta_pattern = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let tj = serde_json::json!({
        "added_tokens": added,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": meta_pattern}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
        "model": {"type": "BPE", "vocab": vocab, "merges": merges, "ignore_merges": true},
    });
    let bos = &tokens[from_gguf.bos.expect("bos") as usize];
    let cfg = serde_json::json!({"bos_token": bos, "eos_token": "<|eot_id|>", "chat_template": "{{ messages[0].content }}"});
    let dir = std::env::temp_dir().join(format!("ferrollama-hftok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("tokenizer.json"), tj.to_string()).expect("write");
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).expect("write");
    let from_hf = ModelTokenizer::from_hf_dir(&dir).expect("hf tokenizer");
    assert_eq!(from_hf.bos, from_gguf.bos);
    assert!(
        from_hf
            .stop_ids
            .contains(&from_hf.bpe.token_id("<|eot_id|>").expect("eot"))
    );
    assert_eq!(
        from_hf.chat_template.as_deref(),
        Some("{{ messages[0].content }}")
    );
    for text in [
        "Hello, world!",
        "  spaces\n\nand 12345 numbers",
        "<|eot_id|> special",
        "naïve café",
    ] {
        for special in [false, true] {
            assert_eq!(
                from_hf.bpe.encode(text, special),
                from_gguf.bpe.encode(text, special),
                "{text:?} special={special}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The cache can be sized for Llama 3.1's full 131,072-token context, and the last position
/// runs (RoPE with the scaling divisors, attention over every position) without error.
#[test]
fn runs_at_the_end_of_a_131072_token_context() {
    let f = GgufFile::open(tiny("tiny-q8_0.gguf")).expect("gguf");
    let model = Llama::from_gguf(&f).expect("model");
    let ctx = 131_072;
    let pool = ThreadPool::new(2);
    let mut kv = KvCache::new(&model.config, ctx, KvType::Q8_0).expect("kv");
    let mut st = model.new_state(1, ctx, pool.n_threads());
    kv.len = ctx - 1; // positions before are zero keys/values: only shapes and bounds matter here
    let l = model
        .forward(&pool, &[42], &mut kv, &mut st, false)
        .expect("last position");
    assert!(l.iter().all(|x| x.is_finite()));
    assert!(
        model
            .forward(&pool, &[42], &mut kv, &mut st, false)
            .is_err(),
        "the context is full"
    );
}
