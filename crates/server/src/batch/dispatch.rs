//! One batch line through the server's own router, in process: the body is read by the
//! same handler that `serve` runs for it.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request as HttpRequest, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::line::Request;
use crate::reqlog::REQUEST_ID;

/// How often a line refused with 429 (the engine's queue is full) is tried again.
const BUSY_RETRIES: u32 = 600;

/// Answers `req`: its status, the server's request id and the response body (JSON; a body
/// that is not JSON comes back as a string under `error.message`).
pub async fn dispatch(
    router: &Router,
    api_key: Option<&str>,
    req: &Request,
) -> (u16, String, Value) {
    let body = serde_json::to_vec(&req.body).unwrap_or_default();
    let mut tries = 0;
    loop {
        let mut b = HttpRequest::post(&req.url).header(header::CONTENT_TYPE, "application/json");
        if let Some(k) = api_key {
            b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let http = match b.body(Body::from(body.clone())) {
            Ok(h) => h,
            Err(e) => return (500, String::new(), error_body(&e.to_string())),
        };
        let resp = match router.clone().oneshot(http).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let status = resp.status().as_u16();
        if status == 429 && tries < BUSY_RETRIES {
            // Full queue: wait as the server asks, then try again (a batch has time).
            tries += 1;
            let wait = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, 10);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        let request_id = resp
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = match axum::body::to_bytes(resp.into_body(), usize::MAX).await {
            Ok(b) => b,
            Err(e) => return (500, request_id, error_body(&e.to_string())),
        };
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| error_body(&String::from_utf8_lossy(&bytes)));
        return (status, request_id, body);
    }
}

fn error_body(message: &str) -> Value {
    json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})
}
