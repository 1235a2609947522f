//! Stored chat completions over the router (no socket), on the tiny Llama 3.1-format model:
//! which requests are recorded (OpenAI `store`, every Llama Stack-path completion, streams
//! once finished, never failures), the list / get / messages / update / delete routes on
//! both path prefixes, their paging and their 4xx answers, and the retention limit.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::{MODEL, call, json_call};
use ferrollama_server::AppState;
use serde_json::{Value, json};

const OA: &str = "/v1/chat/completions";
const LS: &str = "/v1/openai/v1/chat/completions";

fn app() -> Arc<AppState> {
    common::tiny_app()
}

async fn get(app: &Arc<AppState>, path: &str) -> (StatusCode, Value) {
    json_call(app, "GET", path, None).await
}

/// A short, deterministic chat request.
fn chat(content: &str) -> Value {
    json!({"model": MODEL, "messages": [{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": content}],
           "max_tokens": 3, "temperature": 0, "ignore_eos": true})
}

async fn create(app: &Arc<AppState>, path: &str, body: Value) -> Value {
    let (s, v) = json_call(app, "POST", path, Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// A stored row put straight into the database (no generation): for paging tests.
fn put(app: &AppState, id: &str, created: i64, model: &str) {
    let completion = json!({"id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": id}, "finish_reason": "stop"}]});
    let messages = [json!({"role": "user", "content": format!("q {id}")})];
    app.agents
        .db
        .put_chat_completion(id, created, model, &completion, &messages)
        .expect("put");
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect()
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_route_stores_only_with_store_true() {
    let app = app();
    // Not stored: no `store`, and `store: false`.
    create(&app, OA, chat("a")).await;
    let mut off = chat("b");
    off["store"] = json!(false);
    create(&app, OA, off).await;
    let (s, v) = get(&app, OA).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], json!([]), "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], Value::Null);

    let mut on = chat("c");
    on["store"] = json!(true);
    on["metadata"] = json!({"topic": "test"});
    let c = create(&app, OA, on).await;
    assert!(
        c.get("metadata").is_none(),
        "the answer itself is unchanged: {c}"
    );
    let (s, v) = get(&app, OA).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ids(&v), vec![c["id"].as_str().expect("id")]);
    let item = &v["data"][0];
    assert_eq!(v["first_id"], c["id"]);
    assert_eq!(v["last_id"], c["id"]);
    // The stored object is the answer as returned, plus metadata and the messages as sent.
    assert_eq!(item["choices"], c["choices"]);
    assert_eq!(item["usage"], c["usage"]);
    assert_eq!(item["created"], c["created"]);
    assert_eq!(item["object"], "chat.completion");
    assert_eq!(item["metadata"], json!({"topic": "test"}));
    assert_eq!(
        item["input_messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "c"}])
    );
    // The Llama Stack path lists the same store.
    let (_, ls) = get(&app, LS).await;
    assert_eq!(ls["data"], v["data"]);
    // An empty list's edges: null for OpenAI, "" where llama-stack-client expects strings.
    let (_, v) = get(&app, &format!("{OA}?model=none")).await;
    assert_eq!(
        (&v["first_id"], &v["last_id"]),
        (&Value::Null, &Value::Null)
    );
    let (_, v) = get(&app, &format!("{LS}?model=none")).await;
    assert_eq!((&v["first_id"], &v["last_id"]), (&json!(""), &json!("")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_stack_route_stores_every_completion_and_failures_none() {
    let app = app();
    let c = create(&app, LS, chat("x")).await;
    // A failed request (unknown model; bad parameter) records nothing.
    let mut bad = chat("y");
    bad["model"] = json!("nope");
    let (s, _) = json_call(&app, "POST", LS, Some(bad)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let mut bad = chat("z");
    bad["temperature"] = json!(5);
    bad["store"] = json!(true);
    let (s, _) = json_call(&app, "POST", OA, Some(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, v) = get(&app, LS).await;
    assert_eq!(ids(&v), vec![c["id"].as_str().expect("id")]);
    // Wrong shapes of `store` and `metadata` are 400s before any generation.
    for (field, value) in [
        ("store", json!("yes")),
        ("metadata", json!(["a"])),
        ("metadata", json!({"k": 1})),
        ("metadata", json!({"k": "v".repeat(513)})),
    ] {
        let mut b = chat("w");
        b[field] = value;
        b["store"] = if field == "store" {
            b["store"].clone()
        } else {
            json!(true)
        };
        let (s, e) = json_call(&app, "POST", OA, Some(b)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{field}: {e}");
        assert_eq!(e["error"]["param"], field, "{e}");
    }
    let (_, v) = get(&app, OA).await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_completions_are_stored_once_finished() {
    let app = app();
    for (path, store) in [(OA, json!(true)), (LS, Value::Null), (OA, json!(false))] {
        let mut b = chat("stream me");
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
        b["store"] = store;
        let (s, body) = call(&app, "POST", path, Some(b)).await;
        assert_eq!(s, StatusCode::OK);
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(text.contains("chat.completion.chunk"), "{text}");
    }
    let (_, v) = get(&app, &format!("{OA}?order=asc")).await;
    let data = v["data"].as_array().expect("data");
    assert_eq!(
        data.len(),
        2,
        "store:true on /v1 and everything on the Llama Stack path: {v}"
    );
    for c in data {
        // Assembled as the non-streaming answer would be.
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(c["model"], MODEL);
        assert_eq!(c["choices"][0]["message"]["role"], "assistant");
        assert!(c["choices"][0]["message"]["content"].is_string(), "{c}");
        assert_eq!(c["choices"][0]["finish_reason"], "length");
        assert_eq!(c["usage"]["completion_tokens"], 3);
        assert!(
            c["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("chatcmpl-"))
        );
        assert_eq!(c["input_messages"][1]["content"], "stream me");
    }
    // The streamed content equals what was stored.
    let mut b = chat("again");
    b["stream"] = json!(true);
    b["store"] = json!(true);
    let (_, body) = call(&app, "POST", OA, Some(b)).await;
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    let mut content = String::new();
    let mut id = String::new();
    for line in text.lines() {
        let Some(d) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(chunk) = serde_json::from_str::<Value>(d) else {
            continue;
        };
        id = chunk["id"].as_str().unwrap_or_default().to_owned();
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            content.push_str(t);
        }
    }
    let (s, c) = get(&app, &format!("{OA}/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["choices"][0]["message"]["content"], content.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_orders_and_filters_by_model() {
    let app = app();
    for i in 0..5 {
        put(
            &app,
            &format!("c{i}"),
            100 + i,
            if i % 2 == 0 { "even" } else { "odd" },
        );
    }
    let (_, v) = get(&app, OA).await;
    assert_eq!(
        ids(&v),
        ["c4", "c3", "c2", "c1", "c0"],
        "newest first by default"
    );
    let (_, v) = get(&app, &format!("{OA}?limit=2")).await;
    assert_eq!(ids(&v), ["c4", "c3"]);
    assert_eq!(v["has_more"], true);
    assert_eq!(v["first_id"], "c4");
    assert_eq!(v["last_id"], "c3");
    let (_, v) = get(&app, &format!("{OA}?limit=2&after=c3")).await;
    assert_eq!(ids(&v), ["c2", "c1"]);
    let (_, v) = get(&app, &format!("{OA}?limit=2&after=c1")).await;
    assert_eq!(ids(&v), ["c0"]);
    assert_eq!(v["has_more"], false);
    let (_, v) = get(&app, &format!("{LS}?order=asc&limit=3")).await;
    assert_eq!(ids(&v), ["c0", "c1", "c2"]);
    assert_eq!(v["has_more"], true);
    let (_, v) = get(&app, &format!("{LS}?order=asc&after=c2")).await;
    assert_eq!(ids(&v), ["c3", "c4"]);
    let (_, v) = get(&app, &format!("{OA}?model=odd")).await;
    assert_eq!(ids(&v), ["c3", "c1"]);
    let (_, v) = get(&app, &format!("{OA}?model=even&order=asc&limit=1&after=c0")).await;
    assert_eq!(ids(&v), ["c2"]);
    let (_, v) = get(&app, &format!("{OA}?model=none")).await;
    assert_eq!(ids(&v), Vec::<String>::new());
    assert_eq!(v["data"][0]["input_messages"], Value::Null);
    let (_, v) = get(&app, &format!("{OA}?limit=100")).await;
    assert_eq!(
        v["data"][0]["input_messages"],
        json!([{"role": "user", "content": "q c4"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_list_queries_are_400s_naming_the_parameter() {
    let app = app();
    put(&app, "c0", 1, MODEL);
    for (q, param) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("order=up", "order"),
        ("after=nope", "after"),
        ("metadata%5Bk%5D=v", "metadata"),
    ] {
        for base in [OA, LS] {
            let (s, v) = get(&app, &format!("{base}?{q}")).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
            assert_eq!(v["error"]["param"], param, "{q}: {v}");
            assert!(!message(&v).is_empty());
        }
        let (s, v) = get(&app, &format!("{OA}/c0/messages?{q}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "messages {q}: {v}");
    }
    let (_, v) = get(&app, &format!("{OA}?after=nope")).await;
    assert!(message(&v).contains("nope"), "{v}");
    let (s, _) = get(&app, &format!("{OA}?limit=1&limit=100")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_messages_update_and_delete_one() {
    let app = app();
    let mut b = chat("hello");
    b["store"] = json!(true);
    b["messages"] = json!([
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "u1"}]},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2", "id": "mine"}
    ]);
    let c = create(&app, OA, b).await;
    let id = c["id"].as_str().expect("id").to_owned();
    for base in [OA, LS] {
        let (s, v) = get(&app, &format!("{base}/{id}")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["id"], id.as_str());
        assert_eq!(v["choices"], c["choices"]);
        assert_eq!(
            v["input_messages"][1]["content"],
            json!([{"type": "text", "text": "u1"}])
        );
    }
    // Messages: conversation order by default, each with an id (its own, else `{id}-{n}`).
    let (s, v) = get(&app, &format!("{OA}/{id}/messages")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(
        ids(&v),
        [
            format!("{id}-0"),
            format!("{id}-1"),
            format!("{id}-2"),
            "mine".into()
        ]
    );
    assert_eq!(v["data"][0]["content"], "s");
    assert_eq!(v["has_more"], false);
    let (_, v) = get(&app, &format!("{LS}/{id}/messages?limit=2")).await;
    assert_eq!(ids(&v), [format!("{id}-0"), format!("{id}-1")]);
    assert_eq!(v["has_more"], true);
    let after = v["last_id"].as_str().expect("last_id").to_owned();
    let (_, v) = get(&app, &format!("{OA}/{id}/messages?after={after}")).await;
    assert_eq!(ids(&v), [format!("{id}-2"), "mine".into()]);
    let (_, v) = get(&app, &format!("{OA}/{id}/messages?order=desc&limit=3")).await;
    assert_eq!(
        ids(&v),
        ["mine".into(), format!("{id}-2"), format!("{id}-1")]
    );

    // Update: metadata only, validated; the listing shows it.
    let (s, v) = json_call(
        &app,
        "POST",
        &format!("{OA}/{id}"),
        Some(json!({"metadata": {"k": "v"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["metadata"], json!({"k": "v"}));
    let (_, v) = get(&app, OA).await;
    assert_eq!(v["data"][0]["metadata"], json!({"k": "v"}));
    let (s, _) = json_call(
        &app,
        "POST",
        &format!("{OA}/{id}"),
        Some(json!({"metadata": 3})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = json_call(
        &app,
        "POST",
        &format!("{OA}/missing"),
        Some(json!({"metadata": {}})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    // Delete, then everything about it is a 404.
    let (s, v) = json_call(&app, "DELETE", &format!("{OA}/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({"id": id, "object": "chat.completion.deleted", "deleted": true})
    );
    for (method, path) in [
        ("GET", format!("{OA}/{id}")),
        ("GET", format!("{LS}/{id}")),
        ("GET", format!("{OA}/{id}/messages")),
        ("DELETE", format!("{OA}/{id}")),
        ("DELETE", format!("{LS}/{id}")),
    ] {
        let (s, v) = json_call(&app, method, &path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "not_found", "{v}");
        assert!(message(&v).contains(&id), "{v}");
    }
    let (_, v) = get(&app, OA).await;
    assert_eq!(v["data"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest() {
    let app = app();
    const N: usize = 3;
    app.agents.db.set_retention(N, 0);
    let mut made = Vec::new();
    for i in 0..N + 2 {
        let c = create(&app, LS, chat(&format!("m{i}"))).await;
        made.push(c["id"].as_str().expect("id").to_owned());
    }
    let (_, v) = get(&app, &format!("{OA}?order=asc")).await;
    assert_eq!(ids(&v), made[2..], "the two oldest are gone");
    let (s, _) = get(&app, &format!("{OA}/{}", made[0])).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
