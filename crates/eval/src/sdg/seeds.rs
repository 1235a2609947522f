//! Seed prompts: what the teacher answers. One JSON object a line:
//! - `{"messages": [{"role": "user", "content": "..."}, ...]}`: a dialog ending with a user
//!   message (system, user and assistant messages, content as text);
//! - `{"prompt": "..."}`: one user message;
//! - `{"topic": "..."}`: one user message made from the topic template (default
//!   [`DEFAULT_TOPIC_TEMPLATE`], `{topic}` replaced).
//!
//! Other keys are kept out of the records. Every bad line is reported with its number.

use ferrollama_engine::ChatMessage;
use serde_json::Value;

use crate::error::{EvalError, Result};

pub const DEFAULT_TOPIC_TEMPLATE: &str = "Ask a question about {topic}, then answer it.";

/// One seed: the dialog the teacher continues (and the records keep).
#[derive(Debug, Clone, PartialEq)]
pub struct Seed {
    pub messages: Vec<ChatMessage>,
}

impl Seed {
    pub fn user(text: &str) -> Seed {
        Seed {
            messages: vec![ChatMessage::new("user", text)],
        }
    }
}

/// Checks one dialog: text contents, known roles, a user message last.
pub fn check_dialog(messages: &[ChatMessage]) -> std::result::Result<(), String> {
    if messages.is_empty() {
        return Err("the dialog has no messages".into());
    }
    for (i, m) in messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
            return Err(format!(
                "messages[{i}].role {:?} is not system, user or assistant",
                m.role
            ));
        }
        if m.content.as_deref().is_none_or(|c| c.trim().is_empty()) {
            return Err(format!("messages[{i}].content is empty"));
        }
    }
    if messages.last().map(|m| m.role.as_str()) != Some("user") {
        return Err("the last message must be the user's (the teacher answers it)".into());
    }
    Ok(())
}

fn text(v: &Value, what: &str) -> std::result::Result<String, String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::String(_) => Err(format!("{what} is empty")),
        _ => Err(format!("{what} is not a string")),
    }
}

fn line(v: &Value, topic_template: &str) -> std::result::Result<Seed, String> {
    let Some(o) = v.as_object() else {
        return Err("not a JSON object".into());
    };
    let seed = if let Some(ms) = o.get("messages") {
        let Some(ms) = ms.as_array() else {
            return Err("messages is not a list".into());
        };
        let messages = ms
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let role = text(&m["role"], &format!("messages[{i}].role"))?;
                let content = text(&m["content"], &format!("messages[{i}].content"))?;
                Ok(ChatMessage::new(&role, &content))
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        Seed { messages }
    } else if let Some(p) = o.get("prompt") {
        Seed::user(&text(p, "prompt")?)
    } else if let Some(t) = o.get("topic") {
        Seed::user(&topic_template.replace("{topic}", &text(t, "topic")?))
    } else {
        return Err(
            "expected {\"messages\": [...]}, {\"prompt\": \"...\"} or {\"topic\": \"...\"}".into(),
        );
    };
    check_dialog(&seed.messages)?;
    Ok(seed)
}

/// Parses a seeds file's text; `name` names it in errors, which list every bad line.
pub fn parse_seeds(name: &str, text: &str, topic_template: &str) -> Result<Vec<Seed>> {
    let mut seeds = Vec::new();
    let mut bad = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.strip_prefix('\u{feff}').unwrap_or(l);
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(l)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|v| line(&v, topic_template))
        {
            Ok(s) => seeds.push(s),
            Err(e) => bad.push(format!("line {}: {e}", i + 1)),
        }
    }
    if !bad.is_empty() {
        let more = bad.len().saturating_sub(10);
        let mut msg = bad.into_iter().take(10).collect::<Vec<_>>().join("; ");
        if more > 0 {
            msg.push_str(&format!("; and {more} more"));
        }
        return Err(EvalError::Dataset(format!("{name}: {msg}")));
    }
    if seeds.is_empty() {
        return Err(EvalError::Dataset(format!(
            "{name}: no seed prompts (the file is empty or blank)"
        )));
    }
    Ok(seeds)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_three_shapes_and_every_bad_line() {
        let t = "{\"prompt\": \"hi\"}\n\n{\"topic\": \"owls\"}\n{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"u\"}]}\n";
        let s = parse_seeds("seeds.jsonl", t, "About {topic}.").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], Seed::user("hi"));
        assert_eq!(s[1], Seed::user("About owls."));
        assert_eq!(s[2].messages[0].role, "system");
        let bad = "{\"prompt\": \"\"}\nnot json\n{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\"}]}\n{\"x\": 1}\n";
        let e = parse_seeds("seeds.jsonl", bad, DEFAULT_TOPIC_TEMPLATE)
            .unwrap_err()
            .to_string();
        for want in [
            "line 1: prompt is empty",
            "line 2: not JSON",
            "line 3: the last message must be the user's",
            "line 4: expected",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
        assert!(parse_seeds("s", "\n\n", "").is_err());
    }
}
