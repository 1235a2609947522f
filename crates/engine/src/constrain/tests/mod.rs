//! Tests: hand-written cases per keyword (`keywords`), matcher behaviour (`matching`),
//! property tests (`props`), token masks against brute force (`mask`) and the mask timing
//! on real vocabularies (`bench`, ignored).

use serde_json::{Value, json};

use super::{Matcher, Schema, TokenTrie};

mod bench;
mod keywords;
mod mask;
mod matching;
mod props;
mod tagged;

fn schema(v: Value) -> Schema {
    match Schema::compile(&v) {
        Ok(s) => s,
        Err(e) => panic!("{v} does not compile: {e}"),
    }
}

/// How feeding a document byte by byte ended.
#[derive(Debug, PartialEq, Eq)]
enum Fed {
    /// Rejected at this byte offset.
    Rejected(usize),
    /// All accepted, not a whole document.
    Incomplete,
    Complete,
}

fn feed(s: &Schema, text: &str) -> Fed {
    let mut m = s.matcher();
    for (i, b) in text.bytes().enumerate() {
        if !m.advance(&[b]) {
            return Fed::Rejected(i);
        }
    }
    if m.is_complete() {
        Fed::Complete
    } else {
        Fed::Incomplete
    }
}

/// Asserts each document is accepted whole (and validates), each of `bad` is not.
fn check(s: &Schema, good: &[&str], bad: &[&str]) {
    for g in good {
        assert_eq!(feed(s, g), Fed::Complete, "should accept {g}");
        let v: Value = serde_json::from_str(g).unwrap();
        assert_eq!(s.validate(&v), Ok(()), "should validate {g}");
    }
    for b in bad {
        assert_ne!(feed(s, b), Fed::Complete, "should reject {b}");
        if let Ok(v) = serde_json::from_str::<Value>(b) {
            assert!(s.validate(&v).is_err(), "validate should reject {b}");
        }
    }
}

/// A trie of the 256 single bytes: its mask is the set of allowed next bytes.
fn byte_trie() -> TokenTrie {
    static BYTES: [u8; 256] = {
        let mut a = [0u8; 256];
        let mut i = 0;
        while i < 256 {
            a[i] = i as u8;
            i += 1;
        }
        a
    };
    TokenTrie::new((0..256u32).map(|i| (i, &BYTES[i as usize..i as usize + 1])))
}

fn allowed_bytes(m: &Matcher, trie: &TokenTrie) -> Vec<u8> {
    let mut out = [false; 256];
    m.allowed_tokens(trie, &mut out);
    (0..=255u8).filter(|&b| out[b as usize]).collect()
}

/// The schema of a forced tool call among these `(name, parameters)`.
fn tool_call_schema(tools: &[(&str, Value)]) -> Value {
    let alts: Vec<Value> = tools
        .iter()
        .map(|(name, params)| {
            json!({
                "type": "object",
                "properties": {"name": {"const": name}, "parameters": params},
                "required": ["name", "parameters"]
            })
        })
        .collect();
    json!({ "anyOf": alts })
}
