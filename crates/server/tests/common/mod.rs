//! What the in-process router tests of the agent-era routes share (stored completions,
//! Responses, agents): the tiny Llama 3.1-format model behind a full `AppState`, and
//! requests through the router without a socket.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use ferrollama_engine::Model;
use ferrollama_engine::scheduler::{Engine, EngineConfig};
use ferrollama_model::KvType;
use ferrollama_server::agents::AgentsState;
use ferrollama_server::files::FilesState;
use ferrollama_server::{AppState, Limits, RequestCounters, router, routes};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const MODEL: &str = "tiny-q8_0";
pub const KEY: &str = "sekret-key";

/// The tiny model served with `agents` state and a context of `ctx` positions.
pub fn tiny_app_with(agents: AgentsState, ctx: usize) -> Arc<AppState> {
    let files = FilesState::in_memory().expect("files store");
    tiny_app_full(agents, files, Limits::default().max_file_size, ctx)
}

/// The tiny model with these agents and files states, uploads capped at `max_file_size`.
pub fn tiny_app_full(
    agents: AgentsState,
    files: FilesState,
    max_file_size: u64,
    ctx: usize,
) -> Arc<AppState> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-q8_0.gguf");
    let model = Arc::new(Model::load(&p).expect("tiny model"));
    let engine = Engine::start(
        vec![model],
        EngineConfig {
            threads: 2,
            step_tokens: 64,
            max_running: 8,
            max_queue: 32,
            kv_positions: 4 * ctx,
            ctx,
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
            max_file_size,
            ..Limits::default()
        },
        created: 1,
        requests: RequestCounters::new(routes().iter().map(|r| r.path).collect()),
        safety: Default::default(),
        ollama: Default::default(),
        agents,
        embeddings: Default::default(),
        files,
        fine_tuning: std::sync::Arc::new(ferrollama_server::fine_tuning::FineTuning::temporary()),
        batches: ferrollama_server::batch::store::Batches::temporary(),
        evals: Default::default(),
    })
}

/// The tiny model with in-memory agents state and a 512-position context.
pub fn tiny_app() -> Arc<AppState> {
    tiny_app_with(AgentsState::in_memory().expect("agents db"), 512)
}

/// One request (with the API key) through the router.
pub async fn call(
    app: &Arc<AppState>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Bytes) {
    let b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"));
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
    (status, bytes)
}

/// [`call`], the body parsed as JSON (null when it is not JSON).
pub async fn json_call(
    app: &Arc<AppState>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (s, b) = call(app, method, path, body).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// all-MiniLM-L6-v2 from the cache (`ferrollama fetch minilm`; scripts/test fetches it),
/// loaded once per test binary.
pub fn minilm() -> Arc<ferrollama_engine::Embedder> {
    static M: std::sync::OnceLock<Arc<ferrollama_engine::Embedder>> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let dir = std::env::var_os("FERROLLAMA_MINILM")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| ferrollama_store::paths::cache_dir().join("models/all-MiniLM-L6-v2"));
        let e = ferrollama_engine::Embedder::load(&dir, 2, ferrollama_model::encoder::WeightFormat::F32)
            .unwrap_or_else(|e| panic!("{e}: all-MiniLM-L6-v2 is needed at {}; run ./scripts/test or `ferrollama fetch minilm`", dir.display()));
        Arc::new(e)
    })
    .clone()
}

/// The tiny chat model plus all-MiniLM-L6-v2 as the embedding model `all-MiniLM-L6-v2`.
pub fn tiny_app_with_embeddings() -> Arc<AppState> {
    let app = tiny_app();
    let mut state = Arc::try_unwrap(app).unwrap_or_else(|_| panic!("fresh app is shared"));
    state.embeddings = ferrollama_server::embeddings::EmbeddingModels::new(vec![
        ferrollama_server::embeddings::EmbeddingModel {
            id: "all-MiniLM-L6-v2".into(),
            embedder: minilm(),
        },
    ]);
    Arc::new(state)
}

/// Where an app's files and vector stores live in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in memory (the default store).
    Sqlite,
    /// A fresh database on the PostgreSQL server at `$FERROLLAMA_PG_URL` (started by
    /// `scripts/test` through `scripts/pg`).
    Postgres,
}

/// [`tiny_app_with_embeddings`] on `backend`; `None` (with a note) for PostgreSQL when
/// `FERROLLAMA_PG_URL` is not set.
pub fn tiny_app_with_embeddings_on(backend: Backend) -> Option<Arc<AppState>> {
    let app = tiny_app_with_embeddings();
    if backend == Backend::Sqlite {
        return Some(app);
    }
    let Ok(url) = std::env::var("FERROLLAMA_PG_URL") else {
        eprintln!("note: FERROLLAMA_PG_URL is not set; skipping the PostgreSQL variant");
        return None;
    };
    // The synchronous PostgreSQL client cannot run on the test's async runtime thread.
    let files = std::thread::spawn(move || {
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("admin connection");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let db = format!("server_test_{}_{nanos}", std::process::id());
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .expect("create database");
        let base = url.rsplit_once('/').expect("database URL").0;
        FilesState::connect_postgres(&format!("{base}/{db}")).expect("PostgreSQL store")
    })
    .join()
    .expect("connect thread");
    let mut state = Arc::try_unwrap(app).unwrap_or_else(|_| panic!("fresh app is shared"));
    state.files = files;
    Some(Arc::new(state))
}

/// Uploads `data` as `filename` (purpose assistants) through `POST /v1/files`; the file id.
pub async fn upload_file(app: &Arc<AppState>, filename: &str, data: &[u8]) -> String {
    const B: &str = "ferrollama-common-boundary-x81Q";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{B}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(
        format!("--{B}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{B}--\r\n").as_bytes());
    let req = Request::builder()
        .method("POST")
        .uri("/v1/files")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={B}"),
        )
        .body(Body::from(body))
        .expect("request");
    let resp = router(app.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "upload {filename}: {v}");
    v["id"].as_str().expect("file id").to_string()
}
