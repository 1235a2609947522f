//! The safety routes: Llama Stack's `/v1/shields` and `/v1/safety/run-shield`, and
//! OpenAI's `/v1/moderations`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrollama_safety::categories::{OPENAI_CATEGORIES, by_code, moderation_key};
use ferrollama_safety::llama_guard::{GuardSize, LlamaGuard, Speaker, Turn as GuardTurn};
use ferrollama_safety::shield::RegexShield;
use ferrollama_safety::{REFUSAL, Shield, ShieldKind, Verdict};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::exact_turns;
use super::guard::shield_error;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::llama_stack::LsMessage;
use crate::state::AppState;

/// Llama Stack's register-shield body.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct RegisterShield {
    /// The id requests will use.
    pub shield_id: String,
    /// What runs it: for `llama-guard` a served model id (or a store name / file, loaded
    /// now); for `prompt-guard` the path of a Prompt Guard folder on the server; for
    /// `regex` unused.
    /// Default: `shield_id`.
    #[serde(default)]
    pub provider_shield_id: Option<String>,
    /// `llama-guard`, `prompt-guard` or `regex`; default: `regex` when `params.pattern`
    /// is given, else `llama-guard`.
    #[serde(default)]
    pub provider_id: Option<String>,
    /// llama-guard: `excluded_categories` (["S3", ...]), `guard_model` ("1b" | "8b").
    /// prompt-guard: `mode` ("jailbreak" | "injection"), `threshold` (0.9), `weights`
    /// ("f32" | "q8_0").
    /// regex: `pattern`, `code` ("blocked"), `name`.
    #[serde(default)]
    pub params: Option<Value>,
}

/// Llama Stack's run-shield body.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct RunShieldRequest {
    pub shield_id: String,
    pub messages: Vec<LsMessage>,
    /// Accepted for compatibility; a shield's parameters are fixed when it is registered.
    #[serde(default)]
    pub params: Option<Value>,
}

/// OpenAI's moderation body.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ModerationRequest {
    /// A string, a list of strings, or a list of `{"type": "text", "text": ...}` items.
    pub input: Value,
    /// The shield id to run (default: the server's first output shield, else its first
    /// input shield, else the only shield).
    #[serde(default)]
    pub model: Option<String>,
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no shield '{id}'; GET /v1/shields lists them, POST /v1/shields registers one"),
    )
}

fn path_id(
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, ApiError> {
    id.map(|Path(s)| s)
        .map_err(|_| ApiError::invalid("the shield id in the path is not valid UTF-8"))
}

/// `GET /v1/shields`.
pub async fn list(State(app): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = app
        .safety
        .shields
        .list()
        .iter()
        .map(|s| s.resource())
        .collect();
    axum::Json(json!({ "data": data })).into_response()
}

/// `GET /v1/shields/{id}`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let s = app.safety.shields.get(&id).ok_or_else(|| not_found(&id))?;
    Ok(axum::Json(s.resource()).into_response())
}

/// `DELETE /v1/shields/{id}`: the shield is no longer listed or usable by new requests
/// (the server's `--input-shield` / `--output-shield` cannot be deleted).
pub async fn delete(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    if app.safety.input.contains(&id) || app.safety.output.contains(&id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            format!(
                "shield '{id}' guards every chat request (--input-shield/--output-shield); restart the server without it"
            ),
        ));
    }
    let s = app
        .safety
        .shields
        .remove(&id)
        .ok_or_else(|| not_found(&id))?;
    tracing::info!(id = %s.id, "shield deleted");
    Ok(axum::Json(json!({"id": s.id, "object": "shield", "deleted": true})).into_response())
}

fn str_list(params: &Value, key: &str) -> Result<Vec<String>, ApiError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::invalid_param(
                        &format!("params.{key}"),
                        format!("{v} is not a string"),
                    )
                })
            })
            .collect(),
        Some(v) => Err(ApiError::invalid_param(
            &format!("params.{key}"),
            format!("expected a list of strings, got {v}"),
        )),
    }
}

/// A Llama Guard shield on model `target` (a served id, or a store name / file loaded now).
pub async fn llama_guard_shield(
    app: &Arc<AppState>,
    id: &str,
    target: &str,
    params: Value,
) -> Result<Shield, ApiError> {
    let index = match crate::registry::alias_target(app, target) {
        Some(i) => i,
        None => crate::registry::load_on_demand(app, target)
            .await
            .map_err(|mut e| {
                e.message = format!("guard model '{target}': {}", e.message);
                e.param = Some("provider_shield_id".into());
                e
            })?,
    };
    let model = crate::job::loaded_model(app, index)?;
    let excluded = str_list(&params, "excluded_categories")?;
    let size = match params.get("guard_model") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_str().and_then(GuardSize::parse).ok_or_else(|| {
            ApiError::invalid_param(
                "params.guard_model",
                format!("expected \"1b\" or \"8b\", got {v}"),
            )
        })?),
    };
    let g = LlamaGuard::new(&model, index, size, excluded)
        .map_err(|e| ApiError::invalid_param("params", e.to_string()))?;
    Ok(Shield {
        id: id.to_string(),
        provider_id: "llama-guard".into(),
        provider_resource_id: target.to_string(),
        params,
        kind: ShieldKind::LlamaGuard(g),
    })
}

/// `POST /v1/shields`.
pub async fn register(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<RegisterShield>,
) -> Result<Response, ApiError> {
    let id = req.shield_id.clone();
    if id.trim().is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::invalid_param(
            "shield_id",
            "shield_id must be 1 to 256 characters, without control characters",
        ));
    }
    if app.safety.shields.get(&id).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            format!(
                "a shield named '{id}' already exists; DELETE /v1/shields/{id} first or pick another shield_id"
            ),
        ));
    }
    let params = match req.params {
        None | Some(Value::Null) => json!({}),
        Some(p @ Value::Object(_)) => p,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "params",
                "params must be a JSON object",
            ));
        }
    };
    let target = req
        .provider_shield_id
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| id.clone());
    let provider = req.provider_id.clone().unwrap_or_else(|| {
        if params.get("pattern").is_some() {
            "regex".into()
        } else {
            "llama-guard".into()
        }
    });
    let shield = match provider.as_str() {
        "regex" => Shield {
            id: id.clone(),
            provider_id: "regex".into(),
            provider_resource_id: params
                .get("pattern")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            kind: ShieldKind::Regex(
                RegexShield::from_params(&params)
                    .map_err(|e| ApiError::invalid_param("params", e.to_string()))?,
            ),
            params,
        },
        "llama-guard" => llama_guard_shield(&app, &id, &target, params).await?,
        "prompt-guard" => super::prompt_guard::shield(&app, &id, &target, params).await?,
        other => {
            return Err(ApiError::invalid_param(
                "provider_id",
                format!(
                    "unknown shield provider {other:?}: use llama-guard, prompt-guard or regex"
                ),
            ));
        }
    };
    let s =
        app.safety.shields.insert(shield).map_err(|e| {
            ApiError::new(StatusCode::CONFLICT, "invalid_request_error", e.to_string())
        })?;
    tracing::info!(id = %s.id, provider = %s.provider_id, target = %s.provider_resource_id, "shield registered");
    Ok(axum::Json(s.resource()).into_response())
}

/// The run-shield answer: `{"violation": null}` or llama-stack's violation.
pub fn violation_json(v: &Verdict) -> Value {
    if !v.flagged {
        return json!({ "violation": null });
    }
    json!({
        "violation": {
            "violation_level": "error",
            "user_message": REFUSAL,
            "metadata": {
                "violation_type": v.codes.join(","),
                "codes": v.codes,
                "categories": v.categories,
                "detail": v.detail,
            }
        }
    })
}

/// `POST /v1/safety/run-shield`.
pub async fn run_shield(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<RunShieldRequest>,
) -> Result<Response, ApiError> {
    let s = app
        .safety
        .shields
        .get(&req.shield_id)
        .ok_or_else(|| not_found(&req.shield_id))?;
    let turns = exact_turns(&crate::llama_stack::turns(&req.messages)?);
    let v = s
        .check(&app.engine, &turns)
        .await
        .map_err(|e| shield_error(&s.id, e))?;
    Ok(axum::Json(violation_json(&v)).into_response())
}

/// The texts of a moderation `input`.
fn inputs(v: &Value) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::invalid_param(
            "input",
            "input must be a string, a list of strings, or a list of {\"type\": \"text\", \"text\": ...} items",
        )
    };
    let out = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("text") => o
                    .get("text")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(bad),
                Value::Object(_) => Err(ApiError::invalid_param(
                    "input",
                    "only text items can be moderated (no images)",
                )),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    if out.len() > 32 {
        return Err(ApiError::invalid_param(
            "input",
            "at most 32 inputs per request",
        ));
    }
    Ok(out)
}

/// One moderation result in OpenAI's shape: every OpenAI category (false / 0 unless a
/// flagged code maps to it), plus the shield's own codes that have no OpenAI counterpart
/// (`S5`, `jailbreak`, ...), as-is.
pub fn moderation_result(s: &Shield, v: &Verdict) -> Value {
    let mut flags: BTreeMap<String, bool> = OPENAI_CATEGORIES
        .iter()
        .map(|c| (c.to_string(), false))
        .collect();
    let mut scores: BTreeMap<String, f32> = OPENAI_CATEGORIES
        .iter()
        .map(|c| (c.to_string(), 0.0))
        .collect();
    let key = |code: &str| match s.kind {
        ShieldKind::LlamaGuard(_) if by_code(code).is_some() => moderation_key(code),
        _ => code.to_string(),
    };
    for (code, score) in &v.scores {
        let k = key(code);
        let e = scores.entry(k.clone()).or_insert(0.0);
        *e = e.max(*score);
        flags.entry(k).or_insert(false);
    }
    for code in &v.codes {
        flags.insert(key(code), true);
    }
    let applied: BTreeMap<&String, Value> = flags.keys().map(|k| (k, json!(["text"]))).collect();
    json!({
        "flagged": v.flagged,
        "categories": flags,
        "category_scores": scores,
        "category_applied_input_types": applied,
    })
}

/// `POST /v1/moderations` (and `/v1/openai/v1/moderations`).
pub async fn moderations(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<ModerationRequest>,
) -> Result<Response, ApiError> {
    let texts = inputs(&req.input)?;
    let sh = &app.safety;
    let id = match &req.model {
        Some(m) => m.clone(),
        None => match sh.output.first().or(sh.input.first()) {
            Some(i) => i.clone(),
            None => {
                let all = sh.shields.list();
                match all.as_slice() {
                    [only] => only.id.clone(),
                    _ => {
                        return Err(ApiError::invalid_param(
                            "model",
                            "name the shield to run in `model` (GET /v1/shields lists them; serve with --guard MODEL to add one)",
                        ));
                    }
                }
            }
        },
    };
    let s = sh.shields.get(&id).ok_or_else(|| {
        let mut e = not_found(&id);
        e.param = Some("model".into());
        e
    })?;
    let mut results = Vec::new();
    for t in texts {
        let v = s
            .check(&app.engine, &[GuardTurn::new(Speaker::User, t)])
            .await
            .map_err(|e| shield_error(&s.id, e))?;
        results.push(moderation_result(&s, &v));
    }
    Ok(axum::Json(json!({
        "id": format!("modr-{:x}", crate::openai::rand_seed()),
        "model": s.id,
        "results": results,
    }))
    .into_response())
}
