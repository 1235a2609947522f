//! The Llama Stack agents and tool-runtime routes in-process, on the tiny Llama 3.1-format
//! model: a forced code-interpreter call really runs in the sandbox and the loop continues;
//! a client tool pauses the turn until `resume`; turns and steps stream as Llama Stack's
//! events and are stored, surviving a restart on the same data directory; bad requests are
//! clear 4xx answers.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use common::{MODEL, call, json_call};
use ferrollama_server::AppState;
use ferrollama_server::agents::AgentsState;
use serde_json::{Value, json};

fn app(data: Option<&Path>) -> Arc<AppState> {
    let agents = match data {
        Some(d) => AgentsState::open(d),
        None => AgentsState::in_memory(),
    }
    .expect("agents db");
    common::tiny_app_with(agents, 1024)
}

fn greedy(max_tokens: u32) -> Value {
    json!({"strategy": {"type": "greedy"}, "max_tokens": max_tokens})
}

async fn agent(app: &Arc<AppState>, config: Value) -> (String, String) {
    let (s, v) = json_call(
        app,
        "POST",
        "/v1/agents",
        Some(json!({"agent_config": config})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let a = v["agent_id"].as_str().expect("agent_id").to_string();
    let (s, v) = json_call(
        app,
        "POST",
        &format!("/v1/agents/{a}/session"),
        Some(json!({"session_name": "t"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    (a, v["session_id"].as_str().expect("session_id").to_string())
}

fn step_types(turn: &Value) -> Vec<&str> {
    turn["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["step_type"].as_str().unwrap_or(""))
        .collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrollama-agents-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_code_interpreter_call_runs_and_the_turn_survives_a_restart() {
    let dir = temp_dir("restart");
    let app1 = app(Some(&dir));
    let (a, sid) = agent(
        &app1,
        json!({"model": MODEL, "instructions": "Use Python.", "toolgroups": ["builtin::code_interpreter"],
               "tool_config": {"tool_choice": "required"}, "max_infer_iters": 2, "sampling_params": greedy(24)}),
    )
    .await;
    let path = format!("/v1/agents/{a}/session/{sid}/turn");
    let (s, turn) = json_call(
        &app1,
        "POST",
        &path,
        Some(json!({"messages": [{"role": "user", "content": "6*7?"}], "stream": false})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{turn}");
    assert_eq!(
        step_types(&turn),
        ["inference", "tool_execution", "inference"],
        "{turn}"
    );
    let ex = &turn["steps"][1];
    assert_eq!(ex["tool_calls"][0]["tool_name"], "code_interpreter");
    assert!(ex["tool_calls"][0]["arguments"]["code"].is_string(), "{ex}");
    let out = ex["tool_responses"][0]["content"]
        .as_str()
        .expect("content");
    // The sandbox's status line (the tiny model writes gibberish code: usually a SyntaxError).
    assert!(
        out.starts_with("completed") || out.starts_with("timed out"),
        "{out}"
    );
    assert!(
        ex["tool_responses"][0]["metadata"]
            .get("exit_code")
            .is_some(),
        "{ex}"
    );
    // The second inference ran with the result in its history, unforced.
    assert_eq!(turn["steps"][2]["model_response"]["role"], "assistant");
    assert!(turn["completed_at"].is_string());
    let turn_id = turn["turn_id"].as_str().expect("turn_id").to_string();
    let step_id = ex["step_id"].as_str().expect("step_id").to_string();
    drop(app1);

    // A new server on the same data directory: the agent, session, turn and step are there.
    let app2 = app(Some(&dir));
    let (s, v) = json_call(&app2, "GET", &format!("/v1/agents/{a}/session/{sid}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["turns"][0]["turn_id"], turn_id.as_str());
    assert_eq!(v["turns"][0]["steps"], turn["steps"]);
    let (s, v) = json_call(
        &app2,
        "GET",
        &format!("/v1/agents/{a}/session/{sid}/turn/{turn_id}/step/{step_id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["step"]["step_type"], "tool_execution");
    let (s, v) = json_call(&app2, "GET", &format!("/v1/agents/{a}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["agent_config"]["toolgroups"][0],
        "builtin::code_interpreter"
    );
    // A second turn continues the same session history.
    let (s, turn2) = json_call(
        &app2,
        "POST",
        &path,
        Some(json!({"messages": [{"role": "user", "content": "again"}]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{turn2}");
    let (_, v) = json_call(&app2, "GET", &format!("/v1/agents/{a}/sessions"), None).await;
    assert_eq!(v["data"][0]["turns"].as_array().map(Vec::len), Some(2));
    // Deleting the agent removes its sessions.
    let (s, _) = call(&app2, "DELETE", &format!("/v1/agents/{a}"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app2, "GET", &format!("/v1/agents/{a}/session/{sid}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `data:` payloads of an SSE body.
fn events(body: &Bytes) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("event json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_turn_sends_llama_stack_events_in_order() {
    let app = app(None);
    let (a, sid) = agent(
        &app,
        json!({"model": MODEL, "instructions": "x", "toolgroups": ["builtin::code_interpreter"],
               "tool_config": {"tool_choice": "required"}, "max_infer_iters": 1, "sampling_params": greedy(16)}),
    )
    .await;
    let (s, body) = call(
        &app,
        "POST",
        &format!("/v1/agents/{a}/session/{sid}/turn"),
        Some(json!({"messages": [{"role": "user", "content": "hi"}], "stream": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let ev = events(&body);
    let kinds: Vec<&str> = ev
        .iter()
        .map(|e| e["event"]["payload"]["event_type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds.first(), Some(&"turn_start"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"turn_complete"), "{kinds:?}");
    let steps: Vec<(&str, &str)> = ev
        .iter()
        .map(|e| &e["event"]["payload"])
        .filter(|p| p["event_type"] == "step_start" || p["event_type"] == "step_complete")
        .map(|p| {
            (
                p["event_type"].as_str().unwrap_or(""),
                p["step_type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("step_start", "inference"),
            ("step_complete", "inference"),
            ("step_start", "tool_execution"),
            ("step_complete", "tool_execution")
        ]
    );
    // The call is streamed as a tool_call delta; the step details carry the full step.
    assert!(
        ev.iter()
            .any(|e| e["event"]["payload"]["delta"]["type"] == "tool_call"),
        "{ev:?}"
    );
    let done = &ev.last().expect("events")["event"]["payload"]["turn"];
    assert_eq!(step_types(done), ["inference", "tool_execution"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_tool_pauses_the_turn_until_resume() {
    let app = app(None);
    let (a, sid) = agent(
        &app,
        json!({"model": MODEL, "instructions": "x", "tool_config": {"tool_choice": "required"}, "max_infer_iters": 3,
               "sampling_params": greedy(16),
               "client_tools": [{"name": "get_weather", "description": "Weather in a city",
                                 "parameters": [{"name": "city", "parameter_type": "string", "description": "City", "required": true}]}]}),
    )
    .await;
    let base = format!("/v1/agents/{a}/session/{sid}/turn");
    let (s, turn) = json_call(
        &app,
        "POST",
        &base,
        Some(json!({"messages": [{"role": "user", "content": "weather?"}]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{turn}");
    assert_eq!(step_types(&turn), ["inference"]);
    let out = &turn["output_message"];
    assert_eq!(out["stop_reason"], "end_of_message");
    assert_eq!(out["tool_calls"][0]["tool_name"], "get_weather");
    assert!(
        out["tool_calls"][0]["arguments"]["city"].is_string(),
        "{out}"
    );
    assert!(
        turn["completed_at"].is_null(),
        "an awaiting turn is not complete"
    );
    let call_id = out["tool_calls"][0]["call_id"]
        .as_str()
        .expect("call_id")
        .to_string();
    let tid = turn["turn_id"].as_str().expect("turn_id").to_string();
    let resume = format!("{base}/{tid}/resume");
    // A result for a call that was not made, or none for the pending one: 400.
    let (s, v) = json_call(&app, "POST", &resume, Some(json!({"tool_responses": [{"call_id": "nope", "tool_name": "get_weather", "content": "x"}]}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains(&call_id),
        "{v}"
    );
    let (s, _) = json_call(&app, "POST", &resume, Some(json!({"tool_responses": []}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, turn) = json_call(&app, "POST", &resume,
        Some(json!({"tool_responses": [{"call_id": call_id, "tool_name": "get_weather", "content": "sunny"}]}))).await;
    assert_eq!(s, StatusCode::OK, "{turn}");
    let types = step_types(&turn);
    assert_eq!(
        &types[..3],
        ["inference", "tool_execution", "inference"],
        "{turn}"
    );
    assert_eq!(turn["steps"][1]["tool_responses"][0]["content"], "sunny");
    assert_eq!(turn["turn_id"], tid.as_str());
    // Once complete (or waiting again), resuming with the old call id is refused.
    let (s, _) = json_call(&app, "POST", &resume,
        Some(json!({"tool_responses": [{"call_id": call_id, "tool_name": "get_weather", "content": "sunny"}]}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_agent_requests_are_clear_4xx() {
    let app = app(None);
    for (cfg, needle) in [
        (json!({"model": "nope", "instructions": "x"}), "nope"),
        (json!({"instructions": "x"}), "model"),
        (
            json!({"model": MODEL, "instructions": "x", "toolgroups": ["builtin::rag"]}),
            "builtin::rag",
        ),
        (
            json!({"model": MODEL, "instructions": "x", "toolgroups": [7]}),
            "tool group",
        ),
        (
            json!({"model": MODEL, "instructions": "x", "input_shields": ["llama-guard"]}),
            "llama-guard",
        ),
        (
            json!({"model": MODEL, "instructions": "x", "max_infer_iters": 0}),
            "max_infer_iters",
        ),
        (
            json!({"model": MODEL, "instructions": "x", "client_tools": [{"name": "code_interpreter"}]}),
            "code_interpreter",
        ),
        (
            json!({"model": MODEL, "instructions": "x", "sampling_params": {"strategy": {"type": "beam"}}}),
            "beam",
        ),
        (json!("not an object"), "agent_config"),
    ] {
        let (s, v) = json_call(
            &app,
            "POST",
            "/v1/agents",
            Some(json!({"agent_config": cfg})),
        )
        .await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND,
            "{cfg}: {s} {v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(needle),
            "{cfg}: {v}"
        );
    }
    let (s, _) = call(&app, "GET", "/v1/agents/missing", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (a, sid) = agent(
        &app,
        json!({"model": MODEL, "instructions": "x", "sampling_params": greedy(4)}),
    )
    .await;
    let (s, _) = call(
        &app,
        "GET",
        &format!("/v1/agents/{a}/session/missing"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let turn = format!("/v1/agents/{a}/session/{sid}/turn");
    for (body, needle) in [
        (json!({"messages": []}), "empty"),
        (
            json!({"messages": [{"role": "system", "content": "x"}]}),
            "system",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "documents": [{"content": "d", "mime_type": "text/plain"}]}),
            "documents",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "toolgroups": ["mcp::unknown"]}),
            "mcp::unknown",
        ),
        (
            json!({"messages": [{"role": "user", "content": {"type": "image", "image": {"url": {"uri": "x"}}}}]}),
            "text",
        ),
    ] {
        let (s, v) = json_call(&app, "POST", &turn, Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(needle),
            "{body}: {v}"
        );
    }
    let (s, _) = call(&app, "GET", &format!("{turn}/missing"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Nothing failed was stored.
    let (_, v) = json_call(&app, "GET", &format!("/v1/agents/{a}/session/{sid}"), None).await;
    assert_eq!(v["turns"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_groups_and_the_runtime() {
    let app = app(None);
    let (s, v) = json_call(&app, "GET", "/v1/toolgroups", None).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|g| g["identifier"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "builtin::code_interpreter",
            "builtin::websearch",
            "builtin::wolfram_alpha",
            "builtin::rag"
        ]
    );
    let (s, v) = json_call(
        &app,
        "GET",
        "/v1/tools?toolgroup_id=builtin::websearch",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"][0]["identifier"], "brave_search");
    assert_eq!(v["data"][0]["parameters"][0]["name"], "query");
    let (s, _) = call(&app, "GET", "/v1/tools?toolgroup_id=nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for (body, status) in [
        (
            json!({"toolgroup_id": "builtin::websearch", "provider_id": "x"}),
            StatusCode::CONFLICT,
        ),
        (
            json!({"toolgroup_id": "mcp::x", "provider_id": "model-context-protocol", "mcp_endpoint": {"uri": "stdio:sh -c id"}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"toolgroup_id": "mcp::x", "provider_id": "model-context-protocol"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"toolgroup_id": "mcp::x", "mcp_endpoint": {"uri": "http://127.0.0.1:9/mcp"}}),
            StatusCode::BAD_GATEWAY,
        ),
    ] {
        let (s, v) = json_call(&app, "POST", "/v1/toolgroups", Some(body.clone())).await;
        assert_eq!(s, status, "{body}: {v}");
    }
    let (s, _) = call(&app, "DELETE", "/v1/toolgroups/builtin::websearch", None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = call(&app, "DELETE", "/v1/toolgroups/mcp::x", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // invoke: the code interpreter in a fresh sandbox; a failing tool is a 200 with error_message.
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/tool-runtime/invoke",
        Some(json!({"tool_name": "code_interpreter", "kwargs": {"code": "print(sum(range(10)))"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["content"], "completed\n[stdout]\n45\n[/stdout]\n");
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/tool-runtime/invoke",
        Some(json!({"tool_name": "code_interpreter", "kwargs": {}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v["error_message"].as_str().unwrap_or("").contains("'code'"),
        "{v}"
    );
    let (s, _) = call(
        &app,
        "POST",
        "/v1/tool-runtime/invoke",
        Some(json!({"tool_name": "nope", "kwargs": {}})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = json_call(
        &app,
        "GET",
        "/v1/tool-runtime/list-tools?tool_group_id=builtin::wolfram_alpha",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"][0]["name"], "wolfram_alpha");
}

/// Escape attempts sent through the HTTP API (the issue's "the server stays healthy after
/// each"): every one is contained (the sandbox's own suite, crates/tools/tests/escape.rs,
/// checks each in depth), and after each the server still answers and generates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_attempts_through_the_api_leave_the_server_healthy() {
    let app = app(None);
    let canary = temp_dir("canary");
    std::fs::create_dir_all(&canary).expect("canary dir");
    let secret = canary.join("secret.txt");
    std::fs::write(&secret, "canary-7f3a").expect("canary");
    let attempts: Vec<(&str, String, &str)> = vec![
        ("read a host file", format!("print(open({:?}).read())", secret.display().to_string()), "FileNotFoundError"),
        ("write outside", format!("open({:?}, 'w').write('x')", canary.join("new.txt").display().to_string()), "Error"),
        ("fork bomb", "import os\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            import time; time.sleep(2); os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('refused after', n)".into(), "refused after"),
        ("memory bomb", "x = bytearray(8 << 30)".into(), "MemoryError"),
        ("100 MB of output", "import sys\nsys.stdout.write('y' * (100 << 20))".into(), "truncated"),
        ("kill the parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\nprint('still here')".into(), ""),
        ("connect to the host", "import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', 8321))".into(), "Error"),
        ("host processes", "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))".into(), "[1, "),
    ];
    for (what, code, needle) in attempts {
        let (s, v) = json_call(
            &app,
            "POST",
            "/v1/tool-runtime/invoke",
            Some(json!({"tool_name": "code_interpreter", "kwargs": {"code": code}})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{what}: {v}");
        let out = v["content"].as_str().unwrap_or("");
        assert!(out.contains(needle), "{what}: {out}");
        assert!(!out.contains("canary-7f3a"), "{what}: {out}");
        let (s, _) = call(&app, "GET", "/health", None).await;
        assert_eq!(s, StatusCode::OK, "{what}: health");
        let (s, v) = json_call(&app, "POST", "/v1/chat/completions",
            Some(json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}))).await;
        assert_eq!(s, StatusCode::OK, "{what}: chat {v}");
    }
    assert!(
        !canary.join("new.txt").exists(),
        "nothing was written on the host"
    );
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap_or_default(),
        "canary-7f3a"
    );
    let _ = std::fs::remove_dir_all(&canary);
}
