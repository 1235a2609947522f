//! The trie walk gives exactly the tokens a per-token `accepts` would.

use serde_json::json;

use super::super::{Matcher, Schema, TokenTrie};
use super::{schema, tool_call_schema};

/// Single bytes, JSON-ish fragments, split UTF-8, a control token and a duplicate, plus
/// pseudo-random strings over JSON's alphabet.
fn synthetic_vocab() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    for t in [
        "{\"",
        "\":",
        "\", \"",
        "\",\"",
        "\":\"",
        "\"}",
        "\"}}",
        "]}",
        "}}",
        "[{",
        "}]",
        "},{",
        "name",
        "na",
        "me",
        "\"name\":",
        "\"name\": \"",
        "true",
        "false",
        "null",
        "nul",
        "1",
        "12",
        "-0",
        ".5",
        "e+",
        "E-1",
        "\\u00",
        "\\ud83d",
        "\\ude00",
        "\\n",
        "\\\"",
        "é",
        "😀",
        "é\"",
        " ",
        "  ",
        "\n",
        "\n  ",
        "\n\n\n\n\n\n\n\n",
        "                ",
        "a",
        "ab",
        "abc",
        "get_weather",
        "\"get_",
        "get_time",
        "parameters",
        "city",
        "Paris\"}",
        "q",
        "0,",
        "\"v\":",
        "kids",
        ":[",
        "[]",
        "{}",
        "\"\"",
    ] {
        v.push(t.as_bytes().to_vec());
    }
    v.push(vec![0xC3]);
    v.push(vec![0xA9, b'"']);
    v.push(vec![0xF0, 0x9F]);
    v.push(vec![0x98, 0x80]);
    v.push(vec![0xE4, 0xB8]);
    v.push(Vec::new()); // a control token
    v.push(b"null".to_vec()); // same bytes, another id
    let alphabet = b"{}[]\":, \n0123456789.-eE+abnlrstuvfq\\";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..400 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 6) as usize;
        let t: Vec<u8> = (0..len)
            .map(|i| alphabet[((x >> (8 * i)) % alphabet.len() as u64) as usize])
            .collect();
        v.push(t);
    }
    v
}

fn brute_force(m: &Matcher, vocab: &[Vec<u8>]) -> Vec<bool> {
    vocab
        .iter()
        .map(|t| !t.is_empty() && m.accepts(t))
        .collect()
}

#[test]
fn mask_equals_brute_force() {
    let vocab = synthetic_vocab();
    let trie = TokenTrie::new(
        vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (i as u32, t.as_slice())),
    );
    assert_eq!(trie.vocab_size(), vocab.len());
    let cases: Vec<(Schema, &str)> = vec![
        (
            Schema::any_object(),
            "{\"name\": \"é😀\\u00e9\", \"a\": [1, -0.5e+3, true, null, {\"b\": []}]}",
        ),
        (Schema::any_value(), "[12, \"x\\\"y\", false]"),
        (
            schema(tool_call_schema(&[
                (
                    "get_weather",
                    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
                ),
                ("get_time", json!({})),
            ])),
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
        ),
        (
            schema(json!({
                "type": "object",
                "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#"}, "maxItems": 2}},
                "required": ["v"]
            })),
            "{\"v\": 1, \"kids\": [{\"v\": 2}, {\"v\": 3, \"kids\": []}]}",
        ),
        (
            schema(json!({"type": "string", "maxLength": 3})),
            "\"é\\n😀\"",
        ),
        (
            schema(json!({"enum": ["ab", "abc", 1, 12, null]})),
            "\"abc\"",
        ),
        (
            Schema::tool_call(&[
                (
                    "get_weather",
                    &json!({"type": "object", "properties": {"city": {"type": "string"}}}),
                ),
                ("get_time", &json!({"type": "object"})),
            ])
            .unwrap(),
            "{\"name\": \"get_time\", \"parameters\": {\"tz\": 1}}",
        ),
    ];
    let mut out = vec![false; vocab.len()];
    for (s, doc) in &cases {
        let mut m = s.matcher();
        for (i, &b) in doc.as_bytes().iter().enumerate() {
            s.allowed_tokens(&m, &trie, &mut out);
            let want = brute_force(&m, &vocab);
            for (id, (&got, &want)) in out.iter().zip(&want).enumerate() {
                assert_eq!(
                    got,
                    want,
                    "token {:?} after {:?}",
                    String::from_utf8_lossy(&vocab[id]),
                    String::from_utf8_lossy(&doc.as_bytes()[..i])
                );
            }
            assert!(m.advance(&[b]), "{doc} at {i}");
        }
        assert!(m.is_complete());
    }
}

#[test]
fn control_tokens_and_short_masks() {
    let vocab: Vec<&[u8]> = vec![b"", b"{", b"{}", b"x"];
    let trie = TokenTrie::new(vocab.iter().enumerate().map(|(i, t)| (i as u32, *t)));
    let s = Schema::any_object();
    let m = s.matcher();
    let mut out = vec![true; 4];
    m.allowed_tokens(&trie, &mut out);
    assert_eq!(out, vec![false, true, true, false]);
    // A shorter buffer just gets fewer entries.
    let mut short = vec![true; 2];
    m.allowed_tokens(&trie, &mut short);
    assert_eq!(short, vec![false, true]);
}
