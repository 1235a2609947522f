//! Generated assistant text -> content, tool calls and stop reason, as Meta's
//! `ChatFormat.decode_assistant_message` does.
//!
//! Order of detection (first match wins): a `<function=NAME>{...}</function>` call; the
//! whole text as a JSON object with `"type": "function"` or a `"name"`; a Python list of
//! keyword calls; a built-in `NAME.call(query="...")`; and, after `<|python_tag|>`, raw code
//! for the code interpreter. A call empties the content.
//!
//! Where Meta's code would raise (a JSON call without `"parameters"`, a built-in named with
//! no arguments), we return no call or an empty query instead: generated text must never
//! crash the server.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

use crate::chat::message::{Arguments, BuiltinTool, Content, Message, Role, StopReason};
use crate::chat::message::{ToolCall, ToolName};
use crate::chat::pylit::parse_call_list;
use crate::error::Result;
use crate::special::Special;
use crate::tokenizer::Tokenizer;

fn custom_call_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Meta's CUSTOM_TOOL_CALL_PATTERN; `[^}]` spans lines, `.` does not (Python defaults).
    RE.get_or_init(|| {
        Regex::new(r"<function=(?P<function_name>[^}]+)>(?P<args>\{.*?\})")
            .unwrap_or_else(|e| unreachable!("constant regex: {e}"))
    })
}

fn builtin_call_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#"\b(?P<tool_name>\w+)\.call\(query="(?P<query>[^"]*)"\)"#)
            .unwrap_or_else(|e| unreachable!("constant regex: {e}"))
    })
}

/// Decodes `ids` and parses them (Meta's `decode_assistant_message`).
pub fn decode_assistant_message(
    tok: &Tokenizer,
    ids: &[u32],
    stop_reason: StopReason,
) -> Result<Message> {
    Ok(parse_assistant_text(&tok.decode(ids)?, stop_reason))
}

/// Parses generated assistant text (Meta's `decode_assistant_message_from_content`).
/// `stop_reason` is used when the text ends in neither `<|eot_id|>` nor `<|eom_id|>`.
pub fn parse_assistant_text(text: &str, stop_reason: StopReason) -> Message {
    let mut content = text.trim_matches(' ');
    let header = format!(
        "{}assistant{}\n\n",
        Special::StartHeader.text(),
        Special::EndHeader.text()
    );
    if let Some(rest) = content.strip_prefix(header.as_str()) {
        content = rest;
    }
    let ipython = match content.strip_prefix(Special::PythonTag.text()) {
        Some(rest) => {
            content = rest;
            true
        }
        None => false,
    };
    let mut stop_reason = stop_reason;
    if let Some(rest) = content.strip_suffix(Special::EndOfTurn.text()) {
        content = rest;
        stop_reason = StopReason::EndOfTurn;
    } else if let Some(rest) = content.strip_suffix(Special::EndOfMessage.text()) {
        content = rest;
        stop_reason = StopReason::EndOfMessage;
    }

    let call = match custom_call(content) {
        Some((name, args)) => Some(match BuiltinTool::parse(&name) {
            // A built-in called in the custom format: its first argument is the query.
            Some(b) => {
                let query = args.values().next().cloned().unwrap_or_default();
                (ToolName::Builtin(b), query_args(query))
            }
            None => (ToolName::Custom(name), args),
        }),
        None => match builtin_call_re().captures(content) {
            Some(c) => Some((
                ToolName::parse(&c["tool_name"]),
                query_args(Value::String(c["query"].to_string())),
            )),
            None if ipython => {
                let mut args = Arguments::new();
                args.insert("code".into(), Value::String(content.to_string()));
                Some((ToolName::Builtin(BuiltinTool::CodeInterpreter), args))
            }
            None => None,
        },
    };

    let (content, tool_calls) = match call {
        Some((tool_name, arguments)) => (
            String::new(),
            vec![ToolCall {
                call_id: new_call_id(),
                tool_name,
                arguments,
            }],
        ),
        None => (content.to_string(), Vec::new()),
    };
    Message {
        role: Role::Assistant,
        content: Content::Text(content),
        context: None,
        stop_reason: Some(stop_reason),
        tool_calls,
    }
}

fn query_args(query: Value) -> Arguments {
    let mut a = Arguments::new();
    a.insert("query".into(), query);
    a
}

/// Meta's `ToolUtils.maybe_extract_custom_tool_call`.
fn custom_call(content: &str) -> Option<(String, Arguments)> {
    if let Some(c) = custom_call_re().captures(content) {
        // Meta swaps single quotes for double before parsing, and gives up on failure.
        let args = c["args"].replace('\'', "\"");
        return match serde_json::from_str::<Value>(&args) {
            Ok(Value::Object(m)) => Some((c["function_name"].to_string(), m)),
            _ => None,
        };
    }
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(content) {
        let is_call =
            obj.get("type").and_then(Value::as_str) == Some("function") || obj.contains_key("name");
        if !is_call {
            return None;
        }
        let name = obj.get("name")?.as_str()?.to_string();
        let args = match obj.get("parameters") {
            Some(Value::Object(m)) => m.clone(),
            None => Arguments::new(),
            Some(_) => return None,
        };
        return Some((name, args));
    }
    parse_call_list(content)?.into_iter().next()
}

/// A random call id in UUID v4 form, as Meta's `uuid.uuid4()`.
pub fn new_call_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS; hashing a counter gives independent 64-bit values.
    let word = || {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.finish()
    };
    let (a, b) = (word(), word());
    let hi = (a & 0xffff_ffff_ffff_0fff) | 0x4000; // version 4
    let lo = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000; // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_look_like_uuid4_and_differ() {
        let a = new_call_id();
        let b = new_call_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn malformed_calls_never_panic_and_stay_content() {
        for text in [
            "<function=f>{not json}</function>",
            "{\"type\": \"function\"}",
            "{\"name\": 3}",
            "{\"name\": \"f\", \"parameters\": 3}",
            "[f(a=]",
        ] {
            let m = parse_assistant_text(text, StopReason::OutOfTokens);
            assert!(m.tool_calls.is_empty(), "{text}");
            assert_eq!(m.content, Content::Text(text.to_string()));
        }
    }

    #[test]
    fn builtin_named_in_json_form_without_arguments_gets_empty_query() {
        let m = parse_assistant_text("{\"name\": \"brave_search\"}", StopReason::EndOfTurn);
        assert_eq!(m.tool_calls.len(), 1);
        assert_eq!(m.tool_calls[0].arguments["query"], Value::Null);
    }
}
