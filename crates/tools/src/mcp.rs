//! A blocking MCP (Model Context Protocol) client: JSON-RPC 2.0 over the stdio transport
//! (a spawned server, newline-delimited JSON), the streamable HTTP transport (POST, a JSON
//! or SSE reply, `Mcp-Session-Id`) and the legacy HTTP+SSE transport (an endpoint URL
//! ending in `/sse`, as llama-stack-client users pass it as `mcp_endpoint`).
//!
//! [`McpClient::connect`] runs the handshake (`initialize`, offering
//! [`PROTOCOL_VERSION`] and accepting any of [`SUPPORTED_VERSIONS`] back, then
//! `notifications/initialized`); [`McpClient::list_tools`] follows `nextCursor` pages and
//! [`McpClient::call_tool`] returns the tool's content. Every request has a timeout. A
//! JSON-RPC error reply is a [`ToolError::Mcp`] with the server's message; a tool result
//! with `isError: true` is a result ([`McpCallResult::is_error`]), which the model reads.
//!
//! The transports live in `mcp/`; this file owns the endpoint syntax, the protocol and the
//! result types.

mod http;
mod sse;
mod stdio;

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use crate::ToolError;

/// The protocol version this client offers.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// The versions this client accepts from a server's `initialize` reply.
pub const SUPPORTED_VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];
/// Most `tools/list` pages followed (a server that never stops paging is an error).
const MAX_PAGES: usize = 1000;

/// Where an MCP server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpEndpoint {
    /// A command to spawn; messages go over its stdin/stdout.
    Stdio {
        command: String,
        args: Vec<String>,
        /// Extra environment variables for the server (on top of ours).
        env: Vec<(String, String)>,
    },
    /// A streamable HTTP endpoint, or a legacy HTTP+SSE one when the path ends in `/sse`.
    Http {
        url: String,
        /// Extra request headers (e.g. `Authorization`).
        headers: Vec<(String, String)>,
    },
}

impl McpEndpoint {
    /// `http(s)://...` is [`McpEndpoint::Http`]; `stdio:CMD ARGS...` or a bare command line
    /// is [`McpEndpoint::Stdio`]. A command line is split like a shell would split it
    /// (whitespace, single and double quotes, backslash escapes) and leading `NAME=value`
    /// words become the server's environment.
    pub fn parse(s: &str) -> Result<McpEndpoint, ToolError> {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Ok(McpEndpoint::Http {
                url: s.to_string(),
                headers: Vec::new(),
            });
        }
        let line = s.strip_prefix("stdio:").unwrap_or(s);
        let mut words = split_command_line(line)?.into_iter().peekable();
        let mut env = Vec::new();
        while let Some(w) = words.peek() {
            match w.split_once('=') {
                Some((k, v)) if is_env_name(k) => {
                    env.push((k.to_string(), v.to_string()));
                    words.next();
                }
                _ => break,
            }
        }
        let command = words.next().ok_or_else(|| {
            ToolError::InvalidArguments(format!("mcp endpoint {s:?}: no command"))
        })?;
        Ok(McpEndpoint::Stdio {
            command,
            args: words.collect(),
            env,
        })
    }
}

fn is_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits a command line into words (POSIX-shell-like quoting, no expansions).
fn split_command_line(line: &str) -> Result<Vec<String>, ToolError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                        None => return Err(unterminated(line)),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => cur.push(ch),
                            Some(ch) => {
                                cur.push('\\');
                                cur.push(ch);
                            }
                            None => return Err(unterminated(line)),
                        },
                        Some(ch) => cur.push(ch),
                        None => return Err(unterminated(line)),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(ch) = chars.next() {
                    cur.push(ch);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn unterminated(line: &str) -> ToolError {
    ToolError::InvalidArguments(format!("mcp endpoint {line:?}: unterminated quote"))
}

/// A tool an MCP server offers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct McpTool {
    pub name: String,
    pub description: String,
    /// The JSON Schema of the arguments (`{"type": "object"}` when the server gave none).
    pub input_schema: Value,
}

/// What a `tools/call` returned.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct McpCallResult {
    /// The content blocks (`{"type": "text", "text": ...}`, images, resources, ...).
    pub content: Vec<Value>,
    /// The tool reported a failure (`isError: true`); the content says what went wrong.
    pub is_error: bool,
    /// `structuredContent`, when the server sent it.
    pub structured: Option<Value>,
}

impl McpCallResult {
    /// What the model sees: the text blocks (and embedded text resources) joined by
    /// newlines, other blocks as a short placeholder; with no content at all, the
    /// structured content as JSON.
    pub fn text(&self) -> String {
        if self.content.is_empty() {
            return self
                .structured
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default();
        }
        let parts: Vec<String> = self.content.iter().map(block_text).collect();
        parts.join("\n")
    }
}

fn block_text(block: &Value) -> String {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    match block.get("type").and_then(Value::as_str) {
        Some("text") => s(block, "text").unwrap_or_default(),
        Some("resource") => {
            let res = block.get("resource").unwrap_or(&Value::Null);
            s(res, "text")
                .unwrap_or_else(|| format!("[resource: {}]", s(res, "uri").unwrap_or_default()))
        }
        Some("resource_link") => {
            format!("[resource link: {}]", s(block, "uri").unwrap_or_default())
        }
        Some(kind @ ("image" | "audio")) => format!(
            "[{kind}: {}]",
            s(block, "mimeType").unwrap_or_else(|| "unknown type".to_string())
        ),
        _ => block.to_string(),
    }
}

/// One way of exchanging JSON-RPC messages with a server.
pub(crate) trait Transport: Send {
    /// Sends request `msg` (whose id is `id`) and returns the server's response to it
    /// (the whole JSON-RPC message, `result` or `error`), within the transport's timeout.
    fn request(&mut self, msg: &Value, id: u64) -> Result<Value, ToolError>;
    /// Sends a notification (no reply expected).
    fn notify(&mut self, msg: &Value) -> Result<(), ToolError>;
    /// The protocol version the handshake settled on.
    fn negotiated(&mut self, _version: &str) {}
}

/// How one incoming message relates to the request we wait for.
pub(crate) enum Incoming {
    /// The response to our request.
    Ours(Value),
    /// A request from the server (`ping`, `roots/list`, ...), which wants an answer.
    ServerRequest(Value),
    /// A notification or someone else's response: skipped.
    Other,
}

/// Classifies one message (a batch is searched for our response).
pub(crate) fn classify(msg: Value, id: u64) -> Incoming {
    if let Value::Array(items) = msg {
        return items
            .into_iter()
            .map(|m| classify(m, id))
            .find(|i| !matches!(i, Incoming::Other))
            .unwrap_or(Incoming::Other);
    }
    let has_method = msg.get("method").is_some();
    let msg_id = msg.get("id");
    match (has_method, msg_id) {
        (true, Some(_)) => Incoming::ServerRequest(msg),
        (false, Some(v)) if id_matches(v, id) => Incoming::Ours(msg),
        _ => Incoming::Other,
    }
}

fn id_matches(v: &Value, id: u64) -> bool {
    v.as_u64() == Some(id) || v.as_str() == Some(id.to_string().as_str())
}

/// Our answer to a server request: `{}` to `ping`, "method not found" to the rest (this
/// client declares no capabilities: no roots, sampling or elicitation).
pub(crate) fn answer_server_request(req: &Value) -> Value {
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    if req.get("method").and_then(Value::as_str) == Some("ping") {
        json!({"jsonrpc": "2.0", "id": id, "result": {}})
    } else {
        json!({"jsonrpc": "2.0", "id": id,
               "error": {"code": -32601, "message": "method not supported by this client"}})
    }
}

/// The method named in a request, for error messages.
pub(crate) fn method_of(msg: &Value) -> &str {
    msg.get("method")
        .and_then(Value::as_str)
        .unwrap_or("request")
}

struct Session {
    transport: Box<dyn Transport>,
    next_id: u64,
}

impl Session {
    /// Sends `method` and returns its `result`, or the JSON-RPC error as [`ToolError::Mcp`].
    fn call(&mut self, method: &str, params: Value) -> Result<Value, ToolError> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let reply = self.transport.request(&msg, id)?;
        if let Some(err) = reply.get("error") {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            let code = err
                .get("code")
                .map(|c| format!(" (code {c})"))
                .unwrap_or_default();
            return Err(ToolError::Mcp(format!("{method}: {message}{code}")));
        }
        reply
            .get("result")
            .cloned()
            .ok_or_else(|| ToolError::Mcp(format!("{method}: reply without result or error")))
    }
}

/// A connected MCP server. Requests are serialized through an internal lock, so one
/// client can be shared between threads. Dropping it ends the session (stdio: the server
/// is killed; HTTP: the session is DELETEd).
pub struct McpClient {
    session: Mutex<Session>,
    server_info: Value,
    protocol_version: String,
    instructions: Option<String>,
}

impl std::fmt::Debug for McpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpClient")
            .field("server_info", &self.server_info)
            .field("protocol_version", &self.protocol_version)
            .finish_non_exhaustive()
    }
}

impl McpClient {
    /// Connects and runs the handshake; `timeout` bounds every request.
    pub fn connect(ep: &McpEndpoint, timeout: Duration) -> Result<McpClient, ToolError> {
        let transport: Box<dyn Transport> = match ep {
            McpEndpoint::Stdio { command, args, env } => {
                Box::new(stdio::Stdio::spawn(command, args, env, timeout)?)
            }
            McpEndpoint::Http { url, headers } if sse::is_legacy_endpoint(url) => {
                Box::new(sse::LegacySse::connect(url, headers, timeout)?)
            }
            McpEndpoint::Http { url, headers } => {
                Box::new(http::StreamableHttp::new(url, headers, timeout))
            }
        };
        let mut session = Session {
            transport,
            next_id: 1,
        };
        let init = session.call(
            "initialize",
            json!({
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "ferrollama", "version": env!("CARGO_PKG_VERSION")},
            }),
        )?;
        let version = init
            .get("protocolVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| ToolError::Mcp("initialize: reply without protocolVersion".into()))?
            .to_string();
        if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
            return Err(ToolError::Mcp(format!(
                "the server speaks protocol version {version}; this client speaks {}",
                SUPPORTED_VERSIONS.join(", ")
            )));
        }
        session.transport.negotiated(&version);
        session
            .transport
            .notify(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(McpClient {
            session: Mutex::new(session),
            server_info: init.get("serverInfo").cloned().unwrap_or(Value::Null),
            protocol_version: version,
            instructions: init
                .get("instructions")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// The server's `serverInfo` (`{"name": ..., "version": ...}`; `null` if it sent none).
    pub fn server_info(&self) -> &Value {
        &self.server_info
    }

    /// The protocol version the handshake settled on.
    pub fn protocol_version(&self) -> &str {
        &self.protocol_version
    }

    /// The server's `instructions`, if it sent any.
    pub fn instructions(&self) -> Option<&str> {
        self.instructions.as_deref()
    }

    fn call(&self, method: &str, params: Value) -> Result<Value, ToolError> {
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        session.call(method, params)
    }

    /// Every tool the server offers (all `tools/list` pages).
    pub fn list_tools(&self) -> Result<Vec<McpTool>, ToolError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let page = self.call("tools/list", params)?;
            let items = page
                .get("tools")
                .and_then(Value::as_array)
                .ok_or_else(|| ToolError::Mcp("tools/list: reply without a tools array".into()))?;
            for t in items {
                let name = t
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ToolError::Mcp("tools/list: a tool without a name".into()))?;
                tools.push(McpTool {
                    name: name.to_string(),
                    description: t
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    input_schema: t
                        .get("inputSchema")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                });
            }
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() && cursor.as_deref() != Some(next) => {
                    cursor = Some(next.to_string());
                }
                _ => return Ok(tools),
            }
        }
        Err(ToolError::Mcp(format!(
            "tools/list: more than {MAX_PAGES} pages"
        )))
    }

    /// Calls tool `name` with `arguments` (a JSON object).
    pub fn call_tool(&self, name: &str, arguments: &Value) -> Result<McpCallResult, ToolError> {
        if !arguments.is_object() {
            return Err(ToolError::InvalidArguments(format!(
                "mcp tool {name}: arguments must be a JSON object"
            )));
        }
        let result = self.call("tools/call", json!({"name": name, "arguments": arguments}))?;
        let content = match result.get("content") {
            Some(Value::Array(items)) => items.clone(),
            None | Some(Value::Null) => Vec::new(),
            Some(_) => {
                return Err(ToolError::Mcp("tools/call: content is not an array".into()));
            }
        };
        Ok(McpCallResult {
            content,
            is_error: result
                .get("isError")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            structured: result
                .get("structuredContent")
                .filter(|v| !v.is_null())
                .cloned(),
        })
    }
}
