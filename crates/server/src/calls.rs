//! Tool calls written as text by models whose template describes tools in the Hermes style
//! (Qwen2.5 and many open models), or by any model asked for our JSON call:
//!
//! - `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` blocks, several per
//!   reply (an unclosed last block counts when its JSON is whole: models often stop there);
//! - Markdown-fenced JSON (```` ```json ```` or a bare fence) holding call objects, which
//!   small models often write instead;
//! - bare JSON call objects, one or several, or a JSON array of them.
//!
//! A call object is `{"name", "arguments"}` (`"parameters"` also read, as Meta's models and
//! our own system prompt use it), or OpenAI's `{"type": "function", "function": {...}}`,
//! with no other keys. It counts only when its name is one of the request's tools, and a
//! block or array counts only when every call in it does; anything else (malformed JSON,
//! unknown names, JSON data) stays text. Text outside calls is the reply's content;
//! whitespace next to a call is dropped.
//!
//! [`Scanner`] reads text as it is generated and says what is settled: text that cannot be
//! part of a call is released at once, a call as soon as it is complete, and only text that
//! may still turn out to be a call (`<tool_call>` or a prefix of it, a fence, `{` or `[`
//! that may open a call, whitespace before them) is held. Decisions depend only on the
//! text, never on how it was split into pieces, so streamed and whole replies agree.

use serde_json::Value;

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";
const FENCE: &str = "```";

/// Settled output: text, or one complete call.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Call { name: String, arguments: Value },
}

/// How a candidate at the start of the unsettled text turned out.
enum Verdict {
    /// Not enough text yet.
    More,
    /// These many bytes are text.
    Text(usize),
    /// These many bytes are these calls.
    Calls(usize, Vec<(String, Value)>),
}

/// Incremental splitter of generated text into text and calls (see the module docs).
#[derive(Debug)]
pub struct Scanner {
    names: Vec<String>,
    /// Unsettled text.
    buf: String,
    /// The last thing released was a call: whitespace after it is dropped.
    after_call: bool,
    calls: usize,
}

impl Scanner {
    /// A scanner recognizing calls of these tools.
    pub fn new(names: Vec<String>) -> Scanner {
        Scanner {
            names,
            buf: String::new(),
            after_call: false,
            calls: 0,
        }
    }

    /// Feeds generated text; returns what became settled.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buf.push_str(text);
        self.settle(false)
    }

    /// The reply ended: settles everything held.
    pub fn finish(&mut self) -> Vec<Piece> {
        self.settle(true)
    }

    /// Calls released so far.
    pub fn n_calls(&self) -> usize {
        self.calls
    }

    fn settle(&mut self, last: bool) -> Vec<Piece> {
        let mut out = Vec::new();
        loop {
            let Some(i) = self.buf.find(['<', '`', '{', '[']) else {
                // No candidate: all text, but trailing whitespace may precede a call.
                let keep = if last {
                    self.buf.len()
                } else {
                    self.buf.trim_end().len()
                };
                let text: String = self.buf.drain(..keep).collect();
                self.text(&mut out, text);
                return out;
            };
            // Text before the candidate, less its trailing whitespace (dropped if the
            // candidate is a call).
            let ws_from = self.buf[..i].trim_end().len();
            let text: String = self.buf.drain(..ws_from).collect();
            self.text(&mut out, text);
            let i = i - ws_from;
            match self.judge(&self.buf[i..], last) {
                Verdict::More => return out,
                Verdict::Text(n) => {
                    let text: String = self.buf.drain(..i + n).collect();
                    self.text(&mut out, text);
                }
                Verdict::Calls(n, calls) => {
                    self.buf.drain(..i + n);
                    self.calls += calls.len();
                    out.extend(
                        calls
                            .into_iter()
                            .map(|(name, arguments)| Piece::Call { name, arguments }),
                    );
                    self.after_call = true;
                }
            }
        }
    }

    /// Releases text (leading whitespace dropped right after a call).
    fn text(&mut self, out: &mut Vec<Piece>, text: String) {
        let text = if self.after_call {
            let t = text.trim_start();
            if t.is_empty() {
                return;
            }
            self.after_call = false;
            t.to_string()
        } else {
            text
        };
        if text.is_empty() {
            return;
        }
        match out.last_mut() {
            Some(Piece::Text(prev)) => prev.push_str(&text),
            _ => out.push(Piece::Text(text)),
        }
    }

    /// What the candidate at the start of `s` is. `last`: no more text will come.
    fn judge(&self, s: &str, last: bool) -> Verdict {
        let unsure = |n: usize| {
            if last {
                Verdict::Text(n)
            } else {
                Verdict::More
            }
        };
        // The first character is a candidate character (ASCII), so 1 is a boundary.
        if s.starts_with('<') {
            if !s.starts_with(OPEN) {
                return if OPEN.starts_with(s) {
                    unsure(s.len())
                } else {
                    Verdict::Text(1)
                };
            }
            let body = &s[OPEN.len()..];
            // A block ends at its close tag, or (close tag forgotten) where the next opens.
            let close = body.find(CLOSE);
            let reopen = body.find(OPEN);
            return match (close, reopen) {
                (Some(k), r) if r.is_none_or(|r| k < r) => {
                    self.block(&body[..k], OPEN.len() + k + CLOSE.len())
                }
                (_, Some(r)) => self.block(&body[..r], OPEN.len() + r),
                // A reply that ends inside a block: a whole call in it still counts.
                _ if last => self.block(body, s.len()),
                _ => Verdict::More,
            };
        }
        if s.starts_with('`') {
            if !s.starts_with(FENCE) {
                return if FENCE.starts_with(s) {
                    unsure(s.len())
                } else {
                    Verdict::Text(1)
                };
            }
            let Some(nl) = s[FENCE.len()..].find('\n').map(|n| n + FENCE.len()) else {
                let info = s[FENCE.len()..].to_ascii_lowercase();
                return if "json".starts_with(info.trim()) {
                    unsure(s.len())
                } else {
                    Verdict::Text(s.len())
                };
            };
            let info = s[FENCE.len()..nl].trim();
            if !(info.is_empty() || info.eq_ignore_ascii_case("json")) {
                return Verdict::Text(nl + 1);
            }
            let body = &s[nl + 1..];
            let t = body.trim_start();
            if t.is_empty() {
                return unsure(s.len());
            }
            if !t.starts_with(['{', '[']) {
                return Verdict::Text(nl + 1);
            }
            return match body.find(FENCE) {
                Some(k) => self.block(&body[..k], nl + 1 + k + FENCE.len()),
                None if last => Verdict::Text(s.len()),
                None => Verdict::More,
            };
        }
        // `{` or `[`: a call object opens with `{"`, an array of them with `[{"`.
        match opens_call(s) {
            None => return unsure(s.len()),
            Some(false) => return Verdict::Text(1),
            Some(true) => {}
        }
        match json_end(s) {
            Some(e) => match self.calls_in(&s[..e]) {
                Some(calls) => Verdict::Calls(e, calls),
                None => Verdict::Text(e),
            },
            None if last => Verdict::Text(1),
            None => Verdict::More,
        }
    }

    /// A `<tool_call>` block or a fence of `n` bytes with this body.
    fn block(&self, body: &str, n: usize) -> Verdict {
        match self.calls_in(body) {
            Some(calls) => Verdict::Calls(n, calls),
            None => Verdict::Text(n),
        }
    }

    /// The calls in `text`: one or more JSON call objects or arrays of them, separated by
    /// whitespace, all of known tools; `None` otherwise.
    fn calls_in(&self, text: &str) -> Option<Vec<(String, Value)>> {
        let mut calls = Vec::new();
        for v in serde_json::Deserializer::from_str(text.trim()).into_iter::<Value>() {
            match v.ok()? {
                Value::Array(items) if !items.is_empty() => {
                    for item in &items {
                        calls.push(self.call(item)?);
                    }
                }
                v => calls.push(self.call(&v)?),
            }
        }
        (!calls.is_empty()).then_some(calls)
    }

    /// One call object of a known tool.
    fn call(&self, v: &Value) -> Option<(String, Value)> {
        let (name, arguments) = call_object(v)?;
        self.names.contains(&name).then_some((name, arguments))
    }
}

/// `{"name", "arguments"|"parameters"}` or `{"type": "function", "function": {...}}`, no other
/// keys; string arguments are parsed. The arguments must be there and be an object (so a
/// data object such as `{"name": "get_time"}` in a reply is not taken for a call).
pub fn call_object(v: &Value) -> Option<(String, Value)> {
    let o = v.as_object()?;
    let o = match o.get("function") {
        Some(Value::Object(f)) => {
            if o.keys()
                .any(|k| !matches!(k.as_str(), "function" | "type" | "id"))
            {
                return None;
            }
            f
        }
        Some(_) => return None,
        None => o,
    };
    if o.keys().any(|k| {
        !matches!(
            k.as_str(),
            "name" | "arguments" | "parameters" | "type" | "id"
        )
    }) {
        return None;
    }
    let name = o.get("name")?.as_str()?.to_string();
    let args = match o.get("arguments").or_else(|| o.get("parameters")) {
        None => return None,
        Some(Value::String(s)) => serde_json::from_str(s).ok()?,
        Some(a) => a.clone(),
    };
    args.is_object().then_some((name, args))
}

/// Whether `s` (starting with `{` or `[`) can open a call: `{` then `"`, or `[` then `{"`
/// (whitespace allowed between). `None`: not enough text to say.
fn opens_call(s: &str) -> Option<bool> {
    let mut want: &[char] = if s.starts_with('[') {
        &['{', '"']
    } else {
        &['"']
    };
    for c in s[1..].chars() {
        if c.is_whitespace() {
            continue;
        }
        if c != want[0] {
            return Some(false);
        }
        want = &want[1..];
        if want.is_empty() {
            return Some(true);
        }
    }
    None
}

/// Byte length of the JSON value opening `s` (brackets balanced outside strings), if it is
/// all there.
fn json_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits a whole reply: its content (text outside calls) and its calls.
pub fn split(names: Vec<String>, text: &str) -> (String, Vec<(String, Value)>) {
    let mut s = Scanner::new(names);
    let mut pieces = s.push(text);
    pieces.extend(s.finish());
    let mut content = String::new();
    let mut calls = Vec::new();
    for p in pieces {
        match p {
            Piece::Text(t) => content.push_str(&t),
            Piece::Call { name, arguments } => calls.push((name, arguments)),
        }
    }
    (content, calls)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names() -> Vec<String> {
        vec!["get_weather".into(), "get_time".into()]
    }

    fn calls(v: &[(&str, Value)]) -> Vec<(String, Value)> {
        v.iter().map(|(n, a)| (n.to_string(), a.clone())).collect()
    }

    #[test]
    fn several_tagged_calls_with_text_around() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"CET\"}}\n</tool_call>\nDone.";
        let (content, got) = split(names(), text);
        assert_eq!(content, "Let me check.Done.");
        assert_eq!(
            got,
            calls(&[
                ("get_weather", json!({"city": "Paris"})),
                ("get_time", json!({"tz": "CET"}))
            ])
        );
    }

    #[test]
    fn fenced_bare_and_array_calls() {
        let fenced =
            "```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n```";
        assert_eq!(
            split(names(), fenced),
            (
                String::new(),
                calls(&[("get_weather", json!({"city": "Rome"}))])
            )
        );
        let bare = "{\"name\": \"get_time\", \"arguments\": {}}\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}";
        assert_eq!(
            split(names(), bare).1,
            calls(&[
                ("get_time", json!({})),
                ("get_weather", json!({"city": "Oslo"}))
            ])
        );
        let array = "```\n[{\"name\": \"get_time\", \"arguments\": \"{\\\"tz\\\": \\\"UTC\\\"}\"}, {\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lima\"}}}]\n```";
        assert_eq!(
            split(names(), array).1,
            calls(&[
                ("get_time", json!({"tz": "UTC"})),
                ("get_weather", json!({"city": "Lima"}))
            ])
        );
    }

    #[test]
    fn unknown_names_malformed_json_and_data_stay_text() {
        for text in [
            "<tool_call>\n{\"name\": \"get_wind\", \"arguments\": {}}\n</tool_call>",
            "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}\n</tool_call>",
            "[{\"name\": \"get_time\", \"arguments\": {}}, {\"name\": \"nope\"}]",
            "{\"name\": \"get_time\", \"city\": \"x\"}",
            "{\"name\": \"get_time\"}",
            "{\"name\": \"get_time\", \"arguments\": 3}",
            "Use `x[0]` and {braces} or <b>tags</b>.",
            "```python\nprint({\"name\": \"get_time\"})\n```",
            "{\"name\": \"get_time\"",
        ] {
            let (content, got) = split(names(), text);
            assert!(got.is_empty(), "{text}: {got:?}");
            assert_eq!(content, text);
        }
    }

    #[test]
    fn a_forgotten_close_tag_ends_the_block_at_the_next_one() {
        let (content, got) = split(
            names(),
            "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\"}}\n</tool_call>",
        );
        assert_eq!(content, "");
        assert_eq!(
            got,
            calls(&[
                ("get_time", json!({})),
                ("get_weather", json!({"city": "Bern"}))
            ])
        );
    }

    #[test]
    fn an_unclosed_last_block_still_counts() {
        let (content, got) = split(
            names(),
            "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n",
        );
        assert_eq!(content, "");
        assert_eq!(got, calls(&[("get_time", json!({}))]));
    }

    /// Every split of the text into pieces gives the same result, and calls are released
    /// as soon as they are complete, while plain text is not held.
    #[test]
    fn streaming_releases_calls_when_complete() {
        let text = "Checking <b>now</b>:\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n```json\n{\"name\": \"get_time\", \"arguments\": {}}\n```\nok";
        let whole = split(names(), text);
        for size in 1..12 {
            let mut s = Scanner::new(names());
            let mut got = Vec::new();
            let bytes: Vec<char> = text.chars().collect();
            let mut fed = String::new();
            for chunk in bytes.chunks(size) {
                let chunk: String = chunk.iter().collect();
                fed.push_str(&chunk);
                let pieces = s.push(&chunk);
                for p in &pieces {
                    if let Piece::Call { name, .. } = p {
                        // A call is released in the chunk that completes it.
                        let end = if name == "get_weather" {
                            fed.find("</tool_call>").map(|i| i + CLOSE.len())
                        } else {
                            fed.rfind("```").filter(|&i| i > 60).map(|i| i + 3)
                        };
                        let end = end.expect("the call's end was fed");
                        assert!(fed.len() - end < size, "{name} late at size {size}");
                    }
                }
                got.extend(pieces);
            }
            got.extend(s.finish());
            let mut content = String::new();
            let mut cs = Vec::new();
            for p in got {
                match p {
                    Piece::Text(t) => content.push_str(&t),
                    Piece::Call { name, arguments } => cs.push((name, arguments)),
                }
            }
            assert_eq!((content, cs), whole, "size {size}");
        }
        assert_eq!(whole.0, "Checking <b>now</b>:ok");
        assert_eq!(whole.1.len(), 2);
        // Plain text streams at once (less trailing whitespace, held until text follows).
        let mut s = Scanner::new(names());
        assert_eq!(s.push("Hello "), vec![Piece::Text("Hello".into())]);
        assert_eq!(s.push("world"), vec![Piece::Text(" world".into())]);
        assert_eq!(s.push(" <tool_"), vec![]);
        assert_eq!(s.push("tip>"), vec![Piece::Text(" <tool_tip>".into())]);
        assert_eq!(s.push("{"), vec![]);
        assert_eq!(s.push("x"), vec![Piece::Text("{x".into())]);
        assert_eq!(s.push("\n"), vec![]);
        assert_eq!(s.finish(), vec![Piece::Text("\n".into())]);
    }
}
