//! Importing models: the tiny model as a 2-way model-parallel Meta checkpoint
//! (`testdata/meta/tiny`, written by `testdata/meta/make_meta.py` in torch.save's format)
//! gives exactly the weights and the logits of `tiny-f16.gguf`; `import::open` reads all
//! three source kinds; and Meta's `tokenizer.model` converted to GGUF tokenizer keys
//! encodes every Llama 3 conformance vector to Meta's ids.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ferrollama_model::gguf::{Bytes, GgufFile, GgufWriter, MetadataExt, Value};
use ferrollama_model::import::{self, SourceKind};
use ferrollama_model::meta::MetaCheckpoint;
use ferrollama_model::names::{Format, file_name};
use ferrollama_model::safetensors::permute;
use ferrollama_model::{
    KvCache, KvType, Llama, ModelError, ModelTokenizer, Tensor, Weights, vocab_keys,
};
use ferrollama_tensor::ThreadPool;
use ferrollama_tokenizer::{AllowedSpecial, Tokenizer};

fn testdata(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(path)
}

fn tiny_gguf() -> Llama {
    let f = GgufFile::open(testdata("tiny/tiny-f16.gguf")).unwrap();
    Llama::from_gguf(&f).unwrap()
}

fn logits(model: &Llama, tokens: &[u32]) -> Vec<f32> {
    let pool = ThreadPool::new(2);
    let mut kv = KvCache::new(&model.config, 64, KvType::F16).unwrap();
    let mut st = model.new_state(64, 64, pool.n_threads());
    model
        .forward(&pool, tokens, &mut kv, &mut st, true)
        .unwrap()
        .to_vec()
}

/// Every matrix and vector, by reference name, as f32.
fn all_f32(w: &Weights) -> Vec<(String, Vec<f32>)> {
    let mut out = vec![
        (
            "tok_embeddings".to_string(),
            w.tok_embeddings.to_f32().unwrap(),
        ),
        ("output".to_string(), w.output.to_f32().unwrap()),
        ("norm".to_string(), w.norm.clone()),
    ];
    for (l, ly) in w.layers.iter().enumerate() {
        let m: [(&str, &Tensor); 7] = [
            ("wq", &ly.wq),
            ("wk", &ly.wk),
            ("wv", &ly.wv),
            ("wo", &ly.wo),
            ("w1", &ly.w1),
            ("w2", &ly.w2),
            ("w3", &ly.w3),
        ];
        for (n, t) in m {
            out.push((format!("{l}.{n}"), t.to_f32().unwrap()));
        }
        out.push((format!("{l}.attention_norm"), ly.attention_norm.clone()));
        out.push((format!("{l}.ffn_norm"), ly.ffn_norm.clone()));
    }
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The error and its sources on one line, as the CLI prints them.
fn chain(e: &ModelError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrollama-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The asset cache, as the CLI resolves it.
fn cache_root() -> PathBuf {
    std::env::var_os("FERROLLAMA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("ferrollama")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/ferrollama")))
        .unwrap_or_else(|| PathBuf::from(".cache/ferrollama"))
}

/// `path` if it exists, else `None` with a message saying what was skipped.
fn cached(path: PathBuf, how: &str) -> Option<PathBuf> {
    if path.is_file() {
        Some(path)
    } else {
        println!("{} is absent ({how}): skipped", path.display());
        None
    }
}

/// Meta's `tokenizer.model` (as the tokenizer crate's tests find it).
fn meta_tokenizer_path() -> Option<PathBuf> {
    let p = std::env::var_os("FERROLLAMA_TOKENIZER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_root().join("llama-models-0.3.0/tokenizer.model"));
    cached(p, "run `ferrollama fetch tokenizer`")
}

/// The 2-shard Meta checkpoint merges to exactly the GGUF's weights (F16 bit for bit, the
/// F32 norms equal), its params.json to the same shapes, and the forward pass to the same
/// logits; `rope_freqs`, absent from Meta checkpoints, comes from `use_scaled_rope`.
#[test]
fn meta_checkpoint_matches_the_gguf() {
    let gguf = tiny_gguf();
    let ck = MetaCheckpoint::open(&testdata("meta/tiny")).unwrap();
    assert_eq!(ck.n_shards(), 2);
    let (a, b) = (&ck.config, &gguf.config);
    assert_eq!(
        (
            a.dim,
            a.n_layers,
            a.n_heads,
            a.n_kv_heads,
            a.head_dim,
            a.rope_dims
        ),
        (
            b.dim,
            b.n_layers,
            b.n_heads,
            b.n_kv_heads,
            b.head_dim,
            b.rope_dims
        )
    );
    assert_eq!(
        (a.ffn_dim, a.vocab_size, a.max_seq_len),
        (b.ffn_dim, b.vocab_size, b.max_seq_len)
    );
    assert_eq!((a.norm_eps, a.rope_theta), (b.norm_eps, b.rope_theta));

    let w = ck.weights().unwrap();
    for ((n, x), (_, y)) in all_f32(&w).iter().zip(all_f32(&gguf.weights)) {
        assert!(x == &y, "{n} differs from the GGUF");
    }
    // Merged matrices are the GGUF's bytes: rows stacked (wq) and columns joined (wo).
    let (m0, g0) = (&w.layers[0], &gguf.weights.layers[0]);
    assert_eq!(m0.wq.data(), g0.wq.data());
    assert_eq!(m0.wo.data(), g0.wo.data());
    assert_eq!(w.tok_embeddings.data(), gguf.weights.tok_embeddings.data());
    let (ra, rb) = (
        w.rope_freqs.clone().unwrap(),
        gguf.weights.rope_freqs.clone().unwrap(),
    );
    assert!(
        max_diff(&ra, &rb) < 1e-5,
        "rope divisors {ra:?} vs GGUF {rb:?}"
    );

    let mut meta = Llama {
        config: ck.config.clone(),
        weights: w,
    };
    meta.weights.pack().unwrap();
    let tokens: Vec<u32> = (0..24).map(|i| (i * 53 + 7) % 512).collect();
    let d = max_diff(&logits(&gguf, &tokens), &logits(&meta, &tokens));
    assert!(
        d < 1e-4,
        "Meta checkpoint logits differ from the GGUF's by {d}"
    );
}

/// A shard missing, renumbered or damaged is a clear error naming the problem.
#[test]
fn broken_meta_folders_are_clear_errors() {
    let src = testdata("meta/tiny");
    let copy = |tag: &str, shards: &[(&str, &str)]| -> PathBuf {
        let d = temp_dir(tag);
        std::fs::copy(src.join("params.json"), d.join("params.json")).unwrap();
        for (from, to) in shards {
            std::fs::copy(src.join(from), d.join(to)).unwrap();
        }
        d
    };
    // Only shard 0: half of every split tensor.
    let d = copy("meta1", &[("consolidated.00.pth", "consolidated.00.pth")]);
    let e = chain(&MetaCheckpoint::open(&d).unwrap_err());
    assert!(
        e.contains("FFN hidden size of 256") && e.contains("128 rows"),
        "{e}"
    );
    // A gap in the ranks.
    let d = copy(
        "metagap",
        &[
            ("consolidated.00.pth", "consolidated.00.pth"),
            ("consolidated.01.pth", "consolidated.02.pth"),
        ],
    );
    let e = chain(&MetaCheckpoint::open(&d).unwrap_err());
    assert!(
        e.contains("consolidated.02.pth") && e.contains("rank 1"),
        "{e}"
    );
    // A truncated shard: the error names the file.
    let d = copy(
        "metatrunc",
        &[
            ("consolidated.00.pth", "consolidated.00.pth"),
            ("consolidated.01.pth", "consolidated.01.pth"),
        ],
    );
    let p = d.join("consolidated.01.pth");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = chain(&MetaCheckpoint::open(&d).unwrap_err());
    assert!(e.contains("consolidated.01.pth"), "{e}");
    // Shards from different models: shard 1 replaced by shard 0 (norms agree, matrices
    // merge to the right shape) is not detectable; a params.json that disagrees is.
    std::fs::write(
        d.join("params.json"),
        r#"{"dim": 256, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 512,
            "multiple_of": 256, "norm_eps": 1e-5, "rope_theta": 500000.0}"#,
    )
    .unwrap();
    std::fs::copy(src.join("consolidated.01.pth"), &p).unwrap();
    let e = chain(&MetaCheckpoint::open(&d).unwrap_err());
    assert!(e.contains("FFN hidden size of 768"), "{e}");
    for t in ["meta1", "metagap", "metatrunc"] {
        let _ = std::fs::remove_dir_all(
            std::env::temp_dir().join(format!("ferrollama-{t}-{}", std::process::id())),
        );
    }
}

#[test]
fn import_open_reads_a_gguf_file() {
    let path = testdata("tiny/tiny-f16.gguf");
    let imp = import::open(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(imp.kind, SourceKind::Gguf);
    assert_eq!(imp.name.as_deref(), Some("ferrollama-tiny"));
    let want: Vec<&(String, Value)> = f
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .collect();
    assert!(want.len() >= 5);
    assert_eq!(imp.tokenizer.iter().collect::<Vec<_>>(), want);
    let gguf = tiny_gguf();
    for ((n, x), (_, y)) in all_f32(&imp.weights).iter().zip(all_f32(&gguf.weights)) {
        assert!(x == &y, "{n}");
    }
    // Not a GGUF, not a folder we know.
    let e = import::open(&testdata("meta/tiny/params.json")).unwrap_err();
    assert!(e.to_string().contains("not a GGUF"), "{e}");
    let e = import::open(&testdata("meta")).unwrap_err();
    assert!(e.to_string().contains("neither"), "{e}");
}

/// tokenizer.* keys written to a GGUF and loaded back.
fn tokenizer_from_keys(keys: &[(String, Value)]) -> ModelTokenizer {
    let mut w = GgufWriter::new();
    for (k, v) in keys {
        w.set(k, v.clone());
    }
    let f = GgufFile::parse(Bytes::Owned(w.to_bytes())).unwrap();
    ModelTokenizer::from_gguf(&f).unwrap()
}

/// A single-file HF folder made from the tiny GGUF (HF names, rotate-half wq/wk) and a
/// tokenizer.json describing its vocabulary.
fn write_hf_folder(dir: &Path) {
    use safetensors::tensor::{Dtype, TensorView};
    let gguf = tiny_gguf();
    let c = &gguf.config;
    let name = |l: Option<usize>, n: &str| file_name(Format::HuggingFace, l, n).unwrap();
    let mut mats: Vec<(String, Tensor)> = vec![
        (
            name(None, "tok_embeddings"),
            gguf.weights.tok_embeddings.clone(),
        ),
        (name(None, "output"), gguf.weights.output.clone()),
    ];
    let mut vecs: Vec<(String, Vec<u8>)> = vec![(
        name(None, "norm"),
        gguf.weights
            .norm
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
    )];
    for (l, ly) in gguf.weights.layers.iter().enumerate() {
        let l = Some(l);
        mats.push((
            name(l, "attention.wq"),
            permute(&ly.wq, c.n_heads, c.head_dim).unwrap(),
        ));
        mats.push((
            name(l, "attention.wk"),
            permute(&ly.wk, c.n_kv_heads, c.head_dim).unwrap(),
        ));
        for (n, t) in [
            ("attention.wv", &ly.wv),
            ("attention.wo", &ly.wo),
            ("feed_forward.w1", &ly.w1),
            ("feed_forward.w2", &ly.w2),
            ("feed_forward.w3", &ly.w3),
        ] {
            mats.push((name(l, n), t.clone()));
        }
        for (n, v) in [
            ("attention_norm", &ly.attention_norm),
            ("ffn_norm", &ly.ffn_norm),
        ] {
            vecs.push((name(l, n), v.iter().flat_map(|x| x.to_le_bytes()).collect()));
        }
    }
    // Packed copies are the forward pass's; the view data is the file's F16.
    let mut views: HashMap<String, TensorView> = HashMap::new();
    for (n, t) in &mats {
        views.insert(
            n.clone(),
            TensorView::new(Dtype::F16, vec![t.rows, t.cols], t.data()).unwrap(),
        );
    }
    for (n, b) in &vecs {
        views.insert(
            n.clone(),
            TensorView::new(Dtype::F32, vec![c.dim], b).unwrap(),
        );
    }
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "hidden_size": c.dim, "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads, "intermediate_size": c.ffn_dim,
        "vocab_size": c.vocab_size, "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
        "max_position_embeddings": 131072,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"}
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

    let f = GgufFile::open(testdata("tiny/tiny-f16.gguf")).unwrap();
    let strings = |key: &str| -> Vec<String> {
        f.get_array(key)
            .unwrap()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens");
    let types: Vec<i64> = f
        .get_array("tokenizer.ggml.token_type")
        .unwrap()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
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
    let pattern = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let tj = serde_json::json!({
        "added_tokens": added,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
        "model": {"type": "BPE", "vocab": vocab, "merges": strings("tokenizer.ggml.merges")},
    });
    std::fs::write(dir.join("tokenizer.json"), tj.to_string()).unwrap();
    let cfg = serde_json::json!({"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"},
                                 "chat_template": "{{ messages[0].content }}"});
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
}

/// An HF folder imports to the GGUF's weights (wq/wk permuted back), and its tokenizer keys,
/// written to a GGUF, load as the tokenizer of the GGUF file the folder was made from.
#[test]
fn import_open_reads_a_hf_folder() {
    let dir = temp_dir("import-hf");
    write_hf_folder(&dir);
    let imp = import::open(&dir).unwrap();
    assert_eq!(imp.kind, SourceKind::HfFolder);
    let gguf = tiny_gguf();
    for ((n, x), (_, y)) in all_f32(&imp.weights).iter().zip(all_f32(&gguf.weights)) {
        assert!(x == &y, "{n}");
    }
    let get = |k: &str| {
        imp.tokenizer
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("tokenizer.ggml.pre"),
        Some(Value::String("llama-bpe".into()))
    );
    let from_keys = tokenizer_from_keys(&imp.tokenizer);
    let f = GgufFile::open(testdata("tiny/tiny-f16.gguf")).unwrap();
    let from_gguf = ModelTokenizer::from_gguf(&f).unwrap();
    assert_eq!(from_keys.bos, from_gguf.bos);
    assert_eq!(from_keys.eos, from_keys.bpe.token_id("<|eot_id|>"));
    assert!(from_keys.add_bos);
    assert!(
        from_keys
            .stop_ids
            .contains(&from_keys.bpe.token_id("<|eot_id|>").unwrap())
    );
    assert_eq!(
        from_keys.chat_template.as_deref(),
        Some("{{ messages[0].content }}")
    );
    for text in [
        "Hello, world!",
        "  spaces\n\nand 12345 numbers",
        "<|eot_id|> x",
        "naïve café",
    ] {
        for special in [false, true] {
            let ids = from_keys.bpe.encode(text, special);
            assert_eq!(ids, from_gguf.bpe.encode(text, special), "{text:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Meta's tokenizer.model as GGUF keys: loaded by `ModelTokenizer::from_gguf`, it encodes
/// every Llama 3 conformance vector (made by Meta's own code) to the ids of Meta's
/// tokenizer and of ours; BOS/EOS/stop ids are Meta's.
#[test]
fn tiktoken_keys_encode_the_llama3_vectors() {
    let Some(path) = meta_tokenizer_path() else {
        return;
    };
    let tok = Tokenizer::from_file(&path).unwrap();
    let keys = vocab_keys::from_tiktoken(&tok).unwrap();
    let mt = tokenizer_from_keys(&keys);
    assert_eq!(mt.bpe.n_tokens(), 128_256);
    assert_eq!(mt.bos, Some(128_000));
    assert_eq!(mt.eos, Some(128_009));
    for stop in tok.stop_tokens() {
        assert!(mt.stop_ids.contains(&stop), "{stop} in {:?}", mt.stop_ids);
    }
    assert!(mt.add_bos && mt.chat_template.is_none());
    let eot = mt.bpe.token_id("<|end_of_text|>").unwrap();
    assert_eq!(eot, 128_001);

    // The same tokens and merges, in the same order, as llama.cpp's Llama 3 vocabulary
    // (converted from HF's tokenizer.json), when its source tree is in the cache.
    if let Some(p) = cached(
        cache_root().join(
            "llamacpp-src/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf",
        ),
        "scripts/setup-llamacpp fetches it",
    ) {
        let f = GgufFile::open(p).unwrap();
        let get = |k: &str| keys.iter().find(|(key, _)| key == k).map(|(_, v)| v).unwrap();
        let merges = f.get_array("tokenizer.ggml.merges").unwrap().unwrap();
        assert_eq!(merges.len(), 280_147);
        assert!(get("tokenizer.ggml.merges").as_array().unwrap() == merges, "merges differ");
        let theirs = f.get_array("tokenizer.ggml.tokens").unwrap().unwrap();
        let ours = get("tokenizer.ggml.tokens").as_array().unwrap();
        assert_eq!(ours.len(), theirs.len());
        // Reserved special tokens are named differently across releases (spec §1.2).
        assert!(ours[..128_000] == theirs[..128_000], "token texts differ");
        for id in [128_000, 128_001, 128_006, 128_007, 128_009] {
            assert_eq!(ours[id], theirs[id], "{id}");
        }
    }
    let text = std::fs::read_to_string(testdata("llama3/tokenizer.jsonl")).unwrap();
    let (mut n, mut long_runs_differ) = (0, 0);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let s = v["text"].as_str().unwrap();
        let (bos, eos) = (v["bos"].as_bool().unwrap(), v["eos"].as_bool().unwrap());
        let all = match v["allowed_special"].as_str().unwrap() {
            "all" => true,
            "none" => false,
            other => panic!("allowed_special {other}"),
        };
        let want: Vec<u32> = v["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let wrap = |body: Vec<u32>| -> Vec<u32> {
            let mut ids = Vec::with_capacity(body.len() + 2);
            if bos {
                ids.push(mt.bos.unwrap());
            }
            ids.extend(body);
            if eos {
                ids.push(eot); // Meta's encode(eos=True) appends <|end_of_text|>
            }
            ids
        };
        // Meta's encode first cuts text into 400,000-char windows and 25,000-char runs of
        // (non-)whitespace, then runs tiktoken on each slice; that is the tokenizer's
        // algorithm, not its vocabulary, and llama.cpp's BPE does not do it.
        let mut chunked = Vec::new();
        ferrollama_tokenizer::split::for_each_slice(s, |part| {
            chunked.extend(mt.bpe.encode(part, all));
        });
        let id = &v["id"];
        assert!(wrap(chunked) == want, "{id}: chunked encode differs");
        let direct = wrap(mt.bpe.encode(s, all));
        if v["category"] == "long_runs" {
            long_runs_differ += usize::from(direct != want);
        } else {
            let at = direct.iter().zip(&want).position(|(a, b)| a != b);
            assert!(
                direct == want,
                "{id}: differs at {at:?} ({} vs {} ids)",
                direct.len(),
                want.len()
            );
        }
        let allowed = if all {
            AllowedSpecial::All
        } else {
            AllowedSpecial::None
        };
        assert!(
            tok.encode(s, bos, eos, allowed) == want,
            "{id}: the tokenizer crate differs"
        );
        n += 1;
    }
    assert!(n > 250, "{n} vectors");
    println!(
        "{n} vectors match; {long_runs_differ} long_runs vectors need Meta's 25,000-char run \
         splitting, which ByteLevelBpe::encode does not do"
    );
    // Byte-level decode gives the text back, multi-byte characters included.
    let s = "héllo wörld — 你好 🦙";
    assert_eq!(mt.bpe.decode(&mt.bpe.encode(s, false), false).unwrap(), s);

    // An HF folder with only a tokenizer.model takes the same path.
    let dir = temp_dir("hf-tiktoken");
    std::fs::copy(&path, dir.join("tokenizer.model")).unwrap();
    assert_eq!(vocab_keys::from_hf_dir(&dir).unwrap(), keys);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `import::open` on a Meta folder: weights merged, tokenizer from its tokenizer.model.
#[test]
fn import_open_reads_a_meta_folder() {
    let Some(tok) = meta_tokenizer_path() else {
        return;
    };
    let dir = temp_dir("import-meta");
    for f in ["params.json", "consolidated.00.pth", "consolidated.01.pth"] {
        std::fs::copy(testdata("meta/tiny").join(f), dir.join(f)).unwrap();
    }
    let e = chain(&import::open(&dir).unwrap_err());
    assert!(e.contains("no tokenizer.model"), "{e}");
    std::fs::copy(&tok, dir.join("tokenizer.model")).unwrap();
    let imp = import::open(&dir).unwrap();
    assert_eq!(imp.kind, SourceKind::MetaCheckpoint);
    assert_eq!(imp.config.ffn_dim, 256);
    let gguf = tiny_gguf();
    for ((n, x), (_, y)) in all_f32(&imp.weights).iter().zip(all_f32(&gguf.weights)) {
        assert!(x == &y, "{n}");
    }
    let n = imp
        .tokenizer
        .iter()
        .find(|(k, _)| k == "tokenizer.ggml.tokens")
        .and_then(|(_, v)| v.as_array())
        .map(<[Value]>::len);
    assert_eq!(n, Some(128_256));
    let _ = std::fs::remove_dir_all(&dir);
}
