//! LoRA adapters loaded and unloaded while serving (vLLM's `/v1/load_lora_adapter` and
//! `/v1/unload_lora_adapter`): listed as models with their base as `parent`, used by
//! requests that name them, batched with the base, gone (404) once unloaded while the
//! base keeps answering, and never pulled from under a request still running.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use common::{MODEL, json_call, tiny_app};
use ferrollama_model::Proj;
use ferrollama_model::gguf::{GgufWriter, Value as GValue};
use ferrollama_tensor::DType;
use serde_json::{Value, json};

/// A llama.cpp GGUF adapter for the tiny model on every projection: seeded, B nonzero,
/// alpha large enough to change greedy output.
fn write_adapter(dir: &Path, seed: u64) -> PathBuf {
    let m = ferrollama_engine::Model::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-q8_0.gguf"),
    )
    .unwrap();
    let cfg = &m.llama.config;
    let rank = 4;
    let mut s = seed;
    let mut uniform = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    };
    let mut w = GgufWriter::new();
    w.set("general.architecture", GValue::String("llama".into()));
    w.set("general.type", GValue::String("adapter".into()));
    w.set("adapter.type", GValue::String("lora".into()));
    w.set("adapter.lora.alpha", GValue::F32(64.0));
    for l in 0..cfg.n_layers {
        for p in Proj::ALL {
            let (inp, out) = p.dims(cfg);
            let bytes = |n: usize, u: &mut dyn FnMut() -> f32| -> Vec<u8> {
                (0..n).flat_map(|_| u().to_le_bytes()).collect()
            };
            let a = bytes(rank * inp, &mut uniform);
            let b = bytes(out * rank, &mut uniform);
            let base = format!("blk.{l}.{}.weight", p.gguf_name());
            w.add_tensor(&format!("{base}.lora_a"), &[inp, rank], DType::F32, a)
                .unwrap();
            w.add_tensor(&format!("{base}.lora_b"), &[rank, out], DType::F32, b)
                .unwrap();
        }
    }
    let path = dir.join(format!("adapter-{seed}.gguf"));
    w.write(&path).unwrap();
    path
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrollama-lora-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn complete(
    app: &std::sync::Arc<ferrollama_server::AppState>,
    model: &str,
) -> (StatusCode, Value) {
    json_call(
        app,
        "POST",
        "/v1/completions",
        Some(
            json!({"model": model, "prompt": "Once upon a time", "max_tokens": 16,
                    "temperature": 0, "ignore_eos": true}),
        ),
    )
    .await
}

fn ids(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_load_request_unload_then_404_and_base_still_served() {
    let app = tiny_app();
    let dir = temp_dir("hot");
    let path = write_adapter(&dir, 1);
    let (s, base) = complete(&app, MODEL).await;
    assert_eq!(s, StatusCode::OK, "{base}");
    let base_text = base["choices"][0]["text"].as_str().unwrap().to_string();

    // Bad loads: 400 with the reason.
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/load_lora_adapter",
        Some(json!({"lora_name": "ad", "lora_path": dir.join("nope").display().to_string()})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("cannot load the adapter"), "{v}");
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/load_lora_adapter",
        Some(json!({"lora_name": MODEL, "lora_path": path.display().to_string()})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("already in use"), "{v}");
    let (s, _) = json_call(
        &app,
        "POST",
        "/v1/load_lora_adapter",
        Some(json!({"lora_path": "x"})),
    )
    .await;
    assert!(s.is_client_error(), "{s}");

    // Load: listed with its base as parent; requests naming it use it.
    let (s, _) = common::call(
        &app,
        "POST",
        "/v1/load_lora_adapter",
        Some(json!({"lora_name": "ad", "lora_path": path.display().to_string()})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, list) = json_call(&app, "GET", "/v1/models", None).await;
    assert!(ids(&list).contains(&"ad".to_string()), "{list}");
    let entry = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "ad")
        .unwrap();
    assert_eq!(entry["parent"], MODEL);
    assert_eq!(entry["lora"]["rank"], 4);
    let (s, v) = complete(&app, "ad").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ad_text = v["choices"][0]["text"].as_str().unwrap().to_string();
    assert_ne!(
        ad_text, base_text,
        "the adapter changes the greedy continuation"
    );
    assert_eq!(v["model"], "ad");

    // Base and adapter at once (one batch): each the same as alone.
    let (a, b) = tokio::join!(complete(&app, MODEL), complete(&app, "ad"));
    assert_eq!(a.1["choices"][0]["text"], base_text.as_str());
    assert_eq!(b.1["choices"][0]["text"], ad_text.as_str());

    // Twice the same name: 400.
    let (s, _) = common::call(
        &app,
        "POST",
        "/v1/load_lora_adapter",
        Some(json!({"lora_name": "ad", "lora_path": path.display().to_string()})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Unload: 200; then the name is unknown (404) and the base is unchanged.
    let (s, _) = common::call(
        &app,
        "POST",
        "/v1/unload_lora_adapter",
        Some(json!({"lora_name": "ad"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = complete(&app, "ad").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = complete(&app, MODEL).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["choices"][0]["text"], base_text.as_str());
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/unload_lora_adapter",
        Some(json!({"lora_name": "ad"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/unload_lora_adapter",
        Some(json!({"lora_name": MODEL})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (_, list) = json_call(&app, "GET", "/v1/models", None).await;
    assert!(!ids(&list).contains(&"ad".to_string()), "{list}");
}

/// Unloading an adapter while requests on it run: they finish normally (they hold it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_an_adapter_in_use_lets_its_requests_finish() {
    let app = tiny_app();
    let dir = temp_dir("inuse");
    let path = write_adapter(&dir, 2);
    let (s, _) = common::call(
        &app,
        "POST",
        "/v1/load_lora_adapter",
        Some(json!({"lora_name": "busy", "lora_path": path.display().to_string()})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, want) = complete(&app, "busy").await;
    let running: Vec<_> = (0..4)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                json_call(
                    &app,
                    "POST",
                    "/v1/completions",
                    Some(
                        json!({"model": "busy", "prompt": "Once upon a time", "max_tokens": 200,
                                "temperature": 0, "ignore_eos": true}),
                    ),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (s, _) = common::call(
        &app,
        "POST",
        "/v1/unload_lora_adapter",
        Some(json!({"lora_name": "busy"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for r in running {
        let (s, v) = r.await.unwrap();
        // Either it was accepted before the unload (and completes with the adapter), or
        // it came after (404); never an error mid-run.
        match s {
            StatusCode::OK => {
                let text = v["choices"][0]["text"].as_str().unwrap();
                let short = want["choices"][0]["text"].as_str().unwrap();
                assert!(text.starts_with(short), "{text:?} vs {short:?}");
                assert_eq!(v["usage"]["completion_tokens"], 200);
            }
            StatusCode::NOT_FOUND => {}
            other => panic!("{other}: {v}"),
        }
    }
}
