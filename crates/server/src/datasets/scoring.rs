//! The scoring routes: `/v1/scoring-functions` (list, get, register) and
//! `/v1/scoring/score` and `/score-batch`. Row scores and aggregations are the eval
//! crate's; the judge of `llm-as-judge` functions runs here, as a chat completion on this
//! server's engine (a user message, Llama Stack's greedy default), several rows at once.
//!
//! Everything that can be checked is checked before any judge runs: the functions exist,
//! their params fit, every row has the columns each function reads, the regexes compile
//! and the judge's prompts fill.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrollama_eval::scoring::{
    AggregationFn, JudgeScorer, Row, RowScorer, Scorer, ScoringError, ScoringFnDef,
    ScoringFnParams, aggregate, builtins, check_columns, check_params,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::api::{blocking, no_dataset};
use super::store::Dataset;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::job::{self, Role, ToolChoice, Turn};
use crate::state::AppState;

/// Judge requests in flight at once for one scoring call (the engine batches them; more
/// would only queue, and could fill the engine's queue for other callers).
const JUDGE_CONCURRENCY: usize = 8;

/// `POST /v1/scoring-functions`.
#[derive(Debug, Deserialize)]
pub struct RegisterFunction {
    pub scoring_fn_id: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub return_type: Option<Value>,
    #[serde(default)]
    pub params: Option<ScoringFnParams>,
    #[serde(default)]
    pub provider_id: Option<String>,
    #[serde(default)]
    pub provider_scoring_fn_id: Option<String>,
}

/// `POST /v1/scoring/score`.
#[derive(Debug, Deserialize)]
pub struct ScoreRequest {
    pub input_rows: Vec<Value>,
    pub scoring_functions: Map<String, Value>,
}

/// `POST /v1/scoring/score-batch`.
#[derive(Debug, Deserialize)]
pub struct ScoreBatchRequest {
    pub dataset_id: String,
    pub scoring_functions: Map<String, Value>,
    #[serde(default)]
    pub save_results_dataset: bool,
}

fn scoring_error(e: ScoringError) -> ApiError {
    ApiError::invalid(e.to_string())
}

fn no_function(id: &str) -> ApiError {
    ApiError {
        param: Some("scoring_fn_id".into()),
        code: Some("not_found"),
        ..ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "the scoring function '{id}' does not exist; GET /v1/scoring-functions lists them"
            ),
        )
    }
}

/// Every scoring function: the built-ins, then those registered.
fn all_functions(app: &AppState) -> Vec<ScoringFnDef> {
    let mut f = builtins();
    f.extend(app.evals.functions());
    f
}

pub(crate) fn find_function(app: &AppState, id: &str) -> Result<ScoringFnDef, ApiError> {
    all_functions(app)
        .into_iter()
        .find(|f| f.identifier == id)
        .ok_or_else(|| no_function(id))
}

/// `GET /v1/scoring-functions`.
pub async fn list(State(app): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = all_functions(&app)
        .iter()
        .map(ScoringFnDef::to_json)
        .collect();
    axum::Json(json!({ "data": data })).into_response()
}

/// `GET /v1/scoring-functions/{id}`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::invalid("the id in the path is not valid UTF-8"))?;
    Ok(axum::Json(find_function(&app, &id)?.to_json()).into_response())
}

/// `POST /v1/scoring-functions`: a function computed by one of the built-in scorers with
/// its own params (see [`Scorer::for_registration`]).
pub async fn register(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<RegisterFunction>,
) -> Result<Response, ApiError> {
    let id = req.scoring_fn_id;
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::invalid_param(
            "scoring_fn_id",
            "scoring_fn_id must be 1 to 256 bytes without control characters",
        ));
    }
    if builtins().iter().any(|f| f.identifier == id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            format!("'{id}' is a built-in scoring function; pick another scoring_fn_id"),
        ));
    }
    let scorer =
        Scorer::for_registration(req.params.as_ref(), req.provider_scoring_fn_id.as_deref())
            .map_err(scoring_error)?;
    // Regexes are compiled now so that a bad one is refused at registration.
    if scorer == Scorer::LlmAsJudge {
        if let Some(ScoringFnParams::LlmAsJudge {
            judge_score_regexes,
            ..
        }) = &req.params
        {
            for r in judge_score_regexes {
                ferrollama_eval::scoring::pyregex::PyRegex::new(r).map_err(scoring_error)?;
            }
        }
    } else {
        RowScorer::new(scorer, req.params.as_ref()).map_err(scoring_error)?;
    }
    let provider_id = req.provider_id.unwrap_or_else(|| {
        if scorer == Scorer::LlmAsJudge {
            "llm-as-judge".into()
        } else {
            "basic".into()
        }
    });
    let f = ScoringFnDef {
        provider_resource_id: req.provider_scoring_fn_id.unwrap_or_else(|| id.clone()),
        identifier: id,
        description: req.description,
        provider_id,
        return_type: req.return_type.unwrap_or_else(|| json!({"type": "number"})),
        params: req.params,
        metadata: json!({}),
        scorer,
    };
    let store = app.evals.clone();
    blocking(move || store.add_function(f)).await?;
    Ok(axum::Json(Value::Null).into_response())
}

/// One function, ready to run over the rows.
#[derive(Debug)]
struct Plan {
    id: String,
    run: Run,
    aggregations: Vec<AggregationFn>,
}

#[derive(Debug)]
enum Run {
    Rows(RowScorer),
    /// The judge and each row's prompt.
    Judge(JudgeScorer, Vec<String>),
}

/// Checks everything about scoring `rows` with `functions` (see the module docs).
fn plan(
    app: &AppState,
    rows: &[Row],
    functions: &Map<String, Value>,
) -> Result<Vec<Plan>, ApiError> {
    let mut plans = Vec::new();
    for (id, p) in functions {
        let def = find_function(app, id)?;
        let over: Option<ScoringFnParams> = match p {
            Value::Null => None,
            v => Some(serde_json::from_value(v.clone()).map_err(|e| {
                ApiError::invalid_param(
                    "scoring_functions",
                    format!("scoring_functions['{id}']: invalid params: {e}"),
                )
            })?),
        };
        // llama-stack: the call's params replace the function's for scoring; for the
        // aggregation only their aggregation_functions count.
        let params = over.as_ref().or(def.params.as_ref());
        check_params(def.scorer, params)
            .map_err(|e| ApiError::invalid_param("scoring_functions", format!("'{id}': {e}")))?;
        check_columns(id, def.scorer, rows).map_err(scoring_error)?;
        let aggregations = params
            .map(|p| p.aggregation_functions().to_vec())
            .unwrap_or_default();
        let run = match RowScorer::new(def.scorer, params).map_err(scoring_error)? {
            Some(s) => Run::Rows(s),
            None => {
                let j = JudgeScorer::new(params).map_err(scoring_error)?;
                if !app.models.contains(&j.judge_model) {
                    return Err(ApiError::model_not_found(&j.judge_model, &app.models.ids()));
                }
                let prompts = rows
                    .iter()
                    .map(|r| j.prompt(r))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(scoring_error)?;
                Run::Judge(j, prompts)
            }
        };
        plans.push(Plan {
            id: id.clone(),
            run,
            aggregations,
        });
    }
    Ok(plans)
}

/// The judge's reply to one prompt.
async fn judge(app: &AppState, model: &str, prompt: &str) -> Result<String, ApiError> {
    let settings = crate::llama_stack::settings(&None, &None, &None)?;
    let j = job::prepare(
        app,
        model,
        &[Turn::plain(Role::User, prompt)],
        Vec::new(),
        ToolChoice::None,
        settings,
    )?;
    let rx = job::submit(app, j.seq.clone())?;
    let out = job::collect(app, &j, rx).await?;
    Ok(out.content)
}

/// Checks that `functions` can score `rows` (as [`score_rows`] would, before any judge
/// runs), without scoring them.
pub(crate) fn check(
    app: &AppState,
    rows: &[Row],
    functions: &Map<String, Value>,
) -> Result<(), ApiError> {
    plan(app, rows, functions).map(drop)
}

/// `{fn_id: {score_rows, aggregated_results}}` for `rows`.
pub(crate) async fn score_rows(
    app: &AppState,
    rows: &[Row],
    functions: &Map<String, Value>,
) -> Result<Map<String, Value>, ApiError> {
    let plans = plan(app, rows, functions)?;
    let mut results = Map::new();
    for p in plans {
        let score_rows: Vec<Row> = match &p.run {
            Run::Rows(s) => rows
                .iter()
                .enumerate()
                .map(|(i, r)| s.score(&p.id, i, r))
                .collect::<Result<_, _>>()
                .map_err(scoring_error)?,
            Run::Judge(j, prompts) => {
                let mut out = Vec::with_capacity(prompts.len());
                for chunk in prompts.chunks(JUDGE_CONCURRENCY) {
                    let replies = futures_util::future::join_all(
                        chunk.iter().map(|q| judge(app, &j.judge_model, q)),
                    )
                    .await;
                    for r in replies {
                        out.push(j.score(&r?).map_err(scoring_error)?);
                    }
                }
                out
            }
        };
        let agg = aggregate(&score_rows, &p.aggregations).map_err(|e| {
            ApiError::invalid_param("scoring_functions", format!("'{}': {e}", p.id))
        })?;
        results.insert(
            p.id,
            json!({ "score_rows": score_rows, "aggregated_results": agg }),
        );
    }
    Ok(results)
}

/// `POST /v1/scoring/score` → `{results}`.
pub async fn score(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<ScoreRequest>,
) -> Result<Response, ApiError> {
    let rows: Vec<Row> = req
        .input_rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Value::Object(o) => Ok(o),
            _ => Err(ApiError::invalid_param(
                "input_rows",
                format!("input_rows[{i}] is not a JSON object"),
            )),
        })
        .collect::<Result<_, _>>()?;
    let results = score_rows(&app, &rows, &req.scoring_functions).await?;
    Ok(axum::Json(json!({ "results": results })).into_response())
}

/// `POST /v1/scoring/score-batch` → `{dataset_id, results}`: scores a registered
/// dataset's rows; with `save_results_dataset`, registers a new dataset of the rows, each
/// with a column per function holding its score row, and returns its id.
pub async fn score_batch(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<ScoreBatchRequest>,
) -> Result<Response, ApiError> {
    let d = app
        .evals
        .get(&req.dataset_id)
        .ok_or_else(|| no_dataset(&req.dataset_id))?;
    let results = score_rows(&app, &d.rows, &req.scoring_functions).await?;
    let mut saved = Value::Null;
    if req.save_results_dataset {
        let mut rows = d.rows.clone();
        for (id, r) in &results {
            let per_row = r["score_rows"].as_array().cloned().unwrap_or_default();
            for (row, s) in rows.iter_mut().zip(per_row) {
                row.insert(id.clone(), s);
            }
        }
        let new_id = format!(
            "{}-scored-{}",
            d.identifier,
            &crate::agents::api::new_id()[..8]
        );
        let scored = Dataset {
            identifier: new_id.clone(),
            purpose: d.purpose.clone(),
            source: json!({ "type": "rows", "rows": rows }),
            metadata: json!({
                "scored_dataset_id": d.identifier,
                "scoring_functions": results.keys().collect::<Vec<_>>(),
            }),
            rows,
        };
        let store = app.evals.clone();
        blocking(move || store.register(scored)).await?;
        saved = Value::String(new_id);
    }
    Ok(axum::Json(json!({ "dataset_id": saved, "results": results })).into_response())
}
