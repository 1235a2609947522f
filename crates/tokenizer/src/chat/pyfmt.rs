//! Python's `json.dumps` and `str()` for JSON values, byte for byte.
//!
//! Meta re-encodes tool calls with `json.dumps` (separators `", "` and `": "`,
//! `ensure_ascii=True`, insertion order, floats as `repr`), and the `python_list` format
//! with `str()`. `serde_json` writes compact separators and raw UTF-8, which changes token
//! ids, so we write these by hand.

use serde_json::{Map, Number, Value};

/// Options beyond `json.dumps` defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct DumpOptions {
    /// `sort_keys=True`.
    pub sort_keys: bool,
    /// Jinja's `tojson`: also escape `<`, `>`, `&`, `'` as `\u003c` etc.
    pub html_safe: bool,
}

/// `json.dumps(value)`.
pub fn json_dumps(v: &Value) -> String {
    json_dumps_with(v, DumpOptions::default())
}

/// `json.dumps(value, ...)` with the given options.
pub fn json_dumps_with(v: &Value, opts: DumpOptions) -> String {
    let mut out = String::new();
    write_json(&mut out, v, opts);
    out
}

/// `json.dumps` of one string.
pub fn json_string(s: &str) -> String {
    let mut out = String::new();
    write_str(&mut out, s, DumpOptions::default());
    out
}

fn write_json(out: &mut String, v: &Value, opts: DumpOptions) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number_repr(n)),
        Value::String(s) => write_str(out, s, opts),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(out, x, opts);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in entries(m, opts.sort_keys).into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, k, opts);
                out.push_str(": ");
                write_json(out, x, opts);
            }
            out.push('}');
        }
    }
}

fn entries(m: &Map<String, Value>, sort: bool) -> Vec<(&String, &Value)> {
    let mut v: Vec<_> = m.iter().collect();
    if sort {
        // Python sorts str keys by code point, which is the byte order of UTF-8.
        v.sort_by(|a, b| a.0.cmp(b.0));
    }
    v
}

fn write_str(out: &mut String, s: &str, opts: DumpOptions) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\'' if opts.html_safe => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            ' '..='~' => out.push(c),
            _ => {
                // ensure_ascii: everything outside printable ASCII, astral chars as a
                // surrogate pair, lowercase hex.
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Python's `repr`/`str` of a number parsed from JSON: ints as integers, floats as Python
/// prints them (`1.0`, `1e+16`, `1e-05`).
pub fn number_repr(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    float_repr(n.as_f64().unwrap_or(f64::NAN))
}

/// Python's `repr(float)`: shortest round-trip digits; fixed notation for decimal
/// exponents in [-4, 16), scientific otherwise with a sign and at least two exponent digits.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "-1.5e16", "1e-5".
    let sci = format!("{:e}", f);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let e = exp as usize;
            let (int, frac) = if digits.len() > e + 1 {
                (digits[..=e].to_string(), digits[e + 1..].to_string())
            } else {
                (
                    format!("{digits}{}", "0".repeat(e + 1 - digits.len())),
                    "0".to_string(),
                )
            };
            format!("{sign}{int}.{frac}")
        } else {
            format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{dot}e{esign}{:02}", exp.abs())
    }
}

/// Python's `str()` of a value as Meta's `python_list` encoder writes it: strings in double
/// quotes without escaping, `True`/`False`/`None`, `[a, b]`, `{k=v}`.
pub fn python_list_value(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => number_repr(n),
        Value::String(s) => format!("\"{s}\""),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(python_list_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, x)| format!("{k}={}", python_list_value(x)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// Python's `str()` in an f-string: strings verbatim, other values as Python prints them.
pub fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => number_repr(n),
        // Python would print a dict/list repr with single quotes; such arguments never come
        // from a well-formed built-in call, so JSON is an honest approximation.
        other => json_dumps(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_print_like_python_repr() {
        for (f, want) in [
            (1.0, "1.0"),
            (1.5, "1.5"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (123.456, "123.456"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.2345e-7, "1.2345e-07"),
            (1e100, "1e+100"),
            (-2.5e-300, "-2.5e-300"),
        ] {
            assert_eq!(float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn dumps_like_python() {
        let v = json!({"city": "São Paulo", "unit": "°C", "n": [1, 2.0, null, true], "e": "😀\u{7f}\"\\\n"});
        assert_eq!(
            json_dumps(&v),
            r#"{"city": "S\u00e3o Paulo", "unit": "\u00b0C", "n": [1, 2.0, null, true], "e": "\ud83d\ude00\u007f\"\\\n"}"#
        );
    }

    #[test]
    fn jinja_tojson_sorts_and_escapes_html() {
        let v = json!({"b": "it's <b>", "a": 1});
        let o = DumpOptions {
            sort_keys: true,
            html_safe: true,
        };
        assert_eq!(
            json_dumps_with(&v, o),
            r#"{"a": 1, "b": "it\u0027s \u003cb\u003e"}"#
        );
    }

    #[test]
    fn python_list_values() {
        let v = json!({"a": "x", "b": true, "c": 1.5, "d": ["p", null], "e": {"k": 2}});
        let Value::Object(m) = v else { unreachable!() };
        let got: Vec<String> = m.values().map(python_list_value).collect();
        assert_eq!(got, ["\"x\"", "True", "1.5", "[\"p\", None]", "{k=2}"]);
    }
}
