//! The eval routes: `/v1/eval/benchmarks` (register, list, get, unregister),
//! `/v1/eval/benchmarks/{id}/evaluations` (evaluate rows now) and `/jobs` (run over the
//! benchmark's dataset in the background; status, result, cancel). The evaluation is
//! `evaluate.rs`'s; the jobs are `eval_jobs.rs`'s.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{blocking, check_id, no_dataset, object_rows, path_id};
use super::eval_jobs::{self, JobState, no_job, no_result};
use super::evaluate::{self, BenchmarkConfig};
use super::store::Benchmark;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// `POST /v1/eval/benchmarks`.
#[derive(Debug, Deserialize)]
pub struct RegisterBenchmark {
    pub benchmark_id: String,
    pub dataset_id: String,
    pub scoring_functions: Vec<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub provider_benchmark_id: Option<String>,
    #[serde(default)]
    pub provider_id: Option<String>,
}

/// `POST /v1/eval/benchmarks/{id}/evaluations`.
#[derive(Debug, Deserialize)]
pub struct EvaluateRows {
    pub benchmark_config: BenchmarkConfig,
    pub input_rows: Vec<Value>,
    pub scoring_functions: Vec<String>,
}

/// `POST /v1/eval/benchmarks/{id}/jobs`.
#[derive(Debug, Deserialize)]
pub struct RunEval {
    pub benchmark_config: BenchmarkConfig,
}

/// 404 for a benchmark id.
pub fn no_benchmark(id: &str) -> ApiError {
    ApiError {
        param: Some("benchmark_id".into()),
        code: Some("not_found"),
        ..ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "the benchmark '{id}' does not exist; GET /v1/eval/benchmarks lists the benchmarks"
            ),
        )
    }
}

fn benchmark(
    app: &AppState,
    id: Result<Path<String>, PathRejection>,
) -> Result<Benchmark, ApiError> {
    let id = path_id(id)?;
    app.evals.benchmark(&id).ok_or_else(|| no_benchmark(&id))
}

/// `POST /v1/eval/benchmarks`: the dataset and every scoring function must exist.
pub async fn register(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<RegisterBenchmark>,
) -> Result<Response, ApiError> {
    check_id(&req.benchmark_id, "benchmark_id")?;
    if app.evals.get(&req.dataset_id).is_none() {
        return Err(no_dataset(&req.dataset_id));
    }
    if req.scoring_functions.is_empty() {
        return Err(ApiError::invalid_param(
            "scoring_functions",
            "scoring_functions must name at least one function; GET /v1/scoring-functions lists them",
        ));
    }
    for f in &req.scoring_functions {
        super::scoring::find_function(&app, f)?;
    }
    let metadata = match req.metadata {
        None | Some(Value::Null) => json!({}),
        Some(m @ Value::Object(_)) => m,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "metadata",
                "metadata must be an object",
            ));
        }
    };
    if let Some(p) = req.provider_id.as_deref()
        && p != "meta-reference"
    {
        return Err(ApiError::invalid_param(
            "provider_id",
            format!("unknown eval provider '{p}'; this server has one, 'meta-reference'"),
        ));
    }
    let b = Benchmark {
        provider_resource_id: req
            .provider_benchmark_id
            .unwrap_or_else(|| req.benchmark_id.clone()),
        identifier: req.benchmark_id,
        dataset_id: req.dataset_id,
        scoring_functions: req.scoring_functions,
        metadata,
    };
    let store = app.evals.clone();
    blocking(move || store.add_benchmark(b)).await?;
    Ok(axum::Json(Value::Null).into_response())
}

/// `GET /v1/eval/benchmarks`.
pub async fn list(State(app): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = app
        .evals
        .benchmarks()
        .iter()
        .map(Benchmark::to_json)
        .collect();
    axum::Json(json!({ "data": data })).into_response()
}

/// `GET /v1/eval/benchmarks/{id}`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(benchmark(&app, id)?.to_json()).into_response())
}

/// `DELETE /v1/eval/benchmarks/{id}` (jobs already started run on).
pub async fn unregister(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let store = app.evals.clone();
    let key = id.clone();
    if !blocking(move || store.remove_benchmark(&key)).await? {
        return Err(no_benchmark(&id));
    }
    Ok(axum::Json(Value::Null).into_response())
}

/// `POST /v1/eval/benchmarks/{id}/evaluations` → `EvaluateResponse`: the given rows,
/// scored with the given functions (the benchmark's dataset is not read).
pub async fn evaluate_rows(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    JsonBody(req): JsonBody<EvaluateRows>,
) -> Result<Response, ApiError> {
    benchmark(&app, id)?;
    let rows = object_rows(req.input_rows, "input_rows")?;
    if rows.is_empty() {
        return Err(ApiError::invalid_param(
            "input_rows",
            "input_rows must hold at least one row",
        ));
    }
    let p = evaluate::prepare(
        &app,
        &req.benchmark_config,
        rows,
        &req.scoring_functions,
        |i| format!("input_rows[{i}]"),
    )
    .await?;
    let out = evaluate::run(&app, p).await?;
    Ok(axum::Json(out).into_response())
}

/// `POST /v1/eval/benchmarks/{id}/jobs` → `Job`: evaluates the benchmark's dataset (its
/// first `num_examples` rows) with its scoring functions, in the background. Everything
/// is checked before the job starts, so a bad config is a 4xx here, not a failed job.
pub async fn run_eval(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    JsonBody(req): JsonBody<RunEval>,
) -> Result<Response, ApiError> {
    let b = benchmark(&app, id)?;
    let d = app.evals.get(&b.dataset_id).ok_or_else(|| {
        ApiError::invalid(format!(
            "the benchmark '{}' evaluates the dataset '{}', which is no longer registered; \
             register it again (POST /v1/datasets) or register another benchmark",
            b.identifier, b.dataset_id
        ))
    })?;
    let mut rows = d.rows;
    match req.benchmark_config.num_examples {
        None | Some(-1) => {}
        Some(n) if n >= 1 => rows.truncate(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(_) => {
            return Err(ApiError::invalid_param(
                "benchmark_config.num_examples",
                "num_examples must be 1 or more (none or -1: every row)",
            ));
        }
    }
    if rows.is_empty() {
        return Err(ApiError::invalid(format!(
            "the dataset '{}' has no rows to evaluate",
            b.dataset_id
        )));
    }
    let ds = b.dataset_id.clone();
    let p = evaluate::prepare(
        &app,
        &req.benchmark_config,
        rows,
        &b.scoring_functions,
        |i| format!("the dataset '{ds}' row {i}"),
    )
    .await?;
    let worker = app.clone();
    let job_id = eval_jobs::start(&app, &b.identifier, async move {
        evaluate::run(&worker, p).await
    })?;
    Ok(axum::Json(JobState::InProgress.to_json(&job_id)).into_response())
}

fn job_ids(
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    let Path(ids) =
        ids.map_err(|_| ApiError::invalid("the ids in the path are not valid UTF-8"))?;
    Ok(ids)
}

/// `GET /v1/eval/benchmarks/{id}/jobs/{job_id}` → `Job`.
pub async fn job_status(
    State(app): State<Arc<AppState>>,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (b, j) = job_ids(ids)?;
    let s = app.evals.jobs.get(&b, &j).ok_or_else(|| no_job(&b, &j))?;
    Ok(axum::Json(s.to_json(&j)).into_response())
}

/// `DELETE /v1/eval/benchmarks/{id}/jobs/{job_id}`: cancels the job.
pub async fn job_cancel(
    State(app): State<Arc<AppState>>,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (b, j) = job_ids(ids)?;
    app.evals
        .jobs
        .cancel(&b, &j)
        .ok_or_else(|| no_job(&b, &j))?;
    Ok(axum::Json(Value::Null).into_response())
}

/// `GET /v1/eval/benchmarks/{id}/jobs/{job_id}/result` → `EvaluateResponse`; 409 until
/// the job is completed.
pub async fn job_result(
    State(app): State<Arc<AppState>>,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (b, j) = job_ids(ids)?;
    match app.evals.jobs.get(&b, &j).ok_or_else(|| no_job(&b, &j))? {
        JobState::Completed(v) => Ok(axum::Json(v.as_ref().clone()).into_response()),
        s => Err(no_result(&j, &s)),
    }
}
