//! One line of a batch input file, and the output and error lines of OpenAI's format.

use std::collections::HashMap;

use serde_json::{Value, json};

/// The endpoints a batch line may call.
pub const ENDPOINTS: [&str; 3] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

/// A readable batch line.
#[derive(Debug, Clone)]
pub struct Request {
    /// 1-based line number in the input file.
    pub line: usize,
    pub custom_id: String,
    pub url: String,
    pub body: Value,
}

/// A line that cannot be run, named by its number (and its `custom_id` when it has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    pub line: usize,
    pub custom_id: Option<String>,
    /// A short machine-readable reason (`invalid_json`, `invalid_url`, ...).
    pub code: &'static str,
    pub message: String,
}

/// Reads line `line` (1-based). `endpoint`: the one url every line must call (a batch of
/// the Batches API names its endpoint), else any of [`ENDPOINTS`].
pub fn parse_line(line: usize, text: &str, endpoint: Option<&str>) -> Result<Request, LineError> {
    let err = |custom_id: Option<&str>, code, message: String| LineError {
        line,
        custom_id: custom_id.map(str::to_string),
        code,
        message,
    };
    let v: Value = serde_json::from_str(text)
        .map_err(|e| err(None, "invalid_json", format!("not valid JSON: {e}")))?;
    let Value::Object(mut o) = v else {
        return Err(err(None, "invalid_json", "not a JSON object".into()));
    };
    let custom_id = match o.get("custom_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(err(
                None,
                "missing_custom_id",
                "`custom_id` must be a non-empty string".into(),
            ));
        }
    };
    let cid = Some(custom_id.as_str());
    match o.get("method").and_then(Value::as_str) {
        Some("POST") => {}
        other => {
            return Err(err(
                cid,
                "invalid_method",
                format!("`method` must be \"POST\", not {other:?}"),
            ));
        }
    }
    let url = o.get("url").and_then(Value::as_str).unwrap_or_default();
    if !ENDPOINTS.contains(&url) {
        return Err(err(
            cid,
            "invalid_url",
            format!("unknown url {url:?}; a batch line calls one of {ENDPOINTS:?}"),
        ));
    }
    if let Some(e) = endpoint
        && e != url
    {
        return Err(err(
            cid,
            "mismatched_url",
            format!("url {url:?} differs from the batch's endpoint {e:?}"),
        ));
    }
    let url = url.to_string();
    let body = match o.remove("body") {
        Some(b @ Value::Object(_)) => b,
        _ => {
            return Err(err(
                cid,
                "invalid_body",
                "`body` must be a JSON object".into(),
            ));
        }
    };
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(err(
            cid,
            "invalid_body",
            "`stream` is not supported in a batch".into(),
        ));
    }
    Ok(Request {
        line,
        custom_id,
        url,
        body,
    })
}

/// Gives a body without `model` the server's default for its endpoint: the first served
/// model, or for `/v1/embeddings` the default embedding model.
pub fn default_model(app: &crate::state::AppState, reqs: &mut [Request]) {
    let chat = app.models.ids().into_iter().next();
    let embed = app.embeddings.default_model().map(|m| m.id.clone());
    for q in reqs {
        let model = if q.url == "/v1/embeddings" {
            &embed
        } else {
            &chat
        };
        if let (Value::Object(o), Some(m)) = (&mut q.body, model)
            && !o.contains_key("model")
        {
            o.insert("model".into(), json!(m));
        }
    }
}

/// custom_ids given on more than one line, with those lines, in order of first use.
pub fn duplicates<'a>(
    ids: impl IntoIterator<Item = (usize, &'a str)>,
) -> Vec<(String, Vec<usize>)> {
    let mut seen: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut order = Vec::new();
    for (line, id) in ids {
        let e = seen.entry(id).or_default();
        if e.is_empty() {
            order.push(id);
        }
        e.push(line);
    }
    order
        .into_iter()
        .filter_map(|id| {
            let lines = seen.remove(id)?;
            (lines.len() > 1).then(|| (id.to_string(), lines))
        })
        .collect()
}

/// `batch_req_` and a fresh hex id.
fn line_id() -> String {
    format!("batch_req_{:016x}", crate::openai::rand_seed())
}

/// The line of a request the server answered (2xx: the output file; else the error file).
pub fn result_line(custom_id: &str, status: u16, request_id: &str, body: Value) -> Value {
    json!({
        "id": line_id(),
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": null,
    })
}

/// The error-file line of a line that could not be run.
pub fn error_line(e: &LineError) -> Value {
    json!({
        "id": line_id(),
        "custom_id": e.custom_id,
        "response": null,
        "error": {"code": e.code, "message": e.to_string(), "line": e.line},
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lines_are_read_or_named_with_their_reason() {
        let ok = r#"{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"model": "m", "prompt": "x"}}"#;
        let r = parse_line(3, ok, None).unwrap();
        assert_eq!((r.line, r.custom_id.as_str()), (3, "a"));
        let code = |t: &str, e: Option<&str>| parse_line(7, t, e).unwrap_err().code;
        assert_eq!(code("{not json", None), "invalid_json");
        assert_eq!(code("[1]", None), "invalid_json");
        assert_eq!(code(r#"{"method": "POST"}"#, None), "missing_custom_id");
        let bad_url = ok.replace("/v1/completions", "/v1/nope");
        assert_eq!(code(&bad_url, None), "invalid_url");
        assert_eq!(code(ok, Some("/v1/embeddings")), "mismatched_url");
        assert_eq!(code(&ok.replace("POST", "GET"), None), "invalid_method");
        let no_body =
            r#"{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": 3}"#;
        let e = parse_line(9, no_body, None).unwrap_err();
        assert_eq!(
            (e.code, e.line, e.custom_id.as_deref()),
            ("invalid_body", 9, Some("a"))
        );
        assert!(e.to_string().starts_with("line 9: "));
    }

    #[test]
    fn duplicates_name_every_line() {
        let d = duplicates([(1, "a"), (2, "b"), (3, "a"), (5, "a"), (6, "c"), (7, "b")]);
        assert_eq!(
            d,
            vec![
                ("a".to_string(), vec![1, 3, 5]),
                ("b".to_string(), vec![2, 7])
            ]
        );
    }
}
