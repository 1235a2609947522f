//! Request logs: one line per request at `info` (target `ferrollama::request`), written
//! when the request is really over, which for a stream is when its last event was sent or
//! its client went away.
//!
//! The middleware opens an [`Entry`] and runs the handler inside a task-local scope, so the
//! code that resolves the model and submits sequences (`job.rs`) can fill it in without
//! every handler passing it along. Every receiver of engine events ([`crate::job::Events`])
//! holds the entry, and the line is written when the last holder drops it. Prompt contents
//! are never logged; the query string is not logged either (it may carry secrets).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The header that carries the request id, in and out.
pub const REQUEST_ID: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: Arc<Entry>;
}

/// What is known about one request so far.
#[derive(Debug)]
pub struct Entry {
    id: String,
    method: String,
    route: String,
    start: Instant,
    model: Mutex<Option<String>>,
    status: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    /// Microseconds from the request's arrival to its first generated token, plus one
    /// (0: no token yet).
    first_token_us: AtomicU64,
}

impl Entry {
    fn new(id: String, method: String, route: String) -> Entry {
        Entry {
            id,
            method,
            route,
            start: Instant::now(),
            model: Mutex::new(None),
            status: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            cached_tokens: AtomicU64::new(0),
            first_token_us: AtomicU64::new(0),
        }
    }

    /// A generated token arrived (the first one sets the time to first token).
    pub fn token(&self) {
        if self.first_token_us.load(Relaxed) == 0 {
            let us = self.start.elapsed().as_micros() as u64 + 1;
            let _ = self
                .first_token_us
                .compare_exchange(0, us, Relaxed, Relaxed);
        }
    }

    /// A sequence ended with these counts (summed over the request's sequences).
    pub fn done(&self, prompt: usize, cached: usize, completion: usize) {
        self.prompt_tokens.fetch_add(prompt as u64, Relaxed);
        self.cached_tokens.fetch_add(cached as u64, Relaxed);
        self.completion_tokens.fetch_add(completion as u64, Relaxed);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let model = self
            .model
            .get_mut()
            .map(|m| m.take())
            .unwrap_or_else(|p| p.into_inner().take())
            .unwrap_or_else(|| "-".into());
        let ttft = match self.first_token_us.load(Relaxed) {
            0 => None,
            us => Some((us - 1) as f64 / 1000.0),
        };
        let total_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: "ferrollama::request",
            request_id = %self.id,
            method = %self.method,
            route = %self.route,
            model = %model,
            status = self.status.load(Relaxed),
            prompt_tokens = self.prompt_tokens.load(Relaxed),
            cached_tokens = self.cached_tokens.load(Relaxed),
            completion_tokens = self.completion_tokens.load(Relaxed),
            ttft_ms = ttft.map(|t| (t * 10.0).round() / 10.0),
            total_ms = (total_ms * 10.0).round() / 10.0,
            "request"
        );
    }
}

/// The entry of the request being handled on this task, if any.
pub fn current() -> Option<Arc<Entry>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Records the model the current request resolved to.
pub fn set_model(id: &str) {
    let _ = CURRENT.try_with(|e| {
        if let Ok(mut m) = e.model.lock() {
            *m = Some(id.to_string());
        }
    });
}

/// A client's own id if it is short and plain (it is echoed into logs and headers),
/// else a fresh one.
fn request_id(req: &Request) -> String {
    let given = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        });
    match given {
        Some(s) => s.to_string(),
        None => fresh_id(),
    }
}

/// `req-` and 16 hex digits: a per-process random key hashed with a counter.
fn fresh_id() -> String {
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut h = KEY.get_or_init(Default::default).build_hasher();
    h.write_u64(NEXT.fetch_add(1, Relaxed));
    format!("req-{:016x}", h.finish())
}

/// The middleware: opens the entry, runs the request in its scope, sets the id header.
pub async fn log_requests(req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let route = match req.extensions().get::<MatchedPath>() {
        Some(m) => m.as_str().to_string(),
        // Unknown routes: the path itself, bounded and without control characters.
        None => req
            .uri()
            .path()
            .chars()
            .take(128)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
    };
    let entry = Arc::new(Entry::new(id.clone(), req.method().to_string(), route));
    let mut resp = CURRENT.scope(entry.clone(), next.run(req)).await;
    entry
        .status
        .store(u64::from(resp.status().as_u16()), Relaxed);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}
