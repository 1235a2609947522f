//! `ferrollama serve`: the OpenAI, Llama Stack and Ollama HTTP APIs on one server.
//!
//! Handlers translate requests into engine sequences (`job.rs`) and the engine's events back
//! into each API's shapes (`openai/`, `llama_stack.rs`, `ollama/`). The engine itself runs in its own
//! actor thread; handlers only hold channels to it. Everything a handler shares is
//! read-only or atomic (`state.rs`).
//!
//! Key choices: every error is a 4xx/5xx in OpenAI's JSON envelope (`error.rs`; the Ollama
//! routes `/` and `/api/*` answer Ollama's `{"error": "..."}` instead), bodies are
//! parsed by our own extractor so malformed input never reaches a handler (`body.rs`), and
//! the route table below is the single source for routing, `/v1/inspect/routes` and
//! `/openapi.json`.

pub mod body;
pub mod error;
pub mod job;
pub mod llama_stack;
pub mod ollama;
pub mod openai;
pub mod ops;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, post};

pub use error::ApiError;
pub use state::{AppState, Limits, RequestCounters};

/// One route: method, path, handler, and the request body's schema for `/openapi.json`.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub api: &'static str,
    pub body: Option<fn() -> serde_json::Value>,
    pub handler: fn() -> MethodRouter<Arc<AppState>>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

fn schema<T: schemars::JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default()
}

/// Every route the server answers.
pub fn routes() -> Vec<Route> {
    use llama_stack as ls;
    vec![
        Route {
            method: "GET",
            path: "/health",
            summary: "Liveness (no API key needed)",
            api: "ops",
            body: None,
            handler: || get(ops::health),
        },
        Route {
            method: "GET",
            path: "/metrics",
            summary: "Prometheus metrics",
            api: "ops",
            body: None,
            handler: || get(ops::metrics),
        },
        Route {
            method: "GET",
            path: "/openapi.json",
            summary: "This document",
            api: "ops",
            body: None,
            handler: || get(ops::openapi),
        },
        Route {
            method: "POST",
            path: "/v1/chat/completions",
            summary: "OpenAI chat completion",
            api: "openai",
            body: Some(schema::<openai::ChatRequest>),
            handler: || post(openai::chat),
        },
        Route {
            method: "POST",
            path: "/v1/completions",
            summary: "OpenAI text completion",
            api: "openai",
            body: Some(schema::<openai::CompletionRequest>),
            handler: || post(openai::completions),
        },
        Route {
            method: "GET",
            path: "/v1/models",
            summary: "Models (OpenAI and Llama Stack shapes in one body)",
            api: "models",
            body: None,
            handler: || get(openai::models),
        },
        Route {
            method: "GET",
            path: "/v1/models/{model_id}",
            summary: "One model",
            api: "models",
            body: None,
            handler: || get(openai::model),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/chat/completions",
            summary: "OpenAI chat completion (Llama Stack path)",
            api: "openai",
            body: Some(schema::<openai::ChatRequest>),
            handler: || post(openai::chat_ls),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/completions",
            summary: "OpenAI text completion (Llama Stack path)",
            api: "openai",
            body: Some(schema::<openai::CompletionRequest>),
            handler: || post(openai::completions_ls),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/models",
            summary: "Models (Llama Stack path)",
            api: "models",
            body: None,
            handler: || get(openai::models),
        },
        Route {
            method: "POST",
            path: "/v1/inference/chat-completion",
            summary: "Llama Stack chat completion",
            api: "inference",
            body: Some(schema::<ls::ChatCompletionRequest>),
            handler: || post(ls::chat_completion),
        },
        Route {
            method: "POST",
            path: "/v1/inference/completion",
            summary: "Llama Stack completion",
            api: "inference",
            body: Some(schema::<ls::CompletionRequest>),
            handler: || post(ls::completion),
        },
        Route {
            method: "POST",
            path: "/v1/inference/batch-chat-completion",
            summary: "Llama Stack batch chat completion",
            api: "inference",
            body: Some(schema::<ls::BatchChatRequest>),
            handler: || post(ls::batch_chat_completion),
        },
        Route {
            method: "POST",
            path: "/v1/inference/batch-completion",
            summary: "Llama Stack batch completion",
            api: "inference",
            body: Some(schema::<ls::BatchCompletionRequest>),
            handler: || post(ls::batch_completion),
        },
        Route {
            method: "GET",
            path: "/v1/health",
            summary: "Llama Stack health",
            api: "inspect",
            body: None,
            handler: || get(ops::ls_health),
        },
        Route {
            method: "GET",
            path: "/v1/version",
            summary: "Server version",
            api: "inspect",
            body: None,
            handler: || get(ops::version),
        },
        Route {
            method: "GET",
            path: "/v1/inspect/routes",
            summary: "Routes",
            api: "inspect",
            body: None,
            handler: || get(ops::inspect_routes),
        },
        Route {
            method: "GET",
            path: "/v1/providers",
            summary: "Providers",
            api: "inspect",
            body: None,
            handler: || get(ops::providers),
        },
        Route {
            method: "GET",
            path: "/v1/providers/{provider_id}",
            summary: "One provider",
            api: "inspect",
            body: None,
            handler: || get(ops::provider),
        },
        Route {
            method: "GET",
            path: "/",
            summary: "Ollama: \"Ollama is running\" (HEAD too)",
            api: "ollama",
            body: None,
            handler: || get(ollama::root),
        },
        Route {
            method: "GET",
            path: "/api/version",
            summary: "Ollama: server version",
            api: "ollama",
            body: None,
            handler: || get(ollama::version),
        },
        Route {
            method: "GET",
            path: "/api/tags",
            summary: "Ollama: served and stored models",
            api: "ollama",
            body: None,
            handler: || get(ollama::tags),
        },
        Route {
            method: "GET",
            path: "/api/ps",
            summary: "Ollama: loaded models",
            api: "ollama",
            body: None,
            handler: || get(ollama::ps),
        },
        Route {
            method: "POST",
            path: "/api/show",
            summary: "Ollama: model details",
            api: "ollama",
            body: Some(schema::<ollama::ShowRequest>),
            handler: || post(ollama::show),
        },
        Route {
            method: "POST",
            path: "/api/chat",
            summary: "Ollama: chat (NDJSON stream by default)",
            api: "ollama",
            body: Some(schema::<ollama::ChatRequest>),
            handler: || post(ollama::chat),
        },
        Route {
            method: "POST",
            path: "/api/generate",
            summary: "Ollama: completion (NDJSON stream by default)",
            api: "ollama",
            body: Some(schema::<ollama::GenerateRequest>),
            handler: || post(ollama::generate),
        },
        Route {
            method: "POST",
            path: "/api/pull",
            summary: "Ollama: pull a model into the store (NDJSON progress)",
            api: "ollama",
            body: Some(schema::<ollama::PullRequest>),
            handler: || post(ollama::pull),
        },
        Route {
            method: "DELETE",
            path: "/api/delete",
            summary: "Ollama: remove a model from the store",
            api: "ollama",
            body: Some(schema::<ollama::DeleteRequest>),
            handler: || delete(ollama::delete),
        },
        Route {
            method: "POST",
            path: "/api/embed",
            summary: "Ollama: embeddings (not supported: 501)",
            api: "ollama",
            body: None,
            handler: || post(ollama::embed),
        },
        Route {
            method: "POST",
            path: "/api/embeddings",
            summary: "Ollama: embeddings, older route (not supported: 501)",
            api: "ollama",
            body: None,
            handler: || post(ollama::embeddings),
        },
    ]
}

/// The application: routes, auth, counters, body cap, fallbacks.
pub fn router(app: Arc<AppState>) -> Router {
    let mut r: Router<Arc<AppState>> = Router::new();
    for route in routes() {
        r = r.route(route.path, (route.handler)());
    }
    r.fallback(ops::fallback)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            ops::guard,
        ))
        .layer(DefaultBodyLimit::max(app.limits.max_body))
        .with_state(app)
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
}

/// Serves until Ctrl-C / SIGTERM, then stops taking connections, lets running streams
/// finish, and stops the engine.
pub async fn serve(app: Arc<AppState>, cfg: ServeConfig) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.addr).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    let engine = app.engine.clone();
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .map_err(std::io::Error::other)?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down: finishing running requests");
}
