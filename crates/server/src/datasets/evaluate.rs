//! Evaluating a candidate model on rows, as llama-stack's meta-reference eval provider
//! does: each row's input becomes a request to the model, the reply goes in the row's
//! `generated_answer` column, and the rows are then scored with the scoring functions
//! (see `scoring.rs`), each with its params from `benchmark_config.scoring_params`.
//!
//! A row's input is, in this order of preference (llama-stack's columns):
//! - `chat_completion_input`: a JSON string (or a list) of Llama Stack messages, sent as a
//!   chat after the candidate's `system_message`. Unlike llama-stack, which keeps only the
//!   user and system messages, assistant turns (few-shot examples) are kept in place;
//! - `completion_input`: a JSON string of content (a bare string is taken as the text),
//!   sent as a plain completion without the chat template;
//! - `input_query`: a string, sent as one user message after the `system_message`.
//!
//! Everything that can be checked is checked before the first token is generated: the
//! candidate, its model and sampling params, every row's input (a row without one is a 400
//! naming the row), and the scoring (functions, params, columns such as
//! `expected_answer`, judge prompts; checked with an empty `generated_answer`). The rows
//! are then submitted together, a window of [`EVAL_CONCURRENCY`] at a time, so the
//! engine's continuous batching runs them side by side; replies keep the rows' order.

use std::time::Instant;

use ferrollama_eval::scoring::Row;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::job::{self, Job, Role, Settings, ToolChoice, Turn};
use crate::llama_stack::{Interleaved, LsMessage, SamplingParams};
use crate::state::AppState;

/// The row columns llama-stack reads and writes.
pub const CHAT_INPUT: &str = "chat_completion_input";
pub const COMPLETION_INPUT: &str = "completion_input";
pub const QUERY_INPUT: &str = "input_query";
pub const GENERATED: &str = "generated_answer";

/// Rows in flight at once for one evaluation: enough to fill the engine's batch, few
/// enough not to fill its queue for other callers.
pub const EVAL_CONCURRENCY: usize = 16;

const CANDIDATE: &str = "benchmark_config.eval_candidate";

/// `benchmark_config` (llama-stack's `BenchmarkConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct BenchmarkConfig {
    /// `{type: "model", model, sampling_params, system_message}` or `{type: "agent", config}`.
    pub eval_candidate: Value,
    /// Params per scoring function id; a function without an entry uses its own.
    #[serde(default)]
    pub scoring_params: Option<Map<String, Value>>,
    /// The first this many rows of the benchmark's dataset (`run_eval` only); none or -1
    /// for all.
    #[serde(default)]
    pub num_examples: Option<i64>,
}

/// A model candidate's fields.
#[derive(Debug, Deserialize)]
struct ModelCandidate {
    model: String,
    #[serde(default)]
    sampling_params: Option<SamplingParams>,
    #[serde(default)]
    system_message: Option<LsMessage>,
}

/// The model being evaluated and how it is asked.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub model: String,
    pub settings: Settings,
    /// The candidate's system message, put before each row's messages.
    pub system: Option<String>,
}

impl Candidate {
    /// Reads `eval_candidate`. Agent candidates are refused: only models are evaluated.
    pub fn parse(v: &Value) -> Result<Candidate, ApiError> {
        match v.get("type").and_then(Value::as_str) {
            Some("model") => {}
            Some("agent") => {
                return Err(ApiError::invalid_param(
                    CANDIDATE,
                    "agent candidates are not supported by this server; evaluate a model: \
                     {\"type\": \"model\", \"model\": MODEL_ID, \"sampling_params\": {\"strategy\": {\"type\": \"greedy\"}}}",
                ));
            }
            _ => {
                return Err(ApiError::invalid_param(
                    CANDIDATE,
                    "eval_candidate.type must be \"model\" (agent candidates are not supported)",
                ));
            }
        }
        let c: ModelCandidate = serde_json::from_value(v.clone())
            .map_err(|e| ApiError::invalid_param(CANDIDATE, format!("eval_candidate: {e}")))?;
        let settings = crate::llama_stack::settings(&c.sampling_params, &None, &None)
            .map_err(|e| prefixed("eval_candidate", e))?;
        let system = match c.system_message {
            None => None,
            Some(m) if m.role == "system" => Some(
                m.content
                    .text("eval_candidate.system_message")
                    .map_err(|e| prefixed("eval_candidate", e))?,
            ),
            Some(m) => {
                return Err(ApiError::invalid_param(
                    CANDIDATE,
                    format!(
                        "eval_candidate.system_message must have role \"system\", not \"{}\"",
                        m.role
                    ),
                ));
            }
        };
        Ok(Candidate {
            model: c.model,
            settings,
            system,
        })
    }
}

/// `e` with `at: ` before its message.
fn prefixed(at: &str, e: ApiError) -> ApiError {
    ApiError {
        message: format!("{at}: {}", e.message),
        ..e
    }
}

/// What the candidate is asked for one row.
#[derive(Debug, Clone)]
pub enum RowInput {
    /// A chat, through the model's template.
    Chat(Vec<Turn>),
    /// A plain completion of this text.
    Completion(String),
}

/// The input of one row (see the module docs); `at` names the row in errors.
pub fn row_input(row: &Row, system: Option<&str>, at: &str) -> Result<RowInput, ApiError> {
    let bad = |column: &str, what: String| {
        ApiError::invalid_param(column, format!("{at}: column '{column}' {what}"))
    };
    let mut turns: Vec<Turn> = system
        .map(|s| Turn::plain(Role::System, s))
        .into_iter()
        .collect();
    if let Some(v) = row.get(CHAT_INPUT) {
        let list = match v {
            Value::String(s) => serde_json::from_str::<Value>(s)
                .map_err(|e| bad(CHAT_INPUT, format!("is not valid JSON: {e}")))?,
            v @ Value::Array(_) => v.clone(),
            _ => {
                return Err(bad(
                    CHAT_INPUT,
                    "must be a JSON string of a list of messages".into(),
                ));
            }
        };
        let msgs: Vec<LsMessage> = serde_json::from_value(list).map_err(|e| {
            bad(
                CHAT_INPUT,
                format!("must be a list of messages ({{\"role\", \"content\"}}): {e}"),
            )
        })?;
        if msgs.is_empty() {
            return Err(bad(CHAT_INPUT, "holds no messages".into()));
        }
        turns.extend(crate::llama_stack::turns(&msgs).map_err(|e| prefixed(at, e))?);
        return Ok(RowInput::Chat(turns));
    }
    if let Some(v) = row.get(COMPLETION_INPUT) {
        let Value::String(s) = v else {
            return Err(bad(
                COMPLETION_INPUT,
                "must be a string (JSON of the content, or the text itself)".into(),
            ));
        };
        let text = match serde_json::from_str::<Interleaved>(s) {
            Ok(c) => c.text(COMPLETION_INPUT).map_err(|e| prefixed(at, e))?,
            Err(_) => s.clone(),
        };
        return Ok(RowInput::Completion(text));
    }
    if let Some(v) = row.get(QUERY_INPUT) {
        let Value::String(s) = v else {
            return Err(bad(QUERY_INPUT, "must be a string".into()));
        };
        turns.push(Turn::plain(Role::User, s.clone()));
        return Ok(RowInput::Chat(turns));
    }
    Err(ApiError::invalid_param(
        "input_rows",
        format!(
            "{at} has none of the columns '{CHAT_INPUT}', '{COMPLETION_INPUT}', '{QUERY_INPUT}': \
             each row needs one of them, the candidate's input"
        ),
    ))
}

/// An evaluation checked and ready to run.
#[derive(Debug)]
pub struct Prepared {
    /// One engine request per row.
    jobs: Vec<Job>,
    rows: Vec<Row>,
    /// Scoring function id → params (null: the function's own).
    functions: Map<String, Value>,
}

impl Prepared {
    /// How many rows it evaluates.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it evaluates no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Checks everything about evaluating `rows` (see the module docs) and prepares the
/// engine requests; `at(i)` names row `i` in errors.
pub fn prepare(
    app: &AppState,
    config: &BenchmarkConfig,
    rows: Vec<Row>,
    function_ids: &[String],
    at: impl Fn(usize) -> String,
) -> Result<Prepared, ApiError> {
    let cand = Candidate::parse(&config.eval_candidate)?;
    if !app.models.contains(&cand.model) {
        return Err(ApiError::model_not_found(&cand.model, &app.models.ids()));
    }
    let functions: Map<String, Value> = function_ids
        .iter()
        .map(|id| {
            let p = config
                .scoring_params
                .as_ref()
                .and_then(|p| p.get(id))
                .cloned()
                .unwrap_or(Value::Null);
            (id.clone(), p)
        })
        .collect();
    let answered: Vec<Row> = rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.insert(GENERATED.into(), Value::String(String::new()));
            r
        })
        .collect();
    super::scoring::check(app, &answered, &functions)?;
    let jobs = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = at(i);
            let job = match row_input(r, cand.system.as_deref(), &at)? {
                RowInput::Chat(turns) => job::prepare(
                    app,
                    &cand.model,
                    &turns,
                    Vec::new(),
                    ToolChoice::None,
                    cand.settings.clone(),
                ),
                RowInput::Completion(text) => {
                    job::prepare_completion(app, &cand.model, &text, cand.settings.clone())
                }
            };
            job.map_err(|e| prefixed(&at, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared {
        jobs,
        rows,
        functions,
    })
}

/// One row's reply.
async fn generate_one(app: &AppState, j: &Job) -> Result<String, ApiError> {
    let mut seq = j.seq.clone();
    // The deadline counts from the row's start, not from when the evaluation was prepared.
    seq.deadline = Some(Instant::now() + app.limits.request_timeout);
    let rx = job::submit(app, seq)?;
    Ok(job::collect(app, j, rx).await?.content)
}

/// Generates every row's answer, then scores: `{generations, scores}` (llama-stack's
/// `EvaluateResponse`). Dropping the future stops the rows in flight (the engine drops a
/// sequence whose receiver is gone).
pub async fn run(app: &AppState, p: Prepared) -> Result<Value, ApiError> {
    // A window of rows in flight, replies taken in row order (a `buffered` stream of
    // borrowing closures would not be `Send` for the job's task).
    let mut generations = Vec::with_capacity(p.jobs.len());
    let mut pending = p.jobs.iter();
    let mut window = FuturesOrdered::new();
    for j in pending.by_ref().take(EVAL_CONCURRENCY) {
        window.push_back(generate_one(app, j));
    }
    while let Some(r) = window.next().await {
        let mut g = Row::new();
        g.insert(GENERATED.into(), Value::String(r?));
        generations.push(g);
        if let Some(j) = pending.next() {
            window.push_back(generate_one(app, j));
        }
    }
    let scored: Vec<Row> = p
        .rows
        .into_iter()
        .zip(&generations)
        .map(|(mut r, g)| {
            r.extend(g.clone());
            r
        })
        .collect();
    let scores = super::scoring::score_rows(app, &scored, &p.functions).await?;
    Ok(json!({ "generations": generations, "scores": scores }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap()
    }

    fn chat(r: RowInput) -> Vec<(Role, String)> {
        match r {
            RowInput::Chat(t) => t.into_iter().map(|t| (t.role, t.text)).collect(),
            RowInput::Completion(c) => panic!("a completion: {c}"),
        }
    }

    #[test]
    fn chat_input_keeps_messages_after_the_system_message() {
        let msgs = r#"[{"role": "system", "content": "Be short."},
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "2", "stop_reason": "end_of_turn"},
            {"role": "user", "content": [{"type": "text", "text": "2+2?"}]}]"#;
        // chat_completion_input wins over input_query.
        let r = row(json!({CHAT_INPUT: msgs, QUERY_INPUT: "ignored"}));
        let got = chat(row_input(&r, Some("You are a calculator."), "row 0").unwrap());
        assert_eq!(
            got,
            [
                (Role::System, "You are a calculator.".to_string()),
                (Role::System, "Be short.".to_string()),
                (Role::User, "1+1?".to_string()),
                (Role::Assistant, "2".to_string()),
                (Role::User, "2+2?".to_string()),
            ]
        );
    }

    #[test]
    fn query_and_completion_inputs() {
        let r = row(json!({QUERY_INPUT: "Capital of France?", "expected_answer": "Paris"}));
        assert_eq!(
            chat(row_input(&r, None, "row 0").unwrap()),
            [(Role::User, "Capital of France?".to_string())]
        );
        // completion_input is JSON of the content (llama-stack json.loads it); a string
        // that is not JSON content is the text itself.
        for (v, want) in [
            (r#""Once upon""#, "Once upon"),
            (r#"{"type": "text", "text": "A B"}"#, "A B"),
            ("plain text", "plain text"),
        ] {
            let r = row(json!({COMPLETION_INPUT: v}));
            match row_input(&r, Some("ignored"), "row 0").unwrap() {
                RowInput::Completion(t) => assert_eq!(t, want),
                RowInput::Chat(_) => panic!("a chat"),
            }
        }
    }

    #[test]
    fn bad_rows_are_named() {
        let e = row_input(&row(json!({"question": "q"})), None, "input_rows[3]").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("input_rows[3] has none of the columns 'chat_completion_input', 'completion_input', 'input_query'"), "{}", e.message);
        let e = row_input(&row(json!({CHAT_INPUT: "[{"})), None, "row 7").unwrap_err();
        assert!(
            e.message
                .starts_with("row 7: column 'chat_completion_input' is not valid JSON"),
            "{}",
            e.message
        );
        let e = row_input(&row(json!({CHAT_INPUT: "[]"})), None, "row 7").unwrap_err();
        assert_eq!(
            e.message,
            "row 7: column 'chat_completion_input' holds no messages"
        );
        let e = row_input(
            &row(json!({CHAT_INPUT: r#"[{"role": "robot", "content": "x"}]"#})),
            None,
            "row 1",
        )
        .unwrap_err();
        assert!(
            e.message.starts_with("row 1: unknown role 'robot'"),
            "{}",
            e.message
        );
        let e = row_input(&row(json!({QUERY_INPUT: 5})), None, "row 2").unwrap_err();
        assert_eq!(e.message, "row 2: column 'input_query' must be a string");
    }

    #[test]
    fn candidates() {
        let c = Candidate::parse(&json!({
            "type": "model", "model": "m",
            "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 7},
            "system_message": {"role": "system", "content": "Answer briefly."}
        }))
        .unwrap();
        assert_eq!(c.model, "m");
        assert_eq!(c.settings.max_tokens, Some(7));
        assert_eq!(c.settings.sampler.temperature, 0.0);
        assert_eq!(c.system.as_deref(), Some("Answer briefly."));
        let e = Candidate::parse(&json!({"type": "agent", "config": {}})).unwrap_err();
        assert!(
            e.message.starts_with("agent candidates are not supported"),
            "{}",
            e.message
        );
        let e = Candidate::parse(&json!({"type": "model"})).unwrap_err();
        assert!(e.message.contains("missing field `model`"), "{}", e.message);
        let e = Candidate::parse(&json!({"type": "model", "model": "m",
            "system_message": {"role": "user", "content": "x"}}))
        .unwrap_err();
        assert!(
            e.message.contains("must have role \"system\""),
            "{}",
            e.message
        );
    }
}
