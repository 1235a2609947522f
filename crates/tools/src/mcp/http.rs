//! The MCP streamable HTTP transport (protocol 2025-03-26 and later): every message is a
//! POST of JSON to the one endpoint, with `Accept: application/json, text/event-stream`.
//! A request's reply is either a JSON body or an SSE stream whose `data:` events carry
//! messages until the response with our id. The `Mcp-Session-Id` the server hands out at
//! `initialize` goes on every later request, `MCP-Protocol-Version` once negotiated, and
//! the session is DELETEd when the transport drops.

use std::io::BufReader;
use std::time::Duration;

use serde_json::Value;

use super::sse::SseReader;
use super::{Incoming, Transport, classify, method_of};
use crate::ToolError;
use crate::http::{agent, describe, excerpt};

/// Largest JSON reply read.
const MAX_BODY: u64 = 64 << 20;

pub(crate) struct StreamableHttp {
    url: String,
    headers: Vec<(String, String)>,
    agent: ureq::Agent,
    timeout: Duration,
    session: Option<String>,
    version: Option<String>,
}

impl StreamableHttp {
    pub(crate) fn new(
        url: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> StreamableHttp {
        StreamableHttp {
            url: url.to_string(),
            headers: headers.to_vec(),
            agent: agent(timeout),
            timeout,
            session: None,
            version: None,
        }
    }

    fn post(&mut self, msg: &Value) -> Result<ureq::http::Response<ureq::Body>, ToolError> {
        let body = serde_json::to_vec(msg).map_err(|e| ToolError::Mcp(e.to_string()))?;
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream");
        if let Some(s) = &self.session {
            req = req.header("Mcp-Session-Id", s.as_str());
        }
        if let Some(v) = &self.version {
            req = req.header("MCP-Protocol-Version", v.as_str());
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let mut resp = req.send(&body[..]).map_err(|e| {
            ToolError::Mcp(format!(
                "{}: POST {}: {}",
                method_of(msg),
                self.url,
                describe(&e, self.timeout, None)
            ))
        })?;
        if let Some(s) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            self.session = Some(s.to_string());
        }
        let status = resp.status().as_u16();
        if status >= 400 {
            let body = resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_vec()
                .unwrap_or_default();
            let hint = if status == 404 && self.session.is_some() {
                " (the server no longer knows this session)"
            } else {
                ""
            };
            return Err(ToolError::Mcp(format!(
                "{}: HTTP {status}{hint}: {}",
                method_of(msg),
                excerpt(&body)
            )));
        }
        Ok(resp)
    }
}

impl Transport for StreamableHttp {
    fn request(&mut self, msg: &Value, id: u64) -> Result<Value, ToolError> {
        let method = method_of(msg).to_string();
        let mut resp = self.post(msg)?;
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let read_err =
            |e: &dyn std::fmt::Display| ToolError::Mcp(format!("{method}: reading the reply: {e}"));
        if content_type.starts_with("text/event-stream") {
            let mut events = SseReader::new(BufReader::new(resp.into_body().into_reader()));
            loop {
                let ev = match events.next_event() {
                    Ok(Some(ev)) => ev,
                    Ok(None) => {
                        return Err(ToolError::Mcp(format!(
                            "{method}: the event stream ended without a reply"
                        )));
                    }
                    Err(e) => {
                        // ureq reports its timeout as an I/O error while a body is read.
                        return Err(read_err(&e));
                    }
                };
                if ev.name != "message" || ev.data.trim().is_empty() {
                    continue;
                }
                let Ok(value) = serde_json::from_str::<Value>(&ev.data) else {
                    tracing::warn!("mcp http: skipping a non-JSON event");
                    continue;
                };
                match classify(value, id) {
                    Incoming::Ours(reply) => return Ok(reply),
                    Incoming::ServerRequest(req) => {
                        tracing::debug!(
                            "mcp http: ignoring server request {} on a reply stream",
                            method_of(&req)
                        );
                    }
                    Incoming::Other => {}
                }
            }
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| read_err(&describe(&e, self.timeout, None)))?;
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            ToolError::Mcp(format!(
                "{method}: the reply is not JSON ({e}): {}",
                excerpt(&body)
            ))
        })?;
        match classify(value, id) {
            Incoming::Ours(reply) => Ok(reply),
            _ => Err(ToolError::Mcp(format!(
                "{method}: the reply does not answer request {id}"
            ))),
        }
    }

    fn notify(&mut self, msg: &Value) -> Result<(), ToolError> {
        // 202 Accepted (any 2xx is taken); the body, if any, is not read.
        self.post(msg).map(drop)
    }

    fn negotiated(&mut self, version: &str) {
        self.version = Some(version.to_string());
    }
}

impl Drop for StreamableHttp {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let mut req = self
            .agent
            .delete(&self.url)
            .header("Mcp-Session-Id", session.as_str());
        if let Some(v) = &self.version {
            req = req.header("MCP-Protocol-Version", v.as_str());
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        // A server may refuse (405) or be gone already: nothing to do either way.
        if let Err(e) = req.call() {
            tracing::debug!("mcp http: DELETE of the session failed: {e}");
        }
    }
}
