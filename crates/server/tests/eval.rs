#![allow(clippy::unwrap_used)]
//! Llama Stack eval through the router on the tiny model: benchmarks (register, list, get,
//! unregister, persistence across a restart, refusals), evaluate_rows pinned to the chat
//! completions of the same dialogs, eval jobs (result equal to evaluate_rows, num_examples,
//! cancel ending the engine's work), and the 4xx answers for bad input.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{MODEL, json_call, tiny_app};
use ferrollama_server::AppState;
use ferrollama_server::datasets::EvalStore;
use serde_json::{Value, json};

fn app_in(dir: &std::path::Path) -> Arc<AppState> {
    let mut state = Arc::try_unwrap(tiny_app()).unwrap_or_else(|_| panic!("fresh app is shared"));
    state.evals = Arc::new(EvalStore::open(dir).unwrap());
    Arc::new(state)
}

async fn ok(app: &Arc<AppState>, method: &str, path: &str, body: Option<Value>) -> Value {
    let (s, v) = json_call(app, method, path, body).await;
    assert_eq!(s, StatusCode::OK, "{method} {path}: {v}");
    v
}

async fn status_of(
    app: &Arc<AppState>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let (s, v) = json_call(app, method, path, body).await;
    (
        s,
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

const SYSTEM: &str = "Answer in one word.";
const QUESTIONS: [&str; 3] = ["Capital of France?", "Two plus two?", "Color of the sky?"];

fn candidate(max_tokens: u32) -> Value {
    json!({
        "type": "model",
        "model": MODEL,
        "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": max_tokens},
        "system_message": {"role": "system", "content": SYSTEM},
    })
}

async fn register_dataset(app: &Arc<AppState>, id: &str, rows: Value) {
    ok(
        app,
        "POST",
        "/v1/datasets",
        Some(json!({"purpose": "eval/question-answer", "dataset_id": id,
            "source": {"type": "rows", "rows": rows}})),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmarks_register_list_get_persist_unregister() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path());
    register_dataset(
        &app,
        "qa",
        json!([{"input_query": "q", "expected_answer": "a"}]),
    )
    .await;
    let reg = json!({"benchmark_id": "bench/1", "dataset_id": "qa",
        "scoring_functions": ["basic::equality", "basic::subset_of"],
        "metadata": {"note": "two"}});
    let v = ok(&app, "POST", "/v1/eval/benchmarks", Some(reg.clone())).await;
    assert_eq!(v, Value::Null);
    let (s, m) = status_of(&app, "POST", "/v1/eval/benchmarks", Some(reg.clone())).await;
    assert_eq!(s, StatusCode::CONFLICT, "{m}");
    let want = json!({"identifier": "bench/1", "provider_id": "meta-reference",
        "provider_resource_id": "bench/1", "dataset_id": "qa",
        "scoring_functions": ["basic::equality", "basic::subset_of"],
        "metadata": {"note": "two"}, "type": "benchmark"});
    assert_eq!(
        ok(&app, "GET", "/v1/eval/benchmarks/bench%2F1", None).await,
        want
    );

    // Refusals: unknown dataset, unknown function, no functions, bad id.
    for (body, status, needle) in [
        (
            json!({"benchmark_id": "b2", "dataset_id": "nope", "scoring_functions": ["basic::equality"]}),
            StatusCode::NOT_FOUND,
            "the dataset 'nope' does not exist",
        ),
        (
            json!({"benchmark_id": "b2", "dataset_id": "qa", "scoring_functions": ["basic::nope"]}),
            StatusCode::NOT_FOUND,
            "the scoring function 'basic::nope' does not exist",
        ),
        (
            json!({"benchmark_id": "b2", "dataset_id": "qa", "scoring_functions": []}),
            StatusCode::BAD_REQUEST,
            "at least one function",
        ),
        (
            json!({"benchmark_id": "", "dataset_id": "qa", "scoring_functions": ["basic::equality"]}),
            StatusCode::BAD_REQUEST,
            "benchmark_id must be 1 to 256 bytes",
        ),
    ] {
        let (s, m) = status_of(&app, "POST", "/v1/eval/benchmarks", Some(body)).await;
        assert_eq!(s, status, "{m}");
        assert!(m.contains(needle), "{m}");
    }
    let (s, m) = status_of(&app, "GET", "/v1/eval/benchmarks/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(m.starts_with("the benchmark 'nope' does not exist"), "{m}");

    // Kept across a restart.
    drop(app);
    let app = app_in(dir.path());
    let v = ok(&app, "GET", "/v1/eval/benchmarks", None).await;
    assert_eq!(v, json!({"data": [want]}));
    ok(&app, "DELETE", "/v1/eval/benchmarks/bench%2F1", None).await;
    let (s, _) = status_of(&app, "DELETE", "/v1/eval/benchmarks/bench%2F1", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let app = app_in(dir.path());
    assert_eq!(
        ok(&app, "GET", "/v1/eval/benchmarks", None).await,
        json!({"data": []})
    );
}

/// The tiny model's greedy reply to SYSTEM + `q` through the Llama Stack chat route.
async fn reference_reply(app: &Arc<AppState>, q: &str, max_tokens: u32) -> String {
    let v = ok(
        app,
        "POST",
        "/v1/inference/chat-completion",
        Some(json!({"model_id": MODEL,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
            "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": max_tokens}})),
    )
    .await;
    v["completion_message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn wait_job(app: &Arc<AppState>, bench: &str, job: &str) -> Value {
    let t = Instant::now();
    loop {
        let v = ok(
            app,
            "GET",
            &format!("/v1/eval/benchmarks/{bench}/jobs/{job}"),
            None,
        )
        .await;
        if v["status"] != "in_progress" {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "job still running: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_rows_equals_chat_and_jobs_equal_evaluate_rows() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path());
    let mut replies = Vec::new();
    for q in QUESTIONS {
        replies.push(reference_reply(&app, q, 6).await);
    }
    assert!(!replies[0].is_empty(), "{replies:?}");
    // Row 0 expects exactly the reference reply (equality 1); row 1 an impossible answer
    // (0) and row 2 the empty string, a subset of any answer; row 2 goes through
    // chat_completion_input (a JSON string of messages), the others through input_query.
    let rows = json!([
        {"input_query": QUESTIONS[0], "expected_answer": replies[0]},
        {"input_query": QUESTIONS[1], "expected_answer": "\u{1}never"},
        {"chat_completion_input": json!([{"role": "user", "content": QUESTIONS[2]}]).to_string(),
            "expected_answer": ""},
    ]);
    register_dataset(&app, "qa3", rows.clone()).await;
    ok(
        &app,
        "POST",
        "/v1/eval/benchmarks",
        Some(json!({"benchmark_id": "b", "dataset_id": "qa3",
            "scoring_functions": ["basic::equality", "basic::subset_of"]})),
    )
    .await;
    let config = json!({"eval_candidate": candidate(6), "scoring_params": {}});
    let v = ok(
        &app,
        "POST",
        "/v1/eval/benchmarks/b/evaluations",
        Some(json!({"benchmark_config": config, "input_rows": rows,
            "scoring_functions": ["basic::equality", "basic::subset_of"]})),
    )
    .await;
    let gens: Vec<Value> = replies
        .iter()
        .map(|r| json!({"generated_answer": r}))
        .collect();
    assert_eq!(v["generations"], json!(gens));
    let eq = &v["scores"]["basic::equality"];
    let third = if replies[2].is_empty() { 1.0 } else { 0.0 };
    assert_eq!(
        eq["score_rows"],
        json!([{"score": 1.0}, {"score": 0.0}, {"score": third}])
    );
    let sub = &v["scores"]["basic::subset_of"];
    let second = if replies[1].contains('\u{1}') {
        1.0
    } else {
        0.0
    };
    assert_eq!(
        sub["score_rows"],
        json!([{"score": 1.0}, {"score": second}, {"score": 1.0}])
    );
    assert_eq!(
        sub["aggregated_results"]["accuracy"],
        json!({"accuracy": (2.0 + second) / 3.0, "num_correct": 2.0 + second, "num_total": 3})
    );

    // The job over the dataset gives the same answer.
    let j = ok(
        &app,
        "POST",
        "/v1/eval/benchmarks/b/jobs",
        Some(json!({"benchmark_config": config})),
    )
    .await;
    let id = j["job_id"].as_str().unwrap().to_string();
    assert_eq!(j["status"], "in_progress");
    assert_eq!(
        wait_job(&app, "b", &id).await,
        json!({"job_id": id, "status": "completed"})
    );
    let r = ok(
        &app,
        "GET",
        &format!("/v1/eval/benchmarks/b/jobs/{id}/result"),
        None,
    )
    .await;
    assert_eq!(r, v);

    // num_examples: the first rows only.
    let mut c1 = config.clone();
    c1["num_examples"] = json!(1);
    let j = ok(
        &app,
        "POST",
        "/v1/eval/benchmarks/b/jobs",
        Some(json!({"benchmark_config": c1})),
    )
    .await;
    let id1 = j["job_id"].as_str().unwrap().to_string();
    assert_ne!(id1, id);
    assert_eq!(wait_job(&app, "b", &id1).await["status"], "completed");
    let r = ok(
        &app,
        "GET",
        &format!("/v1/eval/benchmarks/b/jobs/{id1}/result"),
        None,
    )
    .await;
    assert_eq!(r["generations"], json!([gens[0]]));
    assert_eq!(
        r["scores"]["basic::equality"]["aggregated_results"]["accuracy"]["accuracy"],
        1.0
    );

    // A job belongs to its benchmark; unknown jobs are 404s.
    for path in [
        format!("/v1/eval/benchmarks/other/jobs/{id}"),
        "/v1/eval/benchmarks/b/jobs/nope".into(),
    ] {
        let (s, m) = status_of(&app, "GET", &path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m}");
        let (s, _) = status_of(&app, "GET", &format!("{path}/result"), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = status_of(&app, "DELETE", &path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    // Cancelling a finished job changes nothing.
    ok(
        &app,
        "DELETE",
        &format!("/v1/eval/benchmarks/b/jobs/{id}"),
        None,
    )
    .await;
    assert_eq!(wait_job(&app, "b", &id).await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_engine_work() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path());
    let rows: Vec<Value> = (0..48)
        .map(|i| json!({"input_query": format!("Count from {i} to one thousand."), "expected_answer": ""}))
        .collect();
    register_dataset(&app, "many", json!(rows)).await;
    ok(
        &app,
        "POST",
        "/v1/eval/benchmarks",
        Some(json!({"benchmark_id": "m", "dataset_id": "many", "scoring_functions": ["basic::subset_of"]})),
    )
    .await;
    let config = json!({"eval_candidate": candidate(200), "scoring_params": {}});
    let j = ok(
        &app,
        "POST",
        "/v1/eval/benchmarks/m/jobs",
        Some(json!({"benchmark_config": config})),
    )
    .await;
    let id = j["job_id"].as_str().unwrap().to_string();
    // Let it reach the engine.
    let stats = app.engine.stats();
    let t = Instant::now();
    while stats.generated_tokens.load(Relaxed) == 0 {
        assert!(t.elapsed() < Duration::from_secs(30), "no tokens generated");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ok(
        &app,
        "DELETE",
        &format!("/v1/eval/benchmarks/m/jobs/{id}"),
        None,
    )
    .await;
    let v = ok(
        &app,
        "GET",
        &format!("/v1/eval/benchmarks/m/jobs/{id}"),
        None,
    )
    .await;
    assert_eq!(v, json!({"job_id": id, "status": "cancelled"}));
    let (s, m) = status_of(
        &app,
        "GET",
        &format!("/v1/eval/benchmarks/m/jobs/{id}/result"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(m.contains("was cancelled"), "{m}");
    // The engine drops the job's sequences within a few steps.
    let t = Instant::now();
    while stats.running.load(Relaxed) + stats.queue_depth.load(Relaxed) > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the engine still runs the cancelled rows"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = stats.generated_tokens.load(Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        stats.generated_tokens.load(Relaxed),
        after,
        "tokens still generated"
    );
    assert!(
        after < 48 * 200,
        "{after} tokens: the job was not cut short"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path());
    register_dataset(
        &app,
        "d",
        json!([{"input_query": "q", "expected_answer": "a"},
        {"question": "no input column", "expected_answer": "a"}]),
    )
    .await;
    ok(
        &app,
        "POST",
        "/v1/eval/benchmarks",
        Some(json!({"benchmark_id": "b", "dataset_id": "d", "scoring_functions": ["basic::equality"]})),
    )
    .await;
    let cfg = json!({"eval_candidate": candidate(4), "scoring_params": {}});
    let eval = |rows: Value, fns: Value, cfg: Value| json!({"benchmark_config": cfg, "input_rows": rows, "scoring_functions": fns});
    let cases = [
        (
            eval(
                json!([{"input_query": "q", "expected_answer": "a"}, {"expected_answer": "a"}]),
                json!(["basic::equality"]),
                cfg.clone(),
            ),
            StatusCode::BAD_REQUEST,
            "input_rows[1] has none of the columns",
        ),
        (
            eval(
                json!([{"input_query": "q"}]),
                json!(["basic::equality"]),
                cfg.clone(),
            ),
            StatusCode::BAD_REQUEST,
            "row 0: missing column 'expected_answer'",
        ),
        (
            eval(
                json!([{"input_query": "q", "expected_answer": "a"}]),
                json!(["basic::nope"]),
                cfg.clone(),
            ),
            StatusCode::NOT_FOUND,
            "the scoring function 'basic::nope' does not exist",
        ),
        (
            eval(
                json!([{"input_query": "q", "expected_answer": "a"}]),
                json!(["basic::equality"]),
                json!({"eval_candidate": {"type": "model", "model": "nope", "sampling_params": {"strategy": {"type": "greedy"}}}, "scoring_params": {}}),
            ),
            StatusCode::NOT_FOUND,
            "the model 'nope' does not exist",
        ),
        (
            eval(
                json!([{"input_query": "q", "expected_answer": "a"}]),
                json!(["basic::equality"]),
                json!({"eval_candidate": {"type": "agent", "config": {}}, "scoring_params": {}}),
            ),
            StatusCode::BAD_REQUEST,
            "agent_config.model is required",
        ),
        (
            eval(json!([]), json!(["basic::equality"]), cfg.clone()),
            StatusCode::BAD_REQUEST,
            "at least one row",
        ),
    ];
    for (body, status, needle) in cases {
        let (s, m) = status_of(
            &app,
            "POST",
            "/v1/eval/benchmarks/b/evaluations",
            Some(body),
        )
        .await;
        assert_eq!(s, status, "{m}");
        assert!(m.contains(needle), "{needle}: {m}");
    }
    let (s, m) = status_of(
        &app,
        "POST",
        "/v1/eval/benchmarks/nope/evaluations",
        Some(eval(
            json!([{"input_query": "q", "expected_answer": "a"}]),
            json!(["basic::equality"]),
            cfg.clone(),
        )),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(m.contains("the benchmark 'nope' does not exist"), "{m}");

    // A job is checked before it starts: row 1 of the dataset has no input.
    let (s, m) = status_of(
        &app,
        "POST",
        "/v1/eval/benchmarks/b/jobs",
        Some(json!({"benchmark_config": cfg})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        m.starts_with("the dataset 'd' row 1 has none of the columns"),
        "{m}"
    );
    let mut bad = cfg.clone();
    bad["num_examples"] = json!(0);
    let (s, m) = status_of(
        &app,
        "POST",
        "/v1/eval/benchmarks/b/jobs",
        Some(json!({"benchmark_config": bad})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{m}");
    // The dataset gone: a 400 saying so; the benchmark stays.
    ok(&app, "DELETE", "/v1/datasets/d", None).await;
    let mut one = cfg.clone();
    one["num_examples"] = json!(1);
    let (s, m) = status_of(
        &app,
        "POST",
        "/v1/eval/benchmarks/b/jobs",
        Some(json!({"benchmark_config": one})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        m.contains("evaluates the dataset 'd', which is no longer registered"),
        "{m}"
    );
    ok(&app, "GET", "/v1/eval/benchmarks/b", None).await;
}

/// An agent candidate: each row is one turn of an agent made for the evaluation, so its
/// answers are exactly what the agents API answers the same config and question; the
/// agent and a session per row are kept for inspection; a completion row is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_candidate_answers_as_an_agent_turn_does() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path());
    let rows: Vec<Value> = QUESTIONS
        .iter()
        .map(|q| json!({"input_query": q, "expected_answer": "Paris"}))
        .collect();
    register_dataset(&app, "qa-agent", json!(rows)).await;
    ok(
        &app,
        "POST",
        "/v1/eval/benchmarks",
        Some(json!({"benchmark_id": "agentic", "dataset_id": "qa-agent",
            "scoring_functions": ["basic::subset_of"]})),
    )
    .await;
    let config = json!({"model": MODEL, "instructions": SYSTEM, "max_infer_iters": 2,
        "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 8}});
    let cand = json!({"type": "agent", "config": config});
    let out = ok(
        &app,
        "POST",
        "/v1/eval/benchmarks/agentic/evaluations",
        Some(
            json!({"input_rows": rows, "scoring_functions": ["basic::subset_of"],
            "benchmark_config": {"eval_candidate": cand}}),
        ),
    )
    .await;
    let gens = out["generations"].as_array().unwrap();
    assert_eq!(gens.len(), QUESTIONS.len(), "{out}");

    // The same config through the agents API, one session per question.
    let agents_before = ok(&app, "GET", "/v1/agents", None).await["data"]
        .as_array()
        .unwrap()
        .len();
    let a = ok(
        &app,
        "POST",
        "/v1/agents",
        Some(json!({"agent_config": config})),
    )
    .await["agent_id"]
        .as_str()
        .unwrap()
        .to_string();
    for (q, g) in QUESTIONS.iter().zip(gens) {
        let sid = ok(
            &app,
            "POST",
            &format!("/v1/agents/{a}/session"),
            Some(json!({"session_name": "pin"})),
        )
        .await["session_id"]
            .as_str()
            .unwrap()
            .to_string();
        let turn = ok(
            &app,
            "POST",
            &format!("/v1/agents/{a}/session/{sid}/turn"),
            Some(json!({"messages": [{"role": "user", "content": q}], "stream": false})),
        )
        .await;
        let want = turn["output_message"]["content"].as_str().unwrap();
        assert_eq!(g["generated_answer"].as_str().unwrap(), want, "{q}");
    }
    // The score rows follow the generations (subset_of: the expected text in the answer).
    let score_rows = out["scores"]["basic::subset_of"]["score_rows"]
        .as_array()
        .unwrap();
    for (g, s) in gens.iter().zip(score_rows) {
        let hit = g["generated_answer"].as_str().unwrap().contains("Paris");
        assert_eq!(s["score"], json!(if hit { 1.0 } else { 0.0 }), "{out}");
    }

    // The evaluation's agent is kept, with a session per row.
    let list = ok(&app, "GET", "/v1/agents", None).await;
    let eval_agent = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["agent_id"].as_str().unwrap().to_string())
        .find(|id| *id != a)
        .unwrap();
    assert_eq!(agents_before, 1, "{list}");
    let sessions = ok(
        &app,
        "GET",
        &format!("/v1/agents/{eval_agent}/sessions"),
        None,
    )
    .await;
    let mut names: Vec<String> = sessions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["eval row 0", "eval row 1", "eval row 2"],
        "{sessions}"
    );

    // A plain-completion row cannot be asked of an agent; an unknown model creates no
    // agent.
    let (s, m) = status_of(
        &app,
        "POST",
        "/v1/eval/benchmarks/agentic/evaluations",
        Some(
            json!({"input_rows": [{"input_query": "q", "expected_answer": "a"},
                {"completion_input": "x", "expected_answer": "a"}],
            "scoring_functions": ["basic::subset_of"],
            "benchmark_config": {"eval_candidate": cand}}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{m}");
    assert!(
        m.contains("input_rows[1]: column 'completion_input' is a plain completion"),
        "{m}"
    );
    let bad = json!({"type": "agent", "config": {"model": "nope", "instructions": "x"}});
    let (s, m) = status_of(
        &app,
        "POST",
        "/v1/eval/benchmarks/agentic/evaluations",
        Some(
            json!({"input_rows": [{"input_query": "q", "expected_answer": "a"}],
            "scoring_functions": ["basic::subset_of"],
            "benchmark_config": {"eval_candidate": bad}}),
        ),
    )
    .await;
    assert!(s.is_client_error(), "{s} {m}");
    assert!(m.contains("nope"), "{m}");
    let after = ok(&app, "GET", "/v1/agents", None).await;
    assert_eq!(after["data"].as_array().unwrap().len(), 2, "{after}");
}
