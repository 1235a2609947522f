//! How long a full token mask takes on real vocabularies. Ignored (needs the cached
//! tokenizers, and means something only in release):
//!
//! `cargo test --release -p ferrollama-engine constrain::tests::bench -- --ignored --nocapture`

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use super::super::{Schema, TokenTrie};
use super::{schema, tool_call_schema};

fn cache() -> PathBuf {
    std::env::var_os("FERROLLAMA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ferrollama")
        })
}

/// Meta's Llama 3 `tokenizer.model` (128,000 ranks; the 256 special tokens decode to no
/// text, so they are control tokens here).
fn llama3_tokens() -> Option<Vec<Vec<u8>>> {
    let path = cache().join("llama-models-0.3.0/tokenizer.model");
    let text = std::fs::read_to_string(path).ok()?;
    let vocab = ferrollama_tokenizer::Vocab::from_tiktoken(&text).ok()?;
    let mut toks: Vec<Vec<u8>> = (0..vocab.len() as u32)
        .map(|r| vocab.token(r).unwrap_or_default().to_vec())
        .collect();
    toks.resize(128_256, Vec::new());
    Some(toks)
}

/// SmolLM2's GGUF vocabulary (49,152 tokens).
fn smollm2_tokens() -> Option<Vec<Vec<u8>>> {
    let dir = std::fs::read_dir(cache().join("models")).ok()?;
    let path = dir
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "gguf"))?;
    let f = ferrollama_model::gguf::GgufFile::open(&path).ok()?;
    let t = ferrollama_model::ModelTokenizer::from_gguf(&f).ok()?;
    Some(
        (0..t.bpe.n_tokens() as u32)
            .map(|i| {
                t.bpe
                    .token_bytes(i, false)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default()
            })
            .collect(),
    )
}

/// A made-up 128,256-token vocabulary (no cache needed, so the bench always has a case):
/// whitespace runs (spaces, newline plus indentation, blank lines), JSON punctuation
/// glued to them, and pseudo-random words with and without a leading space. Its timings
/// compare runs of this bench, not real models.
fn synthetic_tokens() -> Vec<Vec<u8>> {
    let mut toks: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    for n in 1..=32 {
        toks.push(vec![b' '; n]);
        let mut nl = vec![b'\n'];
        nl.extend(std::iter::repeat_n(b' ', n));
        for p in ["", ",", "{", "[", "\":", "}", "]"] {
            let mut t = p.as_bytes().to_vec();
            t.extend_from_slice(&nl);
            toks.push(t);
        }
        toks.push(vec![b'\n'; n]);
    }
    for p in [
        "{\"", "\":", "\": ", "\", \"", "\",\"", "\"}", "},{", "[{", "}]", ", ", ": ",
    ] {
        toks.push(p.as_bytes().to_vec());
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while toks.len() < 128_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 9) as usize;
        let mut t = Vec::with_capacity(len + 1);
        if x & (1 << 40) != 0 {
            t.push(b' ');
        }
        t.extend((0..len).map(|i| b'a' + ((x >> (5 * i + 8)) % 26) as u8));
        toks.push(t);
    }
    toks.resize(128_256, Vec::new());
    toks
}

fn time_masks(name: &str, toks: &[Vec<u8>]) {
    let t0 = Instant::now();
    let trie = TokenTrie::new(
        toks.iter()
            .enumerate()
            .map(|(i, t)| (i as u32, t.as_slice())),
    );
    println!(
        "{name}: {} tokens, {} trie nodes, built in {:.1} ms",
        toks.len(),
        trie.n_nodes(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    let person = schema(json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 64}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["name", "age"]
    }));
    let tools = schema(tool_call_schema(&[
        (
            "get_weather",
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        ),
        (
            "get_time",
            json!({"type": "object", "properties": {"tz": {"type": "string"}}}),
        ),
        (
            "search",
            json!({"type": "object", "properties": {"query": {"type": "string"}, "n": {"type": "integer"}}, "required": ["query"]}),
        ),
    ]));
    let obj = Schema::any_object();
    // Eight alternatives that all stay alive through a string: the cost grows with the
    // live `anyOf` branches.
    let alts: Vec<serde_json::Value> = (0..8)
        .map(|i| json!({"type": "object", "properties": {"text": {"type": "string"}, format!("k{i}"): {"type": "integer"}}, "required": ["text"]}))
        .collect();
    let eight = schema(json!({"anyOf": alts}));
    let call = Schema::tool_call(&[
        ("get_weather", &json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})),
        ("search", &json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]})),
    ])
    .expect("compiles");
    let cases: Vec<(&str, &Schema, &str)> = vec![
        ("json_object, start", &obj, ""),
        (
            "json_object, mid-string",
            &obj,
            "{\"text\": \"The quick brown fox",
        ),
        ("json_object, mid-object (key next)", &obj, "{\"a\": 1, "),
        (
            "json_object, pretty, indented (key next)",
            &obj,
            "{\n  \"a\": [\n    1,\n    ",
        ),
        ("json_object, mid-key", &obj, "{\"a\": 1, \"descr"),
        ("json_object, value next", &obj, "{\"a\": "),
        ("json_object, mid-number", &obj, "{\"a\": [1, 23"),
        (
            "schema, mid-string (maxLength)",
            &person,
            "{\"name\": \"Ada Love",
        ),
        ("schema, key next", &person, "{\"name\": \"Ada\", "),
        ("tool call, name next", &tools, "{\"name\": \""),
        (
            "tool call, mid-arguments string",
            &tools,
            "{\"name\": \"search\", \"parameters\": {\"query\": \"rust json",
        ),
        ("Schema::tool_call, name next", &call, "{\"name\": \""),
        (
            "Schema::tool_call, mid-arguments string",
            &call,
            "{\"name\": \"search\", \"parameters\": {\"query\": \"rust json",
        ),
        (
            "anyOf of 8 objects, mid-string (8 live)",
            &eight,
            "{\"text\": \"The quick brown fox",
        ),
    ];
    let mut out = vec![false; toks.len()];
    for (label, s, prefix) in cases {
        let mut m = s.matcher();
        assert!(m.advance(prefix.as_bytes()), "{prefix}");
        let mut times = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            s.allowed_tokens(&m, &trie, &mut out);
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let n = out.iter().filter(|&&b| b).count();
        println!(
            "  {label:40} median {:6.2} ms  min {:6.2} ms  ({n} allowed)",
            times[times.len() / 2],
            times[0]
        );
    }
}

#[test]
#[ignore = "timing; needs cached tokenizers; run in release"]
fn mask_timing_real_vocabularies() {
    time_masks("synthetic", &synthetic_tokens());
    match llama3_tokens() {
        Some(t) => time_masks("Llama 3 tokenizer.model", &t),
        None => println!("Llama 3 tokenizer.model not cached: skipped"),
    }
    match smollm2_tokens() {
        Some(t) => time_masks("SmolLM2 GGUF", &t),
        None => println!("SmolLM2 GGUF not cached: skipped"),
    }
}
