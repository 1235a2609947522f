//! Retrieval inside the agent loop: `builtin::rag`'s `knowledge_search` in a Llama Stack
//! agent turn and the Responses `file_search` tool, both searching vector stores with the
//! real all-MiniLM-L6-v2 (the tiny chat model is forced to call the tool).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::{MODEL, json_call, tiny_app_with_embeddings};
use ferrollama_server::AppState;
use serde_json::{Value, json};

async fn kb(app: &Arc<AppState>) {
    let (s, v) = json_call(
        app,
        "POST",
        "/v1/vector-dbs",
        Some(json!({"vector_db_id": "kb", "embedding_model": "all-MiniLM-L6-v2"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = json_call(app, "POST", "/v1/vector-io/insert", Some(json!({"vector_db_id": "kb", "chunks": [
        {"content": "The capital of Australia is Canberra.", "metadata": {"document_id": "geo", "token_count": 9}},
        {"content": "Honey never spoils when stored sealed.", "metadata": {"document_id": "food", "token_count": 8}},
    ]}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn an_agent_turn_runs_knowledge_search() {
    let app = tiny_app_with_embeddings();
    kb(&app).await;
    let config = json!({"model": MODEL, "instructions": "Answer from the knowledge base.",
        "toolgroups": [{"name": "builtin::rag/knowledge_search", "args": {"vector_db_ids": ["kb"]}}],
        "tool_config": {"tool_choice": "required"}, "max_infer_iters": 1,
        "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 24}});
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/agents",
        Some(json!({"agent_config": config})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let a = v["agent_id"].as_str().unwrap().to_string();
    let (_, v) = json_call(
        &app,
        "POST",
        &format!("/v1/agents/{a}/session"),
        Some(json!({"session_name": "t"})),
    )
    .await;
    let sid = v["session_id"].as_str().unwrap().to_string();
    let (s, turn) = json_call(
        &app,
        "POST",
        &format!("/v1/agents/{a}/session/{sid}/turn"),
        Some(json!({"messages": [{"role": "user", "content": "What is the capital of Australia?"}], "stream": false})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{turn}");
    let ex = &turn["steps"][1];
    assert_eq!(ex["step_type"], "tool_execution", "{turn}");
    assert_eq!(ex["tool_calls"][0]["tool_name"], "knowledge_search");
    // The tiny model writes its own query (often an empty one, which the search refuses).
    let query = ex["tool_calls"][0]["arguments"]["query"]
        .as_str()
        .unwrap_or_default();
    let out = ex["tool_responses"][0]["content"]
        .as_str()
        .unwrap_or_default();
    if query.trim().is_empty() {
        assert_eq!(out, "error: invalid arguments: the query is empty", "{ex}");
    } else {
        assert!(
            out.starts_with(
                "knowledge_search tool found 2 chunks:\nBEGIN of knowledge_search tool results.\n"
            ),
            "{out}"
        );
    }
    // The same tool through the tool runtime, with a real query.
    let (s, r) = json_call(
        &app,
        "POST",
        "/v1/tool-runtime/invoke",
        Some(json!({"tool_name": "knowledge_search", "kwargs": {"query": "What is the capital of Australia?", "vector_db_ids": ["kb"]}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let out = r["content"].as_str().unwrap_or_default();
    assert!(out.starts_with("knowledge_search tool found 2 chunks:\nBEGIN of knowledge_search tool results.\nResult 1\nContent: The capital of Australia is Canberra.\nMetadata: {'document_id': 'geo', 'token_count': 9}\n"), "{out}");
    assert!(out.ends_with("\"What is the capital of Australia?\". Use them as supporting information only in answering this query.\n"), "{out}");
    assert_eq!(r["metadata"]["document_ids"], json!(["geo", "food"]));
    // What Responses' file_search_call items carry.
    let res = &r["metadata"]["results"][0];
    assert_eq!(
        (&res["filename"], &res["text"]),
        (
            &json!("geo"),
            &json!("The capital of Australia is Canberra.")
        ),
        "{r}"
    );
    assert!(res["score"].as_f64().unwrap() > 0.5, "{r}");
    // Without vector_db_ids the agent is refused.
    let bad = json!({"model": MODEL, "instructions": "x", "toolgroups": ["builtin::rag"]});
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/agents",
        Some(json!({"agent_config": bad})),
    )
    .await;
    let (s2, v2) = if s == StatusCode::OK {
        let a = v["agent_id"].as_str().unwrap().to_string();
        let (_, ss) = json_call(
            &app,
            "POST",
            &format!("/v1/agents/{a}/session"),
            Some(json!({"session_name": "t"})),
        )
        .await;
        let sid = ss["session_id"].as_str().unwrap().to_string();
        json_call(
            &app,
            "POST",
            &format!("/v1/agents/{a}/session/{sid}/turn"),
            Some(json!({"messages": [{"role": "user", "content": "x"}], "stream": false})),
        )
        .await
    } else {
        (s, v)
    };
    assert_eq!(s2, StatusCode::BAD_REQUEST, "{v2}");
    assert!(
        v2["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("vector_db_ids"),
        "{v2}"
    );
}

#[tokio::test]
async fn responses_file_search_returns_a_file_search_call_with_results() {
    let app = tiny_app_with_embeddings();
    kb(&app).await;
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/responses",
        Some(json!({"model": MODEL, "input": "Does honey spoil?", "temperature": 0, "max_output_tokens": 40,
                    "tools": [{"type": "file_search", "vector_store_ids": ["kb"], "max_num_results": 1}],
                    "tool_choice": "required", "max_infer_iters": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let fs = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "file_search_call")
        .unwrap_or_else(|| panic!("{v}"));
    assert!(fs["id"].as_str().unwrap().starts_with("fs_"));
    // The tiny model writes the query; an empty one fails the search (and says so).
    let query = fs["queries"][0].as_str().unwrap();
    if query.trim().is_empty() {
        assert_eq!(
            (&fs["status"], &fs["results"]),
            (&json!("failed"), &Value::Null),
            "{fs}"
        );
    } else {
        assert_eq!(fs["status"], "completed", "{fs}");
        let results: &Vec<Value> = fs["results"].as_array().unwrap();
        assert_eq!(results.len(), 1, "{fs}");
        assert!(
            results[0]["text"].is_string() && results[0]["score"].is_number(),
            "{fs}"
        );
    }
    let (s, e) = json_call(
        &app,
        "POST",
        "/v1/responses",
        Some(json!({"model": MODEL, "input": "x", "tools": [{"type": "file_search", "vector_store_ids": ["nope"]}]})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no vector store with id 'nope'"),
        "{e}"
    );
}
