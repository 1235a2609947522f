//! `POST /v1/synthetic-data-generation/generate`: Llama Stack's synthetic data generation,
//! the eval crate's pipeline ([`ferrollama_eval::sdg`]) on this server's engine.
//!
//! Llama Stack's body is `{dialogs: [Message], filtering_function, model?}`. Each user
//! message of `dialogs` is one seed prompt; system messages are the teacher's system prompt
//! (for every seed, left out of the records); other roles are refused. The answer is
//! `{synthetic_data: [records], statistics: {...}}`, the records as `ferrollama sdg` writes
//! them (`{"messages": [...], "provenance": {...}}`).
//!
//! Our additions (a Llama Stack client sends them in `extra_body`): `n` (replies per seed,
//! default 4, at most the server's `--max-n`), `max_tokens` (256), `temperature` (0.8),
//! `top_p` (0.95), `seed` (0), `k` (1), `p` (0.9), `threshold` (0.5), `shield_id` (default:
//! the server's first `--output-shield`, if any) and `judge_model` (a served model that
//! rates each reply; default: the teacher's mean token log-probability is the score).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use ferrollama_engine::ChatMessage;
use ferrollama_eval::EvalError;
use ferrollama_eval::sdg::{
    self, Collect, DEFAULT_JUDGE_TEMPLATE, DEFAULT_SCORE_REGEX, Filter, FilterKind, Judge,
    SdgConfig, Seed, Teacher,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::job::{Role, resolve_model};
use crate::llama_stack::LsMessage;
use crate::state::AppState;

/// Most seed prompts in one request (the reply holds every record).
const MAX_SEEDS: usize = 64;
/// Sequences in flight at once for one request.
const CONCURRENCY: usize = 8;

/// The request body.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct SdgRequest {
    pub dialogs: Vec<LsMessage>,
    /// none | random | top_k | top_p | top_k_top_p | sigmoid.
    pub filtering_function: String,
    /// The teacher (a served model id); default: the first served model.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub n: Option<usize>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub k: Option<usize>,
    #[serde(default)]
    pub p: Option<f64>,
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub shield_id: Option<String>,
    #[serde(default)]
    pub judge_model: Option<String>,
}

fn eval_error(e: EvalError) -> ApiError {
    match e {
        EvalError::Generate(m) => ApiError::unavailable(format!("synthetic data generation: {m}")),
        EvalError::Safety(s) => ApiError::invalid(format!("the shield failed: {s}")),
        other => ApiError::invalid(other.to_string()),
    }
}

/// The seeds and the system prompt of `dialogs`.
fn seeds(dialogs: &[LsMessage]) -> Result<(Vec<Seed>, Option<String>), ApiError> {
    let turns = crate::llama_stack::turns(dialogs)?;
    let mut seeds = Vec::new();
    let mut system = Vec::new();
    for (i, t) in turns.iter().enumerate() {
        if t.text.trim().is_empty() {
            return Err(ApiError::invalid_param(
                "dialogs",
                format!("dialogs[{i}] has no text"),
            ));
        }
        match t.role {
            Role::User => seeds.push(Seed {
                messages: vec![ChatMessage::new("user", &t.text)],
            }),
            Role::System => system.push(t.text.clone()),
            _ => {
                return Err(ApiError::invalid_param(
                    "dialogs",
                    format!(
                        "dialogs[{i}] is not a user or system message: each user message is a \
                         seed prompt, system messages are the teacher's system prompt"
                    ),
                ));
            }
        }
    }
    if seeds.is_empty() {
        return Err(ApiError::invalid_param(
            "dialogs",
            "dialogs has no user message: give at least one (each is a seed prompt)",
        ));
    }
    if seeds.len() > MAX_SEEDS {
        return Err(ApiError::invalid_param(
            "dialogs",
            format!(
                "{} seed prompts; at most {MAX_SEEDS} per request (use `ferrollama sdg` for more)",
                seeds.len()
            ),
        ));
    }
    Ok((seeds, (!system.is_empty()).then(|| system.join("\n\n"))))
}

/// `POST /v1/synthetic-data-generation/generate`.
pub async fn generate(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<SdgRequest>,
) -> Result<Response, ApiError> {
    let kind = FilterKind::parse(&req.filtering_function)
        .map_err(|e| ApiError::invalid_param("filtering_function", e.to_string()))?;
    let (seeds, system) = seeds(&req.dialogs)?;
    let model_id = match &req.model {
        Some(m) => m.clone(),
        None => app.models.ids().into_iter().next().ok_or_else(|| {
            ApiError::unavailable("no model is served: register one or name it in `model`")
        })?,
    };
    let (model, lora) = resolve_model(&app, &model_id)?;
    let n = req.n.unwrap_or(4);
    if n == 0 || n > app.limits.max_n {
        return Err(ApiError::invalid_param(
            "n",
            format!(
                "n = {n}: give 1 to {} (the server's --max-n)",
                app.limits.max_n
            ),
        ));
    }
    let max_tokens = req.max_tokens.unwrap_or(256);
    if max_tokens == 0 || max_tokens > app.limits.max_tokens {
        return Err(ApiError::invalid_param(
            "max_tokens",
            format!(
                "max_tokens = {max_tokens}: give 1 to {}",
                app.limits.max_tokens
            ),
        ));
    }
    let temperature = req.temperature.unwrap_or(0.8);
    let top_p = req.top_p.unwrap_or(0.95);
    let sampling_ok = temperature.is_finite() && temperature >= 0.0 && top_p > 0.0 && top_p <= 1.0;
    if !sampling_ok {
        return Err(ApiError::invalid(
            "temperature must be >= 0 and top_p in (0, 1]",
        ));
    }
    let seed = req.seed.unwrap_or(0);
    let filter = Filter {
        kind,
        k: req.k.unwrap_or(1),
        p: req.p.unwrap_or(0.9),
        threshold: req.threshold.unwrap_or(0.5),
        seed,
    };
    filter.validate().map_err(eval_error)?;
    let shield_id = req
        .shield_id
        .clone()
        .or_else(|| app.safety.output.first().cloned());
    let shield = match &shield_id {
        Some(id) => Some(app.safety.shields.get(id).ok_or_else(|| {
            ApiError::invalid_param(
                "shield_id",
                format!("the shield '{id}' does not exist; GET /v1/shields lists them"),
            )
        })?),
        None => None,
    };
    let judge = match &req.judge_model {
        Some(j) => {
            let (jm, _) = resolve_model(&app, j)?;
            Some(Judge {
                model: jm,
                name: j.clone(),
                template: DEFAULT_JUDGE_TEMPLATE.into(),
                score_regex: regex_default()?,
                max_tokens: 32,
            })
        }
        None => None,
    };
    crate::reqlog::set_model(&model_id);
    let cfg = SdgConfig {
        teacher: Teacher {
            model,
            name: model_id,
            lora,
        },
        n,
        max_tokens,
        temperature,
        top_p,
        seed,
        teacher_prompt: system
            .map(|t| vec![ChatMessage::new("system", &t)])
            .unwrap_or_default(),
        judge,
        filter,
        concurrency: CONCURRENCY,
    };
    let mut out = Collect::default();
    let stats = sdg::run(
        &app.engine,
        shield.as_deref(),
        &cfg,
        &seeds,
        HashMap::new(),
        &HashSet::new(),
        &mut out,
        &mut |_, _| {},
    )
    .await
    .map_err(eval_error)?;
    Ok(axum::Json(json!({
        "synthetic_data": out.0,
        "statistics": stats,
    }))
    .into_response())
}

fn regex_default() -> Result<regex::Regex, ApiError> {
    regex::Regex::new(DEFAULT_SCORE_REGEX).map_err(ApiError::internal)
}
