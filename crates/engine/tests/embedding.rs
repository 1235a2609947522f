//! all-MiniLM-L6-v2 through the embedder against sentence-transformers' numbers: token ids
//! and vectors of 23 texts in a dozen scripts (`testdata/minilm/make_expected.py`, a numpy
//! float64 port of transformers' BertModel with mean pooling and L2 normalization). The
//! model comes from the cache (`ferrollama fetch minilm`, which `scripts/test` runs).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::OnceLock;

use ferrollama_engine::Embedder;
use ferrollama_model::encoder::WeightFormat;
use serde_json::Value;

fn model_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROLLAMA_MINILM") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("FERROLLAMA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("ferrollama")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/ferrollama")))
        .unwrap_or_default();
    cache.join("models/all-MiniLM-L6-v2")
}

fn embedder(threads: usize, format: WeightFormat) -> Embedder {
    let d = model_dir();
    Embedder::load(&d, threads, format).unwrap_or_else(|e| {
        panic!("{e}: all-MiniLM-L6-v2 is needed at {}; run ./scripts/test (it fetches it) or `cargo run -- fetch minilm`", d.display())
    })
}

fn f32_model() -> &'static Embedder {
    static M: OnceLock<Embedder> = OnceLock::new();
    M.get_or_init(|| embedder(2, WeightFormat::F32))
}

struct Case {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn cases() -> Vec<Case> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/minilm/expected.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect(),
            embedding: c["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn tokens_match_sentence_transformers() {
    let m = f32_model();
    assert_eq!(
        (m.dimension(), m.max_tokens(), m.normalized()),
        (384, 256, true)
    );
    for c in cases() {
        assert_eq!(m.tokenize(&c.text).unwrap(), c.ids, "{:?}", c.text);
    }
}

#[test]
fn vectors_match_sentence_transformers_in_one_batch() {
    let m = f32_model();
    let cases = cases();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let got = m.embed_texts(&texts).unwrap();
    assert_eq!(got.len(), cases.len());
    assert_eq!(got.tokens, cases.iter().map(|c| c.ids.len()).sum::<usize>());
    for (i, c) in cases.iter().enumerate() {
        let cos = cosine(got.row(i), &c.embedding);
        let max_diff = got
            .row(i)
            .iter()
            .zip(&c.embedding)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            cos >= 0.9999 && max_diff < 2e-4,
            "{:?}: cosine {cos}, max |diff| {max_diff}",
            c.text
        );
        let norm: f32 = got.row(i).iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5, "normalized: {norm}");
    }
}

#[test]
fn batching_and_threads_do_not_change_vectors() {
    let cases = cases();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let batched = f32_model().embed_texts(&texts).unwrap();
    let one = embedder(1, WeightFormat::F32);
    for (i, t) in texts.iter().enumerate() {
        let alone = one.embed_texts(&[t]).unwrap();
        for (a, b) in alone.row(0).iter().zip(batched.row(i)) {
            assert!((a - b).abs() < 1e-5, "{t:?}: {a} vs {b}");
        }
    }
}

/// A batch of several hundred tokens runs as groups of sequences, one group per thread
/// at a time (`Bert::forward`): each vector must be bit for bit the one the sequence gets
/// alone on one thread (a group must not see another's rows, and rows land in order).
#[test]
fn parallel_groups_give_each_text_its_own_vector() {
    let cases = cases();
    // Texts of ~10 to ~250 tokens, 40 of them (several groups of <= 512 tokens).
    let texts: Vec<String> = (0..40)
        .map(|i| {
            let n = 1 + (i * 7) % 13;
            (0..n)
                .map(|j| cases[(i + j) % cases.len()].text.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let two = embedder(2, WeightFormat::F32);
    let batched = two.embed_texts(&refs).unwrap();
    assert!(batched.tokens > 2048, "only {} tokens", batched.tokens);
    let one = embedder(1, WeightFormat::F32);
    for (i, t) in refs.iter().enumerate() {
        let alone = one.embed_texts(&[t]).unwrap();
        assert_eq!(alone.row(0), batched.row(i), "text {i}");
    }
}

#[test]
fn token_id_input_is_wrapped_like_text() {
    let m = f32_model();
    let cases = cases();
    // The ids without [CLS]/[SEP]: what an OpenAI client sends as a token array.
    let inputs: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| c.ids[1..c.ids.len() - 1].to_vec())
        .collect();
    let by_ids = m.embed_token_ids(&inputs).unwrap();
    for (i, c) in cases.iter().enumerate() {
        assert!(
            cosine(by_ids.row(i), &c.embedding) >= 0.9999,
            "{:?}",
            c.text
        );
    }
    let err = m.embed_token_ids(&[vec![5, 30522]]).unwrap_err();
    assert!(
        err.to_string().contains("outside the model's vocabulary"),
        "{err}"
    );
}

#[test]
fn q8_0_weights_stay_close() {
    let m = embedder(2, WeightFormat::Q8_0);
    let cases = cases();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let got = m.embed_texts(&texts).unwrap();
    for (i, c) in cases.iter().enumerate() {
        let cos = cosine(got.row(i), &c.embedding);
        assert!(cos >= 0.995, "{:?}: cosine {cos}", c.text);
    }
}

#[test]
fn similar_sentences_score_as_published() {
    // sentence-transformers' README: "A man is eating food." vs "A man is eating a piece of
    // bread." scores 0.7553 with this model.
    let m = f32_model();
    let e = m
        .embed_texts(&["A man is eating food.", "A man is eating a piece of bread."])
        .unwrap();
    let cos = cosine(e.row(0), e.row(1));
    assert!((cos - 0.7553).abs() < 1e-3, "{cos}");
}
