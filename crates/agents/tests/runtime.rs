//! The tool runtimes as the agent loop runs them: interpreter state kept per agent session
//! and dropped with it, tool errors as results, MCP tools through a stdio server, and the
//! built-in definitions.

// Test scaffolding (scripted models and tools) outside #[test] fns unwraps freely.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use ferrollama_agents::runtime::{Executor, Runtime, builtin_tool};
use ferrollama_agents::{ToolCall, ToolDef, ToolExecutor, ToolKind};
use ferrollama_tools::ProviderKeys;
use ferrollama_tools::brave::BraveSearch;
use ferrollama_tools::wolfram::WolframAlpha;
use serde_json::json;

fn runtime() -> Arc<Runtime> {
    // Web tools pointed at a closed port, no keys: every call fails fast and readably.
    let brave = BraveSearch::with_base_url("http://127.0.0.1:9", None, Duration::from_secs(2));
    let wolfram = WolframAlpha::with_base_url("http://127.0.0.1:9", None, Duration::from_secs(2));
    Arc::new(Runtime::with(brave, wolfram, None))
}

fn call(name: &str, args: serde_json::Value) -> ToolCall {
    ToolCall {
        call_id: "c1".into(),
        tool_name: name.into(),
        arguments: args,
    }
}

fn exec(rt: &Arc<Runtime>) -> Executor {
    Executor {
        runtime: rt.clone(),
        keys: ProviderKeys::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interpreter_state_is_kept_per_session_and_dropped_with_it() {
    let rt = runtime();
    let ex = exec(&rt);
    let ci = builtin_tool("code_interpreter").unwrap();
    let r = ex
        .execute(
            "s1",
            &ci,
            &call(
                "code_interpreter",
                json!({"code": "x = 41\nopen('f.txt', 'w').write('kept')"}),
            ),
        )
        .await;
    assert!(!r.is_error(), "{r:?}");
    let r = ex
        .execute(
            "s1",
            &ci,
            &call(
                "code_interpreter",
                json!({"code": "print(x + 1, open('f.txt').read())"}),
            ),
        )
        .await;
    assert!(
        r.content.contains("[stdout]\n42 kept\n[/stdout]"),
        "{}",
        r.content
    );
    assert_eq!(r.metadata["exit_code"], 0);
    // Another session sees neither the variable nor the file.
    let r = ex
        .execute(
            "s2",
            &ci,
            &call(
                "code_interpreter",
                json!({"code": "import os\nprint('x' in globals(), os.path.exists('f.txt'))"}),
            ),
        )
        .await;
    assert!(
        r.content.contains("[stdout]\nFalse False\n[/stdout]"),
        "{}",
        r.content
    );
    // Closing the session forgets its state.
    rt.close_session("s1");
    let r = ex
        .execute(
            "s1",
            &ci,
            &call(
                "code_interpreter",
                json!({"code": "print('x' in globals())"}),
            ),
        )
        .await;
    assert!(
        r.content.contains("[stdout]\nFalse\n[/stdout]"),
        "{}",
        r.content
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_results_the_model_reads() {
    let rt = runtime();
    let ex = exec(&rt);
    let ci = builtin_tool("code_interpreter").unwrap();
    let r = ex
        .execute("s", &ci, &call("code_interpreter", json!({"source": "1"})))
        .await;
    assert!(r.is_error());
    assert!(
        r.content.contains("needs a string argument 'code'"),
        "{}",
        r.content
    );
    let brave = builtin_tool("web_search").unwrap();
    assert_eq!(brave.name, "brave_search");
    let r = ex
        .execute(
            "s",
            &brave,
            &call("brave_search", json!({"query": "llamas"})),
        )
        .await;
    assert!(r.is_error());
    assert!(r.content.contains("BRAVE_SEARCH_API_KEY"), "{}", r.content);
    let wa = builtin_tool("wolfram_alpha").unwrap();
    let keyed = Executor {
        runtime: rt.clone(),
        keys: ProviderKeys {
            brave: None,
            wolfram: Some("k".into()),
        },
    };
    let r = keyed
        .execute("s", &wa, &call("wolfram_alpha", json!({"query": "2+2"})))
        .await;
    assert!(r.is_error(), "a closed port is an error result: {r:?}");
    assert!(
        !r.content.contains("appid=k"),
        "the key is not shown: {}",
        r.content
    );
    // A code string sent JSON-encoded (some models do) is accepted.
    let r = ex
        .execute(
            "s",
            &ci,
            &call("code_interpreter", json!("{\"code\": \"print(1)\"}")),
        )
        .await;
    assert!(
        r.content.contains("[stdout]\n1\n[/stdout]"),
        "{}",
        r.content
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tools_run_through_a_stdio_server() {
    let rt = runtime();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tools/tests/mcp_fake_server.py"
    );
    let endpoint = format!("stdio:python3 {script} normal");
    let tools = rt.mcp_tools(&endpoint).expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "add"), "{tools:?}");
    let add = ToolDef {
        name: "add".into(),
        description: String::new(),
        parameters: json!({}),
        kind: ToolKind::Mcp {
            endpoint: endpoint.clone(),
        },
        toolgroup: Some("mcp::fake".into()),
    };
    let r = exec(&rt)
        .execute("s", &add, &call("add", json!({"a": 2, "b": 40})))
        .await;
    assert!(!r.is_error(), "{r:?}");
    assert_eq!(r.content, "42");
}

#[test]
fn builtin_definitions_name_the_models_tools() {
    for (alias, name, arg) in [
        ("code_interpreter", "code_interpreter", "code"),
        ("web_search", "brave_search", "query"),
        ("brave_search", "brave_search", "query"),
        ("wolfram_alpha", "wolfram_alpha", "query"),
    ] {
        let t = builtin_tool(alias).unwrap();
        assert_eq!(t.name, name);
        assert_eq!(t.parameters["required"], json!([arg]));
        assert!(t.kind.server_side());
    }
    assert!(builtin_tool("photogen").is_none());
}
