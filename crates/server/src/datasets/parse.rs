//! Dataset bytes → rows: JSON Lines (one object a line), a JSON array of objects, and CSV
//! (RFC 4180: a header line, `"` quoting with `""` for a quote, line breaks inside quotes).
//! Every refusal names the line (or array item) where the problem is. CSV values stay
//! text (llama-stack reads CSV with pandas, which would turn `5` into a number).

use base64::Engine as _;
use ferrollama_eval::scoring::Row;
use serde_json::Value;

/// How a source's bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON Lines, or a JSON array of objects when the text starts with `[`.
    Json,
    Csv,
}

impl Format {
    /// By a file name's extension.
    pub fn of_name(name: &str) -> Option<Format> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" | "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    /// By a media type (`text/csv`, `application/jsonl`, `application/x-ndjson`, `csv`).
    pub fn of_media_type(t: &str) -> Option<Format> {
        let t = t.to_ascii_lowercase();
        if t.contains("csv") {
            Some(Format::Csv)
        } else if t.contains("json") {
            Some(Format::Json)
        } else {
            None
        }
    }
}

/// Why the bytes are not rows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("item {item} of the JSON array: {message}")]
    Item { item: usize, message: String },
    #[error("{0}")]
    Other(String),
}

fn line(line: usize, message: impl Into<String>) -> ParseError {
    ParseError::Line {
        line,
        message: message.into(),
    }
}

/// The rows in `bytes`.
pub fn parse_rows(bytes: &[u8], format: Format) -> Result<Vec<Row>, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let l = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        line(l, "the text is not valid UTF-8")
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        Format::Json if text.trim_start().starts_with('[') => json_array(text),
        Format::Json => jsonl(text),
        Format::Csv => csv(text),
    }
}

fn jsonl(text: &str) -> Result<Vec<Row>, ParseError> {
    let mut rows = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(o)) => rows.push(o),
            Ok(_) => return Err(line(i + 1, "a row must be a JSON object")),
            Err(e) => return Err(line(i + 1, format!("invalid JSON: {e}"))),
        }
    }
    Ok(rows)
}

fn json_array(text: &str) -> Result<Vec<Row>, ParseError> {
    let v: Vec<Value> = serde_json::from_str(text)
        .map_err(|e| line(e.line(), format!("invalid JSON array: {e}")))?;
    v.into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(o) => Ok(o),
            _ => Err(ParseError::Item {
                item: i,
                message: "a row must be a JSON object".into(),
            }),
        })
        .collect()
}

/// CSV records with the line each starts on.
fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, ParseError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line_no = 1;
    while chars.peek().is_some() {
        let start = line_no;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted_field = false;
        loop {
            match chars.next() {
                None => {
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                Some('"') if field.is_empty() && !quoted_field => {
                    quoted_field = true;
                    loop {
                        match chars.next() {
                            None => {
                                return Err(line(start, "a quoted field is not closed"));
                            }
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                field.push('"');
                            }
                            Some('"') => break,
                            Some(c) => {
                                if c == '\n' {
                                    line_no += 1;
                                }
                                field.push(c);
                            }
                        }
                    }
                    match chars.peek() {
                        None | Some(',') | Some('\n') | Some('\r') => {}
                        Some(_) => {
                            return Err(line(
                                line_no,
                                "text after a closing quote (write \"\" for a quote inside a quoted field)",
                            ));
                        }
                    }
                }
                Some(',') => {
                    fields.push(std::mem::take(&mut field));
                    quoted_field = false;
                }
                Some('\r') if chars.peek() == Some(&'\n') => {}
                Some('\n') => {
                    line_no += 1;
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                Some(c) => field.push(c),
            }
        }
        // A blank line is no record (pandas skips them too).
        if !(fields.len() == 1 && fields[0].is_empty() && !quoted_field) {
            out.push((start, fields));
        }
    }
    Ok(out)
}

fn csv(text: &str) -> Result<Vec<Row>, ParseError> {
    let mut records = csv_records(text)?.into_iter();
    let Some((_, header)) = records.next() else {
        return Ok(Vec::new());
    };
    for (i, h) in header.iter().enumerate() {
        if h.is_empty() {
            return Err(line(
                1,
                format!("column {} of the header has no name", i + 1),
            ));
        }
        if header[..i].contains(h) {
            return Err(line(
                1,
                format!("the column '{h}' appears twice in the header"),
            ));
        }
    }
    records
        .map(|(l, fields)| {
            if fields.len() != header.len() {
                return Err(line(
                    l,
                    format!(
                        "expected {} fields (as the header has), found {}",
                        header.len(),
                        fields.len()
                    ),
                ));
            }
            Ok(header
                .iter()
                .cloned()
                .zip(fields.into_iter().map(Value::String))
                .collect())
        })
        .collect()
}

/// A `data:` URL's media type and bytes (base64 or percent-encoded).
pub fn data_url(uri: &str) -> Result<(String, Vec<u8>), ParseError> {
    let rest = uri
        .strip_prefix("data:")
        .ok_or_else(|| ParseError::Other("not a data: URL".into()))?;
    let (header, data) = rest
        .split_once(',')
        .ok_or_else(|| ParseError::Other("a data: URL needs a ',' before its data".into()))?;
    let mut parts = header.split(';');
    let media = parts.next().unwrap_or("").trim().to_string();
    let base64 = parts.any(|p| p.trim().eq_ignore_ascii_case("base64"));
    let bytes = if base64 {
        let clean: String = percent_decode(data)
            .into_iter()
            .map(char::from)
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(clean.trim_end_matches('='))
            .or_else(|_| {
                base64::engine::general_purpose::STANDARD_NO_PAD.decode(clean.trim_end_matches('='))
            })
            .or_else(|_| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(clean.trim_end_matches('='))
            })
            .map_err(|e| ParseError::Other(format!("the data: URL's base64 is invalid: {e}")))?
    } else {
        percent_decode(data)
    };
    Ok((media, bytes))
}

/// `%XX` escapes decoded (a `%` not followed by two hex digits stays as it is).
pub fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| (*c as char).to_digit(16)),
                b.get(i + 2).and_then(|c| (*c as char).to_digit(16)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_quotes_and_errors() {
        let rows = parse_rows(
            b"q,a\r\n\"x, \"\"y\"\"\",1\n\n\"multi\nline\",\n",
            Format::Csv,
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["q"], json!("x, \"y\""));
        assert_eq!(rows[0]["a"], json!("1"));
        assert_eq!(rows[1]["q"], json!("multi\nline"));
        assert_eq!(rows[1]["a"], json!(""));
        let e = parse_rows(b"q,a\n1,2\n3\n", Format::Csv).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3: expected 2 fields (as the header has), found 1"
        );
        let e = parse_rows(b"q\n\"open\n", Format::Csv).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("line 2: a quoted field is not closed"),
            "{e}"
        );
        assert!(parse_rows(b"q,q\n", Format::Csv).is_err());
    }

    #[test]
    fn json_lines_and_arrays() {
        let rows = parse_rows(b"{\"a\": 1}\n\n{\"a\": [2]}\n", Format::Json).unwrap();
        assert_eq!(rows.len(), 2);
        let e = parse_rows(b"{\"a\": 1}\n[1]\n", Format::Json).unwrap_err();
        assert_eq!(e.to_string(), "line 2: a row must be a JSON object");
        let e = parse_rows(b"{\"a\": 1}\n{oops\n", Format::Json).unwrap_err();
        assert!(e.to_string().starts_with("line 2: invalid JSON"), "{e}");
        let rows = parse_rows(b" [{\"a\": 1}, {\"b\": 2}]", Format::Json).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(parse_rows(b"[{\"a\": 1}, 2]", Format::Json).is_err());
    }

    #[test]
    fn data_urls() {
        let (t, b) = data_url("data:text/csv;base64,YSxiCjEsMgo=").unwrap();
        assert_eq!((t.as_str(), b.as_slice()), ("text/csv", &b"a,b\n1,2\n"[..]));
        let (t, b) = data_url("data:application/jsonl,%7B%22a%22%3A1%7D%0A").unwrap();
        assert_eq!(
            (t.as_str(), b.as_slice()),
            ("application/jsonl", &b"{\"a\":1}\n"[..])
        );
        assert!(data_url("data:text/csv;base64").is_err());
        assert_eq!(Format::of_media_type("csv"), Some(Format::Csv));
        assert_eq!(
            Format::of_media_type("application/x-ndjson"),
            Some(Format::Json)
        );
        assert_eq!(Format::of_name("/x/y.JSONL"), Some(Format::Json));
        assert_eq!(Format::of_name("/x/y.txt"), None);
    }
}
