//! The records of a training file, typed and already validated: what
//! [`crate::data::jsonl`] produces and [`crate::data::sequences`] turns into tokens. Wire
//! quirks (OpenAI's arguments as a JSON string, content as a list of parts, `weight`) are
//! gone by this point; messages are the tokenizer crate's [`Message`], so the renderer sees
//! the same type inference does.

use ferrollama_tokenizer::chat::Message;
use serde_json::Value;

/// One line of a training file.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// `{"messages": [...], "tools": [...]}`: OpenAI's fine-tuning chat format.
    Chat(Chat),
    /// `{"prompt": ..., "completion": ...}`.
    Completion(Completion),
    /// `{"text": ...}`: continued pretraining.
    Text(String),
    /// `{"prompt": ..., "chosen": ..., "rejected": ...}`, or OpenAI's `{"input":
    /// {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}`: a
    /// preference pair for DPO.
    Preference(Preference),
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Chat(_) => RecordKind::Chat,
            Record::Completion(_) => RecordKind::Completion,
            Record::Text(_) => RecordKind::Text,
            Record::Preference(_) => RecordKind::Preference,
        }
    }
}

/// The shape of a record. One file holds one shape: a file that mixes them is almost always
/// two files concatenated by mistake, and each shape trains differently (SFT, pretraining,
/// DPO), so there is no sensible single run over a mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Chat,
    Completion,
    Text,
    Preference,
}

impl RecordKind {
    /// How the shape is named in messages.
    pub fn describe(self) -> &'static str {
        match self {
            RecordKind::Chat => "chat (messages)",
            RecordKind::Completion => "prompt/completion",
            RecordKind::Text => "text",
            RecordKind::Preference => "preference (prompt/chosen/rejected)",
        }
    }
}

/// A line of [`Record`]s with its 1-based line number, kept for errors found later (a
/// sequence too long, a tool call the chat format cannot write).
#[derive(Debug, Clone, PartialEq)]
pub struct Numbered {
    pub line: usize,
    pub record: Record,
}

/// A dialog to train on.
#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    pub messages: Vec<Turn>,
    /// Functions the assistant may call, in OpenAI's shape.
    pub tools: Vec<ToolSpec>,
}

/// One message and whether its tokens are in the loss. Only assistant messages can be
/// trained; OpenAI's `"weight": 0` turns one off (e.g. a bad early answer that the dialog
/// goes on to correct).
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub message: Message,
    pub trained: bool,
}

/// A function the assistant may call: OpenAI's `{"type": "function", "function": {"name",
/// "description", "parameters"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// A JSON schema, `{"type": "object", "properties": {...}, "required": [...]}`.
    pub parameters: Value,
}

/// A prompt and the text to learn after it.
///
/// A text prompt is raw text, as TRL treats a non-conversational prompt/completion: the
/// sequence is `<|begin_of_text|>` prompt completion `<|end_of_text|>`, with no chat
/// headers, which is what a base model sees and what "complete this text" data means. A
/// prompt given as a list of messages is conversational: it is rendered with the chat format
/// and the completion becomes the assistant's reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    Raw { prompt: String, completion: String },
    Chat { prompt: Chat, completion: Vec<Turn> },
}

/// A prompt with a preferred and a dispreferred answer, raw or conversational as in
/// [`Completion`].
#[derive(Debug, Clone, PartialEq)]
pub enum Preference {
    Raw {
        prompt: String,
        chosen: String,
        rejected: String,
    },
    Chat {
        prompt: Chat,
        chosen: Vec<Turn>,
        rejected: Vec<Turn>,
    },
}
