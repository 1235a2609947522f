//! Request logs: one JSON line per request, written when the request is over (for a stream,
//! after its last event), with the id echoed in `x-request-id`, and never the prompt.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use ferrollama_engine::Model;
use ferrollama_engine::scheduler::{Engine, EngineConfig};
use ferrollama_model::KvType;
use ferrollama_server::ollama::OllamaState;
use ferrollama_server::{AppState, Limits, RequestCounters, router, routes};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const MODEL: &str = "tiny-q8_0";
const KEY: &str = "log-test-key";

/// Everything logged by this test binary (one global subscriber, JSON lines).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "warn,ferrollama::request=info",
            ))
            .with_writer(move || Sink(w.clone()))
            .init();
        buf
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The request-log records with this id.
fn records(id: &str) -> Vec<Value> {
    let text = String::from_utf8(logs().lock().expect("log buffer").clone()).expect("utf-8");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "ferrollama::request" && v["request_id"] == id)
        .collect()
}

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
        limits: Limits::default(),
        created: 1,
        requests: RequestCounters::new(routes().iter().map(|r| r.path).collect()),
        safety: Default::default(),
        agents: ferrollama_server::agents::AgentsState::in_memory().expect("agents db"),
        files: ferrollama_server::files::FilesState::in_memory().expect("files store"),
        fine_tuning: std::sync::Arc::new(ferrollama_server::fine_tuning::FineTuning::temporary()),
        batches: ferrollama_server::batch::store::Batches::temporary(),
        evals: Default::default(),
        ollama: OllamaState::new(None, None, vec![None]),
        embeddings: Default::default(),
    })
}

async fn send(
    app: &Arc<AppState>,
    body: Value,
    id: Option<&str>,
    key: &str,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let mut b = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(id) = id {
        b = b.header("x-request-id", id);
    }
    let req = b
        .body(Body::from(serde_json::to_vec(&body).expect("json")))
        .expect("request");
    let resp = router(app.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let rid = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, rid, bytes.to_vec())
}

const SECRET: &str = "zebra-marmalade-7731";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_per_request_with_counts_and_never_the_prompt() {
    logs();
    let app = app();
    let body = json!({"model": MODEL, "max_tokens": 9, "temperature": 0,
                      "messages": [{"role": "user", "content": format!("say {SECRET}")}]});
    let (status, rid, bytes) = send(&app, body, Some("client-id-1"), KEY).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        rid.as_deref(),
        Some("client-id-1"),
        "the client's id is echoed"
    );
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    let recs = records("client-id-1");
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(r["level"], "INFO");
    assert_eq!(r["method"], "POST");
    assert_eq!(r["route"], "/v1/chat/completions");
    assert_eq!(r["model"], MODEL);
    assert_eq!(r["status"], 200);
    assert_eq!(r["prompt_tokens"], v["usage"]["prompt_tokens"]);
    assert_eq!(r["completion_tokens"], v["usage"]["completion_tokens"]);
    let (ttft, total) = (
        r["ttft_ms"].as_f64().expect("ttft"),
        r["total_ms"].as_f64().expect("total"),
    );
    assert!(ttft > 0.0 && ttft <= total, "ttft {ttft} total {total}");
    let all = String::from_utf8(logs().lock().expect("log").clone()).expect("utf-8");
    assert!(!all.contains(SECRET), "prompt text reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_logged_when_they_end_and_failures_too() {
    logs();
    let app = app();
    let body = json!({"model": MODEL, "max_tokens": 7, "temperature": 0, "stream": true,
                      "ignore_eos": true, "messages": [{"role": "user", "content": "hi"}]});
    let (status, rid, bytes) = send(&app, body, None, KEY).await;
    assert_eq!(status, StatusCode::OK);
    // A fresh id when the client sent none.
    let rid = rid.expect("x-request-id");
    assert!(rid.starts_with("req-") && rid.len() == 20, "{rid}");
    assert!(String::from_utf8_lossy(&bytes).contains("[DONE]"));
    let recs = records(&rid);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["completion_tokens"], 7);
    assert!(recs[0]["ttft_ms"].as_f64().is_some());

    // A refused request is logged with its status, no model and no time to first token.
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
    let (status, rid, _) = send(&app, body, Some("bad-key-1"), "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(rid.as_deref(), Some("bad-key-1"));
    let recs = records("bad-key-1");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["status"], 401);
    assert_eq!(recs[0]["model"], "-");
    assert!(recs[0].get("ttft_ms").is_none_or(Value::is_null));

    // An id with odd characters is not echoed; a fresh one replaces it.
    let body =
        json!({"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]});
    let (_, rid, _) = send(&app, body, Some("evil\"id"), KEY).await;
    assert!(rid.expect("id").starts_with("req-"));
}
