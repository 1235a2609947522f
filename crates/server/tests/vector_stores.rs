//! Vector stores through the router with the real all-MiniLM-L6-v2: upload → attach →
//! poll until completed → search finds the right document (vector, keyword, hybrid),
//! filters and thresholds, file content, attributes, detaching, listing, and every bad
//! input answered with a clear 4xx that loses nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{Backend, json_call, tiny_app_with_embeddings_on, upload_file};
use ferrollama_server::AppState;
use serde_json::{Value, json};

/// Each test body runs on both storage backends: `on_sqlite::NAME` and `on_postgres::NAME`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test] async fn $name() { if let Some(app) = super::tiny_app_with_embeddings_on(super::Backend::Sqlite) { super::$name(app).await } } )* }
        mod on_postgres { $( #[tokio::test] async fn $name() { if let Some(app) = super::tiny_app_with_embeddings_on(super::Backend::Postgres) { super::$name(app).await } } )* }
    };
}

both!(
    ingest_then_search_finds_the_right_document,
    bad_files_fail_with_a_reason_and_lists_filter_by_status,
    bad_requests_are_clear_4xx_and_lose_nothing,
    pdf_html_json_are_indexed_and_disguised_or_bomb_files_fail,
);

const DOCS: [(&str, &str); 4] = [
    (
        "volcano.txt",
        "Volcanoes form where magma from the Earth's mantle rises through the crust. Eruptions can be explosive, throwing ash high into the atmosphere, or effusive, with lava flowing slowly down the slopes.",
    ),
    (
        "baking.txt",
        "To bake sourdough bread, feed the starter the night before, mix flour, water and salt, let the dough rise for several hours, shape the loaf and bake it in a very hot oven.",
    ),
    (
        "tennis.txt",
        "In tennis a match is played in sets; a player must win six games to take a set, and the scoring within a game goes fifteen, thirty, forty, game.",
    ),
    (
        "rust.txt",
        "The Rust borrow checker enforces that a value has either one mutable reference or any number of shared references at a time, which rules out data races at compile time.",
    ),
];

async fn wait_done(app: &Arc<AppState>, vs: &str, file: &str) -> Value {
    let start = Instant::now();
    loop {
        let (s, f) = json_call(
            app,
            "GET",
            &format!("/v1/vector_stores/{vs}/files/{file}"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{f}");
        if f["status"] != "in_progress" {
            return f;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{file} still in progress"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A store with the four documents, attributes {topic, year}.
async fn corpus(app: &Arc<AppState>) -> (String, Vec<String>) {
    let mut ids = Vec::new();
    for (name, text) in DOCS {
        ids.push(upload_file(app, name, text.as_bytes()).await);
    }
    let (s, vs) = json_call(
        app,
        "POST",
        "/v1/vector_stores",
        Some(json!({"name": "facts", "metadata": {"team": "qa"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{vs}");
    assert_eq!(vs["object"], "vector_store");
    let vs_id = vs["id"].as_str().unwrap().to_string();
    for (i, id) in ids.iter().enumerate() {
        let (s, f) = json_call(
            app,
            "POST",
            &format!("/v1/vector_stores/{vs_id}/files"),
            Some(json!({"file_id": id, "attributes": {"topic": DOCS[i].0.trim_end_matches(".txt"), "year": 2020 + i}})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{f}");
        assert_eq!(f["object"], "vector_store.file");
    }
    for id in &ids {
        let f = wait_done(app, &vs_id, id).await;
        assert_eq!(f["status"], "completed", "{f}");
        assert!(f["usage_bytes"].as_u64().unwrap() > 0);
    }
    (vs_id, ids)
}

async fn search(app: &Arc<AppState>, vs: &str, body: Value) -> (StatusCode, Value) {
    json_call(
        app,
        "POST",
        &format!("/v1/vector_stores/{vs}/search"),
        Some(body),
    )
    .await
}

fn top_file(v: &Value) -> String {
    v["data"][0]["filename"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn ingest_then_search_finds_the_right_document(
    app: std::sync::Arc<ferrollama_server::AppState>,
) {
    let (vs, ids) = corpus(&app).await;
    let (s, v) = json_call(
        &app,
        "GET",
        &format!("/v1/openai/v1/vector_stores/{vs}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["file_counts"]["completed"], 4);
    assert_eq!(v["file_counts"]["total"], 4);
    assert_eq!(v["status"], "completed");
    for (q, want) in [
        ("how do lava and ash come out of a mountain?", "volcano.txt"),
        ("recipe for making bread at home", "baking.txt"),
        ("how is a game of tennis scored", "tennis.txt"),
        (
            "memory safety and references in a programming language",
            "rust.txt",
        ),
    ] {
        let (s, r) = search(&app, &vs, json!({"query": q})).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["object"], "vector_store.search_results.page");
        assert_eq!(top_file(&r), want, "{q}: {r}");
        let score = r["data"][0]["score"].as_f64().unwrap();
        assert!(score > 0.2 && score <= 1.0, "{score}");
        assert_eq!(r["data"][0]["content"][0]["type"], "text");
    }
    // Keyword (BM25) and hybrid.
    let (_, r) = search(
        &app,
        &vs,
        json!({"query": "sourdough starter", "search_mode": "keyword"}),
    )
    .await;
    assert_eq!(top_file(&r), "baking.txt", "{r}");
    assert_eq!(
        r["data"].as_array().unwrap().len(),
        1,
        "only one document has the words: {r}"
    );
    let (_, r) = search(
        &app,
        &vs,
        json!({"query": "borrow checker data races", "search_mode": "hybrid"}),
    )
    .await;
    assert_eq!(top_file(&r), "rust.txt", "{r}");
    // Filters on attributes, compound and comparison.
    let (_, r) = search(
        &app,
        &vs,
        json!({"query": "how do lava and ash come out of a mountain?", "filters": {"type": "and", "filters": [
            {"type": "gte", "key": "year", "value": 2021}, {"type": "ne", "key": "topic", "value": "rust"}]}}),
    )
    .await;
    let names: Vec<&str> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["filename"].as_str().unwrap())
        .collect();
    assert!(
        !names.is_empty() && !names.contains(&"volcano.txt") && !names.contains(&"rust.txt"),
        "{names:?}"
    );
    // A threshold above every score returns nothing; max_num_results caps.
    let (_, r) = search(
        &app,
        &vs,
        json!({"query": "bread", "ranking_options": {"score_threshold": 0.99}}),
    )
    .await;
    assert_eq!(r["data"].as_array().unwrap().len(), 0, "{r}");
    let (_, r) = search(&app, &vs, json!({"query": "bread", "max_num_results": 2})).await;
    assert_eq!(r["data"].as_array().unwrap().len(), 2, "{r}");
    // Content: the chunk texts.
    let (s, c) = json_call(
        &app,
        "GET",
        &format!("/v1/vector_stores/{vs}/files/{}/content", ids[1]),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["data"][0]["text"], DOCS[1].1);
    // Attributes update, then a filter sees it.
    let (s, f) = json_call(
        &app,
        "POST",
        &format!("/v1/vector_stores/{vs}/files/{}", ids[0]),
        Some(json!({"attributes": {"topic": "geology", "year": 1999}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{f}");
    let (_, r) = search(
        &app,
        &vs,
        json!({"query": "mountain", "filters": {"type": "eq", "key": "topic", "value": "geology"}}),
    )
    .await;
    assert_eq!(top_file(&r), "volcano.txt", "{r}");
    assert_eq!(r["data"].as_array().unwrap().len(), 1);
    // Detach: its chunks go, the file stays.
    let (s, d) = json_call(
        &app,
        "DELETE",
        &format!("/v1/vector_stores/{vs}/files/{}", ids[1]),
        None,
    )
    .await;
    assert_eq!((s, &d["deleted"]), (StatusCode::OK, &json!(true)), "{d}");
    let (_, r) = search(
        &app,
        &vs,
        json!({"query": "sourdough starter", "search_mode": "keyword"}),
    )
    .await;
    assert_eq!(r["data"].as_array().unwrap().len(), 0, "{r}");
    let (s, _) = json_call(&app, "GET", &format!("/v1/files/{}", ids[1]), None).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = json_call(&app, "GET", &format!("/v1/vector_stores/{vs}"), None).await;
    assert_eq!(v["file_counts"]["completed"], 3);
}

async fn bad_files_fail_with_a_reason_and_lists_filter_by_status(
    app: std::sync::Arc<ferrollama_server::AppState>,
) {
    let good = upload_file(
        &app,
        "ok.txt",
        b"A perfectly fine text about gardening and tomatoes.",
    )
    .await;
    let bad = upload_file(
        &app,
        "blob.bin",
        &[0xff, 0xfe, 0x00, 0x81, 0x90, 0xc3, 0x28],
    )
    .await;
    let empty = upload_file(&app, "blank.txt", b"   \n\n  ").await;
    let (_, vs) = json_call(
        &app,
        "POST",
        "/v1/vector_stores",
        Some(json!({"name": "mixed", "file_ids": [good, bad, empty]})),
    )
    .await;
    let vs = vs["id"].as_str().unwrap().to_string();
    assert_eq!(wait_done(&app, &vs, &good).await["status"], "completed");
    let f = wait_done(&app, &vs, &bad).await;
    assert_eq!(f["status"], "failed");
    assert!(
        f["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("blob.bin"),
        "{f}"
    );
    let f = wait_done(&app, &vs, &empty).await;
    assert_eq!(f["status"], "failed");
    assert!(
        f["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("no text"),
        "{f}"
    );
    let (_, l) = json_call(
        &app,
        "GET",
        &format!("/v1/vector_stores/{vs}/files?filter=failed"),
        None,
    )
    .await;
    assert_eq!(l["data"].as_array().unwrap().len(), 2, "{l}");
    let (_, l) = json_call(
        &app,
        "GET",
        &format!("/v1/vector_stores/{vs}/files?filter=completed"),
        None,
    )
    .await;
    assert_eq!(l["data"][0]["id"], good.as_str());
    // Paging over stores.
    for i in 0..3 {
        json_call(
            &app,
            "POST",
            "/v1/vector_stores",
            Some(json!({"name": format!("s{i}")})),
        )
        .await;
    }
    let (_, p1) = json_call(&app, "GET", "/v1/vector_stores?limit=2&order=asc", None).await;
    assert_eq!(p1["has_more"], true);
    assert_eq!(p1["data"][0]["name"], "mixed");
    let after = p1["last_id"].as_str().unwrap();
    let (_, p2) = json_call(
        &app,
        "GET",
        &format!("/v1/vector_stores?limit=2&order=asc&after={after}"),
        None,
    )
    .await;
    assert_eq!(p2["data"][0]["name"], "s1");
    assert_eq!(p2["has_more"], false);
    // Update and delete.
    let (s, u) = json_call(
        &app,
        "POST",
        &format!("/v1/vector_stores/{vs}"),
        Some(json!({"name": "renamed", "expires_after": {"anchor": "last_active_at", "days": 7}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["name"], "renamed");
    assert_eq!(
        u["expires_at"].as_i64().unwrap(),
        u["last_active_at"].as_i64().unwrap() + 7 * 86_400
    );
    let (s, d) = json_call(&app, "DELETE", &format!("/v1/vector_stores/{vs}"), None).await;
    assert_eq!(
        (s, &d["object"]),
        (StatusCode::OK, &json!("vector_store.deleted"))
    );
    let (s, _) = json_call(&app, "GET", &format!("/v1/vector_stores/{vs}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn bad_requests_are_clear_4xx_and_lose_nothing(
    app: std::sync::Arc<ferrollama_server::AppState>,
) {
    let (vs, ids) = corpus(&app).await;
    let huge = "word ".repeat(5000);
    let cases = [
        (
            json!({"query": ""}),
            StatusCode::BAD_REQUEST,
            "must not be empty",
        ),
        (
            json!({"query": ["ok", " "]}),
            StatusCode::BAD_REQUEST,
            "must not be empty",
        ),
        (json!({}), StatusCode::BAD_REQUEST, "query is required"),
        (
            json!({"query": huge}),
            StatusCode::BAD_REQUEST,
            "over the limit",
        ),
        (
            json!({"query": "x", "max_num_results": 0}),
            StatusCode::BAD_REQUEST,
            "max_num_results",
        ),
        (
            json!({"query": "x", "filters": {"type": "eq", "key": "author", "value": "x"}}),
            StatusCode::BAD_REQUEST,
            "no file of vector store",
        ),
        (
            json!({"query": "x", "filters": {"type": "between", "key": "year", "value": 1}}),
            StatusCode::BAD_REQUEST,
            "unknown filter type",
        ),
        (
            json!({"query": "x", "ranking_options": {"score_threshold": 2}}),
            StatusCode::BAD_REQUEST,
            "score_threshold",
        ),
        (
            json!({"query": "x", "search_mode": "semantic"}),
            StatusCode::BAD_REQUEST,
            "search_mode",
        ),
    ];
    for (body, status, want) in cases {
        let (s, v) = search(&app, &vs, body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(want),
            "{body}: {v}"
        );
    }
    let (s, v) = search(&app, "vs_000000000000000000000000", json!({"query": "x"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    for (path, body, status, want) in [
        (
            format!("/v1/vector_stores/{vs}/files"),
            json!({"file_id": "file-000000000000000000000000"}),
            StatusCode::NOT_FOUND,
            "no file with id",
        ),
        (
            format!("/v1/vector_stores/{vs}/files"),
            json!({}),
            StatusCode::BAD_REQUEST,
            "file_id is required",
        ),
        (
            format!("/v1/vector_stores/{vs}/files"),
            json!({"file_id": ids[0], "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0}}}),
            StatusCode::BAD_REQUEST,
            "between 100 and 4096",
        ),
        (
            format!("/v1/vector_stores/{vs}/files"),
            json!({"file_id": ids[0], "attributes": {"k": [1]}}),
            StatusCode::BAD_REQUEST,
            "string, number or boolean",
        ),
        (
            "/v1/vector_stores".into(),
            json!({"file_ids": ["file-000000000000000000000000"]}),
            StatusCode::NOT_FOUND,
            "no file with id",
        ),
        (
            "/v1/vector_stores".into(),
            json!({"expires_after": {"anchor": "created_at", "days": 1}}),
            StatusCode::BAD_REQUEST,
            "anchor",
        ),
        (
            "/v1/vector_stores".into(),
            json!({"embedding_model": "nope"}),
            StatusCode::NOT_FOUND,
            "embedding model",
        ),
        (
            "/v1/vector_stores/vs_000000000000000000000000/files".into(),
            json!({"file_id": ids[0]}),
            StatusCode::NOT_FOUND,
            "no vector store",
        ),
    ] {
        let (s, v) = json_call(&app, "POST", &path, Some(body.clone())).await;
        assert_eq!(s, status, "{path} {body}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(want),
            "{path} {body}: {v}"
        );
    }
    let (s, _) = json_call(&app, "GET", "/v1/vector_stores?limit=0", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = json_call(
        &app,
        "GET",
        &format!("/v1/vector_stores/{vs}/files?filter=done"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Nothing was lost: every document is still found.
    let (_, v) = json_call(&app, "GET", &format!("/v1/vector_stores/{vs}"), None).await;
    assert_eq!(v["file_counts"]["completed"], 4, "{v}");
    let (_, r) = search(
        &app,
        &vs,
        json!({"query": "recipe for making bread at home"}),
    )
    .await;
    assert_eq!(top_file(&r), "baking.txt");
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/extract")
            .join(name),
    )
    .unwrap()
}

async fn pdf_html_json_are_indexed_and_disguised_or_bomb_files_fail(
    app: std::sync::Arc<ferrollama_server::AppState>,
) {
    let mut ids = Vec::new();
    for name in [
        "two_pages.pdf",
        "page.html",
        "nested.json",
        "zip_renamed.pdf",
        "bomb.pdf",
        "truncated.pdf",
    ] {
        ids.push((name, upload_file(&app, name, &fixture(name)).await));
    }
    let file_ids: Vec<&str> = ids.iter().map(|(_, id)| id.as_str()).collect();
    let (_, vs) = json_call(
        &app,
        "POST",
        "/v1/vector_stores",
        Some(json!({"file_ids": file_ids})),
    )
    .await;
    let vs = vs["id"].as_str().unwrap().to_string();
    for (name, id) in &ids {
        let f = wait_done(&app, &vs, id).await;
        let want = if ["two_pages.pdf", "page.html", "nested.json"].contains(name) {
            "completed"
        } else {
            "failed"
        };
        assert_eq!(f["status"], want, "{name}: {f}");
        if want == "failed" {
            assert!(
                f["last_error"]["message"].as_str().unwrap().contains(name),
                "{f}"
            );
        }
    }
    let (_, c) = json_call(
        &app,
        "GET",
        &format!("/v1/vector_stores/{vs}/files/{}/content", ids[1].1),
        None,
    )
    .await;
    let text = c["data"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("Fish & Chips") && !text.contains("SCRIPT TEXT"),
        "{text}"
    );
    let (_, r) = search(
        &app,
        &vs,
        json!({"query": "second page says goodbye", "search_mode": "keyword"}),
    )
    .await;
    assert_eq!(top_file(&r), "two_pages.pdf", "{r}");
}
