//! A plain validator for the compiled subset: the server's final check, the tests' oracle,
//! and how `enum` values are filtered by the keywords next to them.
//!
//! It follows the matcher's language, not standard JSON Schema where the two differ (keys
//! not in `properties` are rejected unless `additionalProperties` allows them; nesting is
//! capped), so everything a matcher completes validates. It is looser only where the
//! matcher merely prefers one spelling: `1.0` is an integer here, as in JSON Schema.

use std::fmt;

use serde_json::Value;

use super::MAX_NESTING;
use super::schema::{Compiled, Node, NodeId, NumKind, Typed};

/// How many `enum`/`const` → sibling-keyword hops may happen without descending into the
/// value (only a schema that refers to itself through `anyOf` next to `enum` needs more).
const MAX_HOPS: u32 = 32;

#[derive(Debug)]
pub(crate) struct Invalid {
    /// Value path, innermost first.
    path: Vec<String>,
    msg: String,
}

impl Invalid {
    fn new(msg: impl Into<String>) -> Invalid {
        Invalid {
            path: Vec::new(),
            msg: msg.into(),
        }
    }

    fn at(mut self, seg: impl fmt::Display) -> Invalid {
        self.path
            .push(seg.to_string().replace('~', "~0").replace('/', "~1"));
        self
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            return write!(f, "{}", self.msg);
        }
        write!(f, "at ")?;
        for seg in self.path.iter().rev() {
            write!(f, "/{seg}")?;
        }
        write!(f, ": {}", self.msg)
    }
}

/// JSON equality as JSON Schema defines it for `enum`/`const`: `1 == 1.0`, key order
/// ignored.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

/// Arrays/objects nested in `v` (a scalar is 0), counted no further than `limit + 1`.
pub(crate) fn nesting(v: &Value, limit: u32) -> u32 {
    if limit == 0 {
        return match v {
            Value::Array(_) | Value::Object(_) => 1,
            _ => 0,
        };
    }
    let inner = |it: &mut dyn Iterator<Item = &Value>| {
        1 + it.map(|x| nesting(x, limit - 1)).max().unwrap_or(0)
    };
    match v {
        Value::Array(a) => inner(&mut a.iter()),
        Value::Object(m) => inner(&mut m.values()),
        _ => 0,
    }
}

fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

fn type_names(t: &Typed) -> String {
    let mut v = Vec::new();
    if t.null {
        v.push("null");
    }
    if t.boolean {
        v.push("boolean");
    }
    match t.number {
        Some(NumKind::Number) => v.push("number"),
        Some(NumKind::Integer) => v.push("integer"),
        None => {}
    }
    if t.string.is_some() {
        v.push("string");
    }
    if t.array.is_some() {
        v.push("array");
    }
    if t.object.is_some() {
        v.push("object");
    }
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(" or ")
    }
}

/// Validates `v` (inside `depth` containers) against `node`. `hops` counts literal-set hops
/// since the last descent into the value.
pub(crate) fn validate_node(
    c: &Compiled,
    v: &Value,
    node: NodeId,
    depth: u32,
    hops: u32,
) -> Result<(), Invalid> {
    match &c.nodes[node as usize] {
        Node::Union(_) => {
            let leaves = c.leaves(node);
            let mut first = None;
            for &l in leaves {
                match validate_node(c, v, l, depth, hops) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
            match (leaves.len(), first) {
                (1, Some(e)) => Err(e),
                (n, Some(e)) => Err(Invalid::new(format!(
                    "matches none of the {n} alternatives (the first says: {e})"
                ))),
                (_, None) => Err(Invalid::new("no value is allowed here")),
            }
        }
        Node::Lit { set, base } => {
            if hops >= MAX_HOPS {
                return Err(Invalid::new(
                    "schema recursion through `enum`/`const` is too deep",
                ));
            }
            if !c.lits[*set as usize].values.iter().any(|x| json_eq(x, v)) {
                return Err(Invalid::new(format!(
                    "{v} is not one of the allowed values"
                )));
            }
            if depth + nesting(v, MAX_NESTING) > MAX_NESTING {
                return Err(Invalid::new(format!(
                    "nested deeper than {MAX_NESTING} levels"
                )));
            }
            validate_node(c, v, *base, depth, hops + 1)
        }
        Node::Typed(t) => typed(c, t, v, depth),
    }
}

fn typed(c: &Compiled, t: &Typed, v: &Value, depth: u32) -> Result<(), Invalid> {
    let wrong = || Invalid::new(format!("expected {}", type_names(t)));
    match v {
        Value::Null if t.null => Ok(()),
        Value::Bool(_) if t.boolean => Ok(()),
        Value::Number(n) => match t.number {
            Some(NumKind::Number) => Ok(()),
            Some(NumKind::Integer) if is_integer(n) => Ok(()),
            _ => Err(wrong()),
        },
        Value::String(s) => {
            let (lo, hi) = t.string.ok_or_else(wrong)?;
            let n = s.chars().count();
            if n < lo as usize {
                Err(Invalid::new(format!("string shorter than {lo} characters")))
            } else if n > hi as usize {
                Err(Invalid::new(format!("string longer than {hi} characters")))
            } else {
                Ok(())
            }
        }
        Value::Array(items) => {
            let a = t.array.ok_or_else(wrong)?;
            if depth >= MAX_NESTING {
                return Err(Invalid::new(format!(
                    "nested deeper than {MAX_NESTING} levels"
                )));
            }
            if items.len() < a.min as usize {
                return Err(Invalid::new(format!("fewer than {} items", a.min)));
            }
            if items.len() > a.max as usize {
                return Err(Invalid::new(format!("more than {} items", a.max)));
            }
            for (i, x) in items.iter().enumerate() {
                validate_node(c, x, a.items, depth + 1, 0).map_err(|e| e.at(i))?;
            }
            Ok(())
        }
        Value::Object(m) => {
            let o = &c.objects[t.object.ok_or_else(wrong)? as usize];
            if depth >= MAX_NESTING {
                return Err(Invalid::new(format!(
                    "nested deeper than {MAX_NESTING} levels"
                )));
            }
            for (k, x) in m {
                let node = match o.find(k) {
                    Some(i) => o.props[i].node,
                    None => o
                        .additional
                        .ok_or_else(|| Invalid::new(format!("unexpected key {k:?}")))?,
                };
                validate_node(c, x, node, depth + 1, 0).map_err(|e| e.at(k))?;
            }
            for (k, p) in o.keys.iter().zip(&o.props) {
                if p.required && !m.contains_key(&**k) {
                    return Err(Invalid::new(format!("missing required key {k:?}")));
                }
            }
            Ok(())
        }
        _ => Err(wrong()),
    }
}
