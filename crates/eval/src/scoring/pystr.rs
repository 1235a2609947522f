//! Python's text forms of JSON values, where llama-stack's results depend on them:
//! `str(score)` keys `categorical_count`, and `str.format` fills the judge's prompt.

use serde_json::{Map, Value};

use super::ScoringError;

/// Python's `repr(float)`: the shortest digits that read back the same, in positional
/// form for exponents -4..16 (`1.0`, `0.0001`) and scientific beyond (`1e-05`, `1e+16`).
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.2345e3", "-5e-7".
    let sci = format!("{x:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            let (a, b) = digits.split_at(point as usize);
            format!("{a}.{b}")
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        format!(
            "{sign}{m}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

/// Python's `format(x, ".2e")`: two decimals and an exponent of at least two digits.
pub fn format_e2(x: f64) -> String {
    if !x.is_finite() {
        return float_repr(x);
    }
    let s = format!("{x:.2e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let exp: i32 = e.parse().unwrap_or(0);
            format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
        }
        None => s,
    }
}

/// `str(v)` for a value that came from JSON: strings as they are, `None`, `True`/`False`,
/// integers and floats as Python prints them, lists and dicts as their Python repr.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => float_repr(f),
            _ => n.to_string(),
        },
        Value::String(s) => str_repr(s),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", str_repr(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `repr(str)`: single quotes unless the text has one and no double quote.
fn str_repr(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

/// `template.format(**fields)` for plain `{name}` fields and `{{` / `}}` escapes (what a
/// judge prompt uses); a format spec, conversion, positional or unknown field is refused
/// with a message, where Python would raise.
pub fn format_named(template: &str, fields: &Map<String, Value>) -> Result<String, ScoringError> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for n in chars.by_ref() {
                    if n == '}' {
                        closed = true;
                        break;
                    }
                    name.push(n);
                }
                if !closed {
                    return Err(ScoringError::Params(
                        "prompt_template: a '{' is not closed (write '{{' for a literal brace)"
                            .into(),
                    ));
                }
                let v = fields.get(&name).ok_or_else(|| {
                    ScoringError::Params(format!(
                        "prompt_template: unknown field {{{name}}}; the fields are {} (write '{{{{' and '}}}}' for literal braces)",
                        fields
                            .keys()
                            .map(|k| format!("{{{k}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                out.push_str(&py_str(v));
            }
            '}' => {
                return Err(ScoringError::Params(
                    "prompt_template: a single '}' (write '}}' for a literal brace)".into(),
                ));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_print_as_python() {
        for (x, s) in [
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1e16, "1e+16"),
            (123456789012345.0, "123456789012345.0"),
            (1.5e-7, "1.5e-07"),
            (2.0 / 3.0, "0.6666666666666666"),
        ] {
            assert_eq!(float_repr(x), s, "{x}");
        }
        assert_eq!(format_e2(0.5), "5.00e-01");
        assert_eq!(format_e2(1234.0), "1.23e+03");
        assert_eq!(format_e2(f64::INFINITY), "inf");
    }

    #[test]
    fn str_of_values() {
        assert_eq!(py_str(&json!(null)), "None");
        assert_eq!(py_str(&json!(true)), "True");
        assert_eq!(py_str(&json!(3)), "3");
        assert_eq!(py_str(&json!("x")), "x");
        assert_eq!(
            py_str(&json!(["a", 1.0, {"k": "it's"}])),
            "['a', 1.0, {'k': \"it's\"}]"
        );
    }

    #[test]
    fn formats_named_fields() {
        let f = json!({"q": "2+2?", "a": 4}).as_object().cloned().unwrap();
        assert_eq!(
            format_named("Q: {q} A: {a} {{x}}", &f).unwrap(),
            "Q: 2+2? A: 4 {x}"
        );
        assert!(format_named("{nope}", &f).is_err());
        assert!(format_named("{q", &f).is_err());
        assert!(format_named("}", &f).is_err());
    }
}
