//! The JSON form of dialogs used by the conformance vectors and `ferrollama prompt --jsonl`:
//! `{"messages": [{"role", "content", "context", "stop_reason", "tool_calls"}],
//! "tool_prompt_format": "json"}`. Wire types stay here; the rest of the crate sees only
//! the typed [`Message`].

use serde::Deserialize;
use serde_json::Value;

use crate::chat::message::{Arguments, Content, Message, Role, StopReason, ToolCall};
use crate::chat::message::{ToolName, ToolPromptFormat};
use crate::chat::parse::new_call_id;
use crate::error::{Result, TokenizerError};

/// One dialog. Unknown top-level fields (ids, descriptions, expected outputs) are ignored.
#[derive(Debug, Deserialize)]
pub struct DialogWire {
    pub messages: Vec<MessageWire>,
    #[serde(default)]
    pub tool_prompt_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageWire {
    pub role: String,
    pub content: ContentWire,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCallWire>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ContentWire {
    Text(String),
    Items(Vec<ItemWire>),
}

#[derive(Debug, Deserialize)]
pub struct ItemWire {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallWire {
    #[serde(default)]
    pub call_id: Option<String>,
    pub tool_name: String,
    #[serde(default)]
    pub arguments: Option<Value>,
}

/// A dialog ready to encode.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialog {
    pub messages: Vec<Message>,
    pub tool_prompt_format: ToolPromptFormat,
}

impl DialogWire {
    /// Checks and converts; errors name the message index and field.
    pub fn into_dialog(self) -> Result<Dialog> {
        let tool_prompt_format = match self.tool_prompt_format.as_deref() {
            None => ToolPromptFormat::Json,
            Some(s) => ToolPromptFormat::parse(s).ok_or_else(|| {
                invalid(format!(
                    "tool_prompt_format {s:?} is not one of json, function_tag, python_list"
                ))
            })?,
        };
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                m.into_message()
                    .map_err(|e| invalid(format!("messages[{i}]: {e}")))
            })
            .collect::<Result<_>>()?;
        Ok(Dialog {
            messages,
            tool_prompt_format,
        })
    }
}

impl MessageWire {
    fn into_message(self) -> Result<Message, String> {
        let role = Role::parse(&self.role).ok_or_else(|| {
            format!(
                "role {:?} is not one of system, user, assistant, tool",
                self.role
            )
        })?;
        let content = match self.content {
            ContentWire::Text(s) => Content::Text(s),
            ContentWire::Items(items) => Content::Items(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(k, it)| match (it.kind.as_str(), it.text) {
                        ("text", Some(t)) => Ok(t),
                        ("text", None) => Err(format!("content[{k}] has no \"text\"")),
                        (other, _) => Err(format!(
                            "content[{k}] has type {other:?}; this text-only format takes only \"text\" items"
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let stop_reason = match self.stop_reason.as_deref() {
            None => None,
            Some(s) => Some(StopReason::parse(s).ok_or_else(|| {
                format!(
                    "stop_reason {s:?} is not one of end_of_turn, end_of_message, out_of_tokens"
                )
            })?),
        };
        let tool_calls = self
            .tool_calls
            .into_iter()
            .enumerate()
            .map(|(k, t)| {
                let arguments = match t.arguments {
                    None | Some(Value::Null) => Arguments::new(),
                    Some(Value::Object(m)) => m,
                    Some(_) => return Err(format!("tool_calls[{k}].arguments must be an object")),
                };
                Ok(ToolCall {
                    call_id: t.call_id.unwrap_or_else(new_call_id),
                    tool_name: ToolName::parse(&t.tool_name),
                    arguments,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Message {
            role,
            content,
            context: self.context,
            stop_reason,
            tool_calls,
        })
    }
}

fn invalid(s: String) -> TokenizerError {
    TokenizerError::InvalidMessage(s)
}

/// Parses one JSON dialog.
pub fn parse_dialog(json: &str) -> Result<Dialog> {
    let wire: DialogWire =
        serde_json::from_str(json).map_err(|e| invalid(format!("not a dialog object: {e}")))?;
    wire.into_dialog()
}
