//! OpenAI's chat fine-tuning shape, checked and turned into [`Turn`]s:
//! `{"role", "content", "tool_calls": [{"id", "type": "function", "function": {"name",
//! "arguments": "<JSON text>"}}], "tool_call_id", "weight"}` and the `tools` list
//! `[{"type": "function", "function": {"name", "description", "parameters"}}]`.
//!
//! Each check names the field it failed on (`messages[2].tool_calls[0].function.arguments`),
//! so a user can find the mistake in a long line. Unknown fields (`name`, ids a pipeline
//! added) are ignored, as OpenAI does.

use ferrollama_tokenizer::chat::{Content, Message, Role, StopReason, ToolCall, ToolName};
use serde_json::{Map, Value};

use crate::data::record::{Chat, ToolSpec, Turn};

/// A check of one record: `Err` says what is wrong, without the line (added by the caller).
pub type Check<T> = std::result::Result<T, String>;

/// `{"messages": [...], "tools": [...]?}`.
pub fn chat(obj: &Map<String, Value>) -> Check<Chat> {
    let mut call_ids = Vec::new();
    let messages = turns(obj.get("messages"), "messages", &mut call_ids)?;
    require_trained(&messages, "messages")?;
    Ok(Chat {
        messages,
        tools: tools(obj.get("tools"))?,
    })
}

/// A non-empty list of messages. `call_ids` holds the ids of the tool calls made so far
/// (across a prompt and its completion), so that each tool result answers a real call.
pub fn turns(v: Option<&Value>, field: &str, call_ids: &mut Vec<String>) -> Check<Vec<Turn>> {
    let list = match v {
        None | Some(Value::Null) => return Err(format!("{field} is missing")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(format!("{field} is not a list of messages")),
    };
    if list.is_empty() {
        return Err(format!("{field} is empty"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| turn(m, &format!("{field}[{i}]"), call_ids))
        .collect()
}

/// There is something to learn: an assistant message whose weight is not 0.
pub fn require_trained(turns: &[Turn], field: &str) -> Check<()> {
    if turns.iter().any(|t| t.trained) {
        return Ok(());
    }
    if turns.iter().any(|t| t.message.role == Role::Assistant) {
        Err(format!(
            "every assistant message in {field} has weight 0: nothing to train on"
        ))
    } else {
        Err(format!("{field} has no assistant message to train on"))
    }
}

fn turn(v: &Value, at: &str, call_ids: &mut Vec<String>) -> Check<Turn> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{at} is not an object"))?;
    let role = match obj.get("role") {
        None | Some(Value::Null) => return Err(format!("{at} has no role")),
        Some(Value::String(s)) => match s.as_str() {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(format!(
                    "{at}.role is \"{other}\"; expected system, user, assistant or tool"
                ));
            }
        },
        Some(_) => return Err(format!("{at}.role is not a string")),
    };
    let assistant = role == Role::Assistant;
    let calls = match obj.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if assistant => a
            .iter()
            .enumerate()
            .map(|(i, c)| tool_call(c, &format!("{at}.tool_calls[{i}]")))
            .collect::<Check<Vec<_>>>()?,
        Some(Value::Array(_)) => {
            return Err(format!("{at}: only assistant messages carry tool_calls"));
        }
        Some(_) => return Err(format!("{at}.tool_calls is not a list")),
    };
    let text = content(obj.get("content"), at)?;
    // An assistant message that only calls tools has no text (OpenAI sends null); a tool's
    // output may legitimately be empty. Anything else with no text is a broken record.
    let may_be_empty = (assistant && !calls.is_empty()) || role == Role::Tool;
    let text = match text {
        Some(t) if !t.is_empty() || may_be_empty => t,
        None if assistant && !calls.is_empty() => String::new(),
        Some(_) => return Err(format!("{at}.content is empty")),
        None => return Err(format!("{at} has no content")),
    };
    if role == Role::Tool {
        match obj.get("tool_call_id") {
            Some(Value::String(id)) if !id.is_empty() => {
                if !call_ids.contains(id) {
                    return Err(format!(
                        "{at}.tool_call_id \"{id}\" answers no earlier tool call"
                    ));
                }
            }
            Some(Value::String(_)) => return Err(format!("{at}.tool_call_id is empty")),
            Some(v) if !v.is_null() => return Err(format!("{at}.tool_call_id is not a string")),
            _ => return Err(format!("{at}: a tool message needs a tool_call_id")),
        }
    }
    let trained = match obj.get("weight") {
        None => assistant,
        Some(w) if !assistant => {
            return Err(format!(
                "{at}: weight {w} on a {} message; only assistant messages have a weight",
                role_name(role)
            ));
        }
        Some(w) => match w.as_f64() {
            Some(0.0) => false,
            Some(1.0) => true,
            _ => return Err(format!("{at}.weight is {w}; expected 0 or 1")),
        },
    };
    call_ids.extend(calls.iter().map(|c| c.call_id.clone()));
    Ok(Turn {
        message: Message {
            // The model stopped to wait for the results: Meta's <|eom_id|>, as the engine
            // writes such a message back into a prompt.
            stop_reason: (!calls.is_empty()).then_some(StopReason::EndOfMessage),
            tool_calls: calls,
            ..Message::new(role, Content::Text(text))
        },
        trained,
    })
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Tool => "tool",
        other => other.header(),
    }
}

/// A string, or OpenAI's list of parts of which only text parts are accepted (joined as
/// the engine joins them). `None` when absent or null.
fn content(v: Option<&Value>, at: &str) -> Check<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, p) in parts.iter().enumerate() {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(format!(
                            "{at}.content[{i}] is not a text part {{\"type\": \"text\", \"text\": ...}}"
                        ));
                    }
                }
            }
            Ok(Some(text))
        }
        Some(_) => Err(format!("{at}.content is not a string")),
    }
}

fn tool_call(v: &Value, at: &str) -> Check<ToolCall> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{at} is not an object"))?;
    let id = match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(format!("{at} has no id")),
    };
    match obj.get("type") {
        None => {}
        Some(Value::String(s)) if s == "function" => {}
        Some(t) => return Err(format!("{at}.type is {t}; expected \"function\"")),
    }
    let f = match obj.get("function") {
        Some(Value::Object(f)) => f,
        _ => return Err(format!("{at} has no function object")),
    };
    let name = match f.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(format!("{at}.function has no name")),
    };
    let arguments = match f.get("arguments") {
        // OpenAI's shape: the arguments as JSON text.
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return Err(format!("{at}.function.arguments is not a JSON object")),
            Err(e) => {
                return Err(format!(
                    "{at}.function.arguments is not valid JSON ({e}): {s}"
                ));
            }
        },
        // Already parsed, as some exporters write it.
        Some(Value::Object(o)) => o.clone(),
        None | Some(Value::Null) => return Err(format!("{at}.function has no arguments")),
        Some(_) => return Err(format!("{at}.function.arguments is not a JSON string")),
    };
    Ok(ToolCall {
        call_id: id,
        tool_name: ToolName::parse(&name),
        arguments,
    })
}

/// The optional `tools` list.
pub fn tools(v: Option<&Value>) -> Check<Vec<ToolSpec>> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("tools is not a list".into()),
    };
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let at = format!("tools[{i}]");
            let f = match t.get("function") {
                Some(Value::Object(f)) => f,
                _ => return Err(format!("{at} has no function object")),
            };
            if let Some(ty) = t.get("type")
                && ty.as_str() != Some("function")
            {
                return Err(format!("{at}.type is {ty}; expected \"function\""));
            }
            let name = match f.get("name") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => return Err(format!("{at}.function has no name")),
            };
            let description = match f.get("description") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err(format!("{at}.function.description is not a string")),
            };
            let parameters = match f.get("parameters") {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(p @ Value::Object(_)) => p.clone(),
                Some(_) => return Err(format!("{at}.function.parameters is not an object")),
            };
            Ok(ToolSpec {
                name,
                description,
                parameters,
            })
        })
        .collect()
}
