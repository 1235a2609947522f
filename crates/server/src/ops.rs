//! Operational routes (health, metrics, version, routes, providers, OpenAPI) and the
//! middleware every request passes: API key check and request counting.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// API key (all routes but `/health`), then counts the answer by route and status.
pub async fn guard(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let label: &'static str = route
        .as_deref()
        .and_then(|r| app.requests.routes.iter().copied().find(|&x| x == r))
        .unwrap_or("other");
    let origin = req.headers().get(header::ORIGIN).cloned();
    let cors = app.cors_origin.as_deref().and_then(|allowed| {
        let o = origin.as_ref()?.to_str().ok()?;
        (allowed == "*" || allowed == o).then(|| o.to_string())
    });
    let mut resp = if cors.is_some() && req.method() == Method::OPTIONS {
        // A preflight: answered before the key check (browsers send no credentials here).
        StatusCode::NO_CONTENT.into_response()
    } else if label != "/health" && !authorized(&app, req.headers()) {
        if is_ollama_path(req.uri().path()) {
            crate::ollama::OllamaError(ApiError::unauthorized()).into_response()
        } else {
            ApiError::unauthorized().into_response()
        }
    } else {
        next.run(req).await
    };
    if let Some(o) = cors
        && let Ok(v) = HeaderValue::from_str(&o)
    {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
        );
        h.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    app.requests.record(label, resp.status().as_u16());
    resp
}

fn authorized(app: &AppState, headers: &HeaderMap) -> bool {
    let Some(key) = &app.api_key else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare in time independent of where the first difference is.
    given.len() == key.len()
        && given
            .bytes()
            .zip(key.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Ollama's paths (`/` and `/api/...`) answer errors in Ollama's shape.
fn is_ollama_path(path: &str) -> bool {
    path == "/" || path.starts_with("/api/")
}

pub async fn fallback(uri: Uri) -> Response {
    let e = ApiError::not_found_route(uri.path());
    if is_ollama_path(uri.path()) {
        crate::ollama::OllamaError(e).into_response()
    } else {
        e.into_response()
    }
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

pub async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

pub async fn ls_health() -> Response {
    axum::Json(json!({"status": "OK"})).into_response()
}

pub async fn version() -> Response {
    axum::Json(json!({"version": env!("CARGO_PKG_VERSION")})).into_response()
}

pub async fn inspect_routes() -> Response {
    let data: Vec<Value> = crate::routes()
        .iter()
        .map(|r| json!({"route": r.path, "method": r.method, "provider_types": ["inline::ferrollama"]}))
        .collect();
    axum::Json(json!({"data": data})).into_response()
}

fn provider_list() -> Vec<Value> {
    let mut v: Vec<Value> = ["inference", "models"]
        .iter()
        .map(|api| {
            json!({"api": api, "provider_id": "ferrollama", "provider_type": "inline::ferrollama",
                   "config": {}, "health": {"status": "OK"}})
        })
        .collect();
    // Datasets and scoring (datasets/), under llama-stack's provider ids.
    for (api, p) in [
        ("datasetio", "localfs"),
        ("scoring", "basic"),
        ("scoring", "llm-as-judge"),
    ] {
        v.push(
            json!({"api": api, "provider_id": p, "provider_type": format!("inline::{p}"),
                      "config": {}, "health": {"status": "OK"}}),
        );
    }
    // The shield kinds, each a safety provider (the `provider_id` of its shields).
    for p in ["llama-guard", "prompt-guard", "regex"] {
        v.push(
            json!({"api": "safety", "provider_id": p, "provider_type": format!("inline::{p}"),
                      "config": {}, "health": {"status": "OK"}}),
        );
    }
    v
}

pub async fn providers() -> Response {
    axum::Json(json!({"data": provider_list()})).into_response()
}

pub async fn provider(
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::invalid("the provider id in the path is not valid UTF-8"))?;
    provider_list()
        .into_iter()
        .find(|p| p["provider_id"] == id.as_str())
        .map(|p| axum::Json(p).into_response())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("no provider '{id}'"),
            )
        })
}

/// Prometheus text format.
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let s = app.engine.stats();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ferrollama_requests_total HTTP requests by route and status."
    );
    let _ = writeln!(out, "# TYPE ferrollama_requests_total counter");
    for (route, status, n) in app.requests.snapshot() {
        let _ = writeln!(
            out,
            "ferrollama_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    let gauges = [
        (
            "ferrollama_prompt_tokens_total",
            "counter",
            "Prompt tokens admitted.",
            s.prompt_tokens.load(Relaxed),
        ),
        (
            "ferrollama_prompt_tokens_cached_total",
            "counter",
            "Prompt tokens served from the prefix cache.",
            s.cached_prompt_tokens.load(Relaxed),
        ),
        (
            "ferrollama_generated_tokens_total",
            "counter",
            "Tokens generated.",
            s.generated_tokens.load(Relaxed),
        ),
        (
            "ferrollama_preemptions_total",
            "counter",
            "Sequences preempted for KV memory.",
            s.preemptions.load(Relaxed),
        ),
        (
            "ferrollama_engine_steps_total",
            "counter",
            "Batched forward passes.",
            s.steps.load(Relaxed),
        ),
        (
            "ferrollama_queue_depth",
            "gauge",
            "Requests waiting for admission.",
            s.queue_depth.load(Relaxed),
        ),
        (
            "ferrollama_running_sequences",
            "gauge",
            "Sequences being generated.",
            s.running.load(Relaxed),
        ),
        (
            "ferrollama_kv_blocks_used",
            "gauge",
            "KV blocks held by sequences.",
            s.kv_blocks_used.load(Relaxed),
        ),
        (
            "ferrollama_kv_blocks_cached",
            "gauge",
            "KV blocks kept only for the prefix cache.",
            s.kv_blocks_cached.load(Relaxed),
        ),
        (
            "ferrollama_kv_blocks_total",
            "gauge",
            "KV blocks in all.",
            s.kv_blocks_total.load(Relaxed),
        ),
    ];
    for (name, kind, help, v) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    for (name, help, h) in [
        (
            "ferrollama_time_to_first_token_seconds",
            "Time from submission to the first token.",
            &s.ttft,
        ),
        (
            "ferrollama_inter_token_latency_seconds",
            "Time between consecutive tokens of a sequence.",
            &s.itl,
        ),
    ] {
        let (cum, sum, count) = h.snapshot();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in h.bounds.iter().zip(&cum) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// OpenAPI 3.1, generated from the route table and the request types' schemas.
pub async fn openapi() -> Response {
    axum::Json(openapi_document()).into_response()
}

pub fn openapi_document() -> Value {
    let mut paths = Map::new();
    for r in crate::routes() {
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": r.summary,
            "tags": [r.api],
            "parameters": params,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "Invalid request", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "401": {"description": "Missing or invalid API key"},
                "404": {"description": "Unknown model or route"},
                "429": {"description": "Queue full; see Retry-After"},
            },
        });
        if let Some(body) = r.body {
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": body()}}});
        }
        if r.path != "/health" {
            op["security"] = json!([{"bearer": []}]);
        }
        entry[r.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "ferrollama", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "message": {"type": "string"}, "type": {"type": "string"},
                "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}},
        },
    })
}
