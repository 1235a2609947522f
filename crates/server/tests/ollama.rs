//! The Ollama routes driven in-process (no socket): shapes, NDJSON framing, options, the
//! store routes on a temporary store, and errors in Ollama's `{"error": "..."}` shape.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use ferrollama_engine::Model;
use ferrollama_engine::scheduler::{Engine, EngineConfig};
use ferrollama_model::KvType;
use ferrollama_server::ollama::OllamaState;
use ferrollama_server::{AppState, Limits, RequestCounters, router, routes};
use ferrollama_store::Store;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const MODEL: &str = "tiny-q8_0";
const KEY: &str = "sekret-key";

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-q8_0.gguf")
}

/// A fresh empty store directory under the system temp dir.
fn temp_store(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ferrollama-ollama-test-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp store");
    dir
}

fn app_with(store: Option<PathBuf>) -> Arc<AppState> {
    let model = Arc::new(Model::load(&tiny()).expect("tiny model"));
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
        agents: ferrollama_server::agents::AgentsState::in_memory().expect("agents db"),
        files: ferrollama_server::files::FilesState::in_memory().expect("files store"),
        fine_tuning: std::sync::Arc::new(ferrollama_server::fine_tuning::FineTuning::temporary()),
        batches: ferrollama_server::batch::store::Batches::temporary(),
        evals: Default::default(),
        ollama: OllamaState::new(store.map(Store::at), None, vec![Some(tiny())]),
        embeddings: Default::default(),
    })
}

fn app() -> Arc<AppState> {
    app_with(None)
}

async fn call(
    app: &Arc<AppState>,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    key: Option<&str>,
) -> (StatusCode, Option<String>, Bytes) {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(k) = key {
        b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    // No Content-Type: Ollama accepts bare bodies (`curl -d`), and so must we.
    let req = match body {
        Some(bytes) => b.body(Body::from(bytes)),
        None => b.body(Body::empty()),
    }
    .expect("request");
    let resp = router(app.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, ctype, bytes)
}

async fn send(app: &Arc<AppState>, method: &str, path: &str, v: Value) -> (StatusCode, Value) {
    let (s, _, b) = call(
        app,
        method,
        path,
        Some(v.to_string().into_bytes()),
        Some(KEY),
    )
    .await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn post(app: &Arc<AppState>, path: &str, v: Value) -> (StatusCode, Value) {
    send(app, "POST", path, v).await
}

async fn get(app: &Arc<AppState>, path: &str) -> (StatusCode, Value) {
    let (s, _, b) = call(app, "GET", path, None, Some(KEY)).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// An NDJSON body: every line one JSON object.
fn lines(b: &Bytes) -> Vec<Value> {
    let text = std::str::from_utf8(b).expect("utf-8");
    assert!(text.ends_with('\n'), "NDJSON ends with a newline: {text:?}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
        .collect()
}

/// Asserts `v` is Ollama's error shape and returns the message.
fn error_of(v: &Value) -> String {
    let o = v.as_object().expect("an object");
    assert_eq!(o.len(), 1, "only `error`: {v}");
    o["error"].as_str().expect("a string error").to_string()
}

fn assert_final_counts(v: &Value) {
    assert_eq!(v["done"], true, "{v}");
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(v[k].is_u64(), "{k} missing or not a count in {v}");
    }
    assert!(v["prompt_eval_count"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(v["total_duration"].as_u64().unwrap_or(0) > 0, "{v}");
    let created = v["created_at"].as_str().unwrap_or("");
    assert!(
        created.len() == 20 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "created_at {created:?} is not RFC 3339 UTC"
    );
}

fn chat_body(extra: Value) -> Value {
    let mut v = json!({"model": MODEL, "messages": [{"role": "user", "content": "hello"}],
                       "options": {"temperature": 0, "num_predict": 4}});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_version_and_auth() {
    let app = app();
    let (s, _, b) = call(&app, "GET", "/", None, Some(KEY)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&b[..], b"Ollama is running");
    let (s, _, b) = call(&app, "HEAD", "/", None, Some(KEY)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b.is_empty());
    let (s, v) = get(&app, "/api/version").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    for path in ["/", "/api/tags", "/api/ps", "/api/version"] {
        let (s, _, b) = call(&app, "GET", path, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert!(error_of(&v).contains("API key"), "{path}: {v}");
    }
    // Ollama routes we do not have: 404 in Ollama's shape.
    let (s, v) = post(
        &app,
        "/api/copy",
        json!({"source": "a", "destination": "b"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&v).contains("/api/copy"));
    let (s, _, _) = call(
        &app,
        "POST",
        "/api/chat",
        Some(chat_body(json!({})).to_string().into_bytes()),
        Some("wrong"),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_non_streamed_hits_num_predict_with_done_reason_length() {
    let app = app();
    let (s, v) = post(&app, "/api/chat", chat_body(json!({"stream": false}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_final_counts(&v);
    assert_eq!(v["model"], MODEL);
    assert_eq!(v["message"]["role"], "assistant");
    assert!(v["message"]["content"].is_string());
    assert_eq!(v["eval_count"], 4, "{v}");
    assert_eq!(v["done_reason"], "length", "{v}");
    // `NAME:latest` is the same model, and the reply echoes the name asked for.
    let mut b = chat_body(json!({"stream": false}));
    b["model"] = json!(format!("{MODEL}:latest"));
    let (s, v2) = post(&app, "/api/chat", b).await;
    assert_eq!(s, StatusCode::OK, "{v2}");
    assert_eq!(v2["model"], format!("{MODEL}:latest"));
    assert_eq!(v2["message"]["content"], v["message"]["content"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_ndjson_by_default_and_matches_the_whole_reply() {
    let app = app();
    let (s, whole) = post(&app, "/api/chat", chat_body(json!({"stream": false}))).await;
    assert_eq!(s, StatusCode::OK);
    let body = chat_body(json!({})).to_string().into_bytes();
    let (s, ctype, b) = call(&app, "POST", "/api/chat", Some(body), Some(KEY)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ctype.as_deref(), Some("application/x-ndjson"));
    let ls = lines(&b);
    assert!(ls.len() >= 2, "pieces and a final line: {ls:?}");
    let (last, pieces) = ls.split_last().expect("lines");
    let mut text = String::new();
    for p in pieces {
        assert_eq!(p["done"], false, "{p}");
        assert_eq!(p["message"]["role"], "assistant");
        text.push_str(p["message"]["content"].as_str().expect("content"));
    }
    assert_final_counts(last);
    assert_eq!(last["message"]["content"], "");
    assert_eq!(last["done_reason"], "length");
    assert_eq!(last["eval_count"], whole["eval_count"]);
    assert_eq!(json!(text), whole["message"]["content"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_streams_and_answers_whole_with_system_and_raw() {
    let app = app();
    let req = json!({"model": MODEL, "prompt": "The sky is", "system": "Be brief.",
                     "options": {"temperature": 0, "num_predict": 3}});
    let (s, ctype, b) = call(
        &app,
        "POST",
        "/api/generate",
        Some(req.to_string().into_bytes()),
        Some(KEY),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ctype.as_deref(), Some("application/x-ndjson"));
    let ls = lines(&b);
    let (last, pieces) = ls.split_last().expect("lines");
    let text: String = pieces
        .iter()
        .map(|p| p["response"].as_str().expect("response").to_string())
        .collect();
    assert_final_counts(last);
    assert_eq!(last["eval_count"], 3);
    assert_eq!(last["done_reason"], "length");
    let mut whole = req.clone();
    whole["stream"] = json!(false);
    let (s, v) = post(&app, "/api/generate", whole.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_final_counts(&v);
    assert_eq!(v["response"], json!(text));
    // The system prompt is part of the prompt; raw mode skips the template altogether.
    let mut no_system = whole.clone();
    no_system["system"] = json!("");
    let (_, v2) = post(&app, "/api/generate", no_system).await;
    assert!(v["prompt_eval_count"].as_u64() > v2["prompt_eval_count"].as_u64());
    let mut raw = whole;
    raw["raw"] = json!(true);
    let (s, v3) = post(&app, "/api/generate", raw).await;
    assert_eq!(s, StatusCode::OK, "{v3}");
    assert!(v3["prompt_eval_count"].as_u64() < v2["prompt_eval_count"].as_u64());
    // No prompt: Ollama's "load" answer.
    let (s, v4) = post(
        &app,
        "/api/generate",
        json!({"model": MODEL, "stream": false}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v4["done"], true);
    assert_eq!(v4["done_reason"], "load");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_and_options_make_sampling_reproducible() {
    let app = app();
    let body = chat_body(json!({"stream": false,
        "options": {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": 42,
                    "num_predict": 8, "repeat_penalty": 1.0, "num_thread": 3, "mirostat": 0}}));
    let (s, a) = post(&app, "/api/chat", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    let (_, b) = post(&app, "/api/chat", body.clone()).await;
    assert_eq!(a["message"]["content"], b["message"]["content"]);
    let mut other = body;
    other["options"]["seed"] = json!(43);
    let mut differs = false;
    for seed in 43..48 {
        other["options"]["seed"] = json!(seed);
        let (_, c) = post(&app, "/api/chat", other.clone()).await;
        differs |= c["message"]["content"] != a["message"]["content"];
    }
    assert!(differs, "the seed changes nothing");
    // num_ctx bounds prompt + reply.
    let (s, v) = post(
        &app,
        "/api/chat",
        chat_body(json!({"stream": false, "options": {"num_ctx": 4, "temperature": 0}})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(error_of(&v).contains("num_ctx"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_schema_constrains_the_reply() {
    let app = app();
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"},
        "age": {"type": "integer"}}, "required": ["name", "age"], "additionalProperties": false});
    let (s, v) = post(
        &app,
        "/api/chat",
        chat_body(json!({"stream": false, "format": schema,
                          "options": {"temperature": 0, "num_predict": 200}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let text = v["message"]["content"].as_str().expect("content");
    let obj: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert!(obj["name"].is_string() && obj["age"].is_i64(), "{obj}");
    assert_eq!(obj.as_object().map(|o| o.len()), Some(2));
    let (s, v) = post(
        &app,
        "/api/generate",
        json!({"model": MODEL, "prompt": "x", "format": "json", "stream": false,
               "options": {"temperature": 0, "num_predict": 100}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let text = v["response"].as_str().expect("response");
    assert!(
        serde_json::from_str::<Value>(text).is_ok_and(|o| o.is_object()),
        "{text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_ollama_errors() {
    let app = app();
    let (s, _, b) = call(
        &app,
        "POST",
        "/api/chat",
        Some(b"{not json".to_vec()),
        Some(KEY),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&b).expect("json");
    assert!(error_of(&v).contains("invalid JSON"), "{v}");
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "/api/chat",
            chat_body(json!({"model": "nope"})),
            StatusCode::NOT_FOUND,
            "model \"nope\" not found, try pulling it first",
        ),
        (
            "/api/generate",
            json!({"model": "nope:7b", "prompt": "x"}),
            StatusCode::NOT_FOUND,
            "model \"nope:7b\" not found, try pulling it first",
        ),
        (
            "/api/chat",
            chat_body(json!({"format": {"type": "string", "pattern": "a+"}})),
            StatusCode::BAD_REQUEST,
            "invalid format schema",
        ),
        (
            "/api/chat",
            chat_body(json!({"format": "yaml"})),
            StatusCode::BAD_REQUEST,
            "invalid format",
        ),
        (
            "/api/chat",
            chat_body(json!({"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]})),
            StatusCode::BAD_REQUEST,
            "images are not supported",
        ),
        (
            "/api/chat",
            chat_body(json!({"messages": [{"role": "wizard", "content": "x"}]})),
            StatusCode::BAD_REQUEST,
            "unknown role",
        ),
        (
            "/api/chat",
            chat_body(json!({"options": {"num_predict": 0}})),
            StatusCode::BAD_REQUEST,
            "num_predict",
        ),
        (
            "/api/chat",
            chat_body(json!({"options": {"temperature": "hot"}})),
            StatusCode::BAD_REQUEST,
            "invalid request",
        ),
        (
            "/api/chat",
            chat_body(json!({"keep_alive": "soon"})),
            StatusCode::BAD_REQUEST,
            "keep_alive",
        ),
        (
            "/api/generate",
            json!({"model": MODEL, "prompt": "def f(", "suffix": "return 1"}),
            StatusCode::BAD_REQUEST,
            "`suffix` is not supported",
        ),
        (
            "/api/generate",
            json!({"model": MODEL, "prompt": "x", "template": "{{ .Prompt }}"}),
            StatusCode::BAD_REQUEST,
            "`template` is not supported",
        ),
        (
            "/api/show",
            json!({"model": "nope"}),
            StatusCode::NOT_FOUND,
            "model \"nope\" not found",
        ),
        (
            "/api/embed",
            json!({"model": MODEL, "input": "x"}),
            StatusCode::BAD_REQUEST,
            "is a chat model, not an embedding model",
        ),
        (
            "/api/embeddings",
            json!({"model": "nope", "prompt": "x"}),
            StatusCode::NOT_FOUND,
            "the embedding model 'nope' does not exist",
        ),
        (
            "/api/pull",
            json!({"model": "org/repo"}),
            StatusCode::NOT_IMPLEMENTED,
            "no model store",
        ),
    ];
    for (path, body, status, want) in cases {
        let (s, v) = post(&app, path, body.clone()).await;
        assert_eq!(s, status, "{path} {body}: {v}");
        let msg = error_of(&v);
        assert!(msg.contains(want), "{path} {body}: {msg:?} lacks {want:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_in_messages_are_accepted_and_parsed_from_replies() {
    let app = app();
    let tool = json!({"type": "function", "function": {"name": "get_weather",
        "description": "Weather of a city", "parameters": {"type": "object",
        "properties": {"location": {"type": "string"}}, "required": ["location"]}}});
    let with_result = json!({"model": MODEL, "stream": false, "tools": [tool],
        "options": {"temperature": 0, "num_predict": 3},
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"function": {"name": "get_weather", "arguments": {"location": "Paris"}}}]},
            {"role": "tool", "tool_name": "get_weather", "content": "{\"temperature_c\": 21}"}]});
    let (s, v) = post(&app, "/api/chat", with_result.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut shorter = with_result;
    shorter["messages"][2]["content"] = json!("{}");
    let (_, v2) = post(&app, "/api/chat", shorter).await;
    assert!(
        v["prompt_eval_count"].as_u64() > v2["prompt_eval_count"].as_u64(),
        "the tool result is in the prompt"
    );
    // A reply that is a call becomes `message.tool_calls` (`format` makes it one here):
    // arguments an object, content empty; streamed, the call comes whole in one line.
    let call_format = json!({"type": "object", "properties": {"name": {"enum": ["get_weather"]},
        "parameters": tool["function"]["parameters"]}, "required": ["name", "parameters"]});
    let ask = json!({"model": MODEL, "stream": false, "tools": [tool], "format": call_format,
        "options": {"temperature": 0, "num_predict": 64},
        "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let (s, v) = post(&app, "/api/chat", ask.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let calls = v["message"]["tool_calls"].as_array().expect("tool_calls");
    assert_eq!(calls.len(), 1, "{v}");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(
        calls[0]["function"]["arguments"]["location"].is_string(),
        "{v}"
    );
    assert_eq!(v["message"]["content"], "");
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let (s, _, b) = call(
        &app,
        "POST",
        "/api/chat",
        Some(streamed.to_string().into_bytes()),
        Some(KEY),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let ls = lines(&b);
    let with_calls: Vec<&Value> = ls
        .iter()
        .filter(|l| l["message"]["tool_calls"].is_array())
        .collect();
    assert_eq!(with_calls.len(), 1, "{ls:?}");
    assert_eq!(
        with_calls[0]["message"]["tool_calls"],
        v["message"]["tool_calls"]
    );
    let text: String = ls
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert_eq!(text, "", "no raw call text is streamed");
    // Without tools the same output stays text.
    let mut no_tools = ask;
    no_tools.as_object_mut().map(|o| o.remove("tools"));
    let (_, v) = post(&app, "/api/chat", no_tools).await;
    assert!(v["message"].get("tool_calls").is_none(), "{v}");
    assert!(
        v["message"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("get_weather"))
    );

    // A call shaped as Ollama's `tool_calls` in a message must be an object list.
    let (s, v) = post(
        &app,
        "/api/chat",
        json!({"model": MODEL, "messages": [{"role": "assistant", "tool_calls": ["x"]}]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    error_of(&v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_show_ps_and_delete_cover_served_and_stored_models() {
    let dir = temp_store("tags");
    // A stored, not served model: a loose GGUF file in the store.
    std::fs::copy(tiny(), dir.join("stored-tiny.gguf")).expect("copy");
    let app = app_with(Some(dir.clone()));
    let (s, v) = get(&app, "/api/tags").await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["tiny-q8_0:latest", "stored-tiny:latest"]);
    let m = &v["models"][0];
    assert_eq!(m["model"], "tiny-q8_0:latest");
    assert_eq!(m["details"]["format"], "gguf");
    assert_eq!(m["details"]["family"], "llama");
    assert_eq!(m["details"]["quantization_level"], "Q8_0");
    assert!(
        m["details"]["parameter_size"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(m["digest"].as_str().map(str::len), Some(64));
    let size = std::fs::metadata(tiny()).map(|m| m.len()).expect("size");
    assert_eq!(m["size"], size);

    let (s, v) = post(&app, "/api/show", json!({"model": "tiny-q8_0:latest"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["details"]["quantization_level"], "Q8_0");
    assert_eq!(v["model_info"]["general.architecture"], "llama");
    assert!(v["model_info"]["llama.context_length"].is_u64(), "{v}");
    assert!(v["modelfile"].as_str().is_some_and(|m| m.contains("FROM ")));
    assert!(v["template"].as_str().is_some_and(|t| !t.is_empty()));
    let (s, v) = post(&app, "/api/show", json!({"name": "stored-tiny"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["details"]["format"], "gguf");

    // keep_alive is reported by /api/ps.
    let (s, _) = post(
        &app,
        "/api/generate",
        json!({"model": MODEL, "keep_alive": "1h", "stream": false}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = get(&app, "/api/ps").await;
    assert_eq!(s, StatusCode::OK);
    let ps = v["models"].as_array().expect("models");
    assert_eq!(ps.len(), 1, "only served models are loaded: {v}");
    assert_eq!(ps[0]["name"], "tiny-q8_0:latest");
    assert_eq!(ps[0]["context_length"], 512);
    let expires = ps[0]["expires_at"].as_str().expect("expires_at");
    assert!(!expires.starts_with("9999"), "{expires}");
    let (_, _) = post(
        &app,
        "/api/generate",
        json!({"model": MODEL, "keep_alive": -1, "stream": false}),
    )
    .await;
    let (_, v) = get(&app, "/api/ps").await;
    assert!(
        v["models"][0]["expires_at"]
            .as_str()
            .is_some_and(|e| e.starts_with("9999"))
    );

    // Stored but not loaded: a clear error, not a 404.
    let (s, v) = post(
        &app,
        "/api/chat",
        json!({"model": "stored-tiny", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        error_of(&v).contains("ferrollama serve -m stored-tiny"),
        "{v}"
    );

    // Delete: a stored entry goes; unknown names and models outside the store are refused.
    let (s, v) = send(&app, "DELETE", "/api/delete", json!({"model": "nope"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(error_of(&v).contains("model \"nope\" not found"));
    let (s, v) = send(&app, "DELETE", "/api/delete", json!({"model": MODEL})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = send(
        &app,
        "DELETE",
        "/api/delete",
        json!({"model": "stored-tiny:latest"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!dir.join("stored-tiny.gguf").exists());
    let (_, v) = get(&app, "/api/tags").await;
    assert_eq!(v["models"].as_array().map(Vec::len), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_the_ollama_routes() {
    let app = app();
    let (s, v) = get(&app, "/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    for (path, method) in [
        ("/api/chat", "post"),
        ("/api/generate", "post"),
        ("/api/tags", "get"),
        ("/api/pull", "post"),
        ("/api/delete", "delete"),
        ("/", "get"),
    ] {
        assert!(v["paths"][path][method].is_object(), "{method} {path}");
    }
    assert!(
        v["paths"]["/api/chat"]["post"]["requestBody"]["content"]["application/json"]["schema"]
            ["properties"]["options"]
            .is_object()
    );
    let (_, v) = get(&app, "/v1/inspect/routes").await;
    assert!(
        v["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|r| r["route"] == "/api/chat"))
    );
}
