//! The OpenAI request bodies (as the `openai` client sends them) and their conversion into
//! the job layer's turns, tools, tool choice, response format and sampling settings.

use super::*;

/// `stop`: one string or several.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StopSpec {
    One(String),
    Many(Vec<String>),
}

/// Message content: a string, or a list of parts.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ContentSpec {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct FunctionCall {
    pub name: String,
    /// A JSON string (OpenAI) or an object.
    #[serde(default)]
    pub arguments: Value,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ToolCallIn {
    pub id: Option<String>,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ChatMessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Option<ContentSpec>,
    #[serde(default, deserialize_with = "crate::body::opt_objects")]
    pub tool_calls: Option<Vec<ToolCallIn>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// A participant's or tool's name (passed to templates for `tool` messages).
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ToolDef {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Sampling fields shared by chat and completions.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct Sampling {
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Extension (llama.cpp, vLLM).
    pub top_k: Option<u32>,
    /// Extension.
    pub min_p: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    /// Extension.
    pub repetition_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<StopSpec>,
    pub n: Option<u32>,
    /// Extension: keep generating past end-of-turn tokens (benchmarks).
    pub ignore_eos: Option<bool>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
}

/// `POST /v1/chat/completions`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ChatRequest {
    pub model: String,
    #[serde(deserialize_with = "crate::body::objects")]
    pub messages: Vec<ChatMessageIn>,
    /// ferrollama: shield ids the conversation must pass before generation, besides the
    /// server's `--input-shield`s.
    #[serde(default)]
    pub input_shields: Option<Vec<String>>,
    /// ferrollama: shield ids that moderate the reply while it is generated, besides the
    /// server's `--output-shield`s.
    #[serde(default)]
    pub output_shields: Option<Vec<String>>,
    /// ferrollama: shield ids that judge each tool result in the conversation on its own
    /// before generation (Prompt Guard in injection mode), besides the server's
    /// `--tool-shield`s.
    #[serde(default)]
    pub tool_shields: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::body::opt_objects")]
    pub tools: Option<Vec<ToolDef>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    /// Keep the completion for `GET /v1/chat/completions` (OpenAI's default: false). The
    /// Llama Stack path `/v1/openai/v1/chat/completions` stores every completion.
    #[serde(default)]
    pub store: Option<bool>,
    /// Up to 16 string values kept with a stored completion.
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `prompt`: a string, a list of strings, token ids, or a list of token-id lists (as
/// lm-evaluation-harness sends tokenized requests).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PromptSpec {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// `POST /v1/completions`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptSpec,
    #[serde(default)]
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub echo: Option<bool>,
    /// Not supported (answered 400 when given).
    #[serde(default)]
    pub suffix: Option<Value>,
    /// Not supported (answered 400 when given).
    #[serde(default)]
    pub best_of: Option<Value>,
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

impl Sampling {
    pub(super) fn settings(&self) -> Result<Settings, ApiError> {
        self.settings_with(false)
    }

    /// [`Sampling::settings`]; `zero_ok` allows `max_tokens: 0` (completions' `echo`:
    /// the prompt is scored, nothing generated).
    pub(super) fn settings_with(&self, zero_ok: bool) -> Result<Settings, ApiError> {
        let d = SamplerConfig::default();
        let seed = self.seed.map_or_else(rand_seed, |s| s as u64);
        let sampler = SamplerConfig {
            // OpenAI's default temperature is 1.
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0) as usize,
            top_p: self.top_p.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            penalty_last_n: d.penalty_last_n,
            seed,
        };
        if !(0.0..=2.0).contains(&sampler.temperature) {
            return Err(ApiError::invalid_param(
                "temperature",
                "temperature must be between 0 and 2",
            ));
        }
        for (name, v) in [
            ("frequency_penalty", sampler.frequency_penalty),
            ("presence_penalty", sampler.presence_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(ApiError::invalid_param(
                    name,
                    format!("{name} must be between -2 and 2"),
                ));
            }
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopSpec::One(s)) => vec![s.clone()],
            Some(StopSpec::Many(v)) => v.clone(),
        };
        if stop.len() > 4 {
            return Err(ApiError::invalid_param("stop", "at most 4 stop sequences"));
        }
        let max = self.max_completion_tokens.or(self.max_tokens);
        if max == Some(0) && !zero_ok {
            return Err(ApiError::invalid_param(
                "max_tokens",
                "max_tokens must be at least 1",
            ));
        }
        Ok(Settings {
            max_tokens: max.map(|m| m as usize),
            sampler,
            stop,
            ignore_eos: self.ignore_eos.unwrap_or(false),
            logprobs: None,
            prompt_logprobs: None,
            n: self.n.unwrap_or(1) as usize,
            response_format: None,
        })
    }
}

/// A seed for requests that give none.
pub(crate) fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(unix_now());
    h.finish()
}

/// Text of a content field; parts other than text get a 400.
pub fn content_text(c: &Option<ContentSpec>, field: &str) -> Result<String, ApiError> {
    match c {
        None => Ok(String::new()),
        Some(ContentSpec::Text(s)) => Ok(s.clone()),
        Some(ContentSpec::Parts(parts)) => {
            let mut s = String::new();
            for p in parts {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => s.push_str(t),
                    ("text", None) => {
                        return Err(ApiError::invalid_param(field, "a text part has no `text`"));
                    }
                    (k, _) => {
                        return Err(ApiError::invalid_param(
                            field,
                            format!(
                                "content parts of type '{k}' are not supported: this model takes text only"
                            ),
                        ));
                    }
                }
            }
            Ok(s)
        }
    }
}

/// `response_format` of OpenAI: `text`, `json_object`, `json_schema` (`{json_schema: {schema}}`).
pub(super) fn response_format(v: &Option<Value>) -> Result<Option<Arc<Schema>>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let kind = v.get("type").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid_param("response_format", "response_format needs a `type`")
    })?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(Arc::new(Schema::any_object()))),
        "json_schema" => {
            let schema = v
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "response_format",
                        "json_schema needs `json_schema.schema`",
                    )
                })?;
            job::compile_schema(schema, "response_format").map(Some)
        }
        k => Err(ApiError::invalid_param(
            "response_format",
            format!("unknown response_format type '{k}' (text, json_object, json_schema)"),
        )),
    }
}

pub(super) fn tool_choice(v: &Option<Value>) -> Result<ToolChoice, ApiError> {
    match v {
        None => Ok(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(ApiError::invalid_param(
                "tool_choice",
                format!("unknown tool_choice '{other}' (auto, none, required, or a function)"),
            )),
        },
        Some(o) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Named(n.to_string()))
            .ok_or_else(|| {
                ApiError::invalid_param(
                    "tool_choice",
                    "tool_choice must be a string or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                )
            }),
    }
}

pub(super) fn turns(messages: &[ChatMessageIn]) -> Result<Vec<Turn>, ApiError> {
    messages
        .iter()
        .map(|m| {
            let role = Role::parse(&m.role)?;
            let text = content_text(&m.content, "messages")?;
            if role == Role::User && m.content.is_none() {
                return Err(ApiError::invalid_param(
                    "messages",
                    "a user message needs `content`",
                ));
            }
            let tool_calls = m
                .tool_calls
                .iter()
                .flatten()
                .map(|c| Call {
                    id: c.id.clone().unwrap_or_default(),
                    name: c.function.name.clone(),
                    arguments: job::arguments_value(&c.function.arguments),
                })
                .collect();
            Ok(Turn {
                role,
                text,
                tool_calls,
                tool_call_id: m.tool_call_id.clone(),
                name: m.name.clone(),
            })
        })
        .collect()
}

pub(crate) fn tools(defs: &Option<Vec<ToolDef>>) -> Result<Vec<ToolSpec>, ApiError> {
    defs.iter()
        .flatten()
        .map(|t| {
            if t.kind != "function" {
                return Err(ApiError::invalid_param(
                    "tools",
                    format!("tool type '{}' is not supported (function)", t.kind),
                ));
            }
            if let Some(p) = &t.function.parameters
                && !p.is_object()
            {
                return Err(ApiError::invalid_param(
                    "tools",
                    "function.parameters must be a JSON Schema object",
                ));
            }
            Ok(ToolSpec {
                name: t.function.name.clone(),
                description: t.function.description.clone().unwrap_or_default(),
                parameters: t.function.parameters.clone().unwrap_or(Value::Null),
            })
        })
        .collect()
}
