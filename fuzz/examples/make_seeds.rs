//! Writes the seed corpora in `fuzz/seeds/` (small valid inputs for each target):
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds -- fuzz/seeds
//! ```
//!
//! GGUF seeds come from our own `GgufWriter`, safetensors seeds are written by hand (8-byte
//! header length, JSON header, data), config seeds are fixed texts. The pth seeds are copies
//! of `testdata/meta/*.pth` (made by torch; see testdata/meta/make_meta.py).

use std::path::Path;

use ferrollama_model::gguf::{Bytes, GgufFile, GgufWriter, Value, ty};
use ferrollama_model::{LlamaConfig, ModelTokenizer, Weights};
use ferrollama_tensor::DType;

/// Deterministic filler bytes.
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

/// `n` small f32s in [-0.5, 0.5), little-endian.
fn f32s(n: usize, seed: u32) -> Vec<u8> {
    bytes(n, seed)
        .into_iter()
        .flat_map(|b| (f32::from(b) / 256.0 - 0.5).to_le_bytes())
        .collect()
}

fn strs(v: &[&str]) -> Value {
    Value::Array(
        ty::STRING,
        v.iter().map(|s| Value::String((*s).into())).collect(),
    )
}

/// A whole tiny Llama: dim 8, 1 layer, 2 heads of 4, 1 KV head, FFN 16, a 16-token
/// byte-level BPE vocabulary with merges, special ids and a chat template.
fn tiny_model() -> Vec<u8> {
    let (dim, ffn, vocab, hd) = (8usize, 16usize, 16usize, 4usize);
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("general.alignment", Value::U32(32));
    w.set("llama.embedding_length", Value::U32(dim as u32));
    w.set("llama.block_count", Value::U32(1));
    w.set("llama.attention.head_count", Value::U32(2));
    w.set("llama.attention.head_count_kv", Value::U32(1));
    w.set("llama.attention.key_length", Value::U32(hd as u32));
    w.set("llama.rope.dimension_count", Value::U32(hd as u32));
    w.set("llama.feed_forward_length", Value::U32(ffn as u32));
    w.set("llama.vocab_size", Value::U32(vocab as u32));
    w.set("llama.context_length", Value::U32(64));
    w.set("llama.rope.freq_base", Value::F32(500_000.0));
    w.set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    w.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.set("tokenizer.ggml.pre", Value::String("llama-bpe".into()));
    let tokens = [
        "H",
        "e",
        "l",
        "o",
        "Ġ",
        "w",
        "r",
        "d",
        "ll",
        "He",
        "Ġw",
        "!",
        "1",
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|end_of_text|>",
    ];
    w.set("tokenizer.ggml.tokens", strs(&tokens));
    let types = (0..vocab)
        .map(|i| Value::I32(if i >= 13 { 3 } else { 1 }))
        .collect();
    w.set("tokenizer.ggml.token_type", Value::Array(ty::I32, types));
    w.set("tokenizer.ggml.merges", strs(&["l l", "H e", "Ġ w"]));
    w.set("tokenizer.ggml.bos_token_id", Value::U32(13));
    w.set("tokenizer.ggml.eos_token_id", Value::U32(15));
    w.set("tokenizer.ggml.eot_token_id", Value::U32(14));
    w.set("tokenizer.ggml.add_bos_token", Value::Bool(true));
    w.set(
        "tokenizer.chat_template",
        Value::String("{% for m in messages %}{{ m.content }}{% endfor %}".into()),
    );
    let mut seed = 0;
    let mut add = |name: &str, dims: &[usize], dtype: DType| {
        seed += 1;
        let n: usize = dims.iter().product();
        let data = match dtype {
            DType::F32 => f32s(n, seed),
            _ => bytes(n * 2, seed), // F16 / BF16
        };
        w.add_tensor(name, dims, dtype, data).expect("tensor");
    };
    add("token_embd.weight", &[dim, vocab], DType::F16);
    add("output.weight", &[dim, vocab], DType::BF16);
    add("output_norm.weight", &[dim], DType::F32);
    add("rope_freqs.weight", &[hd / 2], DType::F32);
    add("blk.0.attn_norm.weight", &[dim], DType::F32);
    add("blk.0.ffn_norm.weight", &[dim], DType::F32);
    add("blk.0.attn_q.weight", &[dim, 2 * hd], DType::F32);
    add("blk.0.attn_k.weight", &[dim, hd], DType::F16);
    add("blk.0.attn_v.weight", &[dim, hd], DType::F16);
    add("blk.0.attn_output.weight", &[2 * hd, dim], DType::F32);
    add("blk.0.ffn_gate.weight", &[dim, ffn], DType::BF16);
    add("blk.0.ffn_down.weight", &[ffn, dim], DType::F32);
    add("blk.0.ffn_up.weight", &[dim, ffn], DType::F16);
    w.to_bytes()
}

/// One two-row tensor of every dtype GGUF can hold, rows one block (or 256) long.
fn quants() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    for (i, dtype) in DType::ALL.into_iter().enumerate() {
        if dtype.ggml_id().is_none() {
            continue;
        }
        let cols = dtype.block_len().max(32);
        let cols = if cols > 32 { cols } else { 64 };
        let row = dtype.row_bytes(cols).expect("row");
        let data = match dtype {
            DType::F32 => f32s(cols * 2, i as u32),
            // Keep f16 block scales finite and small: bytes 0x00..0x3b in the high byte.
            _ => bytes(row * 2, i as u32)
                .into_iter()
                .map(|b| b & 0x3b)
                .collect(),
        };
        w.add_tensor(&format!("t.{}", dtype.name()), &[cols, 2], dtype, data)
            .expect("tensor");
    }
    w.to_bytes()
}

/// A safetensors file: 8-byte header length, JSON header, data.
fn safetensors(tensors: &[(&str, &str, &[usize])], metadata: bool) -> Vec<u8> {
    let size = |dt: &str| match dt {
        "F32" | "I32" => 4,
        "I64" | "F64" => 8,
        "U8" | "I8" | "BOOL" => 1,
        _ => 2,
    };
    let mut header = String::from("{");
    if metadata {
        header.push_str(r#""__metadata__":{"format":"pt"},"#);
    }
    let mut data = Vec::new();
    for (i, (name, dt, shape)) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product::<usize>() * size(dt);
        let start = data.len();
        data.extend(bytes(n, i as u32 + 100).into_iter().map(|b| b & 0x3b));
        let shape: Vec<String> = shape.iter().map(usize::to_string).collect();
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            r#""{name}":{{"dtype":"{dt}","shape":[{}],"data_offsets":[{start},{}]}}"#,
            shape.join(","),
            data.len()
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(data);
    out
}

fn write(dir: &Path, target: &str, name: &str, data: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::write(d.join(name), data).expect("write");
    println!("{target}/{name}: {} bytes", data.len());
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds".to_string());
    let dir = Path::new(&dir);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");

    // The seeds must reach the deep code paths: check that they load.
    let model = tiny_model();
    let f = GgufFile::parse(Bytes::Owned(model.clone())).expect("tiny model parses");
    let cfg = LlamaConfig::from_gguf(&f).expect("tiny model config");
    Weights::from_gguf(&f, &cfg).expect("tiny model weights");
    ModelTokenizer::from_gguf(&f).expect("tiny model tokenizer");
    write(dir, "gguf", "tiny-model.gguf", &model);
    let q = quants();
    let f = GgufFile::parse(Bytes::Owned(q.clone())).expect("quants parse");
    assert_eq!(f.tensors.len(), 11, "one tensor per GGUF dtype");
    write(dir, "gguf", "quants.gguf", &q);

    for name in ["records.pth", "records-p4.pth", "noncontig.pth"] {
        let data = std::fs::read(root.join("testdata/meta").join(name)).expect("testdata pth");
        write(dir, "pth", name, &data);
    }

    let floats = safetensors(
        &[
            ("model.embed_tokens.weight", "BF16", &[4, 8]),
            ("model.layers.0.self_attn.q_proj.weight", "F16", &[8, 8]),
            ("model.norm.weight", "F32", &[8]),
        ],
        true,
    );
    let n = ferrollama_model::safetensors::parse_file_bytes(&floats)
        .expect("floats.safetensors parses")
        .len();
    assert_eq!(n, 3);
    write(dir, "safetensors", "floats.safetensors", &floats);
    write(
        dir,
        "safetensors",
        "mixed.safetensors",
        &safetensors(
            &[
                ("a", "F32", &[2, 3]),
                ("b", "I64", &[2]),
                ("c", "F16", &[1, 2, 2]),
                ("d", "U8", &[]),
            ],
            false,
        ),
    );
    write(
        dir,
        "safetensors",
        "empty.safetensors",
        &safetensors(&[], false),
    );

    let hf31: &[u8] =
        br#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128,
"vocab_size": 256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
"max_position_embeddings": 131072, "tie_word_embeddings": true,
"rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
"original_max_position_embeddings": 8192, "rope_type": "llama3"}}
"#;
    let hf_plain: &[u8] = br#"{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 16, "rope_scaling": null}
"#;
    let params = std::fs::read(root.join("testdata/meta/tiny/params.json")).expect("params");
    for (name, text) in [
        ("hf-llama31.json", &hf31[..]),
        ("hf-plain.json", &hf_plain[..]),
    ] {
        let text = std::str::from_utf8(text).expect("utf-8");
        LlamaConfig::from_hf_json(text).expect("config seed validates");
        write(dir, "config", name, text.as_bytes());
    }
    let text = std::str::from_utf8(&params).expect("utf-8");
    ferrollama_model::meta::config_from_params(text).expect("params.json validates");
    write(dir, "config", "params.json", &params);
}
