//! Typed dialog messages and tool calls (Meta's `RawMessage`, `ToolCall`, `StopReason`).

use std::fmt;

/// Tool-call arguments: an ordered JSON object. Order matters, since Meta re-encodes calls
/// with `json.dumps`, which keeps insertion order.
pub type Arguments = serde_json::Map<String, serde_json::Value>;

/// Who speaks. `Tool` is written `ipython` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    /// The header text the model sees.
    pub fn header(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "ipython",
        }
    }

    /// Parses an API role; `ipython` is accepted as `tool`.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" | "ipython" => Role::Tool,
            _ => return None,
        })
    }
}

/// Why the assistant stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// `<|eot_id|>`: the turn is over.
    EndOfTurn,
    /// `<|eom_id|>`: waiting for a tool result.
    EndOfMessage,
    /// The token budget ran out.
    OutOfTokens,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EndOfTurn => "end_of_turn",
            StopReason::EndOfMessage => "end_of_message",
            StopReason::OutOfTokens => "out_of_tokens",
        }
    }

    pub fn parse(s: &str) -> Option<StopReason> {
        Some(match s {
            "end_of_turn" => StopReason::EndOfTurn,
            "end_of_message" => StopReason::EndOfMessage,
            "out_of_tokens" => StopReason::OutOfTokens,
            _ => return None,
        })
    }
}

/// How custom tool calls are written back into the prompt (Meta's `ToolPromptFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ToolPromptFormat {
    /// `{"type": "function", "name": ..., "parameters": {...}}`
    #[default]
    Json,
    /// `<function=NAME>{...}</function>`
    FunctionTag,
    /// `[NAME(k=v, ...)]`
    PythonList,
}

impl ToolPromptFormat {
    pub fn parse(s: &str) -> Option<ToolPromptFormat> {
        Some(match s {
            "json" => ToolPromptFormat::Json,
            "function_tag" => ToolPromptFormat::FunctionTag,
            "python_list" => ToolPromptFormat::PythonList,
            _ => return None,
        })
    }
}

/// Llama 3.1's built-in tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinTool {
    BraveSearch,
    WolframAlpha,
    /// In Meta's enum, not documented for 3.1.
    Photogen,
    /// Enabled by `Environment: ipython`; calls are raw Python after `<|python_tag|>`.
    CodeInterpreter,
}

impl BuiltinTool {
    pub const ALL: [BuiltinTool; 4] = [
        BuiltinTool::BraveSearch,
        BuiltinTool::WolframAlpha,
        BuiltinTool::Photogen,
        BuiltinTool::CodeInterpreter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BuiltinTool::BraveSearch => "brave_search",
            BuiltinTool::WolframAlpha => "wolfram_alpha",
            BuiltinTool::Photogen => "photogen",
            BuiltinTool::CodeInterpreter => "code_interpreter",
        }
    }

    pub fn parse(s: &str) -> Option<BuiltinTool> {
        BuiltinTool::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// A tool's name: built-in, or a custom function.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ToolName {
    Builtin(BuiltinTool),
    Custom(String),
}

impl ToolName {
    /// Built-in names map to [`ToolName::Builtin`]; anything else is custom.
    pub fn parse(s: &str) -> ToolName {
        match BuiltinTool::parse(s) {
            Some(b) => ToolName::Builtin(b),
            None => ToolName::Custom(s.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ToolName::Builtin(b) => b.name(),
            ToolName::Custom(s) => s,
        }
    }
}

impl fmt::Display for ToolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One call of a tool by the assistant.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub call_id: String,
    pub tool_name: ToolName,
    pub arguments: Arguments,
}

/// Message content: one string, or several text items encoded one by one (BPE does not
/// merge across items).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Text(String),
    Items(Vec<String>),
}

impl Content {
    /// All the text, items joined without separator.
    pub fn joined(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Items(v) => v.concat(),
        }
    }
}

impl From<&str> for Content {
    fn from(s: &str) -> Content {
        Content::Text(s.to_string())
    }
}

impl From<String> for Content {
    fn from(s: String) -> Content {
        Content::Text(s)
    }
}

/// A dialog message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Content,
    /// Retrieved context appended to a user message (RAG).
    pub context: Option<String>,
    /// For assistant messages: decides `<|eom_id|>` vs `<|eot_id|>`.
    pub stop_reason: Option<StopReason>,
    /// For assistant messages.
    pub tool_calls: Vec<ToolCall>,
}

impl Message {
    /// A message with text content and nothing else.
    pub fn new(role: Role, content: impl Into<Content>) -> Message {
        Message {
            role,
            content: content.into(),
            context: None,
            stop_reason: None,
            tool_calls: Vec::new(),
        }
    }
}
