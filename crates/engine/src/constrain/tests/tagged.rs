//! Literal affixes around a document: the Hermes-style forced call
//! `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` (Qwen2.5's layout).

use serde_json::{Value, json};

use super::super::{Matcher, Schema, TokenTrie};
use super::{Fed, byte_trie, feed};

fn weather() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
}

fn hermes() -> Schema {
    let w = weather();
    let t = json!({"type": "object", "properties": {"tz": {"type": "integer"}}});
    Schema::tagged_tool_call(
        &[("get_weather", &w), ("get_time", &t)],
        "<tool_call>\n",
        "\n</tool_call>",
    )
    .expect("compiles")
}

#[test]
fn accepts_the_tagged_layout_only() {
    let s = hermes();
    for good in [
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        "<tool_call>\n{\"name\":\"get_time\",\"arguments\":{}}\n</tool_call>",
        "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": 2}}\n</tool_call>",
    ] {
        assert_eq!(feed(&s, good), Fed::Complete, "{good}");
    }
    let cases = [
        // No prefix.
        ("{\"name\": \"get_time\", \"arguments\": {}}", 0),
        // `arguments` before `name` (sorted first, but `name` must come first).
        (
            "<tool_call>\n{\"arguments\": {}, \"name\": \"get_time\"}\n</tool_call>",
            14,
        ),
        // Meta's key.
        (
            "<tool_call>\n{\"name\": \"get_time\", \"parameters\": {}}\n</tool_call>",
            34,
        ),
        // Unknown tool.
        (
            "<tool_call>\n{\"name\": \"get_wind\", \"arguments\": {}}\n</tool_call>",
            27,
        ),
        // Arguments not per schema.
        (
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>",
            50,
        ),
        // Wrong suffix, and anything after the suffix.
        (
            "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}</tool_call>",
            49,
        ),
        (
            "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>\n",
            62,
        ),
    ];
    for (bad, at) in cases {
        assert_eq!(feed(&s, bad), Fed::Rejected(at), "{bad}");
    }
    assert_eq!(
        feed(
            &s,
            "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool"
        ),
        Fed::Incomplete
    );
}

#[test]
fn allowed_bytes_follow_the_affixes() {
    let s = hermes();
    let trie = byte_trie();
    let mut m = s.matcher();
    assert_eq!(super::allowed_bytes(&m, &trie), b"<".to_vec());
    assert!(m.can_continue() && !m.is_complete());
    assert!(m.advance(b"<tool_call>\n"));
    assert_eq!(super::allowed_bytes(&m, &trie), b"{".to_vec());
    assert!(m.advance(b"{\"name\": \"get_time\", \"arguments\": {}}"));
    // The document is complete: only the suffix may follow, not EOS.
    assert_eq!(super::allowed_bytes(&m, &trie), b"\n".to_vec());
    assert!(!m.is_complete() && m.can_continue());
    assert!(m.advance(b"\n</tool_call"));
    assert_eq!(super::allowed_bytes(&m, &trie), b">".to_vec());
    assert!(m.advance(b">"));
    assert!(m.is_complete() && !m.can_continue());
    assert!(super::allowed_bytes(&m, &trie).is_empty());
}

#[test]
fn completion_finishes_from_anywhere() {
    let s = hermes();
    let doc =
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa\"}}\n</tool_call>";
    for cut in 0..doc.len() {
        let mut m = s.matcher();
        assert!(m.advance(&doc.as_bytes()[..cut]), "{cut}");
        let rest = m.completion().expect("a completion");
        assert!(
            m.advance(&rest),
            "{cut}: {}",
            String::from_utf8_lossy(&rest)
        );
        assert!(m.is_complete(), "{cut}: {}", String::from_utf8_lossy(&rest));
    }
    let m = s.matcher();
    let whole = String::from_utf8(m.completion().expect("from the start")).expect("utf-8");
    assert!(whole.starts_with("<tool_call>\n{\"name\":"), "{whole}");
    assert!(whole.ends_with("}\n</tool_call>"), "{whole}");
}

/// The mask over a vocabulary with Qwen's added tokens `<tool_call>`/`</tool_call>` (whose
/// bytes are in the trie) equals checking each token alone, and a greedy walk that prefers
/// long tokens produces the call through them.
#[test]
fn mask_uses_added_tag_tokens() {
    let vocab: Vec<&[u8]> = vec![
        b"<tool_call>",
        b"</tool_call>",
        b"<",
        b"tool",
        b"_call",
        b">",
        b"\n",
        b"{\"",
        b"name",
        b"\":",
        b" \"",
        b"get_time",
        b"\",",
        b"arguments",
        b" {}",
        b"}",
        b"{",
        b"",
        b"\n</",
        b"}\n",
    ];
    let trie = TokenTrie::new(vocab.iter().enumerate().map(|(i, t)| (i as u32, *t)));
    let s = hermes();
    let brute = |m: &Matcher| -> Vec<bool> {
        vocab
            .iter()
            .map(|t| !t.is_empty() && m.accepts(t))
            .collect()
    };
    let mut m = s.matcher();
    let mut out = vec![false; vocab.len()];
    let mut picked = Vec::new();
    for _ in 0..64 {
        if m.is_complete() {
            break;
        }
        s.allowed_tokens(&m, &trie, &mut out);
        assert_eq!(
            out,
            brute(&m),
            "after {:?}",
            String::from_utf8_lossy(&picked.concat::<u8>())
        );
        // Longest allowed token.
        let pick = (0..vocab.len())
            .filter(|&i| out[i])
            .max_by_key(|&i| vocab[i].len())
            .expect("never stuck");
        assert!(m.advance(vocab[pick]));
        picked.push(vocab[pick].to_vec());
    }
    assert!(m.is_complete());
    assert_eq!(
        picked[0],
        b"<tool_call>".to_vec(),
        "the added token opens the call"
    );
    let text = String::from_utf8(picked.concat()).expect("utf-8");
    assert_eq!(
        text,
        "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"
    );
    assert_eq!(picked.last(), Some(&b"</tool_call>".to_vec()));
}

#[test]
fn plain_documents_are_unchanged_and_wrapping_keeps_validation() {
    let s = Schema::compile(&weather()).expect("compiles");
    assert_eq!(feed(&s, "{\"city\": \"x\"}"), Fed::Complete);
    let w = s.clone().wrapped(b"```json\n", b"\n```");
    assert_eq!(feed(&w, "```json\n{\"city\": \"x\"}\n```"), Fed::Complete);
    assert_eq!(feed(&w, "{\"city\": \"x\"}"), Fed::Rejected(0));
    assert!(w.validate(&json!({"city": "x"})).is_ok());
    assert!(w.validate(&json!({})).is_err());
    // The original schema is not affected by wrapping a clone.
    assert_eq!(feed(&s, "{\"city\": \"x\"}"), Fed::Complete);
}
