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
//! An agent candidate (`{type: "agent", config: AgentConfig}`) is run as llama-stack's
//! eval provider runs it: one agent created for the evaluation, one session per row, the
//! row's user messages (from `chat_completion_input`, or `input_query`) as one turn, run
//! to its end with the agent's tools and shields; the reply's text is the answer. The
//! agent and its sessions are kept, so each answer's steps can be read back through the
//! agents API. `completion_input` has no meaning for an agent and is refused.
//!
//! Everything that can be checked is checked before the first token is generated: the
//! candidate, its model and sampling params, every row's input (a row without one is a 400
//! naming the row), and the scoring (functions, params, columns such as
//! `expected_answer`, judge prompts; checked with an empty `generated_answer`). The rows
//! are then submitted together, a window of [`EVAL_CONCURRENCY`] at a time, so the
//! engine's continuous batching runs them side by side; replies keep the rows' order.

use std::sync::Arc;
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
    /// Reads a model `eval_candidate`.
    pub fn parse(v: &Value) -> Result<Candidate, ApiError> {
        if v.get("type").and_then(Value::as_str) != Some("model") {
            return Err(ApiError::invalid_param(
                CANDIDATE,
                "eval_candidate.type must be \"model\" or \"agent\"",
            ));
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

/// An agent candidate's config (`{type: "agent", config}`), or `None` for another type.
fn agent_config(v: &Value) -> Result<Option<&Value>, ApiError> {
    if v.get("type").and_then(Value::as_str) != Some("agent") {
        return Ok(None);
    }
    v.get("config").map(Some).ok_or_else(|| {
        ApiError::invalid_param(
            CANDIDATE,
            "an agent eval_candidate needs `config`: the agent config, as for POST /v1/agents",
        )
    })
}

/// One row's input for an agent: its user messages (Llama Stack message objects).
pub fn agent_row_input(row: &Row, at: &str) -> Result<Vec<Value>, ApiError> {
    let bad = |column: &str, what: String| {
        ApiError::invalid_param(column, format!("{at}: column '{column}' {what}"))
    };
    if let Some(v) = row.get(CHAT_INPUT) {
        let list = chat_list(v, &bad)?;
        let Value::Array(msgs) = list else {
            return Err(bad(CHAT_INPUT, "must be a list of messages".into()));
        };
        // An agent's turn takes user messages; its system prompt is its instructions.
        let users: Vec<Value> = msgs
            .into_iter()
            .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .collect();
        if users.is_empty() {
            return Err(bad(
                CHAT_INPUT,
                "holds no user message, which an agent turn needs".into(),
            ));
        }
        crate::agents::api::check_eval_input(&users, at)?;
        return Ok(users);
    }
    if row.contains_key(COMPLETION_INPUT) && !row.contains_key(QUERY_INPUT) {
        return Err(bad(
            COMPLETION_INPUT,
            "is a plain completion, which an agent candidate cannot be asked; give the row \
             'input_query' or 'chat_completion_input'"
                .into(),
        ));
    }
    if let Some(v) = row.get(QUERY_INPUT) {
        let Value::String(s) = v else {
            return Err(bad(QUERY_INPUT, "must be a string".into()));
        };
        return Ok(vec![json!({"role": "user", "content": s})]);
    }
    Err(ApiError::invalid_param(
        "input_rows",
        format!(
            "{at} has none of the columns '{CHAT_INPUT}', '{QUERY_INPUT}': each row needs one \
             of them, the agent's input"
        ),
    ))
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

/// A `chat_completion_input` cell as JSON: a string of JSON (llama-stack's form) or the
/// list itself.
fn chat_list(v: &Value, bad: &impl Fn(&str, String) -> ApiError) -> Result<Value, ApiError> {
    match v {
        Value::String(s) => serde_json::from_str::<Value>(s)
            .map_err(|e| bad(CHAT_INPUT, format!("is not valid JSON: {e}"))),
        v @ Value::Array(_) => Ok(v.clone()),
        _ => Err(bad(
            CHAT_INPUT,
            "must be a JSON string of a list of messages".into(),
        )),
    }
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
        let list = chat_list(v, &bad)?;
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
    /// What answers the rows.
    asked: Asked,
    rows: Vec<Row>,
    /// Scoring function id → params (null: the function's own).
    functions: Map<String, Value>,
}

/// The candidate, ready to answer each row.
#[derive(Debug)]
enum Asked {
    /// One engine request per row.
    Model(Vec<Job>),
    /// The agent created for the evaluation, and each row's user messages.
    Agent {
        agent_id: String,
        inputs: Vec<Vec<Value>>,
    },
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
/// engine requests (for an agent candidate, creates the agent last, once all else is
/// checked); `at(i)` names row `i` in errors.
pub async fn prepare(
    app: &AppState,
    config: &BenchmarkConfig,
    rows: Vec<Row>,
    function_ids: &[String],
    at: impl Fn(usize) -> String,
) -> Result<Prepared, ApiError> {
    // The model candidate parsed, or the agent's config.
    let cand = match agent_config(&config.eval_candidate)? {
        Some(config) => Err(config),
        None => {
            let c = Candidate::parse(&config.eval_candidate)?;
            if !app.models.contains(&c.model) {
                return Err(ApiError::model_not_found(&c.model, &app.models.ids()));
            }
            Ok(c)
        }
    };
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
    let asked = match cand {
        Ok(cand) => Asked::Model(
            rows.iter()
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
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Err(config) => {
            let inputs = rows
                .iter()
                .enumerate()
                .map(|(i, r)| agent_row_input(r, &at(i)))
                .collect::<Result<Vec<_>, _>>()?;
            let agent_id = crate::agents::api::create_for_eval(app, config)
                .await
                .map_err(|e| prefixed("eval_candidate.config", e))?;
            Asked::Agent { agent_id, inputs }
        }
    };
    Ok(Prepared {
        asked,
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

/// Row `i`'s reply.
async fn answer(app: &Arc<AppState>, asked: &Asked, i: usize) -> Result<String, ApiError> {
    match asked {
        Asked::Model(jobs) => generate_one(app, &jobs[i]).await,
        Asked::Agent { agent_id, inputs } => {
            let name = format!("eval row {i}");
            crate::agents::api::eval_turn(app, agent_id, &name, &inputs[i]).await
        }
    }
}

/// Generates every row's answer, then scores: `{generations, scores}` (llama-stack's
/// `EvaluateResponse`). Dropping the future stops the rows in flight (the engine drops a
/// sequence whose receiver is gone).
pub async fn run(app: &Arc<AppState>, p: Prepared) -> Result<Value, ApiError> {
    // A window of rows in flight, replies taken in row order (a `buffered` stream of
    // borrowing closures would not be `Send` for the job's task).
    let n = p.rows.len();
    let mut generations = Vec::with_capacity(n);
    let mut pending = 0..n;
    let mut window = FuturesOrdered::new();
    for i in pending.by_ref().take(EVAL_CONCURRENCY) {
        window.push_back(answer(app, &p.asked, i));
    }
    while let Some(r) = window.next().await {
        let mut g = Row::new();
        g.insert(GENERATED.into(), Value::String(r?));
        generations.push(g);
        if let Some(i) = pending.next() {
            window.push_back(answer(app, &p.asked, i));
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
        let e = Candidate::parse(&json!({"type": "robot"})).unwrap_err();
        assert!(
            e.message
                .contains("eval_candidate.type must be \"model\" or \"agent\""),
            "{}",
            e.message
        );
        let cfg = json!({"model": "m", "instructions": "Be brief."});
        let agent = json!({"type": "agent", "config": cfg});
        assert_eq!(agent_config(&agent).unwrap(), Some(&cfg));
        assert_eq!(agent_config(&json!({"type": "model"})).unwrap(), None);
        let e = agent_config(&json!({"type": "agent"})).unwrap_err();
        assert!(e.message.contains("needs `config`"), "{}", e.message);
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

    #[test]
    fn agent_rows_are_their_user_messages() {
        // System and assistant messages are dropped: the agent's instructions are its
        // system prompt and each row is one fresh turn (llama-stack keeps user messages).
        let msgs = r#"[{"role": "system", "content": "S"}, {"role": "user", "content": "A?"},
            {"role": "assistant", "content": "a", "stop_reason": "end_of_turn"},
            {"role": "user", "content": "B?"}]"#;
        let got = agent_row_input(&row(json!({CHAT_INPUT: msgs})), "row 0").unwrap();
        assert_eq!(
            got,
            [
                json!({"role": "user", "content": "A?"}),
                json!({"role": "user", "content": "B?"})
            ]
        );
        let got = agent_row_input(&row(json!({QUERY_INPUT: "Q?"})), "row 0").unwrap();
        assert_eq!(got, [json!({"role": "user", "content": "Q?"})]);
        let e = agent_row_input(&row(json!({COMPLETION_INPUT: "x"})), "row 4").unwrap_err();
        assert!(
            e.message
                .starts_with("row 4: column 'completion_input' is a plain completion"),
            "{}",
            e.message
        );
        let only_system = r#"[{"role": "system", "content": "S"}]"#;
        let e = agent_row_input(&row(json!({CHAT_INPUT: only_system})), "row 2").unwrap_err();
        assert!(e.message.contains("holds no user message"), "{}", e.message);
        let e = agent_row_input(&row(json!({"q": 1})), "row 9").unwrap_err();
        assert!(
            e.message.starts_with("row 9 has none of the columns"),
            "{}",
            e.message
        );
    }
}
