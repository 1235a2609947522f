//! Reading a JSONL training file: one record a line, in one of the shapes people already
//! have (see [`crate::data`]). Every line is checked and every bad one reported
//! ([`crate::data::problems`]); the records come back only when the whole file is good, so
//! a run never starts on half a dataset.

use std::path::Path;

use serde_json::{Map, Value};

use crate::data::openai::{self, Check};
use crate::data::problems::Problems;
use crate::data::record::{Chat, Completion, Numbered, Preference, Record, RecordKind, Turn};
use crate::error::{Result, TrainError};
use ferrollama_tokenizer::chat::{Message, Role};

/// The records of one file, all of one shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Records {
    pub kind: RecordKind,
    pub records: Vec<Numbered>,
}

/// Reads and checks `path`.
pub fn read_jsonl(path: &Path) -> Result<Records> {
    let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_jsonl(&path.display().to_string(), &text)
}

/// Checks the text of a JSONL file; `source_name` names it in errors. Blank lines are
/// skipped (line numbers still count them, so they match an editor's).
pub fn parse_jsonl(source_name: &str, text: &str) -> Result<Records> {
    let mut problems = Problems::new();
    let mut records = Vec::new();
    // The shape of the first record with a recognisable shape, and its line.
    let mut first: Option<(RecordKind, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        // A byte-order mark from an editor on Windows is not part of the JSON.
        let line = line.strip_prefix('\u{feff}').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let checked = record(line).and_then(|(kind, parse)| {
            match first {
                None => first = Some((kind, n)),
                Some((k, at)) if k != kind => {
                    return Err(format!(
                        "a {} record in a file of {} records (line {at} is one); \
                         one file holds one shape",
                        kind.describe(),
                        k.describe()
                    ));
                }
                Some(_) => {}
            }
            parse()
        });
        match checked {
            Ok(record) => records.push(Numbered { line: n, record }),
            Err(what) => problems.add(n, what),
        }
    }
    problems.finish(source_name)?;
    match first {
        Some((kind, _)) if !records.is_empty() => Ok(Records { kind, records }),
        _ => Err(TrainError::Data(format!(
            "{source_name}: no records (the file is empty or blank)"
        ))),
    }
}

type Parse = Box<dyn FnOnce() -> Check<Record>>;

/// The shape of one line, and the parse that checks it in full. The shape is known before
/// the record is checked, so that a file's shape is fixed by its first line even when that
/// line has a mistake in it.
fn record(line: &str) -> Check<(RecordKind, Parse)> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err("not a JSON object".into());
    };
    let kind = kind_of(&obj)?;
    let parse: Parse = match kind {
        RecordKind::Chat => Box::new(move || openai::chat(&obj).map(Record::Chat)),
        RecordKind::Completion => Box::new(move || completion(&obj).map(Record::Completion)),
        RecordKind::Text => Box::new(move || text_field(&obj, "text").map(Record::Text)),
        RecordKind::Preference
            if obj.contains_key("preferred_output") || obj.contains_key("non_preferred_output") =>
        {
            Box::new(move || openai_preference(&obj).map(Record::Preference))
        }
        RecordKind::Preference => Box::new(move || preference(&obj).map(Record::Preference)),
    };
    Ok((kind, parse))
}

fn kind_of(obj: &Map<String, Value>) -> Check<RecordKind> {
    let has = |k: &str| obj.contains_key(k);
    let preference = has("chosen") || has("rejected");
    let completion = has("completion");
    if has("preferred_output") || has("non_preferred_output") {
        // OpenAI's DPO shape: {"input": {"messages", "tools"}, "preferred_output": [...],
        // "non_preferred_output": [...]}.
        if has("messages") || has("prompt") || completion || preference {
            return Err(
                "both preferred_output/non_preferred_output and messages/prompt fields: which \
                 shape is it?"
                    .into(),
            );
        }
        Ok(RecordKind::Preference)
    } else if has("messages") {
        if has("prompt") || has("text") || completion || preference {
            return Err(
                "both messages and prompt/completion/text fields: which shape is it?".into(),
            );
        }
        Ok(RecordKind::Chat)
    } else if preference {
        if completion {
            return Err("both completion and chosen/rejected: which shape is it?".into());
        }
        Ok(RecordKind::Preference)
    } else if has("prompt") || completion {
        if has("text") {
            return Err("both prompt/completion and text: which shape is it?".into());
        }
        Ok(RecordKind::Completion)
    } else if has("text") {
        Ok(RecordKind::Text)
    } else {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        Err(format!(
            "unknown shape: expected messages, prompt/completion, prompt/chosen/rejected or \
             text; found {{{}}}",
            keys.join(", ")
        ))
    }
}

/// A string field with some non-blank text in it.
fn text_field(obj: &Map<String, Value>, key: &str) -> Check<String> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(format!("{key} is missing")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(format!("{key} is empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{key} is not a string")),
    }
}

/// The prompt of a completion or preference: text, or a list of messages (with the call
/// ids they made, for the replies' tool messages).
enum Prompt {
    Raw(String),
    Chat(Chat, Vec<String>),
}

fn prompt(obj: &Map<String, Value>) -> Check<Prompt> {
    match obj.get("prompt") {
        Some(Value::Array(_)) => {
            let mut ids = Vec::new();
            let mut messages = openai::turns(obj.get("prompt"), "prompt", &mut ids)?;
            // The prompt is context, never trained on, whatever its weights say.
            messages.iter_mut().for_each(|t| t.trained = false);
            let tools = openai::tools(obj.get("tools"))?;
            Ok(Prompt::Chat(Chat { messages, tools }, ids))
        }
        Some(Value::String(_)) => text_field(obj, "prompt").map(Prompt::Raw),
        None | Some(Value::Null) => Err("prompt is missing".into()),
        Some(_) => Err("prompt is not a string or a list of messages".into()),
    }
}

/// The answer after a conversational prompt: a string is the assistant's reply; a list
/// is the messages that follow the prompt.
fn reply(obj: &Map<String, Value>, key: &str, mut ids: Vec<String>) -> Check<Vec<Turn>> {
    let turns = match obj.get(key) {
        Some(Value::String(_)) => vec![Turn {
            message: Message::new(Role::Assistant, text_field(obj, key)?),
            trained: true,
        }],
        v => openai::turns(v, key, &mut ids)?,
    };
    openai::require_trained(&turns, key)?;
    Ok(turns)
}

/// OpenAI's preference record: the prompt is `input.messages` (with `input.tools`), the
/// answers are lists of assistant messages.
fn openai_preference(obj: &Map<String, Value>) -> Check<Preference> {
    let input = match obj.get("input") {
        Some(Value::Object(o)) => o,
        None | Some(Value::Null) => return Err("input is missing".into()),
        Some(_) => return Err("input is not an object with messages".into()),
    };
    let mut ids = Vec::new();
    let mut messages = openai::turns(input.get("messages"), "input.messages", &mut ids)?;
    messages.iter_mut().for_each(|t| t.trained = false);
    let tools = openai::tools(input.get("tools"))?;
    for key in ["preferred_output", "non_preferred_output"] {
        if !matches!(obj.get(key), Some(Value::Array(_))) {
            return Err(format!("{key} must be a list of assistant messages"));
        }
    }
    Ok(Preference::Chat {
        chosen: reply(obj, "preferred_output", ids.clone())?,
        rejected: reply(obj, "non_preferred_output", ids)?,
        prompt: Chat { messages, tools },
    })
}

/// A text prompt takes a text answer.
fn raw_reply(obj: &Map<String, Value>, key: &str) -> Check<String> {
    match obj.get(key) {
        Some(Value::Array(_)) => Err(format!(
            "{key} is a list of messages but prompt is text; give both as text or the \
             prompt as messages too"
        )),
        _ => text_field(obj, key),
    }
}

fn completion(obj: &Map<String, Value>) -> Check<Completion> {
    Ok(match prompt(obj)? {
        Prompt::Raw(prompt) => Completion::Raw {
            prompt,
            completion: raw_reply(obj, "completion")?,
        },
        Prompt::Chat(prompt, ids) => Completion::Chat {
            completion: reply(obj, "completion", ids)?,
            prompt,
        },
    })
}

fn preference(obj: &Map<String, Value>) -> Check<Preference> {
    Ok(match prompt(obj)? {
        Prompt::Raw(prompt) => Preference::Raw {
            prompt,
            chosen: raw_reply(obj, "chosen")?,
            rejected: raw_reply(obj, "rejected")?,
        },
        Prompt::Chat(prompt, ids) => Preference::Chat {
            chosen: reply(obj, "chosen", ids.clone())?,
            rejected: reply(obj, "rejected", ids)?,
            prompt,
        },
    })
}
