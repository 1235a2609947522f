//! The MCP client against fakes: a scripted stdio server (tests/mcp_fake_server.py,
//! Python standard library only) and an in-test streamable HTTP server (JSON and
//! SSE-framed replies, `Mcp-Session-Id`, `MCP-Protocol-Version`, DELETE on drop), plus the
//! error paths (server exits, garbage lines, JSON-RPC errors, timeouts). The real-server
//! tests (the `mcp` Python package) are in tests/mcp_real.rs.

mod web_http;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferrollama_tools::ToolError;
use ferrollama_tools::mcp::{McpCallResult, McpClient, McpEndpoint, McpTool};
use serde_json::{Value, json};
use web_http::{Reply, Request, serve};

const T: Duration = Duration::from_secs(10);

fn fake(mode: &str) -> McpEndpoint {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_fake_server.py");
    McpEndpoint::Stdio {
        command: "python3".into(),
        args: vec![script.display().to_string(), mode.into()],
        env: vec![("PYTHONUNBUFFERED".into(), "1".into())],
    }
}

fn mcp_err(r: Result<impl std::fmt::Debug, ToolError>) -> String {
    match r {
        Err(ToolError::Mcp(m)) => m,
        other => panic!("expected ToolError::Mcp, got {other:?}"),
    }
}

#[test]
fn endpoint_parsing() {
    assert_eq!(
        McpEndpoint::parse(" http://127.0.0.1:8000/mcp ").unwrap(),
        McpEndpoint::Http {
            url: "http://127.0.0.1:8000/mcp".into(),
            headers: vec![]
        }
    );
    assert_eq!(
        McpEndpoint::parse(r#"stdio:FOO=1 npx -y "@scope/server x" 'a b' c\ d"#).unwrap(),
        McpEndpoint::Stdio {
            command: "npx".into(),
            args: vec![
                "-y".into(),
                "@scope/server x".into(),
                "a b".into(),
                "c d".into()
            ],
            env: vec![("FOO".into(), "1".into())],
        }
    );
    assert_eq!(
        McpEndpoint::parse("uvx mcp-server-time").unwrap(),
        McpEndpoint::Stdio {
            command: "uvx".into(),
            args: vec!["mcp-server-time".into()],
            env: vec![]
        }
    );
    for bad in ["", "stdio:", "A=1", "python 'unterminated"] {
        assert!(
            matches!(McpEndpoint::parse(bad), Err(ToolError::InvalidArguments(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn call_result_text() {
    let r = McpCallResult {
        content: vec![
            json!({"type": "text", "text": "one"}),
            json!({"type": "image", "data": "AAAA", "mimeType": "image/png"}),
            json!({"type": "resource", "resource": {"uri": "file:///a", "text": "embedded"}}),
            json!({"type": "text", "text": "two"}),
        ],
        is_error: false,
        structured: None,
    };
    assert_eq!(r.text(), "one\n[image: image/png]\nembedded\ntwo");
    let r = McpCallResult {
        content: vec![],
        is_error: false,
        structured: Some(json!({"result": 3})),
    };
    assert_eq!(r.text(), r#"{"result":3}"#);
}

#[test]
fn stdio_full_session() {
    let client = McpClient::connect(&fake("normal"), T).unwrap();
    assert_eq!(
        client.server_info(),
        &json!({"name": "fake-stdio", "version": "0.1"})
    );
    assert_eq!(client.protocol_version(), "2025-06-18");
    assert_eq!(client.instructions(), Some("be nice"));

    // Two pages, with a notification, a non-JSON line, a ping and a stray response
    // before each reply.
    let tools = client.list_tools().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["add", "fail", "boom", "sleep", "exit", "log"]);
    assert_eq!(
        tools[0],
        McpTool {
            name: "add".into(),
            description: "Adds two integers.".into(),
            input_schema: json!({"type": "object", "properties": {"a": {"type": "integer"},
                "b": {"type": "integer"}}, "required": ["a", "b"]}),
        }
    );
    assert_eq!(tools[1].input_schema, json!({"type": "object"}));

    let r = client.call_tool("add", &json!({"a": 2, "b": 40})).unwrap();
    assert_eq!(r.text(), "42");
    assert!(!r.is_error);
    assert_eq!(r.structured, Some(json!({"result": 42})));

    let r = client.call_tool("fail", &json!({})).unwrap();
    assert!(r.is_error);
    assert_eq!(r.text(), "it failed: on purpose");

    let m = mcp_err(client.call_tool("boom", &json!({})));
    assert_eq!(m, "tools/call: boom happened (code -32000)");
    assert!(matches!(
        client.call_tool("add", &json!([1, 2])),
        Err(ToolError::InvalidArguments(_))
    ));

    // What the server saw: the handshake, our answers to its pings, and nothing sent in
    // reply to its notifications.
    let log: Vec<Value> =
        serde_json::from_str(&client.call_tool("log", &json!({})).unwrap().text()).unwrap();
    let init = &log[0];
    assert_eq!(init["method"], "initialize");
    assert_eq!(init["jsonrpc"], "2.0");
    assert_eq!(init["params"]["protocolVersion"], "2025-06-18");
    assert_eq!(init["params"]["clientInfo"]["name"], "ferrollama");
    assert_eq!(
        log[1],
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    );
    assert_eq!(log[2]["method"], "tools/list");
    assert_eq!(log[2]["params"], json!({}));
    assert_eq!(
        log[3],
        json!({"jsonrpc": "2.0", "id": "srv-1", "result": {}})
    );
    assert_eq!(log[4]["params"], json!({"cursor": "page-2"}));
    assert_eq!(
        log[5],
        json!({"jsonrpc": "2.0", "id": "srv-1", "result": {}})
    );
    assert_eq!(
        log[6]["params"],
        json!({"name": "add", "arguments": {"a": 2, "b": 40}})
    );
    let ids: Vec<&Value> = log
        .iter()
        .filter(|m| m.get("method").is_some())
        .filter_map(|m| m.get("id"))
        .collect();
    assert_eq!(
        ids,
        [
            &json!(1),
            &json!(2),
            &json!(3),
            &json!(4),
            &json!(5),
            &json!(6),
            &json!(7)
        ]
    );
    assert_eq!(log.len(), 10);
}

#[test]
fn stdio_older_protocol_accepted_and_unknown_refused() {
    let client = McpClient::connect(&fake("old_version"), T).unwrap();
    assert_eq!(client.protocol_version(), "2024-11-05");
    let m = mcp_err(McpClient::connect(&fake("bad_version"), T));
    assert!(m.contains("1999-01-01"), "{m}");
}

#[test]
fn stdio_server_exits() {
    let m = mcp_err(McpClient::connect(&fake("exit_at_start"), T));
    assert!(m.contains("exit status: 3"), "{m}");
    assert!(m.contains("fatal: missing config"), "{m}");

    let client = McpClient::connect(&fake("normal"), T).unwrap();
    let m = mcp_err(client.call_tool("exit", &json!({})));
    assert!(m.contains("exited before answering tools/call"), "{m}");
    assert!(
        m.contains("exit status: 4") && m.contains("bye from fake"),
        "{m}"
    );
    // Later calls fail fast.
    let m = mcp_err(client.list_tools());
    assert!(m.contains("has exited"), "{m}");

    let m = mcp_err(McpClient::connect(
        &McpEndpoint::parse("/nonexistent/mcp-server --x").unwrap(),
        T,
    ));
    assert!(m.contains("cannot start"), "{m}");
}

#[test]
fn stdio_timeouts() {
    // Only garbage comes back: skipped, then the request times out.
    let t0 = Instant::now();
    let m = mcp_err(McpClient::connect(
        &fake("garbage_only"),
        Duration::from_millis(700),
    ));
    assert!(m.contains("no reply") && m.contains("initialize"), "{m}");
    assert!(t0.elapsed() < Duration::from_secs(4));

    let client = McpClient::connect(&fake("normal"), Duration::from_millis(800)).unwrap();
    let t0 = Instant::now();
    let m = mcp_err(client.call_tool("sleep", &json!({})));
    assert!(m.contains("no reply"), "{m}");
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[test]
fn stdio_client_is_shared_between_threads() {
    let client = Arc::new(McpClient::connect(&fake("normal"), T).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let c = client.clone();
            std::thread::spawn(move || c.call_tool("add", &json!({"a": i, "b": 1})).unwrap().text())
        })
        .collect();
    let mut got: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    got.sort();
    assert_eq!(got, ["1", "2", "3", "4"]);
}

/// A streamable HTTP MCP server: JSON replies for initialize and tools/call, SSE-framed
/// replies for tools/list (with a notification first), a session id checked on every
/// later request.
fn http_fake(delay_calls: Duration) -> web_http::Server {
    serve(move |r: &Request| {
        if r.path != "/mcp" {
            return Reply::json(404, "not found");
        }
        if r.method == "DELETE" {
            return Reply::json(200, "");
        }
        let msg = r.body_json();
        let method = msg["method"].as_str().unwrap_or("").to_string();
        let id = msg.get("id").cloned();
        if method != "initialize"
            && (r.header("mcp-session-id") != Some("sess-42")
                || r.header("mcp-protocol-version") != Some("2025-06-18"))
        {
            return Reply::json(400, r#"{"error": "missing session or version header"}"#);
        }
        let Some(id) = id else {
            return Reply::json(202, "");
        };
        let ok = |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
        match method.as_str() {
            "initialize" => Reply::json(
                200,
                &ok(
                    json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                           "serverInfo": {"name": "fake-http", "version": "1"}}),
                ),
            )
            .with_header("Mcp-Session-Id", "sess-42"),
            "tools/list" => {
                let cursor = msg["params"]["cursor"].as_str().map(str::to_string);
                let result = match cursor.as_deref() {
                    None => json!({"tools": [{"name": "echo", "description": "Echoes.",
                        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}],
                        "nextCursor": "c2"}),
                    Some(_) => json!({"tools": [{"name": "broken"}]}),
                };
                let body = format!(
                    ": keep-alive\n\nevent: message\ndata: {}\n\nid: 2\ndata: {}\n\n",
                    json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}),
                    ok(result)
                );
                let mut reply = Reply::json(200, &body);
                reply.headers = vec![("Content-Type".into(), "text/event-stream".into())];
                reply
            }
            "tools/call" => {
                let name = msg["params"]["name"].as_str().unwrap_or("");
                let body = match name {
                    "echo" => ok(json!({"content": [{"type": "text",
                        "text": msg["params"]["arguments"]["text"].clone()}], "isError": false})),
                    "broken" => json!({"jsonrpc": "2.0", "id": id,
                        "error": {"code": -32602, "message": "Unknown tool: broken"}})
                    .to_string(),
                    "http500" => return Reply::json(500, "upstream exploded"),
                    "notjson" => return Reply::json(200, "<html>oops</html>"),
                    _ => ok(json!({"content": []})),
                };
                Reply::json(200, &body).delayed(delay_calls)
            }
            _ => Reply::json(
                200,
                &json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": "Method not found"}})
                .to_string(),
            ),
        }
    })
}

#[test]
fn http_session_json_and_sse_replies() {
    let srv = http_fake(Duration::ZERO);
    let ep = McpEndpoint::Http {
        url: format!("{}/mcp", srv.base),
        headers: vec![("Authorization".into(), "Bearer t0k".into())],
    };
    let client = McpClient::connect(&ep, T).unwrap();
    assert_eq!(client.server_info()["name"], "fake-http");
    let tools = client.list_tools().unwrap();
    assert_eq!(
        tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["echo", "broken"]
    );
    let r = client
        .call_tool("echo", &json!({"text": "héllo & bye"}))
        .unwrap();
    assert_eq!(r.text(), "héllo & bye");
    let m = mcp_err(client.call_tool("broken", &json!({})));
    assert_eq!(m, "tools/call: Unknown tool: broken (code -32602)");
    let m = mcp_err(client.call_tool("http500", &json!({})));
    assert!(
        m.contains("HTTP 500") && m.contains("upstream exploded"),
        "{m}"
    );
    let m = mcp_err(client.call_tool("notjson", &json!({})));
    assert!(m.contains("not JSON"), "{m}");
    drop(client);

    let reqs = srv.requests();
    let methods: Vec<String> = reqs
        .iter()
        .map(|r| match r.body_json()["method"].as_str() {
            Some(m) => format!("{} {m}", r.method),
            None => r.method.clone(),
        })
        .collect();
    assert_eq!(
        methods,
        [
            "POST initialize",
            "POST notifications/initialized",
            "POST tools/list",
            "POST tools/list",
            "POST tools/call",
            "POST tools/call",
            "POST tools/call",
            "POST tools/call",
            "DELETE"
        ]
    );
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(r.header("authorization"), Some("Bearer t0k"));
        if r.method == "POST" {
            assert_eq!(
                r.header("accept"),
                Some("application/json, text/event-stream")
            );
            assert_eq!(r.header("content-type"), Some("application/json"));
        }
        if i == 0 {
            assert_eq!(r.header("mcp-session-id"), None);
            assert_eq!(r.header("mcp-protocol-version"), None);
        } else {
            assert_eq!(r.header("mcp-session-id"), Some("sess-42"), "request {i}");
            assert_eq!(
                r.header("mcp-protocol-version"),
                Some("2025-06-18"),
                "request {i}"
            );
        }
    }
    assert_eq!(reqs[3].body_json()["params"], json!({"cursor": "c2"}));
}

#[test]
fn http_timeout_and_unreachable() {
    let srv = http_fake(Duration::from_secs(3));
    let ep = McpEndpoint::parse(&format!("{}/mcp", srv.base)).unwrap();
    let client = McpClient::connect(&ep, Duration::from_millis(500)).unwrap();
    let t0 = Instant::now();
    let m = mcp_err(client.call_tool("echo", &json!({"text": "x"})));
    assert!(m.contains("timed out"), "{m}");
    assert!(t0.elapsed() < Duration::from_secs(2));

    let m = mcp_err(McpClient::connect(
        &McpEndpoint::parse("http://127.0.0.1:9/mcp").unwrap(),
        T,
    ));
    assert!(m.contains("initialize"), "{m}");
    // A 404 endpoint.
    let m = mcp_err(McpClient::connect(
        &McpEndpoint::parse(&format!("{}/nope", srv.base)).unwrap(),
        T,
    ));
    assert!(m.contains("HTTP 404"), "{m}");
}

#[test]
fn http_sse_stream_without_reply_is_an_error() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let srv = serve(move |r: &Request| {
        h.fetch_add(1, Ordering::SeqCst);
        let id = r.body_json()["id"].clone();
        let body = format!(
            "data: {}\n\ndata: not json\n\n",
            json!({"jsonrpc": "2.0", "id": id.as_u64().map(|i| i + 100), "result": {}})
        );
        let mut reply = Reply::json(200, &body);
        reply.headers = vec![("Content-Type".into(), "text/event-stream".into())];
        reply
    });
    let m = mcp_err(McpClient::connect(
        &McpEndpoint::parse(&format!("{}/mcp", srv.base)).unwrap(),
        T,
    ));
    assert!(m.contains("ended without a reply"), "{m}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
