//! Llama Stack retrieval through the router with the real all-MiniLM-L6-v2: vector-dbs,
//! vector-io insert (computed and precomputed embeddings) and query, and the RAG tool
//! (text, data URLs and file ids; Llama Stack's context format and template checks).
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use base64::Engine as _;
use common::{Backend, json_call, tiny_app_with_embeddings_on, upload_file};
use serde_json::{Value, json};

/// Each test body runs on both storage backends: `on_sqlite::NAME` and `on_postgres::NAME`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test] async fn $name() { if let Some(app) = super::tiny_app_with_embeddings_on(super::Backend::Sqlite) { super::$name(app).await } } )* }
        mod on_postgres { $( #[tokio::test] async fn $name() { if let Some(app) = super::tiny_app_with_embeddings_on(super::Backend::Postgres) { super::$name(app).await } } )* }
    };
}

both!(vector_dbs_and_vector_io, rag_tool_insert_and_query,);

async fn vector_dbs_and_vector_io(app: std::sync::Arc<ferrollama_server::AppState>) {
    let (s, v) = json_call(&app, "POST", "/v1/vector-dbs", Some(json!({"vector_db_id": "kb", "embedding_model": "all-MiniLM-L6-v2", "embedding_dimension": 384}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["identifier"].as_str(),
            v["type"].as_str(),
            v["embedding_dimension"].as_u64()
        ),
        (Some("kb"), Some("vector_db"), Some(384))
    );
    // Registering again is idempotent; the list and get see it.
    let (s, _) = json_call(
        &app,
        "POST",
        "/v1/vector-dbs",
        Some(json!({"vector_db_id": "kb", "embedding_model": "all-MiniLM-L6-v2"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, l) = json_call(&app, "GET", "/v1/vector-dbs", None).await;
    assert_eq!(l["data"].as_array().unwrap().len(), 1);
    // Insert: two chunks embedded here, one with its own vector (that of a third text).
    let (_, e) = json_call(
        &app,
        "POST",
        "/v1/inference/embeddings",
        Some(
            json!({"model_id": "all-MiniLM-L6-v2", "contents": ["The Eiffel Tower is in Paris."]}),
        ),
    )
    .await;
    let tower = e["embeddings"][0].clone();
    let (s, v) = json_call(&app, "POST", "/v1/vector-io/insert", Some(json!({"vector_db_id": "kb", "chunks": [
        {"content": "Penguins live in the southern hemisphere.", "metadata": {"document_id": "birds"}},
        {"content": {"type": "text", "text": "Photosynthesis turns light into chemical energy."}, "metadata": {"document_id": "plants"}},
        {"content": "Landmark fact.", "metadata": {"document_id": "paris"}, "embedding": tower},
    ]}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, q) = json_call(&app, "POST", "/v1/vector-io/query", Some(json!({"vector_db_id": "kb", "query": "where is the Eiffel Tower?", "params": {"max_chunks": 2}}))).await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert_eq!(q["chunks"][0]["metadata"]["document_id"], "paris", "{q}");
    assert_eq!(q["chunks"][0]["content"], "Landmark fact.");
    assert_eq!(q["scores"].as_array().unwrap().len(), 2);
    let (_, q) = json_call(
        &app,
        "POST",
        "/v1/vector-io/query",
        Some(json!({"vector_db_id": "kb", "query": "penguins", "params": {"mode": "keyword"}})),
    )
    .await;
    assert_eq!(q["chunks"][0]["metadata"]["document_id"], "birds", "{q}");
    // Refusals: wrong dimension, unknown db, empty query, image content.
    for (path, body, status, want) in [
        (
            "/v1/vector-io/insert",
            json!({"vector_db_id": "kb", "chunks": [{"content": "x", "metadata": {}, "embedding": [0.1, 0.2]}]}),
            StatusCode::BAD_REQUEST,
            "holds 384-dimension",
        ),
        (
            "/v1/vector-io/insert",
            json!({"vector_db_id": "nope", "chunks": [{"content": "x", "metadata": {}}]}),
            StatusCode::NOT_FOUND,
            "no vector store",
        ),
        (
            "/v1/vector-io/insert",
            json!({"vector_db_id": "kb", "chunks": []}),
            StatusCode::BAD_REQUEST,
            "must not be empty",
        ),
        (
            "/v1/vector-io/query",
            json!({"vector_db_id": "kb", "query": " "}),
            StatusCode::BAD_REQUEST,
            "must not be empty",
        ),
        (
            "/v1/vector-io/query",
            json!({"vector_db_id": "kb", "query": {"type": "image", "image": {}}}),
            StatusCode::BAD_REQUEST,
            "only text",
        ),
        (
            "/v1/vector-dbs",
            json!({"vector_db_id": "kb2", "embedding_model": "all-MiniLM-L6-v2", "embedding_dimension": 768}),
            StatusCode::BAD_REQUEST,
            "not 768",
        ),
    ] {
        let (s, v) = json_call(&app, "POST", path, Some(body.clone())).await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(want),
            "{body}: {v}"
        );
    }
    // Nothing was lost; unregister removes it.
    let (_, q) = json_call(
        &app,
        "POST",
        "/v1/vector-io/query",
        Some(
            json!({"vector_db_id": "kb", "query": "plants and light", "params": {"max_chunks": 3}}),
        ),
    )
    .await;
    assert_eq!(q["chunks"].as_array().unwrap().len(), 3);
    let (s, _) = json_call(&app, "DELETE", "/v1/vector-dbs/kb", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = json_call(&app, "GET", "/v1/vector-dbs/kb", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn rag_tool_insert_and_query(app: std::sync::Arc<ferrollama_server::AppState>) {
    json_call(
        &app,
        "POST",
        "/v1/vector-dbs",
        Some(json!({"vector_db_id": "docs", "embedding_model": "all-MiniLM-L6-v2"})),
    )
    .await;
    let html = "<html><body><h1>Trains</h1><p>The Shinkansen is a high-speed railway in Japan.</p><script>alert(1)</script></body></html>";
    let data_url = format!(
        "data:text/html;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(html)
    );
    let file = upload_file(
        &app,
        "cooking.md",
        b"# Cooking\n\nRisotto needs arborio rice and patient stirring.",
    )
    .await;
    let (s, v) = json_call(&app, "POST", "/v1/tool-runtime/rag-tool/insert", Some(json!({"vector_db_id": "docs", "chunk_size_in_tokens": 128, "documents": [
        {"document_id": "space", "content": "The Moon orbits the Earth every 27 days.", "metadata": {"source": "almanac"}},
        {"document_id": "trains", "content": data_url, "mime_type": "text/html"},
        {"document_id": "cooking", "content": file},
    ]}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, r) = json_call(&app, "POST", "/v1/tool-runtime/rag-tool/query", Some(json!({"content": "fast trains in Japan", "vector_db_ids": ["docs"], "query_config": {"max_chunks": 2, "max_tokens_in_context": 4096, "chunk_template": "Result {index}\nContent: {chunk.content}\nMetadata: {metadata}\n", "query_generator_config": {"type": "default", "separator": " "}}}))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let parts: Vec<&str> = r["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        parts[0],
        "knowledge_search tool found 2 chunks:\nBEGIN of knowledge_search tool results.\n"
    );
    assert!(
        parts[1].starts_with("Result 1\nContent: Trains\nThe Shinkansen"),
        "{parts:?}"
    );
    assert!(
        parts[1].contains("'document_id': 'trains'") && !parts[1].contains("alert"),
        "{parts:?}"
    );
    assert_eq!(
        parts[parts.len() - 2],
        "END of knowledge_search tool results.\n"
    );
    assert!(parts[parts.len() - 1].contains("\"fast trains in Japan\""));
    assert_eq!(r["metadata"]["document_ids"][0], "trains");
    // max_tokens_in_context cuts: one chunk's tokens exceed 5.
    let (_, r) = json_call(&app, "POST", "/v1/tool-runtime/rag-tool/query", Some(json!({"content": "rice", "vector_db_ids": ["docs"], "query_config": {"max_chunks": 3, "max_tokens_in_context": 5, "chunk_template": "{index}: {chunk.content}", "query_generator_config": {"type": "default", "separator": " "}}}))).await;
    assert_eq!(r["content"].as_array().unwrap().len(), 3, "{r}");
    for (body, want) in [
        (
            json!({"content": "x", "vector_db_ids": ["docs"], "query_config": {"chunk_template": "no placeholders", "max_chunks": 1, "max_tokens_in_context": 10, "query_generator_config": {"type": "default", "separator": " "}}}),
            "{chunk.content}",
        ),
        (
            json!({"content": "x", "vector_db_ids": ["docs"], "query_config": {"chunk_template": "{index} {chunk.content} {chunk.id}", "max_chunks": 1, "max_tokens_in_context": 10, "query_generator_config": {"type": "default", "separator": " "}}}),
            "chunk.id",
        ),
        (
            json!({"content": "x", "vector_db_ids": []}),
            "must not be empty",
        ),
    ] {
        let (s, v) = json_call(
            &app,
            "POST",
            "/v1/tool-runtime/rag-tool/query",
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(want),
            "{body}: {v}"
        );
    }
    for (doc, want) in [
        (
            json!({"document_id": "z", "content": "data:application/zip;base64,UEsDBAoAAAAAAA=="}),
            "ZIP",
        ),
        (
            json!({"document_id": "f", "content": "file-000000000000000000000000"}),
            "no file with id",
        ),
        (json!({"content": "no id"}), "document_id is required"),
    ] {
        let (s, v) = json_call(&app, "POST", "/v1/tool-runtime/rag-tool/insert", Some(json!({"vector_db_id": "docs", "chunk_size_in_tokens": 128, "documents": [doc.clone()]}))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{doc}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(want),
            "{doc}: {v}"
        );
    }
    let (_, q): (_, Value) = json_call(
        &app,
        "POST",
        "/v1/vector-io/query",
        Some(json!({"vector_db_id": "docs", "query": "moon", "params": {"max_chunks": 1}})),
    )
    .await;
    assert_eq!(q["chunks"][0]["metadata"]["source"], "almanac", "{q}");
}
