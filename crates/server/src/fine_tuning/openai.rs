//! OpenAI's fine-tuning API: `/v1/fine_tuning/jobs` create / list / retrieve / cancel /
//! events / checkpoints, in the shapes the `openai` client reads. A job trains a LoRA
//! adapter (rank 16, alpha 32, every projection) unless `hyperparameters.training_type` is
//! `"full"`; `training_file` is a Files API id (or an absolute path on the server).
//!
//! Besides OpenAI's `n_epochs`, `batch_size` and `learning_rate_multiplier` (of 2e-4 for
//! LoRA, 1e-5 for full), `hyperparameters` takes ferrollama's own `lora_rank`,
//! `lora_alpha`, `lora_targets` (`q,k,v,...`), `lora_dropout`, `seq_len`, `truncate`, `warmup_steps`,
//! `weight_decay`, `gradient_accumulation_steps`, `max_steps_per_epoch` and
//! `checkpoint_every`.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{JobRecord, Status, fetch_file, short_id};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// `after` / `limit` paging of lists.
#[derive(Debug, Deserialize)]
pub struct Paging {
    after: Option<String>,
    limit: Option<usize>,
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::ValidatingFiles => "validating_files",
        Status::Queued => "queued",
        Status::Running => "running",
        Status::Succeeded => "succeeded",
        Status::Failed => "failed",
        Status::Cancelled => "cancelled",
    }
}

/// A job as OpenAI's `fine_tuning.job` object.
pub fn job_json(r: &JobRecord) -> Value {
    let hp = &r.hyperparameters;
    let mut public = json!({
        "n_epochs": hp.get("n_epochs"),
        "batch_size": hp.get("batch_size"),
        "learning_rate_multiplier": hp.get("learning_rate_multiplier"),
    });
    let method = match hp.get("dpo_beta") {
        Some(beta) => {
            public["beta"] = beta.clone();
            json!({"type": "dpo", "dpo": {"hyperparameters": public}})
        }
        None => json!({"type": "supervised", "supervised": {"hyperparameters": public}}),
    };
    json!({
        "id": r.id,
        "object": "fine_tuning.job",
        "created_at": r.created_at,
        "finished_at": r.finished_at,
        "model": r.model,
        "fine_tuned_model": r.fine_tuned_model,
        "organization_id": "org-ferrollama",
        "result_files": [],
        "status": status_name(r.status),
        "validation_file": r.validation_file,
        "training_file": r.training_file,
        "hyperparameters": public,
        "trained_tokens": (r.status == Status::Succeeded).then_some(r.trained_tokens),
        "error": r.error.as_ref().map(|m| json!({"code": "training_failed", "message": m, "param": null})),
        "seed": r.seed,
        "estimated_finish": null,
        "integrations": [],
        "metadata": r.metadata,
        "user_provided_suffix": r.suffix,
        "method": method,
    })
}

/// An `"auto"` or positive integer hyperparameter.
fn auto_int(hp: &Map<String, Value>, key: &str, auto: u64) -> Result<u64, ApiError> {
    match hp.get(key) {
        None | Some(Value::Null) => Ok(auto),
        Some(Value::String(s)) if s == "auto" => Ok(auto),
        Some(v) => v.as_u64().filter(|&n| n >= 1).ok_or_else(|| {
            ApiError::invalid_param(
                &format!("hyperparameters.{key}"),
                format!("{key} must be \"auto\" or a positive integer, not {v}"),
            )
        }),
    }
}

/// Reads the request's hyperparameters into the settings the job trains with.
fn hyperparameters(body: &Map<String, Value>) -> Result<(String, Value), ApiError> {
    let method = body.get("method").and_then(Value::as_object);
    let kind = method
        .and_then(|m| m.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("supervised");
    if kind != "supervised" && kind != "dpo" {
        return Err(ApiError::invalid_param(
            "method.type",
            format!(
                "method {kind:?} is not available: use \"supervised\" or \"dpo\" \
                 (reinforcement fine-tuning needs a grader and is not served)"
            ),
        ));
    }
    let empty = Map::new();
    let hp = method
        .and_then(|m| m.get(kind))
        .and_then(|s| s.get("hyperparameters"))
        .or_else(|| body.get("hyperparameters"))
        .map(|v| {
            v.as_object().ok_or_else(|| {
                ApiError::invalid_param("hyperparameters", "hyperparameters must be an object")
            })
        })
        .transpose()?
        .unwrap_or(&empty);
    let training = hp
        .get("training_type")
        .and_then(Value::as_str)
        .unwrap_or("lora");
    if training != "lora" && training != "full" {
        return Err(ApiError::invalid_param(
            "hyperparameters.training_type",
            "training_type must be \"lora\" or \"full\"",
        ));
    }
    let base_lr = if training == "lora" { 2e-4 } else { 1e-5 };
    let mult = match hp.get("learning_rate_multiplier") {
        None | Some(Value::Null) => 1.0,
        Some(Value::String(s)) if s == "auto" => 1.0,
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| {
                ApiError::invalid_param(
                    "hyperparameters.learning_rate_multiplier",
                    "learning_rate_multiplier must be \"auto\" or a positive number",
                )
            })?,
    };
    let mut out = json!({
        "n_epochs": auto_int(hp, "n_epochs", 3)?,
        "batch_size": auto_int(hp, "batch_size", 4)?,
        "learning_rate_multiplier": mult,
        "learning_rate": base_lr * mult,
    });
    for key in [
        "lora_rank",
        "warmup_steps",
        "gradient_accumulation_steps",
        "max_steps_per_epoch",
        "checkpoint_every",
        "seq_len",
        "eval_every",
    ] {
        if hp.contains_key(key) {
            out[key] = json!(auto_int(hp, key, 1)?);
        }
    }
    for key in ["lora_alpha", "weight_decay"] {
        if let Some(v) = hp.get(key) {
            let x = v
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        &format!("hyperparameters.{key}"),
                        format!("{key} must be a non-negative number"),
                    )
                })?;
            out[key] = json!(x);
        }
    }
    if let Some(v) = hp.get("lora_dropout") {
        out["lora_dropout"] = json!(lora_dropout(v, "hyperparameters.lora_dropout")?);
    }
    if let Some(t) = hp.get("lora_targets") {
        let s = t.as_str().ok_or_else(|| {
            ApiError::invalid_param(
                "hyperparameters.lora_targets",
                "lora_targets is a comma-separated list: q,k,v,o,gate,up,down or all",
            )
        })?;
        ferrollama_train::Target::parse_list(s)
            .map_err(|e| ApiError::invalid_param("hyperparameters.lora_targets", e.to_string()))?;
        out["lora_targets"] = json!(s);
    }
    if let Some(v) = hp.get("truncate") {
        out["truncate"] = json!(v.as_bool() == Some(true));
    }
    if kind == "dpo" {
        out["dpo_beta"] = json!(dpo_beta(hp.get("beta"), "hyperparameters.beta")?);
    } else if hp.contains_key("beta") {
        return Err(ApiError::invalid_param(
            "hyperparameters.beta",
            "beta is a DPO setting: use method {\"type\": \"dpo\"}",
        ));
    }
    Ok((training.to_string(), out))
}

/// LoRA dropout (PEFT's `lora_dropout`): a probability in `[0, 1)`.
pub(super) fn lora_dropout(v: &Value, param: &str) -> Result<f64, ApiError> {
    v.as_f64()
        .filter(|p| (0.0..1.0).contains(p))
        .ok_or_else(|| {
            ApiError::invalid_param(param, "lora_dropout must be a probability in [0, 1)")
        })
}

/// DPO's β: `"auto"` or absent is 0.1 (the DPO paper's and TRL's default), else a positive
/// number.
pub(super) fn dpo_beta(v: Option<&Value>, param: &str) -> Result<f64, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(0.1),
        Some(Value::String(s)) if s == "auto" => Ok(0.1),
        Some(v) => v
            .as_f64()
            .filter(|b| b.is_finite() && *b > 0.0)
            .ok_or_else(|| {
                ApiError::invalid_param(param, format!("beta must be a positive number, not {v}"))
            }),
    }
}

/// Creates a job from the fields both APIs share: the base model id, the files and the
/// settings; copies the files into the job's folder and queues it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn create_job(
    app: &AppState,
    api: &str,
    id: String,
    model: &str,
    training_file: &str,
    validation_file: Option<&str>,
    method: String,
    hyperparameters: Value,
    suffix: Option<String>,
    seed: u64,
    metadata: Value,
) -> Result<JobRecord, ApiError> {
    let ft = &app.fine_tuning;
    if ft.get(&id).is_some() {
        return Err(ApiError::invalid_param(
            "job_uuid",
            format!("a job {id} exists already"),
        ));
    }
    let base_index = app
        .models
        .resolve(model)
        .ok_or_else(|| ApiError::model_not_found(model, &app.models.ids()))?;
    let base_path = app.models.path_of(base_index).ok_or_else(|| {
        ApiError::invalid_param(
            "model",
            format!(
                "{model} was not loaded from a file this server knows, so it cannot be trained"
            ),
        )
    })?;
    let dir = ft.job_dir(&id);
    std::fs::create_dir_all(&dir)
        .map_err(|e| ApiError::unavailable(format!("cannot create the job's folder: {e}")))?;
    let fetched = async {
        fetch_file(
            app,
            training_file,
            &dir.join("train.jsonl"),
            "training_file",
        )
        .await?;
        if let Some(v) = validation_file {
            fetch_file(app, v, &dir.join("validation.jsonl"), "validation_file").await?;
        }
        Ok::<(), ApiError>(())
    }
    .await;
    if let Err(e) = fetched {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    let record = JobRecord {
        id,
        api: api.into(),
        created_at: crate::job::unix_now(),
        started_at: None,
        finished_at: None,
        model: model.into(),
        base_path,
        base_index,
        training_file: training_file.into(),
        validation_file: validation_file.map(str::to_string),
        method,
        hyperparameters,
        suffix,
        seed,
        status: Status::ValidatingFiles,
        fine_tuned_model: None,
        result_path: None,
        trained_tokens: 0,
        error: None,
        events: Vec::new(),
        checkpoints: Vec::new(),
        metadata,
    };
    let entry = ft
        .submit(dir, record)
        .map_err(|e| ApiError::unavailable(format!("cannot save the job: {e}")))?;
    entry.event(
        "info",
        "message",
        format!("Created fine-tuning job: {}", entry.snapshot().id),
        json!({}),
    );
    Ok(entry.snapshot())
}

/// `POST /v1/fine_tuning/jobs`.
pub async fn create(
    State(app): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("the body must be a JSON object"))?;
    let text = |k: &str| obj.get(k).and_then(Value::as_str);
    let model =
        text("model").ok_or_else(|| ApiError::invalid_param("model", "model is required"))?;
    let training_file = text("training_file")
        .ok_or_else(|| ApiError::invalid_param("training_file", "training_file is required"))?;
    let suffix = match obj.get("suffix") {
        None | Some(Value::Null) => None,
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Some(s.clone())
        }
        Some(_) => {
            return Err(ApiError::invalid_param(
                "suffix",
                "suffix must be 1 to 64 letters, digits, - or _",
            ));
        }
    };
    let seed = match obj.get("seed") {
        None | Some(Value::Null) => crate::openai::rand_seed() & 0x7fff_ffff,
        Some(v) => v.as_u64().ok_or_else(|| {
            ApiError::invalid_param("seed", "seed must be a non-negative integer")
        })?,
    };
    let (method, hp) = hyperparameters(obj)?;
    let metadata = obj.get("metadata").cloned().unwrap_or(Value::Null);
    let r = create_job(
        &app,
        "openai",
        format!("ftjob-{}", short_id()),
        model,
        training_file,
        text("validation_file"),
        method,
        hp,
        suffix,
        seed,
        metadata,
    )
    .await?;
    Ok(axum::Json(job_json(&r)).into_response())
}

fn job_id(id: Result<UrlPath<String>, PathRejection>) -> Result<String, ApiError> {
    id.map(|UrlPath(s)| s)
        .map_err(|e| ApiError::invalid(format!("bad job id: {e}")))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no fine-tuning job {id}"),
    )
}

fn paging(q: Result<Query<Paging>, QueryRejection>) -> Result<(Option<String>, usize), ApiError> {
    let Query(p) = q.map_err(|e| ApiError::invalid(format!("bad query: {e}")))?;
    let limit = p.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_param("limit", "limit must be 1 to 100"));
    }
    Ok((p.after, limit))
}

/// Newest first, after the item `after` (by id), at most `limit`.
fn page<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> &str,
    after: Option<&str>,
    limit: usize,
) -> (Vec<T>, bool) {
    let start = match after {
        Some(a) => items
            .iter()
            .position(|x| id(x) == a)
            .map_or(items.len(), |i| i + 1),
        None => 0,
    };
    let rest: Vec<T> = items.into_iter().skip(start).collect();
    let more = rest.len() > limit;
    (rest.into_iter().take(limit).collect(), more)
}

/// `GET /v1/fine_tuning/jobs`.
pub async fn list(
    State(app): State<Arc<AppState>>,
    q: Result<Query<Paging>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (after, limit) = paging(q)?;
    let mut jobs: Vec<JobRecord> = app
        .fine_tuning
        .list()
        .iter()
        .map(|j| j.snapshot())
        .collect();
    jobs.reverse();
    let (data, more) = page(jobs, |r| r.id.as_str(), after.as_deref(), limit);
    let data: Vec<Value> = data.iter().map(job_json).collect();
    Ok(axum::Json(json!({"object": "list", "data": data, "has_more": more})).into_response())
}

/// `GET /v1/fine_tuning/jobs/{id}`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    let j = app.fine_tuning.get(&id).ok_or_else(|| not_found(&id))?;
    Ok(axum::Json(job_json(&j.snapshot())).into_response())
}

/// `POST /v1/fine_tuning/jobs/{id}/cancel`.
pub async fn cancel(
    State(app): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    let j = app.fine_tuning.get(&id).ok_or_else(|| not_found(&id))?;
    let status = j.snapshot().status;
    if status.is_final() {
        return Err(ApiError::invalid(format!(
            "job {id} has already {} and cannot be cancelled",
            status_name(status)
        )));
    }
    let r = app.fine_tuning.cancel(&j);
    Ok(axum::Json(job_json(&r)).into_response())
}

/// `GET /v1/fine_tuning/jobs/{id}/events`: newest first.
pub async fn events(
    State(app): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
    q: Result<Query<Paging>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    let (after, limit) = paging(q)?;
    let j = app.fine_tuning.get(&id).ok_or_else(|| not_found(&id))?;
    let mut evs = j.snapshot().events;
    evs.reverse();
    let (data, more) = page(evs, |e| e.id.as_str(), after.as_deref(), limit);
    let data: Vec<Value> = data
        .iter()
        .map(|e| {
            json!({"object": "fine_tuning.job.event", "id": e.id, "created_at": e.created_at,
                   "level": e.level, "message": e.message, "type": e.kind, "data": e.data})
        })
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data, "has_more": more})).into_response())
}

/// `GET /v1/fine_tuning/jobs/{id}/checkpoints`: newest first.
pub async fn checkpoints(
    State(app): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
    q: Result<Query<Paging>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    let (after, limit) = paging(q)?;
    let j = app.fine_tuning.get(&id).ok_or_else(|| not_found(&id))?;
    let r = j.snapshot();
    let mut cks = r.checkpoints.clone();
    cks.reverse();
    let (data, more) = page(cks, |c| c.id.as_str(), after.as_deref(), limit);
    let data: Vec<Value> = data
        .iter()
        .map(|c| {
            json!({"object": "fine_tuning.job.checkpoint", "id": c.id,
                   "created_at": c.created_at, "fine_tuning_job_id": r.id,
                   "fine_tuned_model_checkpoint": format!("{}:ckpt-step-{}", super::fine_tuned_name(&r), c.step),
                   "step_number": c.step,
                   "metrics": {"step": c.step, "train_loss": c.train_loss, "valid_loss": c.valid_loss}})
        })
        .collect();
    let first = data
        .first()
        .and_then(|v| v["id"].as_str())
        .map(str::to_string);
    let last = data
        .last()
        .and_then(|v| v["id"].as_str())
        .map(str::to_string);
    Ok(
        axum::Json(json!({"object": "list", "data": data, "has_more": more,
                         "first_id": first, "last_id": last}))
        .into_response(),
    )
}
