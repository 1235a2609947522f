//! Embeddings through the router: OpenAI (float, base64, token arrays, both path
//! prefixes), Llama Stack, Ollama, the model listing, and every refusal. Vectors are
//! checked against sentence-transformers' (testdata/minilm/expected.json).
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use base64::Engine as _;
use common::{MODEL, json_call, tiny_app_with_embeddings};
use serde_json::{Value, json};

const EMB: &str = "all-MiniLM-L6-v2";

fn expected() -> Vec<(String, Vec<u32>, Vec<f32>)> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/minilm/expected.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_string(),
                c["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect(),
                c["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect(),
            )
        })
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let n = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[tokio::test]
async fn openai_float_base64_and_tokens_agree_with_sentence_transformers() {
    let app = tiny_app_with_embeddings();
    let cases = expected();
    let texts: Vec<&str> = cases.iter().take(6).map(|c| c.0.as_str()).collect();
    for path in ["/v1/embeddings", "/v1/openai/v1/embeddings"] {
        let (s, v) = json_call(
            &app,
            "POST",
            path,
            Some(json!({"model": EMB, "input": texts})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], EMB);
        let tokens: usize = cases.iter().take(6).map(|c| c.1.len()).sum();
        assert_eq!(v["usage"]["prompt_tokens"], tokens);
        assert_eq!(v["usage"]["total_tokens"], tokens);
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 6);
        for (i, d) in data.iter().enumerate() {
            assert_eq!(d["object"], "embedding");
            assert_eq!(d["index"], i);
            let e = floats(&d["embedding"]);
            assert_eq!(e.len(), 384);
            assert!(cosine(&e, &cases[i].2) >= 0.9999, "{}", cases[i].0);
        }
    }
    // base64: little-endian f32, the same numbers.
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/embeddings",
        Some(json!({"model": EMB, "input": cases[0].0, "encoding_format": "base64"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let b64: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let (_, f) = json_call(
        &app,
        "POST",
        "/v1/embeddings",
        Some(json!({"model": EMB, "input": cases[0].0})),
    )
    .await;
    assert_eq!(b64, floats(&f["data"][0]["embedding"]));
    // Token arrays (the model's ids without [CLS]/[SEP]), one and several.
    let ids: Vec<u32> = cases[0].1[1..cases[0].1.len() - 1].to_vec();
    for input in [json!(ids), json!([ids, ids])] {
        let (s, v) = json_call(
            &app,
            "POST",
            "/v1/embeddings",
            Some(json!({"model": EMB, "input": input})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(cosine(&floats(&v["data"][0]["embedding"]), &cases[0].2) >= 0.9999);
    }
}

#[tokio::test]
async fn openai_refusals_are_clear_4xx() {
    let app = tiny_app_with_embeddings();
    let many: Vec<String> = (0..2049).map(|i| format!("t{i}")).collect();
    for (body, status, want) in [
        (
            json!({"model": EMB, "input": "x", "dimensions": 128}),
            StatusCode::BAD_REQUEST,
            "does not support `dimensions`",
        ),
        (
            json!({"model": EMB, "input": "x", "encoding_format": "int8"}),
            StatusCode::BAD_REQUEST,
            "encoding_format",
        ),
        (
            json!({"model": EMB, "input": []}),
            StatusCode::BAD_REQUEST,
            "must not be empty",
        ),
        (
            json!({"model": EMB, "input": ["ok", " "]}),
            StatusCode::BAD_REQUEST,
            "input 1 is an empty string",
        ),
        (
            json!({"model": EMB, "input": [[1, 2], []]}),
            StatusCode::BAD_REQUEST,
            "empty token array",
        ),
        (
            json!({"model": EMB, "input": [5, 99999]}),
            StatusCode::BAD_REQUEST,
            "outside the model's vocabulary",
        ),
        (
            json!({"model": EMB, "input": many}),
            StatusCode::BAD_REQUEST,
            "at most 2048 inputs",
        ),
        (
            json!({"model": EMB, "input": 42}),
            StatusCode::BAD_REQUEST,
            "input",
        ),
        (
            json!({"model": "nope", "input": "x"}),
            StatusCode::NOT_FOUND,
            "all-MiniLM-L6-v2",
        ),
        (
            json!({"model": MODEL, "input": "x"}),
            StatusCode::BAD_REQUEST,
            "is a chat model, not an embedding model",
        ),
    ] {
        let (s, v) = json_call(&app, "POST", "/v1/embeddings", Some(body.clone())).await;
        assert_eq!(s, status, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{body}: {msg}");
    }
}

#[tokio::test]
async fn models_list_the_embedding_model_with_its_dimension() {
    let app = tiny_app_with_embeddings();
    for path in ["/v1/models", "/v1/openai/v1/models"] {
        let (s, v) = json_call(&app, "GET", path, None).await;
        assert_eq!(s, StatusCode::OK);
        let data = v["data"].as_array().unwrap();
        let e = data.iter().find(|m| m["id"] == EMB).unwrap();
        assert_eq!(e["model_type"], "embedding");
        assert_eq!(e["metadata"]["embedding_dimension"], 384);
        let chat = data.iter().find(|m| m["id"] == MODEL).unwrap();
        assert_eq!(chat["model_type"], "llm");
    }
    let (s, v) = json_call(&app, "GET", &format!("/v1/models/{EMB}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["model_type"], "embedding");
}

#[tokio::test]
async fn llama_stack_embeddings_and_truncation_sides() {
    let app = tiny_app_with_embeddings();
    let cases = expected();
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/inference/embeddings",
        Some(json!({"model_id": EMB, "contents": [cases[1].0, {"type": "text", "text": cases[2].0}], "task_type": "document"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let e = v["embeddings"].as_array().unwrap();
    assert_eq!(e.len(), 2);
    assert!(cosine(&floats(&e[0]), &cases[1].2) >= 0.9999);
    assert!(cosine(&floats(&e[1]), &cases[2].2) >= 0.9999);
    // A text far over 256 tokens: "end" keeps its start (the reference's truncation),
    // "start" keeps its end, which differs.
    let long = format!(
        "{} {}",
        cases.last().unwrap().0,
        "completely different ending words ".repeat(60)
    );
    let side = |t: &str| json!({"model_id": EMB, "contents": [long], "text_truncation": t});
    let (_, end) = json_call(&app, "POST", "/v1/inference/embeddings", Some(side("end"))).await;
    let (_, start) = json_call(
        &app,
        "POST",
        "/v1/inference/embeddings",
        Some(side("start")),
    )
    .await;
    let (end, start) = (
        floats(&end["embeddings"][0]),
        floats(&start["embeddings"][0]),
    );
    assert!(cosine(&end, &cases.last().unwrap().2) >= 0.9999);
    assert!(cosine(&end, &start) < 0.9, "{}", cosine(&end, &start));
    for (body, want) in [
        (
            json!({"model_id": EMB, "contents": [{"type": "image", "image": {"url": {"uri": "x"}}}]}),
            "only text",
        ),
        (
            json!({"model_id": EMB, "contents": ["x"], "output_dimension": 128}),
            "cannot shorten",
        ),
        (
            json!({"model_id": EMB, "contents": ["x"], "text_truncation": "middle"}),
            "text_truncation",
        ),
        (
            json!({"model_id": EMB, "contents": ["x"], "task_type": "cluster"}),
            "task_type",
        ),
        (
            json!({"model_id": EMB, "contents": []}),
            "must not be empty",
        ),
    ] {
        let (s, v) = json_call(&app, "POST", "/v1/inference/embeddings", Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(want),
            "{body}: {v}"
        );
    }
}

#[tokio::test]
async fn ollama_embed_routes() {
    let app = tiny_app_with_embeddings();
    let cases = expected();
    let (s, v) = json_call(
        &app,
        "POST",
        "/api/embed",
        Some(json!({"model": EMB, "input": [cases[3].0, cases[4].0]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["model"], EMB);
    assert!(cosine(&floats(&v["embeddings"][1]), &cases[4].2) >= 0.9999);
    assert_eq!(v["prompt_eval_count"], cases[3].1.len() + cases[4].1.len());
    let (s, v) = json_call(
        &app,
        "POST",
        "/api/embeddings",
        Some(json!({"model": EMB, "prompt": cases[3].0})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(cosine(&floats(&v["embedding"]), &cases[3].2) >= 0.9999);
    let long = "word ".repeat(400);
    let (s, v) = json_call(
        &app,
        "POST",
        "/api/embed",
        Some(json!({"model": EMB, "input": long, "truncate": false})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("truncate is false"),
        "{v}"
    );
}

#[tokio::test]
async fn registering_the_loaded_embedding_model_answers_its_entry() {
    let app = tiny_app_with_embeddings();
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/models",
        Some(json!({"model_id": EMB, "model_type": "embedding", "metadata": {"embedding_dimension": 384}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["identifier"].as_str(), v["model_type"].as_str()),
        (Some(EMB), Some("embedding"))
    );
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/models",
        Some(json!({"model_id": "other", "model_type": "embedding"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("loaded: all-MiniLM-L6-v2"),
        "{v}"
    );
}
