//! The model registry over HTTP: `POST /v1/models` (aliases, store entries and files loaded
//! at runtime), `DELETE /v1/models/{id}`, and requests through registered ids.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use ferrollama_engine::Model;
use ferrollama_engine::scheduler::{Engine, EngineConfig};
use ferrollama_model::KvType;
use ferrollama_server::ollama::OllamaState;
use ferrollama_server::{AppState, Limits, ModelRegistry, RequestCounters, router, routes};
use ferrollama_store::Store;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const MODEL: &str = "tiny-q8_0";

fn tiny(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tiny")
        .join(name)
}

/// A fresh directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ferrollama-registry-test-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn app_with(store: Option<PathBuf>) -> Arc<AppState> {
    let model = Arc::new(Model::load(&tiny("tiny-q8_0.gguf")).expect("tiny model"));
    let engine = Engine::start(
        vec![model],
        EngineConfig {
            threads: 2,
            step_tokens: 64,
            max_running: 8,
            max_queue: 32,
            kv_positions: 1024,
            ctx: 256,
            kv_type: KvType::F16,
        },
    )
    .expect("engine");
    Arc::new(AppState {
        engine,
        models: ModelRegistry::new(vec![MODEL.into()]),
        api_key: None,
        cors_origin: None,
        limits: Limits {
            max_body: 64 * 1024,
            ..Limits::default()
        },
        created: 1,
        requests: RequestCounters::new(routes().iter().map(|r| r.path).collect()),
        safety: Default::default(),
        agents: ferrollama_server::agents::AgentsState::in_memory().expect("agents db"),
        files: ferrollama_server::files::FilesState::in_memory().expect("files store"),
        fine_tuning: std::sync::Arc::new(ferrollama_server::fine_tuning::FineTuning::temporary()),
        batches: ferrollama_server::batch::store::Batches::temporary(),
        evals: Default::default(),
        ollama: OllamaState::new(
            store.map(Store::at),
            None,
            vec![Some(tiny("tiny-q8_0.gguf"))],
        ),
        embeddings: Default::default(),
    })
}

async fn call(
    app: &Arc<AppState>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let b = Request::builder().method(method).uri(path);
    let req = match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string())),
        None => b.body(Body::empty()),
    }
    .expect("request");
    let resp = router(app.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn chat(app: &Arc<AppState>, model: &str) -> (StatusCode, Value) {
    call(
        app,
        "POST",
        "/v1/chat/completions",
        Some(
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 3, "temperature": 0, "ignore_eos": true}),
        ),
    )
    .await
}

fn message(v: &Value) -> String {
    v["error"]["message"].as_str().unwrap_or("").to_string()
}

fn listed(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_is_registered_used_listed_and_deleted() {
    let app = app_with(None);
    let (s, v) = call(
        &app,
        "POST",
        "/v1/models",
        Some(json!({"model_id": "gpt-4o", "provider_model_id": MODEL,
                    "model_type": "llm", "metadata": {"team": "a"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["identifier"], "gpt-4o");
    assert_eq!(v["provider_resource_id"], MODEL);
    assert_eq!(v["metadata"]["team"], "a");
    assert_eq!(v["model_type"], "llm");

    let (s, v) = chat(&app, "gpt-4o").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    let (s, v) = call(
        &app,
        "POST",
        "/v1/completions",
        Some(json!({"model": "gpt-4o", "prompt": "a", "max_tokens": 2, "ignore_eos": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Llama Stack's route too.
    let (s, v) = call(
        &app,
        "POST",
        "/v1/inference/chat-completion",
        Some(
            json!({"model_id": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                    "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 2}}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let (s, v) = call(&app, "GET", "/v1/models", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(listed(&v), vec![MODEL.to_string(), "gpt-4o".to_string()]);
    assert_eq!(v["data"][1]["metadata"], json!({"team": "a"}));
    let (s, v) = call(&app, "GET", "/v1/models/gpt-4o", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["provider_resource_id"], MODEL);
    // Ollama sees it as well.
    let (s, v) = call(&app, "GET", "/api/tags", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.to_string().contains("gpt-4o"), "{v}");

    let (s, v) = call(&app, "DELETE", "/v1/models/gpt-4o", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"], true);
    let (s, v) = chat(&app, "gpt-4o").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, _) = call(&app, "GET", "/v1/models/gpt-4o", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&app, "DELETE", "/v1/models/gpt-4o", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = call(&app, "GET", "/v1/models", None).await;
    assert_eq!(listed(&v), vec![MODEL.to_string()]);
    // The model itself is untouched.
    let (s, _) = chat(&app, MODEL).await;
    assert_eq!(s, StatusCode::OK);

    // Deleting a model's only id: it can be registered again by its own name.
    let (s, _) = call(&app, "DELETE", &format!("/v1/models/{MODEL}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(chat(&app, MODEL).await.0, StatusCode::NOT_FOUND);
    let (s, v) = call(&app, "POST", "/v1/models", Some(json!({"model_id": MODEL}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(chat(&app, MODEL).await.0, StatusCode::OK);
    assert_eq!(app.engine.models().len(), 1, "no second load");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_errors_are_4xx_with_the_reason() {
    let dir = temp_dir("errors");
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"GGUF but not really").expect("write");
    let app = app_with(None);
    let post = |body: Value| {
        let app = app.clone();
        async move { call(&app, "POST", "/v1/models", Some(body)).await }
    };
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"model_id": MODEL}),
            StatusCode::CONFLICT,
            "already registered",
        ),
        (
            json!({"model_id": "x", "provider_model_id": "no-such-model"}),
            StatusCode::NOT_FOUND,
            "no-such-model",
        ),
        (
            json!({"model_id": "e", "provider_model_id": MODEL, "model_type": "embedding"}),
            StatusCode::BAD_REQUEST,
            "embedding models are loaded when the server starts",
        ),
        (
            json!({"model_id": "e", "provider_model_id": MODEL, "model_type": "vision"}),
            StatusCode::BAD_REQUEST,
            "model_type",
        ),
        (
            json!({"model_id": "m", "provider_model_id": MODEL, "metadata": [1]}),
            StatusCode::BAD_REQUEST,
            "metadata must be a JSON object",
        ),
        (
            json!({"model_id": "p", "provider_model_id": MODEL, "provider_id": "ollama"}),
            StatusCode::BAD_REQUEST,
            "only provider",
        ),
        (json!({"model_id": ""}), StatusCode::BAD_REQUEST, "model_id"),
        (
            json!({"model_id": "a\u{1}b", "provider_model_id": MODEL}),
            StatusCode::BAD_REQUEST,
            "control",
        ),
        (
            json!({"provider_model_id": MODEL}),
            StatusCode::BAD_REQUEST,
            "model_id",
        ),
        (
            json!({"model_id": "bad", "provider_model_id": bad.to_string_lossy()}),
            StatusCode::BAD_REQUEST,
            "cannot load",
        ),
    ];
    for (body, want, text) in cases {
        let (s, v) = post(body.clone()).await;
        assert_eq!(s, want, "{body} -> {v}");
        assert!(message(&v).contains(text), "{body} -> {v}");
    }
    // An alias's id clashing with one registered at runtime.
    let (s, _) = post(json!({"model_id": "dup", "provider_model_id": MODEL})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = post(json!({"model_id": "dup", "provider_model_id": MODEL})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // Nothing failed left anything behind.
    let (_, v) = call(&app, "GET", "/v1/models", None).await;
    assert_eq!(listed(&v), vec![MODEL.to_string(), "dup".to_string()]);
    assert_eq!(app.engine.models().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_store_entries_are_loaded_at_runtime() {
    let store = temp_dir("runtime");
    // A loose GGUF in the store root is the store entry "stored".
    std::fs::copy(tiny("tiny-q4_k_m.gguf"), store.join("stored.gguf")).expect("copy");
    let app = app_with(Some(store.clone()));
    let f16 = tiny("tiny-f16.gguf");
    let (s, v) = call(
        &app,
        "POST",
        "/v1/models",
        Some(json!({"model_id": "second", "provider_model_id": f16.to_string_lossy()})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(app.engine.models().len(), 2);
    let (s, v) = chat(&app, "second").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["model"], "second");
    // The first model still answers, alongside.
    assert_eq!(chat(&app, MODEL).await.0, StatusCode::OK);

    // The same file under another id: no second load.
    let (s, _) = call(
        &app,
        "POST",
        "/v1/models",
        Some(json!({"model_id": "third", "provider_model_id": f16.to_string_lossy()})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(app.engine.models().len(), 2);

    // A store entry by name (model_id doubles as provider_model_id).
    let (s, v) = call(
        &app,
        "POST",
        "/v1/models",
        Some(json!({"model_id": "stored"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(app.engine.models().len(), 3);
    assert_eq!(chat(&app, "stored").await.0, StatusCode::OK);
    // Ollama's routes use it too.
    let (s, v) = call(
        &app,
        "POST",
        "/api/chat",
        Some(
            json!({"model": "stored", "messages": [{"role": "user", "content": "hi"}],
                    "stream": false, "options": {"num_predict": 2}}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Deleting ids: new requests get 404, the model stays loaded for re-registration.
    for id in ["second", "third"] {
        let (s, _) = call(&app, "DELETE", &format!("/v1/models/{id}"), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(chat(&app, id).await.0, StatusCode::NOT_FOUND);
    }
    let (s, _) = call(
        &app,
        "POST",
        "/v1/models",
        Some(json!({"model_id": "again", "provider_model_id": f16.to_string_lossy()})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(app.engine.models().len(), 3);
    assert_eq!(chat(&app, "again").await.0, StatusCode::OK);
    let _ = std::fs::remove_dir_all(&store);
}
