//! The agent loop's vocabulary: messages, tool calls and definitions, steps and events.
//!
//! Steps and messages serialize in Llama Stack's agent shapes (`step_type`,
//! `model_response`, `tool_responses`, `violation`), because the Llama Stack agents API is
//! their main reader and the database keeps turns as those documents; the OpenAI Responses
//! layer maps them to its own items.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result (Meta's `ipython` role).
    Tool,
}

/// Why the model stopped (Meta's stop reasons: `end_of_message` is `<|eom_id|>`, the model
/// waits for a tool result; `end_of_turn` is `<|eot_id|>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndOfTurn,
    EndOfMessage,
    OutOfTokens,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub call_id: String,
    pub tool_name: String,
    pub arguments: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool result: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// For a tool result: the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            call_id: None,
            tool_name: None,
            stop_reason: None,
        }
    }

    /// A tool result answering `call`.
    pub fn tool_result(call_id: &str, tool_name: &str, content: impl Into<String>) -> Message {
        Message {
            call_id: Some(call_id.to_string()),
            tool_name: Some(tool_name.to_string()),
            ..Message::new(Role::Tool, content)
        }
    }
}

/// Where a tool runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ToolKind {
    /// Python in the bubblewrap sandbox (`builtin::code_interpreter`).
    CodeInterpreter,
    /// `builtin::websearch` through Brave Search.
    BraveSearch,
    /// `builtin::wolfram_alpha`.
    WolframAlpha,
    /// A tool of an MCP server.
    Mcp { endpoint: String },
    /// `builtin::rag`'s `knowledge_search` (and the Responses `file_search` tool): a
    /// search of these vector stores.
    KnowledgeSearch {
        vector_store_ids: Vec<String>,
        max_results: usize,
    },
    /// Run by the caller: the turn pauses until the caller sends the result.
    Client,
}

impl ToolKind {
    /// Executed by us (the loop continues) rather than by the caller.
    pub fn server_side(&self) -> bool {
        !matches!(self, ToolKind::Client)
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    /// The name the model calls it by (`brave_search`, `code_interpreter`, a function name).
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments (null: the built-in's own).
    #[serde(default)]
    pub parameters: Value,
    pub kind: ToolKind,
    /// The tool group it came from (`builtin::websearch`, an MCP group), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolgroup: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ToolChoice {
    #[default]
    Auto,
    Required,
    None,
    /// A call to this tool is forced.
    Named(String),
}

/// What one turn runs with: the agent's configuration plus per-turn overrides.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub model: String,
    /// The system message (the agent's `instructions`); empty for none.
    pub instructions: String,
    pub tools: Vec<ToolDef>,
    pub tool_choice: ToolChoice,
    /// Most inference steps in one turn (Llama Stack's `max_infer_iters`).
    pub max_infer_iters: usize,
    pub input_shields: Vec<String>,
    pub output_shields: Vec<String>,
    /// Sampling parameters, passed to the inference backend as sent.
    pub sampling: Value,
    pub max_tokens: Option<usize>,
}

/// One tool's result as Llama Stack reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResponse {
    pub call_id: String,
    pub tool_name: String,
    pub content: String,
    /// `{"error": true}` when the tool failed (its error is the content); the runtime's
    /// structured output otherwise (e.g. the code interpreter's exit code).
    #[serde(default)]
    pub metadata: Value,
}

impl ToolResponse {
    pub fn error(call: &ToolCall, message: impl Into<String>) -> ToolResponse {
        ToolResponse {
            call_id: call.call_id.clone(),
            tool_name: call.tool_name.clone(),
            content: message.into(),
            metadata: serde_json::json!({"error": true}),
        }
    }

    pub fn is_error(&self) -> bool {
        self.metadata.get("error").and_then(Value::as_bool) == Some(true)
    }
}

/// A shield's refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub violation_level: String,
    pub user_message: String,
    #[serde(default)]
    pub metadata: Value,
}

/// One step of a turn, in Llama Stack's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step_type", rename_all = "snake_case")]
pub enum Step {
    Inference {
        turn_id: String,
        step_id: String,
        started_at: String,
        completed_at: String,
        model_response: Message,
    },
    ToolExecution {
        turn_id: String,
        step_id: String,
        started_at: String,
        completed_at: String,
        tool_calls: Vec<ToolCall>,
        tool_responses: Vec<ToolResponse>,
    },
    ShieldCall {
        turn_id: String,
        step_id: String,
        started_at: String,
        completed_at: String,
        violation: Option<Violation>,
    },
}

impl Step {
    pub fn step_id(&self) -> &str {
        match self {
            Step::Inference { step_id, .. }
            | Step::ToolExecution { step_id, .. }
            | Step::ShieldCall { step_id, .. } => step_id,
        }
    }

    pub fn step_type(&self) -> StepType {
        match self {
            Step::Inference { .. } => StepType::Inference,
            Step::ToolExecution { .. } => StepType::ToolExecution,
            Step::ShieldCall { .. } => StepType::ShieldCall,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepType {
    Inference,
    ToolExecution,
    ShieldCall,
}

/// What a step streams while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// Generated text.
    Text(String),
    /// A tool call the model made, parsed.
    ToolCall(ToolCall),
}

/// What the loop reports as it goes (the HTTP layers stream these).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    StepStart {
        step_id: String,
        step_type: StepType,
    },
    StepProgress {
        step_id: String,
        step_type: StepType,
        delta: Delta,
    },
    StepComplete(Step),
}
