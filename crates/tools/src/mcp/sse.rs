//! Server-sent events: the parser both HTTP transports use for `text/event-stream`
//! bodies, and the legacy HTTP+SSE transport (protocol 2024-11-05): a long-lived GET on
//! the `/sse` URL whose first `endpoint` event names the URL to POST messages to; every
//! reply then arrives as a `message` event on the GET stream, read by a background thread
//! into a channel so each request can time out. ureq gives no handle to abort a blocked
//! read, so after the client drops, that thread (and its connection) lives until the
//! server sends the next event or closes the stream.

use std::io::{BufRead, BufReader};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Incoming, Transport, answer_server_request, classify, method_of};
use crate::ToolError;

/// Longest SSE line accepted.
const MAX_LINE: usize = 64 << 20;

/// One event: its `event:` name (default `message`) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) name: String,
    pub(crate) data: String,
}

/// Reads events from an SSE body.
pub(crate) struct SseReader<R> {
    reader: R,
}

impl<R: BufRead> SseReader<R> {
    pub(crate) fn new(reader: R) -> SseReader<R> {
        SseReader { reader }
    }

    /// The next event with data, or `None` at the end of the stream.
    pub(crate) fn next_event(&mut self) -> std::io::Result<Option<Event>> {
        let mut name = String::new();
        let mut data: Option<String> = None;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = self.reader.read_until(b'\n', &mut buf)?;
            if n > MAX_LINE {
                return Err(std::io::Error::other("SSE line too long"));
            }
            if n == 0 {
                return Ok(data.map(|data| Event {
                    name: if name.is_empty() {
                        "message".into()
                    } else {
                        name
                    },
                    data,
                }));
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if let Some(data) = data.take() {
                    return Ok(Some(Event {
                        name: if name.is_empty() {
                            "message".into()
                        } else {
                            name
                        },
                        data,
                    }));
                }
                name.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => name = value.to_string(),
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_string()),
                },
                _ => {}
            }
        }
    }
}

/// Whether `url` is a legacy HTTP+SSE endpoint (its path ends in `/sse`).
pub(crate) fn is_legacy_endpoint(url: &str) -> bool {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.trim_end_matches('/').ends_with("/sse")
}

/// Resolves the `endpoint` event's URI against the SSE URL.
fn resolve(base: &str, endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return endpoint.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    if endpoint.starts_with('/') {
        return format!("{scheme}://{authority}{endpoint}");
    }
    let path = base.split(['?', '#']).next().unwrap_or(base);
    match path.rfind('/') {
        Some(i) if i > scheme.len() + 2 => format!("{}/{endpoint}", &path[..i]),
        _ => format!("{scheme}://{authority}/{endpoint}"),
    }
}

enum Msg {
    Json(Value),
    End(String),
}

pub(crate) struct LegacySse {
    post_url: String,
    headers: Vec<(String, String)>,
    agent: ureq::Agent,
    events: Receiver<Msg>,
    timeout: Duration,
}

impl LegacySse {
    pub(crate) fn connect(
        url: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<LegacySse, ToolError> {
        // The stream stays open for the whole session: only connecting is bounded.
        let stream_agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .build()
            .into();
        let mut req = stream_agent.get(url).header("Accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.call().map_err(|e| {
            ToolError::Mcp(format!(
                "GET {url}: {}",
                crate::http::describe(&e, timeout, None)
            ))
        })?;
        let status = resp.status().as_u16();
        if status >= 400 {
            return Err(ToolError::Mcp(format!("GET {url}: HTTP {status}")));
        }
        let mut events = SseReader::new(BufReader::new(resp.into_body().into_reader()));
        let (tx, rx) = channel();
        thread::Builder::new()
            .name("mcp-sse".into())
            .spawn(move || {
                loop {
                    match events.next_event() {
                        Ok(Some(ev)) if ev.name == "endpoint" => {
                            if tx.send(Msg::End(format!("endpoint:{}", ev.data))).is_err() {
                                return;
                            }
                        }
                        Ok(Some(ev)) if ev.name == "message" => {
                            match serde_json::from_str(&ev.data) {
                                Ok(v) => {
                                    if tx.send(Msg::Json(v)).is_err() {
                                        return;
                                    }
                                }
                                Err(_) => tracing::warn!("mcp sse: skipping a non-JSON message"),
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            let _ = tx.send(Msg::End("the SSE stream ended".into()));
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Msg::End(format!("reading the SSE stream: {e}")));
                            return;
                        }
                    }
                }
            })?;
        let endpoint = match rx.recv_timeout(timeout) {
            Ok(Msg::End(s)) if s.starts_with("endpoint:") => {
                s.trim_start_matches("endpoint:").trim().to_string()
            }
            Ok(Msg::End(why)) => return Err(ToolError::Mcp(format!("GET {url}: {why}"))),
            Ok(Msg::Json(_)) => {
                return Err(ToolError::Mcp(format!(
                    "GET {url}: a message before the endpoint event"
                )));
            }
            Err(_) => {
                return Err(ToolError::Mcp(format!(
                    "GET {url}: no endpoint event within {timeout:?}"
                )));
            }
        };
        Ok(LegacySse {
            post_url: resolve(url, &endpoint),
            headers: headers.to_vec(),
            agent: crate::http::agent(timeout),
            events: rx,
            timeout,
        })
    }

    fn post(&self, msg: &Value) -> Result<(), ToolError> {
        let body = serde_json::to_vec(msg).map_err(|e| ToolError::Mcp(e.to_string()))?;
        let mut req = self
            .agent
            .post(&self.post_url)
            .header("Content-Type", "application/json");
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let mut resp = req.send(&body[..]).map_err(|e| {
            ToolError::Mcp(format!(
                "{}: POST {}: {}",
                method_of(msg),
                self.post_url,
                crate::http::describe(&e, self.timeout, None)
            ))
        })?;
        let status = resp.status().as_u16();
        if status >= 400 {
            let body = resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_vec()
                .unwrap_or_default();
            return Err(ToolError::Mcp(format!(
                "{}: HTTP {status}: {}",
                method_of(msg),
                crate::http::excerpt(&body)
            )));
        }
        Ok(())
    }
}

impl Transport for LegacySse {
    fn request(&mut self, msg: &Value, id: u64) -> Result<Value, ToolError> {
        self.post(msg)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Msg::Json(v)) => match classify(v, id) {
                    Incoming::Ours(reply) => return Ok(reply),
                    Incoming::ServerRequest(req) => self.post(&answer_server_request(&req))?,
                    Incoming::Other => {}
                },
                Ok(Msg::End(why)) => {
                    return Err(ToolError::Mcp(format!("{}: {why}", method_of(msg))));
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(ToolError::Mcp(format!(
                        "{}: no reply within {:?}",
                        method_of(msg),
                        self.timeout
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(ToolError::Mcp(format!(
                        "{}: the SSE stream is closed",
                        method_of(msg)
                    )));
                }
            }
        }
    }

    fn notify(&mut self, msg: &Value) -> Result<(), ToolError> {
        self.post(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events() {
        let body = ": comment\nevent: endpoint\ndata: /messages/?session_id=1\n\n\
                    data: {\"a\":\ndata: 1}\r\n\r\nid: 7\nevent: message\ndata: x\n";
        let mut r = SseReader::new(body.as_bytes());
        let e = r.next_event().unwrap().unwrap();
        assert_eq!(
            (e.name.as_str(), e.data.as_str()),
            ("endpoint", "/messages/?session_id=1")
        );
        let e = r.next_event().unwrap().unwrap();
        assert_eq!(
            (e.name.as_str(), e.data.as_str()),
            ("message", "{\"a\":\n1}")
        );
        let e = r.next_event().unwrap().unwrap();
        assert_eq!(e.data, "x");
        assert!(r.next_event().unwrap().is_none());
    }

    #[test]
    fn resolves_endpoints() {
        assert!(is_legacy_endpoint("http://h:1/sse"));
        assert!(is_legacy_endpoint("http://h:1/a/sse/?x=1"));
        assert!(!is_legacy_endpoint("http://h:1/mcp"));
        assert_eq!(
            resolve("http://h:1/sse", "/messages/?s=1"),
            "http://h:1/messages/?s=1"
        );
        assert_eq!(
            resolve("http://h:1/a/sse", "messages?s=1"),
            "http://h:1/a/messages?s=1"
        );
        assert_eq!(resolve("http://h:1/sse", "https://x/y"), "https://x/y");
    }
}
