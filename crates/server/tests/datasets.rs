#![allow(clippy::unwrap_used)]
//! Llama Stack datasets and scoring through the router: register (rows, data: URLs, a
//! local file), iterrows paging, append-rows, persistence across a restart, unregister,
//! refusals; scoring with the built-ins and a registered function, score-batch with
//! saved results, and the errors for missing columns and unknown functions.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::{json_call, tiny_app};
use ferrollama_server::AppState;
use ferrollama_server::datasets::EvalStore;
use serde_json::{Value, json};

/// The tiny app with its datasets kept in `dir`.
fn app_in(dir: &std::path::Path) -> Arc<AppState> {
    let mut state = Arc::try_unwrap(tiny_app()).unwrap_or_else(|_| panic!("fresh app is shared"));
    state.evals = Arc::new(EvalStore::open(dir).unwrap());
    Arc::new(state)
}

async fn rows(app: &Arc<AppState>, id: &str, q: &str) -> (Vec<Value>, bool) {
    let (s, v) = json_call(app, "GET", &format!("/v1/datasetio/iterrows/{id}{q}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    (
        v["data"].as_array().unwrap().clone(),
        v["has_more"].as_bool().unwrap(),
    )
}

#[tokio::test]
async fn datasets_register_page_append_persist() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path());
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/datasets",
        Some(json!({
            "purpose": "eval/question-answer",
            "dataset_id": "qa",
            "source": {"type": "rows", "rows": [{"q": "a", "n": 0}, {"q": "b", "n": 1}, {"q": "c", "n": 2}]},
            "metadata": {"description": "three"}
        })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["identifier"], "qa");
    assert_eq!(v["provider_id"], "localfs");
    assert_eq!(v["type"], "dataset");
    assert_eq!(v["metadata"]["description"], "three");

    // data: URLs, percent-encoded CSV and base64 JSON Lines; the id is generated.
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/datasets",
        Some(json!({
            "purpose": "eval/question-answer",
            "source": {"type": "uri", "uri": "data:text/csv,q%2Ca%0A%22x%2C%20y%22%2C1%0A"}
        })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let csv_id = v["identifier"].as_str().unwrap().to_string();
    assert!(csv_id.starts_with("dataset-"), "{csv_id}");
    assert_eq!(
        rows(&app, &csv_id, "").await.0,
        vec![json!({"q": "x, y", "a": "1"})]
    );

    // A local JSONL file with a malformed second line is refused, naming the line.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"a\": 1}\n{\"a\": \n").unwrap();
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/datasets",
        Some(json!({"purpose": "eval/question-answer", "source": {"type": "uri", "uri": format!("file://{}", bad.display())}})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("line 2"),
        "{v}"
    );

    // Offline: no downloads.
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/datasets",
        Some(json!({"purpose": "eval/question-answer", "source": {"type": "uri", "uri": "huggingface://llamastack/simpleqa?split=train"}})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("offline"),
        "{v}"
    );

    // Paging.
    let (page, more) = rows(&app, "qa", "?start_index=1&limit=1").await;
    assert_eq!((page, more), (vec![json!({"q": "b", "n": 1})], true));
    let (page, more) = rows(&app, "qa", "?start_index=1&limit=-1").await;
    assert_eq!((page.len(), more), (2, false));
    let (s, _) = json_call(&app, "GET", "/v1/datasetio/iterrows/qa?limit=-2", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = json_call(&app, "GET", "/v1/datasetio/iterrows/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/datasetio/append-rows/qa",
        Some(json!({"rows": [{"q": "d", "n": 3}]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = json_call(&app, "POST", "/v1/datasets", Some(json!({"purpose": "eval/question-answer", "dataset_id": "qa", "source": {"type": "rows", "rows": []}}))).await;
    assert_eq!(s, StatusCode::CONFLICT);

    // A restart keeps datasets, appended rows and their order.
    drop(app);
    let app = app_in(dir.path());
    let (s, v) = json_call(&app, "GET", "/v1/datasets", None).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["qa", csv_id.as_str()]);
    assert_eq!(
        rows(&app, "qa", "?start_index=3").await.0,
        vec![json!({"q": "d", "n": 3})]
    );
    let (s, _) = json_call(&app, "DELETE", "/v1/datasets/qa", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = json_call(&app, "GET", "/v1/datasets/qa", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    drop(app);
    let app = app_in(dir.path());
    let (_, v) = json_call(&app, "GET", "/v1/datasets", None).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn scoring_builtins_registered_and_batch() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path());
    let input = json!([
        {"expected_answer": "B", "generated_answer": "Answer: B"},
        {"expected_answer": "C", "generated_answer": "The best answer is A"},
        {"expected_answer": "Answer", "generated_answer": "Answer: D"},
    ]);
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/scoring/score",
        Some(json!({"input_rows": input, "scoring_functions": {
            "basic::equality": null,
            "basic::subset_of": null,
            "basic::regex_parser_multiple_choice_answer": null,
        }})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = &v["results"];
    assert_eq!(
        r["basic::equality"]["aggregated_results"]["accuracy"],
        json!({"accuracy": 0.0, "num_correct": 0.0, "num_total": 3})
    );
    assert_eq!(
        r["basic::subset_of"]["score_rows"],
        json!([{"score": 1.0}, {"score": 0.0}, {"score": 1.0}])
    );
    let mc = &r["basic::regex_parser_multiple_choice_answer"];
    assert_eq!(
        mc["score_rows"],
        json!([{"score": 1.0}, {"score": 0.0}, {"score": 0.0}])
    );
    assert_eq!(
        mc["aggregated_results"]["accuracy"]["num_correct"],
        json!(1.0)
    );

    // Math answers: extracted and normalized on both sides.
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/scoring/score",
        Some(json!({"input_rows": [
            {"expected_answer": "\\frac{1}{2}", "generated_answer": "So the final answer is $\\boxed{0.5}$"},
            {"expected_answer": "12", "generated_answer": "The final answer is $\\boxed{13}$"},
        ], "scoring_functions": {"basic::regex_parser_math_response": null}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["results"]["basic::regex_parser_math_response"]["score_rows"],
        json!([{"score": 1.0}, {"score": 0.0}])
    );

    // A registered regex parser, and a call overriding its aggregations.
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/scoring-functions",
        Some(json!({
            "scoring_fn_id": "my::final",
            "description": "FINAL: letter",
            "return_type": {"type": "number"},
            "params": {"type": "regex_parser", "parsing_regexes": ["FINAL: (\\w)"], "aggregation_functions": ["accuracy"]}
        })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = json_call(&app, "GET", "/v1/scoring-functions/my::final", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["provider_id"], "basic");
    assert_eq!(v["params"]["parsing_regexes"][0], "FINAL: (\\w)");
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/scoring/score",
        Some(json!({"input_rows": [
            {"expected_answer": "x", "generated_answer": "FINAL: x"},
            {"expected_answer": "y", "generated_answer": "FINAL: z"},
        ], "scoring_functions": {"my::final": {"type": "regex_parser", "parsing_regexes": ["FINAL: (\\w)"], "aggregation_functions": ["average", "categorical_count"]}}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["results"]["my::final"]["aggregated_results"],
        json!({"average": {"average": 0.5}, "categorical_count": {"categorical_count": {"0.0": 1, "1.0": 1}}})
    );

    // Missing column: 400 naming the row and the column; unknown function: 404.
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/scoring/score",
        Some(json!({"input_rows": [{"expected_answer": "a", "generated_answer": "a"}, {"expected_answer": "a"}],
                    "scoring_functions": {"basic::equality": null}})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("row 1") && m.contains("generated_answer"), "{m}");
    let (s, _) = json_call(
        &app,
        "POST",
        "/v1/scoring/score",
        Some(json!({"input_rows": [], "scoring_functions": {"basic::nope": null}})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // score-batch over a registered dataset, saving the scored rows.
    let (s, _) = json_call(
        &app,
        "POST",
        "/v1/datasets",
        Some(json!({"purpose": "eval/question-answer", "dataset_id": "answers", "source": {"type": "rows", "rows": input}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/scoring/score-batch",
        Some(json!({"dataset_id": "answers", "scoring_functions": {"basic::subset_of": null}, "save_results_dataset": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["results"]["basic::subset_of"]["aggregated_results"]["accuracy"]["num_correct"],
        json!(2.0)
    );
    let saved = v["dataset_id"].as_str().unwrap().to_string();
    let (page, _) = rows(&app, &saved, "").await;
    assert_eq!(page.len(), 3);
    assert_eq!(page[1]["basic::subset_of"], json!({"score": 0.0}));
    assert_eq!(page[1]["expected_answer"], "C");

    // Registered functions survive a restart.
    drop(app);
    let app = app_in(dir.path());
    let (s, v) = json_call(&app, "GET", "/v1/scoring-functions", None).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["identifier"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"my::final") && ids.contains(&"llm-as-judge::base"),
        "{ids:?}"
    );
}
