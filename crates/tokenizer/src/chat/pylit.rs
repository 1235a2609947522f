//! A parser for the one piece of Python that Meta's tool-call parser accepts: a list of
//! calls with keyword arguments whose values are literals, e.g.
//! `[get_weather(city="Paris", days=3), lookup(ids=[1, 2], exact=True)]`.
//!
//! Meta checks this with `ast.parse` and evaluates values with `ast.literal_eval`. We accept
//! the same literals (strings with either quote and escapes, ints, floats, signs, `True`,
//! `False`, `None`, lists, tuples, dicts with string keys) and nothing that could run code.
//! Nesting is bounded, so adversarial input cannot overflow the stack.

use serde_json::{Map, Number, Value};

use crate::chat::message::Arguments;

const MAX_DEPTH: usize = 64;

/// Parses `[f(a=1), g(b="x")]` into `(name, arguments)` pairs; `None` if `s` is anything else.
pub fn parse_call_list(s: &str) -> Option<Vec<(String, Arguments)>> {
    let mut p = Parser {
        s: s.as_bytes(),
        i: 0,
        src: s,
    };
    p.ws();
    p.eat(b'[')?;
    let mut calls = Vec::new();
    loop {
        p.ws();
        if p.peek() == Some(b']') && !calls.is_empty() {
            p.i += 1;
            break;
        }
        calls.push(p.call()?);
        p.ws();
        match p.next()? {
            b',' => continue,
            b']' => break,
            _ => return None,
        }
    }
    p.ws();
    (p.i == p.s.len() && !calls.is_empty()).then_some(calls)
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    /// Whitespace, including line breaks (legal inside brackets in Python).
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn ident(&mut self) -> Option<String> {
        let start = self.i;
        let rest = self.src.get(start..)?;
        let mut len = 0;
        for (k, c) in rest.char_indices() {
            let ok = c == '_' || c.is_alphabetic() || (k > 0 && c.is_alphanumeric());
            if !ok {
                break;
            }
            len = k + c.len_utf8();
        }
        if len == 0 {
            return None;
        }
        self.i += len;
        Some(rest[..len].to_string())
    }

    fn call(&mut self) -> Option<(String, Arguments)> {
        let name = self.ident()?;
        self.ws();
        self.eat(b'(')?;
        let mut args = Map::new();
        loop {
            self.ws();
            if self.peek() == Some(b')') {
                self.i += 1;
                break;
            }
            let key = self.ident()?;
            self.ws();
            self.eat(b'=')?;
            self.ws();
            let v = self.value(0)?;
            // Python rejects repeated keyword arguments.
            if args.insert(key, v).is_some() {
                return None;
            }
            self.ws();
            match self.next()? {
                b',' => continue,
                b')' => break,
                _ => return None,
            }
        }
        Some((name, args))
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' | b'\'' => self.string().map(Value::String),
            b'[' | b'(' => {
                let close = if self.next()? == b'[' { b']' } else { b')' };
                let mut items = Vec::new();
                loop {
                    self.ws();
                    if self.peek() == Some(close) {
                        self.i += 1;
                        break;
                    }
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        c if c == close => break,
                        _ => return None,
                    }
                }
                Some(Value::Array(items))
            }
            b'{' => {
                self.i += 1;
                let mut m = Map::new();
                loop {
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        break;
                    }
                    let k = self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    let v = self.value(depth + 1)?;
                    m.insert(k, v);
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b'}' => break,
                        _ => return None,
                    }
                }
                Some(Value::Object(m))
            }
            b'-' | b'+' | b'0'..=b'9' | b'.' => self.number(),
            _ => match self.ident()?.as_str() {
                "True" => Some(Value::Bool(true)),
                "False" => Some(Value::Bool(false)),
                "None" => Some(Value::Null),
                _ => None,
            },
        }
    }

    fn number(&mut self) -> Option<Value> {
        let start = self.i;
        while matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-' | b'_')
        ) {
            self.i += 1;
        }
        let text: String = self.src.get(start..self.i)?.replace('_', "");
        let is_float = text.contains(['.', 'e', 'E']);
        if !is_float && let Ok(i) = text.parse::<i64>() {
            return Some(Value::Number(i.into()));
        }
        let f: f64 = text.parse().ok()?;
        Number::from_f64(f).map(Value::Number)
    }

    fn string(&mut self) -> Option<String> {
        let q = self.next()?;
        if q != b'"' && q != b'\'' {
            return None;
        }
        let mut out = String::new();
        loop {
            let rest = self.src.get(self.i..)?;
            let c = rest.chars().next()?;
            self.i += c.len_utf8();
            match c {
                '\n' => return None,
                c if c as u32 == q as u32 => return Some(out),
                '\\' => {
                    let e = self.next()?;
                    match e {
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'0' => out.push('\0'),
                        b'\\' | b'\'' | b'"' => out.push(e as char),
                        b'\n' => {}
                        b'x' => out.push(self.hex(2)?),
                        b'u' => out.push(self.hex(4)?),
                        b'U' => out.push(self.hex(8)?),
                        // Python keeps unknown escapes verbatim.
                        _ => {
                            self.i -= 1;
                            let c = self.src.get(self.i..)?.chars().next()?;
                            self.i += c.len_utf8();
                            out.push('\\');
                            out.push(c);
                        }
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn hex(&mut self, n: usize) -> Option<char> {
        let digits = self.src.get(self.i..self.i + n)?;
        self.i += n;
        char::from_u32(u32::from_str_radix(digits, 16).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_calls_with_literal_keywords() {
        let got = parse_call_list(
            "[get_boiling_point(liquid_name=\"water\", celcius=True), f(x=[1, -2.5, None], y={'k': (1,)})]",
        )
        .expect("valid");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "get_boiling_point");
        assert_eq!(
            Value::Object(got[0].1.clone()),
            json!({"liquid_name": "water", "celcius": true})
        );
        assert_eq!(
            Value::Object(got[1].1.clone()),
            json!({"x": [1, -2.5, null], "y": {"k": [1]}})
        );
    }

    #[test]
    fn rejects_what_python_would_not_accept_as_literal_calls() {
        for bad in [
            "[]",
            "[f(1)]",
            "[f(a=g())]",
            "[f(a=1, a=2)]",
            "f(a=1)",
            "[f(a=1)] extra",
            "[f(a=__import__('os'))]",
            "[f(a='unterminated)]",
            "[1, 2]",
        ] {
            assert!(parse_call_list(bad).is_none(), "{bad}");
        }
        let deep = format!("[f(a={}{})]", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_call_list(&deep).is_none(), "depth is bounded");
    }
}
