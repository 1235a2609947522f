//! Llama Stack's post-training API, in the shapes `llama-stack-client==0.2.12` uses:
//! `POST /v1/post-training/supervised-fine-tune`, `/preference-optimize`,
//! `GET /v1/post-training/jobs`, `/job/status`, `/job/artifacts`, `POST /job/cancel`.
//!
//! `algorithm_config` of type `LoRA` trains an adapter on `lora_attn_modules`
//! (torchtune's `q_proj`, `k_proj`, `v_proj`, `output_proj`) and, with
//! `apply_lora_to_mlp`, the feed-forward projections (ferrollama's `lora_dropout` sets
//! PEFT's dropout); without one every weight is trained.
//! `training_config.data_config.dataset_id` is a Files API id or an absolute path (the
//! datasets API is not served yet); `data_config.max_seq_len` (ours) sets the sequence
//! length, 2048 by default.
//!
//! `preference-optimize` runs DPO (see [`dpo_algorithm`] for how its `algorithm_config`
//! maps to β), over every weight or, with ferrollama's `lora_rank`, a LoRA adapter.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::openai::create_job;
use super::{JobRecord, Status, valid_id};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

fn iso(t: Option<u64>) -> Value {
    t.map_or(Value::Null, |s| {
        json!(ferrollama_store::manifest::rfc3339(s))
    })
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::ValidatingFiles | Status::Queued => "scheduled",
        Status::Running => "in_progress",
        Status::Succeeded => "completed",
        Status::Failed => "failed",
        Status::Cancelled => "cancelled",
    }
}

/// Llama Stack's `Checkpoint` objects of a job.
fn checkpoints(r: &JobRecord) -> Vec<Value> {
    r.checkpoints
        .iter()
        .map(|c| {
            json!({
                "identifier": format!("{}-step-{}", r.id, c.step),
                "created_at": iso(Some(c.created_at)),
                "epoch": c.epoch,
                "post_training_job_id": r.id,
                "path": c.path,
                "training_metrics": {"epoch": c.epoch, "train_loss": c.train_loss,
                                     "validation_loss": c.valid_loss,
                                     "perplexity": c.valid_loss.map(f64::exp)},
            })
        })
        .collect()
}

fn int(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Option<u64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ApiError::invalid_param(
                &format!("{at}.{key}"),
                format!("{key} must be a non-negative integer"),
            )
        }),
    }
}

/// The job's settings from `training_config`: (settings, dataset, validation dataset).
fn training(body: &Map<String, Value>) -> Result<(Value, String, Option<String>), ApiError> {
    let tc = body
        .get("training_config")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::invalid_param("training_config", "training_config is required"))?;
    let dc = tc
        .get("data_config")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ApiError::invalid_param(
                "training_config.data_config",
                "training_config.data_config (with dataset_id) is required",
            )
        })?;
    let dataset = dc
        .get("dataset_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::invalid_param(
                "training_config.data_config.dataset_id",
                "dataset_id is required",
            )
        })?
        .to_string();
    let validation = dc
        .get("validation_dataset_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut hp = json!({
        "n_epochs": int(tc, "n_epochs", "training_config")?.unwrap_or(1).max(1),
        "batch_size": int(dc, "batch_size", "training_config.data_config")?.unwrap_or(1).max(1),
        "gradient_accumulation_steps":
            int(tc, "gradient_accumulation_steps", "training_config")?.unwrap_or(1).max(1),
    });
    // Not in Llama Stack's schema: the sequence length (default 2048; text is packed into
    // windows of it, longer chat records are refused).
    if let Some(m) = int(dc, "max_seq_len", "training_config.data_config")? {
        hp["seq_len"] = json!(m.max(1));
    }
    if let Some(m) = int(tc, "max_steps_per_epoch", "training_config")? {
        hp["max_steps_per_epoch"] = json!(m);
    }
    if let Some(oc) = tc.get("optimizer_config").and_then(Value::as_object) {
        if let Some(t) = oc.get("optimizer_type").and_then(Value::as_str)
            && t != "adamw"
            && t != "adam"
        {
            return Err(ApiError::invalid_param(
                "training_config.optimizer_config.optimizer_type",
                format!("optimizer {t:?} is not available: training uses AdamW"),
            ));
        }
        if let Some(lr) = oc.get("lr").and_then(Value::as_f64) {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(ApiError::invalid_param(
                    "training_config.optimizer_config.lr",
                    "lr must be a positive number",
                ));
            }
            hp["learning_rate"] = json!(lr);
        }
        if let Some(w) = int(oc, "num_warmup_steps", "training_config.optimizer_config")? {
            hp["warmup_steps"] = json!(w);
        }
        if let Some(w) = oc.get("weight_decay").and_then(Value::as_f64) {
            hp["weight_decay"] = json!(w);
        }
    }
    if let Some(ec) = tc.get("efficiency_config").and_then(Value::as_object)
        && ec
            .get("enable_activation_checkpointing")
            .and_then(Value::as_bool)
            == Some(true)
    {
        hp["activation_checkpointing"] = json!(true);
    }
    Ok((hp, dataset, validation))
}

/// `supervised-fine-tune`'s `algorithm_config`: `LoRA` settings into `hp`, or none for full
/// fine-tuning; the method's name.
fn lora_algorithm(body: &Map<String, Value>, hp: &mut Value) -> Result<String, ApiError> {
    let method = match body.get("algorithm_config") {
        None | Some(Value::Null) => "full".to_string(),
        Some(ac) => {
            let kind = ac.get("type").and_then(Value::as_str).unwrap_or("");
            if kind != "LoRA" {
                return Err(ApiError::invalid_param(
                    "algorithm_config.type",
                    format!(
                        "algorithm {kind:?} is not available: use \"LoRA\" or leave algorithm_config out for full fine-tuning"
                    ),
                ));
            }
            if ac.get("apply_lora_to_output").and_then(Value::as_bool) == Some(true) {
                return Err(ApiError::invalid_param(
                    "algorithm_config.apply_lora_to_output",
                    "LoRA on the output projection is not supported: set apply_lora_to_output false",
                ));
            }
            if ac.get("use_dora").and_then(Value::as_bool) == Some(true) {
                return Err(ApiError::invalid_param(
                    "algorithm_config.use_dora",
                    "DoRA is not supported: set use_dora false",
                ));
            }
            let mut targets = Vec::new();
            for m in ac
                .get("lora_attn_modules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let t = match m.as_str() {
                    Some("q_proj") => "q",
                    Some("k_proj") => "k",
                    Some("v_proj") => "v",
                    Some("output_proj" | "o_proj") => "o",
                    _ => {
                        return Err(ApiError::invalid_param(
                            "algorithm_config.lora_attn_modules",
                            format!(
                                "unknown attention module {m}: use q_proj, k_proj, v_proj, output_proj"
                            ),
                        ));
                    }
                };
                targets.push(t);
            }
            if ac.get("apply_lora_to_mlp").and_then(Value::as_bool) == Some(true) {
                targets.extend(["gate", "up", "down"]);
            }
            if targets.is_empty() {
                return Err(ApiError::invalid_param(
                    "algorithm_config.lora_attn_modules",
                    "LoRA needs at least one module: lora_attn_modules or apply_lora_to_mlp",
                ));
            }
            let ac = ac.as_object().cloned().unwrap_or_default();
            hp["lora_rank"] = json!(int(&ac, "rank", "algorithm_config")?.unwrap_or(8).max(1));
            hp["lora_alpha"] = json!(ac.get("alpha").and_then(Value::as_f64).unwrap_or(16.0));
            hp["lora_targets"] = json!(targets.join(","));
            if let Some(v) = ac.get("lora_dropout") {
                let p = super::openai::lora_dropout(v, "algorithm_config.lora_dropout")?;
                hp["lora_dropout"] = json!(p);
            }
            "lora".to_string()
        }
    };
    if method == "full" && hp.get("learning_rate").is_none() {
        hp["learning_rate"] = json!(1e-5);
    }
    Ok(method)
}

/// `preference-optimize`'s `algorithm_config` into `hp`: DPO's β and, as a ferrollama
/// extension, LoRA settings (`lora_rank`, `lora_alpha`, `lora_targets`; without them every
/// weight is trained).
///
/// β is `beta` (the later Llama Stack schema, with `loss_type` `sigmoid`, the DPO loss),
/// else `reward_scale` (llama-stack-client 0.2.12's field: β scales DPO's implicit reward
/// `β·log(π/π_ref)`), else 0.1. 0.2.12's `epsilon`, `gamma` and `reward_clip` name
/// variants this trainer does not have (label smoothing, a reward margin, clipping): they
/// must be 0 or absent, so a request never silently trains something other than it asked.
fn dpo_algorithm(body: &Map<String, Value>, hp: &mut Value) -> Result<String, ApiError> {
    let ac = body
        .get("algorithm_config")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ApiError::invalid_param(
                "algorithm_config",
                "algorithm_config is required: {\"beta\": 0.1} (or reward_scale)",
            )
        })?;
    if let Some(t) = ac.get("loss_type").and_then(Value::as_str)
        && t != "sigmoid"
    {
        return Err(ApiError::invalid_param(
            "algorithm_config.loss_type",
            format!("loss_type {t:?} is not available: DPO's sigmoid loss is"),
        ));
    }
    for key in ["epsilon", "gamma", "reward_clip"] {
        match ac.get(key) {
            None | Some(Value::Null) => {}
            Some(v) if v.as_f64() == Some(0.0) => {}
            Some(v) => {
                return Err(ApiError::invalid_param(
                    &format!("algorithm_config.{key}"),
                    format!(
                        "{key} = {v} is not available: this trainer runs plain DPO (set {key} \
                         to 0 and use beta or reward_scale for β)"
                    ),
                ));
            }
        }
    }
    let beta_param = if ac.contains_key("beta") {
        "algorithm_config.beta"
    } else {
        "algorithm_config.reward_scale"
    };
    let beta = super::openai::dpo_beta(
        ac.get("beta").or_else(|| ac.get("reward_scale")),
        beta_param,
    )?;
    hp["dpo_beta"] = json!(beta);
    if let Some(r) = int(ac, "lora_rank", "algorithm_config")? {
        hp["lora_rank"] = json!(r.max(1));
        if let Some(v) = ac.get("lora_dropout") {
            let p = super::openai::lora_dropout(v, "algorithm_config.lora_dropout")?;
            hp["lora_dropout"] = json!(p);
        }
        hp["lora_alpha"] = json!(
            ac.get("lora_alpha")
                .and_then(Value::as_f64)
                .unwrap_or(2.0 * r.max(1) as f64)
        );
        let targets = match ac.get("lora_targets") {
            None | Some(Value::Null) => "all".to_string(),
            Some(Value::String(t)) => {
                ferrollama_train::Target::parse_list(t).map_err(|e| {
                    ApiError::invalid_param("algorithm_config.lora_targets", e.to_string())
                })?;
                t.clone()
            }
            Some(_) => {
                return Err(ApiError::invalid_param(
                    "algorithm_config.lora_targets",
                    "lora_targets is a comma-separated list: q,k,v,o,gate,up,down or all",
                ));
            }
        };
        hp["lora_targets"] = json!(targets);
        if hp.get("learning_rate").is_none() {
            hp["learning_rate"] = json!(5e-5);
        }
        return Ok("lora".into());
    }
    if hp.get("learning_rate").is_none() {
        hp["learning_rate"] = json!(5e-7);
    }
    Ok("full".into())
}

/// `POST /v1/post-training/supervised-fine-tune` → `{"job_uuid"}`.
pub async fn supervised_fine_tune(
    State(app): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    submit(&app, &body, "model", lora_algorithm).await
}

/// `POST /v1/post-training/preference-optimize` → `{"job_uuid"}`: DPO on a dataset of
/// `{"prompt", "chosen", "rejected"}` records (or OpenAI's preference shape); the reference
/// model is the base itself, its log-probabilities computed once before training.
pub async fn preference_optimize(
    State(app): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    // Llama Stack names the model to train `finetuned_model` here.
    submit(&app, &body, "finetuned_model", dpo_algorithm).await
}

/// Creates the job of a post-training request: the base model under `model_key`, the
/// training settings, and the method `algorithm` reads from `algorithm_config`.
async fn submit(
    app: &AppState,
    body: &Value,
    model_key: &str,
    algorithm: fn(&Map<String, Value>, &mut Value) -> Result<String, ApiError>,
) -> Result<Response, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("the body must be a JSON object"))?;
    let id = job_uuid(obj)?;
    let model = obj
        .get(model_key)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_param(model_key, format!("{model_key} is required")))?;
    let (mut hp, dataset, validation) = training(obj)?;
    let method = algorithm(obj, &mut hp)?;
    let r = create_job(
        app,
        "llama_stack",
        id.to_string(),
        model,
        &dataset,
        validation.as_deref(),
        method,
        hp,
        None,
        0,
        obj.get("logger_config").cloned().unwrap_or(Value::Null),
    )
    .await?;
    Ok(axum::Json(json!({"job_uuid": r.id})).into_response())
}

fn job_uuid(obj: &Map<String, Value>) -> Result<&str, ApiError> {
    let id = obj
        .get("job_uuid")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_param("job_uuid", "job_uuid is required"))?;
    if !valid_id(id) {
        return Err(ApiError::invalid_param(
            "job_uuid",
            "job_uuid must be 1 to 128 letters, digits, '-', '_' or '.'",
        ));
    }
    Ok(id)
}

/// `GET /v1/post-training/jobs` → `{"data": [{"job_uuid"}]}`.
pub async fn jobs(State(app): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = app
        .fine_tuning
        .list()
        .iter()
        .map(|j| json!({"job_uuid": j.snapshot().id}))
        .collect();
    axum::Json(json!({"data": data})).into_response()
}

#[derive(Debug, Deserialize)]
pub struct JobQuery {
    job_uuid: Option<String>,
}

fn job(app: &AppState, q: Result<Query<JobQuery>, QueryRejection>) -> Result<JobRecord, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(format!("bad query: {e}")))?;
    let id = q
        .job_uuid
        .ok_or_else(|| ApiError::invalid_param("job_uuid", "job_uuid is required"))?;
    app.fine_tuning
        .get(&id)
        .map(|j| j.snapshot())
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                format!("no post-training job {id}"),
            )
        })
}

/// `GET /v1/post-training/job/status?job_uuid=`.
pub async fn status(
    State(app): State<Arc<AppState>>,
    q: Result<Query<JobQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let r = job(&app, q)?;
    Ok(axum::Json(json!({
        "job_uuid": r.id,
        "status": status_name(r.status),
        "scheduled_at": iso(Some(r.created_at)),
        "started_at": iso(r.started_at),
        "completed_at": iso(r.finished_at),
        "checkpoints": checkpoints(&r),
        "resources_allocated": null,
        "fine_tuned_model": r.fine_tuned_model,
        "error": r.error,
    }))
    .into_response())
}

/// `GET /v1/post-training/job/artifacts?job_uuid=`.
pub async fn artifacts(
    State(app): State<Arc<AppState>>,
    q: Result<Query<JobQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let r = job(&app, q)?;
    Ok(axum::Json(json!({"job_uuid": r.id, "checkpoints": checkpoints(&r)})).into_response())
}

/// `POST /v1/post-training/job/cancel {"job_uuid"}`.
pub async fn cancel(
    State(app): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let id = body
        .get("job_uuid")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_param("job_uuid", "job_uuid is required"))?;
    let j = app.fine_tuning.get(id).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("no post-training job {id}"),
        )
    })?;
    if !j.snapshot().status.is_final() {
        app.fine_tuning.cancel(&j);
    }
    Ok(axum::Json(Value::Null).into_response())
}
