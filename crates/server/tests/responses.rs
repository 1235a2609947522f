//! The OpenAI Responses API driven in-process on the tiny Llama 3.1-format model: the
//! Response object's shape, forced function calls and their outputs chained with
//! `previous_response_id`, storage (retrieve, list with paging, delete, `store: false`),
//! input items with paging, the streamed event order, and 4xx answers naming their
//! parameter. The tiny model's text is gibberish, so replies that must hold something are
//! constrained (a JSON schema or a forced call).

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::{MODEL, call, json_call};
use ferrollama_server::AppState;
use serde_json::{Value, json};

fn app() -> Arc<AppState> {
    common::tiny_app()
}

async fn create(app: &Arc<AppState>, body: Value) -> (StatusCode, Value) {
    json_call(app, "POST", "/v1/responses", Some(body)).await
}

async fn get(app: &Arc<AppState>, path: &str) -> (StatusCode, Value) {
    json_call(app, "GET", path, None).await
}

fn error_message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

/// A schema the greedy tiny model completes quickly.
fn flag_format() -> Value {
    json!({"format": {"type": "json_schema", "name": "flag", "schema": {
        "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
        "additionalProperties": false}}})
}

fn weather_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                          "required": ["city"]}})
}

/// A short reply (a couple of tokens), for tests that only need stored responses.
async fn quick(app: &Arc<AppState>, input: Value) -> Value {
    let (s, v) = create(
        app,
        json!({"model": MODEL, "input": input, "max_output_tokens": 2, "temperature": 0}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_object_has_openai_shape_and_is_stored() {
    let app = app();
    let (s, v) = create(
        &app,
        json!({"model": MODEL, "input": "Is the sky blue?", "instructions": "Answer in JSON.",
               "text": flag_format(), "temperature": 0, "max_output_tokens": 200,
               "metadata": {"k": "v"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = v["id"].as_str().expect("id");
    assert!(id.starts_with("resp_"), "{id}");
    assert_eq!(v["object"], "response");
    assert_eq!(v["model"], MODEL);
    assert_eq!(v["instructions"], "Answer in JSON.");
    assert_eq!(v["metadata"], json!({"k": "v"}));
    assert_eq!(v["store"], true);
    assert!(v["created_at"].is_i64());
    assert!(v["tools"].as_array().is_some_and(Vec::is_empty));
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(v["parallel_tool_calls"], true);
    assert!(v["previous_response_id"].is_null());
    assert!(v["error"].is_null());
    let out = v["output"].as_array().expect("output");
    assert_eq!(out.len(), 1, "{v}");
    let msg = &out[0];
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["status"], "completed");
    assert!(msg["id"].as_str().is_some_and(|i| i.starts_with("msg_")));
    let part = &msg["content"][0];
    assert_eq!(part["type"], "output_text");
    assert_eq!(part["annotations"], json!([]));
    if v["status"] == "completed" {
        let doc: Value = serde_json::from_str(part["text"].as_str().expect("text"))
            .expect("text.format json_schema makes the text JSON");
        assert!(doc["ok"].is_boolean(), "{doc}");
    } else {
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    }
    let u = &v["usage"];
    let (i, o) = (
        u["input_tokens"].as_u64().expect("input_tokens"),
        u["output_tokens"].as_u64().expect("output_tokens"),
    );
    assert!(i > 0 && o > 0, "{u}");
    assert_eq!(u["total_tokens"].as_u64(), Some(i + o));
    assert_eq!(u["output_tokens_details"]["reasoning_tokens"], 0);

    // Stored: the same object on both paths.
    for prefix in ["/v1", "/v1/openai/v1"] {
        let (s, got) = get(&app, &format!("{prefix}/responses/{id}")).await;
        assert_eq!(s, StatusCode::OK, "{prefix}");
        assert_eq!(got, v, "{prefix}");
    }
    // The string input is one user message item.
    let (s, items) = get(&app, &format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(s, StatusCode::OK, "{items}");
    assert_eq!(items["object"], "list");
    assert_eq!(items["has_more"], false);
    let data = items["data"].as_array().expect("data");
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["type"], "message");
    assert_eq!(data[0]["role"], "user");
    assert_eq!(
        data[0]["content"][0],
        json!({"type": "input_text", "text": "Is the sky blue?"})
    );
    assert_eq!(items["first_id"], data[0]["id"]);
    assert_eq!(items["last_id"], data[0]["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_function_call_then_its_output_continues_the_conversation() {
    let app = app();
    let (s, v) = create(
        &app,
        json!({"model": MODEL, "input": "Weather in Paris?", "tools": [weather_tool()],
               "tool_choice": {"type": "function", "name": "get_weather"},
               "temperature": 0, "max_output_tokens": 100}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "completed", "{v}");
    let calls: Vec<&Value> = v["output"]
        .as_array()
        .expect("output")
        .iter()
        .filter(|i| i["type"] == "function_call")
        .collect();
    assert_eq!(calls.len(), 1, "{v}");
    let fc = calls[0];
    assert_eq!(fc["name"], "get_weather");
    assert_eq!(fc["status"], "completed");
    assert!(fc["id"].as_str().is_some_and(|i| i.starts_with("fc_")));
    let call_id = fc["call_id"].as_str().expect("call_id").to_string();
    let args: Value =
        serde_json::from_str(fc["arguments"].as_str().expect("arguments is a string"))
            .expect("JSON");
    assert!(
        args["city"]
            .as_str()
            .is_some_and(|c| c.chars().count() <= 12),
        "{args}"
    );
    assert_eq!(v["tools"][0]["name"], "get_weather");
    assert_eq!(v["tool_choice"]["name"], "get_weather");
    let first = v["id"].as_str().expect("id").to_string();

    // Continuing without the call's output is refused, naming the call.
    let (s, e) = create(
        &app,
        json!({"model": MODEL, "previous_response_id": first, "input": "and?", "tools": [weather_tool()]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["param"], "input");
    assert!(error_message(&e).contains(&call_id), "{e}");
    // An output for a call that was never made.
    let (s, e) = create(
        &app,
        json!({"model": MODEL, "previous_response_id": first,
               "input": [{"type": "function_call_output", "call_id": "call_nope", "output": "x"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(error_message(&e).contains("call_nope"), "{e}");

    // The output continues it.
    let (s, v2) = create(
        &app,
        json!({"model": MODEL, "previous_response_id": first, "tools": [weather_tool()],
               "tool_choice": "none", "temperature": 0, "max_output_tokens": 4,
               "input": [{"type": "function_call_output", "call_id": call_id, "output": "{\"temp_c\": 21}"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v2}");
    assert_eq!(v2["previous_response_id"], first);
    assert!(
        v2["output"]
            .as_array()
            .expect("output")
            .iter()
            .all(|i| i["type"] != "function_call"),
        "tool_choice none: {v2}"
    );
    // Its input items are its own input only.
    let id2 = v2["id"].as_str().expect("id");
    let (_, items) = get(&app, &format!("/v1/responses/{id2}/input_items")).await;
    let data = items["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{items}");
    assert_eq!(data[0]["type"], "function_call_output");
    assert_eq!(data[0]["call_id"], call_id.as_str());
    assert_eq!(data[0]["output"], "{\"temp_c\": 21}");

    // Stateless: the call and its output replayed in input work the same.
    let (s, v3) = create(
        &app,
        json!({"model": MODEL, "temperature": 0, "max_output_tokens": 2, "tools": [weather_tool()],
               "input": [{"role": "user", "content": "Weather in Paris?"},
                         {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                         {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v3}");
}

/// The frames of an SSE body as (event name, data).
fn frames(b: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8_lossy(b)
        .split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|f| {
            let mut event = String::new();
            let mut data = Value::Null;
            for line in f.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).expect("each frame's data is JSON");
                }
            }
            (event, data)
        })
        .collect()
}

fn check_sequence(events: &[(String, Value)]) {
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(&data["type"], name.as_str(), "event line and type agree");
        assert_eq!(data["sequence_number"].as_u64(), Some(i as u64), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_text_events_come_in_order() {
    let app = app();
    let (s, b) = call(
        &app,
        "POST",
        "/v1/openai/v1/responses",
        Some(
            json!({"model": MODEL, "input": "Is the sky blue?", "text": flag_format(),
                    "temperature": 0, "max_output_tokens": 200, "stream": true}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let events = frames(&b);
    check_sequence(&events);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "response.output_text.delta")
        .count();
    assert!(deltas > 0, "{names:?}");
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]);
    let last = *names.last().expect("events");
    assert!(
        last == "response.completed" || last == "response.incomplete",
        "{last}"
    );
    expected.push(last);
    assert_eq!(names, expected);

    assert_eq!(events[0].1["response"]["status"], "in_progress");
    assert_eq!(events[0].1["response"]["output"], json!([]));
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().expect("delta"))
        .collect();
    let done = &events[deltas + 4].1;
    assert_eq!(done["text"].as_str().map(str::trim), Some(text.trim()));
    let item_id = &events[2].1["item"]["id"];
    assert!(
        events[3..deltas + 7]
            .iter()
            .all(|(_, d)| d["item_id"] == *item_id || d["item"]["id"] == *item_id)
    );
    // The final response is the stored one.
    let fin = &events.last().expect("events").1["response"];
    let (s, stored) = get(
        &app,
        &format!("/v1/responses/{}", fin["id"].as_str().expect("id")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&stored, fin);
    assert_eq!(fin["output"][0]["content"][0]["text"], done["text"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_function_call_has_argument_events() {
    let app = app();
    let (s, b) = call(
        &app,
        "POST",
        "/v1/responses",
        Some(
            json!({"model": MODEL, "input": "Weather in Paris?", "tools": [weather_tool()],
                    "tool_choice": "required", "temperature": 0, "max_output_tokens": 100,
                    "stream": true}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let events = frames(&b);
    check_sequence(&events);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let at = names
        .iter()
        .position(|n| *n == "response.function_call_arguments.delta")
        .expect("an arguments delta");
    assert_eq!(names[at - 1], "response.output_item.added");
    assert_eq!(events[at - 1].1["item"]["type"], "function_call");
    assert_eq!(names[at + 1], "response.function_call_arguments.done");
    assert_eq!(names[at + 2], "response.output_item.done");
    assert_eq!(*names.last().expect("events"), "response.completed");
    let args = events[at + 1].1["arguments"].as_str().expect("arguments");
    let parsed: Value = serde_json::from_str(args).expect("JSON arguments");
    assert!(parsed["city"].is_string());
    assert_eq!(events[at + 2].1["item"]["arguments"], args);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_and_delete_removes() {
    let app = app();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            quick(&app, json!(format!("hello {i}"))).await["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    // Newest first by default.
    let (s, l) = get(&app, "/v1/responses").await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert_eq!(l["object"], "list");
    let got: Vec<&str> = l["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    assert_eq!(l["has_more"], false);
    assert_eq!(l["first_id"], ids[2].as_str());
    assert_eq!(l["last_id"], ids[0].as_str());
    // Pages in ascending order.
    let (_, p1) = get(&app, "/v1/openai/v1/responses?order=asc&limit=2").await;
    let got: Vec<&str> = p1["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(got, [ids[0].as_str(), ids[1].as_str()]);
    assert_eq!(p1["has_more"], true);
    let (_, p2) = get(
        &app,
        &format!("/v1/responses?order=asc&limit=2&after={}", ids[1]),
    )
    .await;
    assert_eq!(p2["data"][0]["id"], ids[2].as_str());
    assert_eq!(p2["has_more"], false);
    let (_, m) = get(&app, "/v1/responses?model=other").await;
    assert_eq!(m["data"], json!([]));
    // Bad parameters.
    for (q, param) in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("order=up", "order"),
        ("after=resp_nope", "after"),
    ] {
        let (s, e) = get(&app, &format!("/v1/responses?{q}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {e}");
        assert_eq!(e["error"]["param"], param, "{q}");
    }
    // Delete.
    let (s, d) = json_call(&app, "DELETE", &format!("/v1/responses/{}", ids[1]), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        d,
        json!({"id": ids[1], "object": "response", "deleted": true})
    );
    let (s, _) = get(&app, &format!("/v1/responses/{}", ids[1])).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(&app, &format!("/v1/responses/{}/input_items", ids[1])).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = json_call(
        &app,
        "DELETE",
        &format!("/v1/openai/v1/responses/{}", ids[1]),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, l) = get(&app, "/v1/responses").await;
    assert_eq!(l["data"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_items_keep_roles_and_page() {
    let app = app();
    let v = quick(
        &app,
        json!([
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "again"}]},
        ]),
    )
    .await;
    let id = v["id"].as_str().expect("id");
    let (s, all) = get(&app, &format!("/v1/responses/{id}/input_items?order=asc")).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    let data = all["data"].as_array().expect("data");
    let roles: Vec<&str> = data.iter().filter_map(|i| i["role"].as_str()).collect();
    assert_eq!(roles, ["developer", "user", "assistant", "user"]);
    assert!(
        data.iter()
            .all(|i| i["id"].is_string() && i["type"] == "message")
    );
    assert_eq!(data[2]["content"][0]["type"], "output_text");
    assert_eq!(data[3]["content"][0]["text"], "again");
    let ids: Vec<&str> = data.iter().filter_map(|i| i["id"].as_str()).collect();
    // Newest first by default.
    let (_, desc) = get(&app, &format!("/v1/openai/v1/responses/{id}/input_items")).await;
    assert_eq!(desc["data"][0]["id"], ids[3]);
    // after / before / limit.
    let (_, p) = get(
        &app,
        &format!(
            "/v1/responses/{id}/input_items?order=asc&limit=2&after={}",
            ids[0]
        ),
    )
    .await;
    let got: Vec<&str> = p["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(got, [ids[1], ids[2]]);
    assert_eq!(p["has_more"], true);
    assert_eq!(p["first_id"], ids[1]);
    assert_eq!(p["last_id"], ids[2]);
    let (_, p) = get(
        &app,
        &format!("/v1/responses/{id}/input_items?order=asc&before={}", ids[2]),
    )
    .await;
    let got: Vec<&str> = p["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(got, [ids[0], ids[1]]);
    let (s, e) = get(&app, &format!("/v1/responses/{id}/input_items?after=nope")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["param"], "after");
    let (s, _) = get(&app, "/v1/responses/resp_nope/input_items").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaining_continues_and_store_false_is_not_kept() {
    let app = app();
    let first = quick(&app, json!("My name is Ada.")).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (s, v) = create(
        &app,
        json!({"model": MODEL, "input": "What is my name?", "previous_response_id": first,
               "max_output_tokens": 2, "temperature": 0, "store": false}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["previous_response_id"], first.as_str());
    assert_eq!(v["store"], false);
    // The chained prompt holds the first exchange too: it reads more tokens.
    let (_, stored_first) = get(&app, &format!("/v1/responses/{first}")).await;
    assert!(
        v["usage"]["input_tokens"].as_u64() > stored_first["usage"]["input_tokens"].as_u64(),
        "{v} {stored_first}"
    );
    let id = v["id"].as_str().expect("id");
    let (s, _) = get(&app, &format!("/v1/responses/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "store: false is not kept");
    let (s, e) = create(
        &app,
        json!({"model": MODEL, "input": "hi", "previous_response_id": id}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    assert_eq!(e["error"]["param"], "previous_response_id");
    assert!(error_message(&e).contains("store: false"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_their_param() {
    let app = app();
    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        (
            json!({"model": MODEL, "input": "x", "tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}),
            StatusCode::BAD_REQUEST,
            "tools[0]",
            "no vector store with id 'v'",
        ),
        (
            json!({"model": MODEL, "input": "x", "tools": [{"type": "computer_use_preview"}]}),
            StatusCode::BAD_REQUEST,
            "tools[0]",
            "unsupported tool type",
        ),
        (
            json!({"model": MODEL, "input": "x", "tools": [{"type": "function", "function": {"name": "f"}}]}),
            StatusCode::BAD_REQUEST,
            "tools[0]",
            "flat",
        ),
        (
            json!({"model": MODEL, "input": "x", "tools": [{"type": "mcp", "server_label": "s", "server_url": "stdio:rm -rf /"}]}),
            StatusCode::BAD_REQUEST,
            "tools[0]",
            "http",
        ),
        (
            json!({"model": MODEL, "input": "x", "tools": [{"type": "mcp", "server_label": "s", "server_url": "http://127.0.0.1:9/mcp", "require_approval": "always"}]}),
            StatusCode::BAD_REQUEST,
            "tools[0]",
            "approvals are not supported",
        ),
        (
            json!({"model": MODEL, "input": "x", "tools": [weather_tool(), weather_tool()]}),
            StatusCode::BAD_REQUEST,
            "tools[1]",
            "unique",
        ),
        (
            json!({"model": MODEL, "input": "x", "tools": [weather_tool()], "tool_choice": {"type": "function", "name": "other"}}),
            StatusCode::BAD_REQUEST,
            "tool_choice",
            "other",
        ),
        (
            json!({"model": MODEL, "input": "x", "tool_choice": "required"}),
            StatusCode::BAD_REQUEST,
            "tool_choice",
            "at least one tool",
        ),
        (
            json!({"model": MODEL, "input": "x", "tool_choice": "sometimes"}),
            StatusCode::BAD_REQUEST,
            "tool_choice",
            "sometimes",
        ),
        (
            json!({"model": MODEL, "input": []}),
            StatusCode::BAD_REQUEST,
            "input",
            "at least one",
        ),
        (
            json!({"model": MODEL, "input": 5}),
            StatusCode::BAD_REQUEST,
            "input",
            "string or a list",
        ),
        (
            json!({"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
            StatusCode::BAD_REQUEST,
            "input[0]",
            "input_image",
        ),
        (
            json!({"model": MODEL, "input": [{"role": "tool", "content": "x"}]}),
            StatusCode::BAD_REQUEST,
            "input[0]",
            "role",
        ),
        (
            json!({"model": MODEL, "input": [{"type": "item_reference", "id": "x"}]}),
            StatusCode::BAD_REQUEST,
            "input[0]",
            "item_reference",
        ),
        (
            json!({"model": MODEL, "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{nope"}]}),
            StatusCode::BAD_REQUEST,
            "input[0]",
            "not JSON",
        ),
        (
            json!({"model": MODEL, "input": "x", "temperature": 3}),
            StatusCode::BAD_REQUEST,
            "temperature",
            "between",
        ),
        (
            json!({"model": MODEL, "input": "x", "top_p": 0}),
            StatusCode::BAD_REQUEST,
            "top_p",
            "greater than 0",
        ),
        (
            json!({"model": MODEL, "input": "x", "max_output_tokens": 0}),
            StatusCode::BAD_REQUEST,
            "max_output_tokens",
            "at least 1",
        ),
        (
            json!({"model": MODEL, "input": "x", "max_infer_iters": 0}),
            StatusCode::BAD_REQUEST,
            "max_infer_iters",
            "1 to 100",
        ),
        (
            json!({"model": MODEL, "input": "x", "text": {"format": {"type": "yaml"}}}),
            StatusCode::BAD_REQUEST,
            "text.format",
            "json_schema",
        ),
        (
            json!({"model": MODEL, "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}),
            StatusCode::BAD_REQUEST,
            "text.format",
            "schema",
        ),
        (
            json!({"model": MODEL, "input": "x", "metadata": {"k": 1}}),
            StatusCode::BAD_REQUEST,
            "metadata",
            "string",
        ),
        (
            json!({"model": MODEL, "input": "x", "previous_response_id": "resp_nope"}),
            StatusCode::NOT_FOUND,
            "previous_response_id",
            "resp_nope",
        ),
        (
            json!({"model": "nope", "input": "x"}),
            StatusCode::NOT_FOUND,
            "model",
            "nope",
        ),
    ];
    for (body, status, param, needle) in cases {
        let (s, e) = create(&app, body.clone()).await;
        assert_eq!(s, status, "{body}: {e}");
        assert_eq!(e["error"]["param"], param, "{body}: {e}");
        assert!(error_message(&e).contains(needle), "{body}: {e}");
    }
    // A body without the required fields: the extractor's 400.
    let (s, e) = create(&app, json!({"input": "x"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(error_message(&e).contains("model"), "{e}");
    let (s, _) = get(&app, "/v1/responses/resp_nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_tools_become_their_call_items() {
    let app = app();
    // A forced code interpreter call runs here (in the sandbox, or fails to start where
    // there is none: then the item says failed); max_infer_iters 1 ends the turn after it.
    let (s, v) = create(
        &app,
        json!({"model": MODEL, "input": "Compute 6*7.", "temperature": 0, "max_output_tokens": 60,
               "tools": [{"type": "code_interpreter"}],
               "tool_choice": "required", "max_infer_iters": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The Response repeats the tool with the `container` OpenAI's type requires.
    assert_eq!(
        v["tools"][0],
        json!({"type": "code_interpreter", "container": {"type": "auto"}})
    );
    let ci = v["output"]
        .as_array()
        .expect("output")
        .iter()
        .find(|i| i["type"] == "code_interpreter_call")
        .unwrap_or_else(|| panic!("a code_interpreter_call item: {v}"));
    assert!(ci["id"].as_str().is_some_and(|i| i.starts_with("ci_")));
    assert_eq!(ci["container_id"], v["id"]);
    assert!(ci["code"].is_string(), "{ci}");
    assert_eq!(ci["outputs"][0]["type"], "logs");
    assert!(ci["outputs"][0]["logs"].is_string());
    assert!(
        ci["status"] == "completed" || ci["status"] == "failed",
        "{ci}"
    );

    // Web search without a Brave key: the call fails, and its item says so.
    let (s, v) = create(
        &app,
        json!({"model": MODEL, "input": "News?", "temperature": 0, "max_output_tokens": 60,
               "tools": [{"type": "web_search_preview"}],
               "tool_choice": {"type": "web_search_preview"}, "max_infer_iters": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ws = v["output"]
        .as_array()
        .expect("output")
        .iter()
        .find(|i| i["type"] == "web_search_call")
        .unwrap_or_else(|| panic!("a web_search_call item: {v}"));
    assert!(ws["id"].as_str().is_some_and(|i| i.starts_with("ws_")));
    assert_eq!(ws["action"]["type"], "search");
    assert!(ws["action"]["query"].is_string(), "{ws}");
    assert!(
        ws["status"] == "completed" || ws["status"] == "failed",
        "{ws}"
    );

    // An MCP server that does not answer: 502 before the turn starts.
    let (s, e) = create(
        &app,
        json!({"model": MODEL, "input": "x",
               "tools": [{"type": "mcp", "server_label": "s", "server_url": "http://127.0.0.1:9/mcp", "require_approval": "never"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    assert!(error_message(&e).contains("127.0.0.1:9"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_turn_is_an_error_or_a_failed_event_and_not_stored() {
    let app = app();
    // Longer than the tiny model's context: the first inference fails.
    let long = "word ".repeat(2000);
    let (s, e) = create(&app, json!({"model": MODEL, "input": long})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(error_message(&e).contains("context"), "{e}");
    let (s, b) = call(
        &app,
        "POST",
        "/v1/responses",
        Some(json!({"model": MODEL, "input": long, "stream": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let events = frames(&b);
    check_sequence(&events);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.failed"
        ]
    );
    let failed = &events[2].1["response"];
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("context")),
        "{failed}"
    );
    let (_, l) = get(&app, "/v1/responses").await;
    assert_eq!(l["data"], json!([]), "failed responses are not stored");
}
