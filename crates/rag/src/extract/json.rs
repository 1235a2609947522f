//! JSON becomes one `path: value` line per scalar, in document order (the workspace's
//! `serde_json` keeps object order), so a chunk carries the keys that give its values
//! meaning: `{"user": {"name": "Ada"}}` reads `user.name: Ada`. Array items are indexed
//! (`tags[0]: x`); a top-level scalar is its value alone; empty containers are kept as
//! `[]` / `{}` so their keys stay searchable.

use serde_json::Value;

use super::{ExtractError, Limits};

/// The readable text of a JSON document.
pub(super) fn to_text(src: &str, limits: &Limits) -> Result<String, ExtractError> {
    // serde_json bounds nesting (128 levels), so neither parsing nor `walk` can overflow the stack.
    let value: Value = serde_json::from_str(src).map_err(|e| {
        ExtractError::Corrupt(format!(
            "invalid JSON at line {} column {}: {e}; fix the file or upload it as .txt",
            e.line(),
            e.column()
        ))
    })?;
    let mut out = String::new();
    let mut path = String::new();
    walk(&value, &mut path, &mut out, limits)?;
    Ok(out)
}

fn walk(
    v: &Value,
    path: &mut String,
    out: &mut String,
    limits: &Limits,
) -> Result<(), ExtractError> {
    let scalar = match v {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                walk(child, path, out, limits)?;
                path.truncate(len);
            }
            return Ok(());
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, child) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(child, path, out, limits)?;
                path.truncate(len);
            }
            return Ok(());
        }
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        Value::String(s) => s.clone(),
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
    };
    if !path.is_empty() {
        out.push_str(path);
        out.push_str(": ");
    }
    out.push_str(&scalar);
    out.push('\n');
    // Paths repeat per scalar, so the text can outgrow the file (deep nesting, long keys).
    if out.len() > limits.max_output_bytes {
        return Err(ExtractError::TooLarge(format!(
            "the JSON's text is over {} bytes; split the file into smaller ones",
            limits.max_output_bytes
        )));
    }
    Ok(())
}
