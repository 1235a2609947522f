//! Tool calls in the Hermes format (Qwen2.5's template) end to end, on the tiny model given
//! Qwen2.5's chat template: tools reach the prompt through the template, forced calls come
//! out as `<tool_call>` blocks and back as OpenAI / Llama Stack / Ollama tool calls, and
//! streamed calls arrive as `tool_calls` deltas with increasing indices.

use std::path::Path;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use ferrollama_engine::scheduler::{Engine, EngineConfig};
use ferrollama_engine::{ChatTemplate, Model};
use ferrollama_model::KvType;
use ferrollama_server::{AppState, Limits, RequestCounters, router, routes};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const MODEL: &str = "tiny-qwen-template";

fn app() -> Arc<AppState> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut model = Model::load(&root.join("testdata/tiny/tiny-q8_0.gguf")).expect("tiny model");
    let source =
        std::fs::read_to_string(root.join("testdata/qwen2.5/qwen2.5-coder-0.5b-instruct.jinja"))
            .expect("Qwen's template");
    model.template = ChatTemplate::detect(Some(&source), "<|endoftext|>", "<|im_end|>");
    assert!(model.template.knows_tools());
    let engine = Engine::start(
        vec![Arc::new(model)],
        EngineConfig {
            threads: 2,
            step_tokens: 256,
            max_running: 8,
            max_queue: 32,
            kv_positions: 8192,
            ctx: 4096,
            kv_type: KvType::F16,
        },
    )
    .expect("engine");
    Arc::new(AppState {
        engine,
        models: ferrollama_server::ModelRegistry::new(vec![MODEL.into()]),
        api_key: None,
        cors_origin: None,
        limits: Limits {
            max_body: 64 * 1024,
            ..Limits::default()
        },
        created: 1,
        requests: RequestCounters::new(routes().iter().map(|r| r.path).collect()),
        safety: Default::default(),
        ollama: Default::default(),
        agents: ferrollama_server::agents::AgentsState::in_memory().expect("agents db"),
        embeddings: Default::default(),
        files: ferrollama_server::files::FilesState::in_memory().expect("files store"),
        fine_tuning: std::sync::Arc::new(ferrollama_server::fine_tuning::FineTuning::temporary()),
        batches: ferrollama_server::batch::store::Batches::temporary(),
        evals: Default::default(),
    })
}

async fn call(app: &Arc<AppState>, path: &str, body: &Value) -> (StatusCode, Bytes) {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = router(app.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, bytes)
}

async fn post(app: &Arc<AppState>, path: &str, body: &Value) -> Value {
    let (s, b) = call(app, path, body).await;
    let v: Value = serde_json::from_slice(&b).expect("JSON body");
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// The JSON frames of an SSE body.
fn frames(b: &Bytes) -> Vec<Value> {
    String::from_utf8_lossy(b)
        .split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("each frame is JSON"))
        .collect()
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
                "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time", "description": "Time in a zone",
            "parameters": {"type": "object", "properties": {"tz": {"enum": ["UTC", "CET"]}},
                "required": ["tz"]}}}
    ])
}

fn ask(extra: Value) -> Value {
    let mut v = json!({"model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "max_tokens": 120, "temperature": 0, "tools": tools()});
    for (k, x) in extra.as_object().expect("object") {
        v[k] = x.clone();
    }
    v
}

fn args_of(call: &Value) -> Value {
    serde_json::from_str(call["function"]["arguments"].as_str().expect("a string"))
        .expect("JSON arguments")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_calls_and_results_go_through_the_template() {
    let app = app();
    let plain =
        json!({"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]});
    let with_tools = ask(json!({"max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}));
    let a = post(&app, "/v1/chat/completions", &plain).await;
    let b = post(&app, "/v1/chat/completions", &with_tools).await;
    let tokens = |v: &Value| v["usage"]["prompt_tokens"].as_u64().expect("prompt_tokens");
    // Qwen's tool preamble and the tool JSON are in the prompt.
    assert!(
        tokens(&b) > tokens(&a) + 200,
        "{} vs {}",
        tokens(&b),
        tokens(&a)
    );
    // An assistant call and its result (content null, arguments as a JSON string).
    let mut dialog = with_tools.clone();
    dialog["messages"] = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "get_time", "arguments": "{\"tz\": \"UTC\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "12:00"}]);
    let c = post(&app, "/v1/chat/completions", &dialog).await;
    assert!(
        tokens(&c) > tokens(&b) + 20,
        "{} vs {}",
        tokens(&c),
        tokens(&b)
    );
    let mut longer = dialog.clone();
    longer["messages"][2]["content"] = json!("12:00, and a much longer tool result than before");
    let d = post(&app, "/v1/chat/completions", &longer).await;
    assert!(tokens(&d) > tokens(&c), "the tool result is in the prompt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_calls_come_back_whole_and_streamed() {
    let app = app();
    for (choice, name) in [
        (json!("required"), None),
        (
            json!({"type": "function", "function": {"name": "get_time"}}),
            Some("get_time"),
        ),
    ] {
        let v = post(
            &app,
            "/v1/chat/completions",
            &ask(json!({"tool_choice": choice})),
        )
        .await;
        let c = &v["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls", "{v}");
        assert!(c["message"]["content"].is_null(), "{v}");
        let calls = c["message"]["tool_calls"].as_array().expect("tool_calls");
        assert_eq!(calls.len(), 1, "{v}");
        let n = calls[0]["function"]["name"].as_str().expect("name");
        if let Some(want) = name {
            assert_eq!(n, want);
        }
        let args = args_of(&calls[0]);
        match n {
            "get_weather" => assert!(args["city"].is_string(), "{args}"),
            "get_time" => assert!(args["tz"] == "UTC" || args["tz"] == "CET", "{args}"),
            other => panic!("unknown tool {other}"),
        }

        // Streamed: no call text as content, the call as deltas before the finish chunk.
        let mut s = ask(json!({"tool_choice": choice}));
        s["stream"] = json!(true);
        let (st, b) = call(&app, "/v1/chat/completions", &s).await;
        assert_eq!(st, StatusCode::OK);
        let fs = frames(&b);
        let content: String = fs
            .iter()
            .filter_map(|f| f["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "", "no raw call text is streamed");
        let deltas: Vec<&Value> = fs
            .iter()
            .filter_map(|f| f["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        assert_eq!(deltas.len(), 2, "{fs:?}");
        assert_eq!(deltas[0]["index"], 0);
        assert_eq!(deltas[0]["function"]["name"], n);
        assert!(deltas[0]["id"].is_string());
        let streamed: Value = serde_json::from_str(
            deltas[1]["function"]["arguments"]
                .as_str()
                .expect("arguments"),
        )
        .expect("JSON");
        assert_eq!(streamed, args, "greedy: the same call as unstreamed");
        let last = fs
            .iter()
            .rev()
            .find(|f| f["choices"][0]["finish_reason"].is_string());
        assert_eq!(
            last.expect("a finish chunk")["choices"][0]["finish_reason"],
            "tool_calls"
        );
    }
}

/// Several calls in one reply (a bare JSON array of calls, forced by a response schema),
/// streamed with one index per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_calls_get_increasing_indices() {
    let app = app();
    let call_schema = |name: &str, params: Value| {
        json!({"type": "object", "properties": {"name": {"const": name}, "arguments": params},
            "required": ["name", "arguments"]})
    };
    let t = tools();
    let schema = json!({"type": "array", "minItems": 2, "maxItems": 2, "items": {"anyOf": [
        call_schema("get_weather", t[0]["function"]["parameters"].clone()),
        call_schema("get_time", t[1]["function"]["parameters"].clone())]}});
    let body = ask(json!({"max_tokens": 200, "stream": true,
        "response_format": {"type": "json_schema", "json_schema": {"name": "calls", "schema": schema}}}));
    let (st, b) = call(&app, "/v1/chat/completions", &body).await;
    assert_eq!(st, StatusCode::OK);
    let fs = frames(&b);
    let heads: Vec<&Value> = fs
        .iter()
        .filter_map(|f| f["choices"][0]["delta"]["tool_calls"].get(0))
        .filter(|d| d.get("id").is_some())
        .collect();
    assert_eq!(heads.len(), 2, "{fs:?}");
    assert_eq!(heads[0]["index"], 0);
    assert_eq!(heads[1]["index"], 1);
    assert_ne!(heads[0]["id"], heads[1]["id"]);
    let mut whole = body.clone();
    whole["stream"] = json!(false);
    let v = post(&app, "/v1/chat/completions", &whole).await;
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{v}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_stack_and_ollama_read_hermes_calls() {
    let app = app();
    let ls_tools = json!([{"tool_name": "get_time", "description": "Time in a zone",
        "parameters": {"tz": {"param_type": "string", "required": true}}}]);
    let body = json!({"model_id": MODEL, "messages": [{"role": "user", "content": "time?"}],
        "tools": ls_tools, "tool_config": {"tool_choice": "required"},
        "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 80}});
    let v = post(&app, "/v1/inference/chat-completion", &body).await;
    let m = &v["completion_message"];
    assert_eq!(m["tool_calls"][0]["tool_name"], "get_time", "{v}");
    assert!(m["tool_calls"][0]["arguments"]["tz"].is_string(), "{v}");
    // (A free-form string argument may run to `max_tokens`; the call is closed anyway.)
    let stop = m["stop_reason"].clone();
    assert!(stop == "end_of_message" || stop == "out_of_tokens", "{v}");
    let mut s = body.clone();
    s["stream"] = json!(true);
    let (st, b) = call(&app, "/v1/inference/chat-completion", &s).await;
    assert_eq!(st, StatusCode::OK);
    let fs = frames(&b);
    let calls: Vec<&Value> = fs
        .iter()
        .filter(|f| f["event"]["delta"]["parse_status"] == "succeeded")
        .collect();
    assert_eq!(calls.len(), 1, "{fs:?}");
    assert_eq!(
        calls[0]["event"]["delta"]["tool_call"]["arguments"],
        m["tool_calls"][0]["arguments"]
    );
    let complete = fs.last().expect("frames");
    assert_eq!(complete["event"]["event_type"], "complete");
    assert_eq!(complete["event"]["stop_reason"], stop);
    let text: String = fs
        .iter()
        .filter_map(|f| f["event"]["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "");

    // Ollama: a reply that is a bare JSON call (forced by `format`).
    let t = tools();
    let format = json!({"type": "object", "properties": {"name": {"const": "get_time"},
        "arguments": t[1]["function"]["parameters"]}, "required": ["name", "arguments"]});
    let ask = json!({"model": MODEL, "stream": false, "tools": t, "format": format,
        "options": {"temperature": 0, "num_predict": 60},
        "messages": [{"role": "user", "content": "time?"}]});
    let v = post(&app, "/api/chat", &ask).await;
    assert_eq!(
        v["message"]["tool_calls"][0]["function"]["name"], "get_time",
        "{v}"
    );
    assert_eq!(v["message"]["content"], "");
    let mut s = ask.clone();
    s["stream"] = json!(true);
    let (st, b) = call(&app, "/api/chat", &s).await;
    assert_eq!(st, StatusCode::OK);
    let lines: Vec<Value> = String::from_utf8_lossy(&b)
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    let with_calls: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"]["tool_calls"].is_array())
        .collect();
    assert_eq!(with_calls.len(), 1, "{lines:?}");
    assert_eq!(
        with_calls[0]["message"]["tool_calls"],
        v["message"]["tool_calls"]
    );
}
