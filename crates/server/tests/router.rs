//! The router driven in-process (no socket): status codes, envelopes, stream formats,
//! auth, limits and cancellation, on the tiny Llama 3.1-format model.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use ferrollama_engine::Model;
use ferrollama_engine::scheduler::{Engine, EngineConfig};
use ferrollama_model::KvType;
use ferrollama_server::{AppState, Limits, RequestCounters, router, routes};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const MODEL: &str = "tiny-q8_0";
const KEY: &str = "sekret-key";

fn app() -> Arc<AppState> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-q8_0.gguf");
    let model = Arc::new(Model::load(&p).expect("tiny model"));
    let engine = Engine::start(
        vec![model],
        EngineConfig {
            threads: 2,
            step_tokens: 64,
            max_running: 8,
            max_queue: 32,
            kv_positions: 2048,
            ctx: 512,
            kv_type: KvType::F16,
        },
    )
    .expect("engine");
    Arc::new(AppState {
        engine,
        models: ferrollama_server::ModelRegistry::new(vec![MODEL.into()]),
        api_key: Some(KEY.into()),
        cors_origin: None,
        limits: Limits {
            max_body: 64 * 1024,
            ..Limits::default()
        },
        created: 1,
        requests: RequestCounters::new(routes().iter().map(|r| r.path).collect()),
        safety: Default::default(),
        ollama: Default::default(),
        agents: ferrollama_server::agents::AgentsState::in_memory().expect("agents db"),
        embeddings: Default::default(),
        files: ferrollama_server::files::FilesState::in_memory().expect("files store"),
        fine_tuning: std::sync::Arc::new(ferrollama_server::fine_tuning::FineTuning::temporary()),
        batches: ferrollama_server::batch::store::Batches::temporary(),
        evals: Default::default(),
    })
}

async fn call(
    app: &Arc<AppState>,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    key: Option<&str>,
) -> (StatusCode, Bytes) {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(k) = key {
        b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let req = match body {
        Some(bytes) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes)),
        None => b.body(Body::empty()),
    }
    .expect("request");
    let resp = router(app.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, bytes)
}

async fn post(app: &Arc<AppState>, path: &str, v: Value) -> (StatusCode, Value) {
    let (s, b) = call(
        app,
        "POST",
        path,
        Some(v.to_string().into_bytes()),
        Some(KEY),
    )
    .await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn error_message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_body_carries_openai_and_llama_stack_fields() {
    let app = app();
    let (s, b) = call(&app, "GET", "/v1/models", None, Some(KEY)).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_slice(&b).expect("json");
    let m = &v["data"][0];
    assert_eq!(v["object"], "list");
    assert_eq!(m["id"], MODEL);
    assert_eq!(m["identifier"], MODEL);
    assert_eq!(m["model_type"], "llm");
    assert_eq!(m["object"], "model");
    let (s, _) = call(&app, "GET", "/v1/models/nope", None, Some(KEY)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Regression: a path segment that is not UTF-8 got axum's plain-text rejection.
    let (s, b) = call(&app, "GET", "/v1/models/%ff%fe", None, Some(KEY)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&b).expect("an error envelope");
    assert!(error_message(&v).contains("UTF-8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_required_everywhere_but_health() {
    let app = app();
    let (s, _) = call(&app, "GET", "/health", None, None).await;
    assert_eq!(s, StatusCode::OK);
    for path in ["/v1/models", "/metrics", "/openapi.json", "/v1/health"] {
        let (s, b) = call(&app, "GET", path, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        let (s, _) = call(&app, "GET", path, None, Some("wrong-key!")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completion_returns_text_usage_and_finish_reason() {
    let app = app();
    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [{"role": "user", "content": "hello"}],
               "max_tokens": 5, "temperature": 0, "ignore_eos": true}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 3);
    // The same request through Llama Stack's route: same greedy text.
    let (s, ls) = post(
        &app,
        "/v1/inference/chat-completion",
        json!({"model_id": MODEL, "messages": [{"role": "user", "content": "hello"}],
               "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 5}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{ls}");
    assert_eq!(ls["completion_message"]["stop_reason"], "out_of_tokens");
    assert_eq!(
        ls["completion_message"]["content"],
        v["choices"][0]["message"]["content"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_envelopes() {
    let app = app();
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            json!({"model": MODEL, "messages": []}),
            StatusCode::BAD_REQUEST,
            "must not be empty",
        ),
        (
            json!({"model": MODEL, "messages": "hi"}),
            StatusCode::BAD_REQUEST,
            "invalid request",
        ),
        (
            json!({"model": MODEL, "messages": [["user", "hi"]]}),
            StatusCode::BAD_REQUEST,
            "must be an object",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": 9}),
            StatusCode::BAD_REQUEST,
            "temperature",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}),
            StatusCode::BAD_REQUEST,
            "unknown role",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            StatusCode::BAD_REQUEST,
            "text only",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "a+"}}}}),
            StatusCode::BAD_REQUEST,
            "pattern",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}),
            StatusCode::BAD_REQUEST,
            "requires `tools`",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 1000}),
            StatusCode::BAD_REQUEST,
            "n must be",
        ),
    ];
    for (body, want, text) in cases {
        let (s, v) = post(&app, "/v1/chat/completions", body.clone()).await;
        assert_eq!(s, want, "{body} -> {v}");
        assert!(error_message(&v).contains(text), "{body} -> {v}");
    }
    // Not JSON, not UTF-8, wrong content type, too large, deep nesting.
    let (s, _) = call(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(b"{nope".to_vec()),
        Some(KEY),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(vec![b'{', 0xff, b'}']),
        Some(KEY),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let big = format!(
        "{{\"model\":\"{MODEL}\",\"x\":\"{}\"}}",
        "a".repeat(100_000)
    );
    let (s, _) = call(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(big.into_bytes()),
        Some(KEY),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let deep = format!("{{\"x\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
    let (s, _) = call(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(deep.into_bytes()),
        Some(KEY),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{}"))
        .expect("request");
    let resp = router(app.clone()).oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _) = call(&app, "GET", "/v1/nowhere", None, Some(KEY)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // (GET lists stored completions; PUT is no method of it.)
    let (s, _) = call(&app, "PUT", "/v1/chat/completions", None, Some(KEY)).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_with_done_only_on_openai_paths() {
    let app = app();
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                      "max_tokens": 4, "stream": true, "ignore_eos": true,
                      "stream_options": {"include_usage": true}});
    let (s, b) = call(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(body.to_string().into_bytes()),
        Some(KEY),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8_lossy(&b);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(
        text.contains("\"usage\""),
        "include_usage adds a usage chunk"
    );
    let (s, b) = call(
        &app,
        "POST",
        "/v1/openai/v1/chat/completions",
        Some(body.to_string().into_bytes()),
        Some(KEY),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!String::from_utf8_lossy(&b).contains("[DONE]"));
    // Llama Stack: start, progress..., complete; every frame is JSON.
    let ls = json!({"model_id": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": true,
                    "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 4}});
    let (s, b) = call(
        &app,
        "POST",
        "/v1/inference/chat-completion",
        Some(ls.to_string().into_bytes()),
        Some(KEY),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let events: Vec<Value> = String::from_utf8_lossy(&b)
        .split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("each frame is JSON"))
        .collect();
    assert_eq!(events[0]["event"]["event_type"], "start");
    let last = events.last().expect("events");
    assert_eq!(last["event"]["event_type"], "complete");
    assert_eq!(last["event"]["stop_reason"], "out_of_tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_output_parses_and_validates() {
    let app = app();
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}},
                        "required": ["a", "b"]});
    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [{"role": "user", "content": "json please"}],
               "max_tokens": 200, "temperature": 0.8, "seed": 3,
               "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    let doc: Value = serde_json::from_str(content).expect("the output is JSON");
    assert!(doc["a"].is_i64() && doc["b"].is_boolean(), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_tool_call_comes_back_as_tool_calls() {
    let app = app();
    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [{"role": "user", "content": "weather?"}],
               "max_tokens": 200, "temperature": 0.8, "seed": 1,
               "tools": [{"type": "function", "function": {"name": "get_weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}}],
               "tool_choice": "required"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls", "{v}");
    let call = &c["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().expect("string"))
        .expect("json");
    assert!(args["city"].is_string());
}

/// Regression: tool parameters with `$defs` references were wrapped in one `anyOf`
/// document, where their `#/$defs/...` pointers no longer resolved, and got a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_tool_call_with_defs_refs_in_parameters() {
    let app = app();
    let params = json!({"type": "object", "$defs": {"unit": {"enum": ["c", "f"]}},
                        "properties": {"unit": {"$ref": "#/$defs/unit"}}, "required": ["unit"]});
    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [{"role": "user", "content": "temp?"}],
               "max_tokens": 100, "temperature": 0,
               "tools": [{"type": "function", "function": {"name": "temp", "parameters": params}}],
               "tool_choice": {"type": "function", "function": {"name": "temp"}}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().expect("string"))
        .expect("json");
    assert!(args["unit"] == "c" || args["unit"] == "f", "{args}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_chat_completion_answers_in_order() {
    let app = app();
    let (s, v) = post(
        &app,
        "/v1/inference/batch-chat-completion",
        json!({"model_id": MODEL, "messages_batch": [
            [{"role": "user", "content": "one"}], [{"role": "user", "content": "two"}],
            [{"role": "user", "content": "one"}]],
            "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 6}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let b = v["batch"].as_array().expect("batch");
    assert_eq!(b.len(), 3);
    assert_eq!(
        b[0]["completion_message"]["content"],
        b[2]["completion_message"]["content"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_stream_frees_its_sequence() {
    let app = app();
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "go"}],
                      "max_tokens": 400, "stream": true, "ignore_eos": true});
    let req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = router(app.clone()).oneshot(req).await.expect("response");
    let mut body = resp.into_body();
    let first = body.frame().await.expect("a frame").expect("ok");
    assert!(first.is_data());
    drop(body);
    let stats = app.engine.stats();
    let t = Instant::now();
    loop {
        if stats.running.load(Relaxed) == 0 && stats.kv_blocks_used.load(Relaxed) == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the sequence was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        stats.generated_tokens.load(Relaxed) < 400,
        "generation stopped early"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_openapi_describe_the_server() {
    let app = app();
    let _ = post(
        &app,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "abc", "max_tokens": 2}),
    )
    .await;
    let (s, b) = call(&app, "GET", "/metrics", None, Some(KEY)).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8_lossy(&b);
    for name in [
        "ferrollama_requests_total{route=\"/v1/completions\",status=\"200\"} 1",
        "ferrollama_queue_depth 0",
        "ferrollama_time_to_first_token_seconds_count",
        "ferrollama_inter_token_latency_seconds_bucket",
        "ferrollama_kv_blocks_total 128",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    let (s, b) = call(&app, "GET", "/openapi.json", None, Some(KEY)).await;
    assert_eq!(s, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&b).expect("json");
    for r in routes() {
        assert!(
            doc["paths"][r.path][r.method.to_lowercase()].is_object(),
            "{} {} missing",
            r.method,
            r.path
        );
    }
    assert!(
        doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["properties"]["messages"]
            .is_object()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cors_headers_unless_configured() {
    let app = app();
    let req = Request::builder()
        .method("GET")
        .uri("/v1/models")
        .header(header::ORIGIN, "http://evil.example")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .body(Body::empty())
        .expect("request");
    let resp = router(app.clone()).oneshot(req).await.expect("response");
    assert!(
        resp.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    // Configured: the origin is echoed and preflights are answered.
    let mut st = Arc::try_unwrap(app).expect("sole owner");
    st.cors_origin = Some("http://ok.example".into());
    let app = Arc::new(st);
    let req = Request::builder()
        .method("OPTIONS")
        .uri("/v1/chat/completions")
        .header(header::ORIGIN, "http://ok.example")
        .body(Body::empty())
        .expect("request");
    let resp = router(app.clone()).oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        resp.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.as_bytes()),
        Some(&b"http://ok.example"[..])
    );
    let req = Request::builder()
        .method("OPTIONS")
        .uri("/v1/chat/completions")
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::empty())
        .expect("request");
    let resp = router(app).oneshot(req).await.expect("response");
    assert!(
        resp.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
}
