//! Llama Stack datasets and registered scoring functions survive their server: `serve` is
//! killed with SIGKILL and restarted on the same data directory, and the datasets (one
//! from an uploaded file, rows appended), their order and the registered function are
//! there; with `--data-dir :memory:` nothing is kept.

#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use common::server::Server;
use serde_json::{Value, json};

fn start(data: &Path) -> Server {
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-q8_0.gguf");
    let args: Vec<OsString> = vec![
        "-m".into(),
        tiny.into(),
        "--data-dir".into(),
        data.into(),
        "-t".into(),
        "1".into(),
    ];
    Server::start(&args)
}

fn ids(s: &Server) -> Vec<String> {
    s.get("/v1/datasets")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["identifier"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn datasets_survive_a_killed_server() {
    let root = std::env::temp_dir().join(format!("ferrollama-ds-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let s = start(&root);
    let file = s.upload(
        "qa.jsonl",
        "assistants",
        b"{\"expected_answer\": \"a\", \"generated_answer\": \"a\"}\n",
    );
    s.post(
        "/v1/datasets",
        &json!({"purpose": "eval/question-answer", "dataset_id": "from-file",
                "source": {"type": "uri", "uri": file}}),
    );
    s.post(
        "/v1/datasets",
        &json!({"purpose": "post-training/messages", "dataset_id": "chat",
                "source": {"type": "rows", "rows": [{"messages": []}]}}),
    );
    s.post(
        "/v1/datasetio/append-rows/from-file",
        &json!({"rows": [{"expected_answer": "b", "generated_answer": "c"}]}),
    );
    s.post(
        "/v1/scoring-functions",
        &json!({"scoring_fn_id": "mine", "description": "d", "return_type": {"type": "number"},
                "provider_scoring_fn_id": "equality"}),
    );
    drop(s); // SIGKILL

    let s = start(&root);
    assert_eq!(ids(&s), ["from-file", "chat"]);
    let rows = s.get("/v1/datasetio/iterrows/from-file");
    assert_eq!(rows["data"].as_array().unwrap().len(), 2);
    let scored = s.post(
        "/v1/scoring/score-batch",
        &json!({"dataset_id": "from-file", "scoring_functions": {"mine": null}}),
    );
    // Registered without params: no aggregations (llama-stack aggregates what params name).
    assert_eq!(
        scored["results"]["mine"]["score_rows"],
        json!([{"score": 1.0}, {"score": 0.0}])
    );
    assert_eq!(scored["results"]["mine"]["aggregated_results"], json!({}));
    assert_eq!(scored["dataset_id"], Value::Null);
    drop(s);
    let _ = std::fs::remove_dir_all(&root);

    let s = start(Path::new(":memory:"));
    s.post(
        "/v1/datasets",
        &json!({"purpose": "eval/question-answer", "dataset_id": "tmp",
                "source": {"type": "rows", "rows": []}}),
    );
    assert_eq!(ids(&s), ["tmp"]);
    drop(s);
    let s = start(Path::new(":memory:"));
    assert!(ids(&s).is_empty());
}
