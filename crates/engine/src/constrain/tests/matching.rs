//! Matcher behaviour beyond single keywords: whitespace, keys, numbers, nesting, threads.

use serde_json::json;

use super::super::{MAX_FRAC_DIGITS, MAX_INT_DIGITS, MAX_NESTING, Schema};
use super::{Fed, allowed_bytes, byte_trie, check, feed, schema, tool_call_schema};

#[test]
fn whitespace_rules() {
    let s = Schema::any_value();
    let ws16 = " ".repeat(16);
    let ws17 = " ".repeat(17);
    assert_eq!(feed(&s, &format!("[{ws16}1]")), Fed::Complete);
    assert_eq!(feed(&s, &format!("[{ws17}1]")), Fed::Rejected(17));
    assert_eq!(feed(&s, "{\n\t\"a\"\r\n:\n1\n}"), Fed::Complete);
    // A run is counted across tokens and kinds, and reset by anything else.
    assert_eq!(feed(&s, &format!("[\n{ws16}1,{ws16}2]")), Fed::Rejected(17));
    // Nothing before or after the top-level value; spaces inside strings are content.
    assert_eq!(feed(&s, " 1"), Fed::Rejected(0));
    assert_eq!(feed(&s, "{} "), Fed::Rejected(2));
    assert_eq!(feed(&s, "1 "), Fed::Rejected(1));
    assert_eq!(feed(&s, &format!("\"{}\"", " ".repeat(40))), Fed::Complete);
}

#[test]
fn complete_and_continue() {
    let s = Schema::any_value();
    let mut m = s.matcher();
    assert!(!m.is_complete() && m.can_continue());
    assert!(m.advance(b"12"));
    assert!(m.is_complete() && m.can_continue(), "a number may go on");
    assert!(m.advance(b"e5"));
    assert!(m.is_complete());
    assert!(m.advance(b"0"));
    assert!(
        m.is_complete() && !m.can_continue(),
        "exponent digits are capped"
    );
    let mut m = s.matcher();
    assert!(m.advance(b"{\"a\":[]}"));
    assert!(m.is_complete() && !m.can_continue());
    let mut m = schema(json!({"enum": ["ab", "abc"]})).matcher();
    assert!(m.advance(b"\"ab"));
    assert!(!m.is_complete() && m.can_continue());
    let mut m = schema(json!({"enum": [1, 12]})).matcher();
    assert!(m.advance(b"1"));
    assert!(m.is_complete() && m.can_continue());
    assert!(m.advance(b"2"));
    assert!(m.is_complete() && !m.can_continue());
}

#[test]
fn advance_is_atomic() {
    let s = schema(json!({"type": "object", "properties": {"ab": {"type": "integer"}}}));
    let mut m = s.matcher();
    assert!(m.advance(b"{\"a"));
    assert!(!m.advance(b"b\":x"), "the last byte is wrong");
    assert!(m.advance(b"b\":1}"), "state unchanged by the failed call");
    assert!(m.is_complete());
}

#[test]
fn required_keys_gate_the_closing_brace() {
    let s = schema(json!({
        "type": "object",
        "properties": {"a": {"type": "null"}, "b": {"type": "null"}, "c": {"type": "null"}},
        "required": ["a", "c"]
    }));
    let t = byte_trie();
    let mut m = s.matcher();
    assert!(m.advance(b"{"));
    assert_eq!(
        allowed_bytes(&m, &t),
        b"\t\n\r \"".to_vec(),
        "no closing brace yet"
    );
    assert!(m.advance(b"\"c\":null"));
    assert_eq!(allowed_bytes(&m, &t), b"\t\n\r ,".to_vec());
    assert!(m.advance(b",\""));
    // Only unused keys may start: a or b.
    assert_eq!(allowed_bytes(&m, &t), b"\\ab".to_vec());
    assert!(m.advance(b"a\":null"));
    assert_eq!(allowed_bytes(&m, &t), b"\t\n\r ,}".to_vec());
    assert!(m.advance(b",\"b\":null"));
    assert_eq!(
        allowed_bytes(&m, &t),
        b"\t\n\r }".to_vec(),
        "no keys left: no comma"
    );
}

#[test]
fn escaped_and_unicode_keys() {
    let s = schema(json!({
        "type": "object",
        "properties": {"é": {"type": "null"}, "q\"k": {"type": "null"}, "😀": {"type": "null"}, "\n": {"type": "null"}}
    }));
    check(
        &s,
        &[
            r#"{"é":null}"#,
            r#"{"\u00e9":null}"#,
            r#"{"\u00E9":null}"#,
            r#"{"q\"k":null}"#,
            r#"{"q\u0022k":null}"#,
            r#"{"\ud83d\ude00":null}"#,
            r#"{"\n":null,"😀":null}"#,
        ],
        &[r#"{"\u00e8":null}"#, r#"{"q":null}"#],
    );
    // The escape dies as soon as no listed key can follow.
    assert_eq!(feed(&s, r#"{"\u01"#), Fed::Rejected(5));
    assert_eq!(feed(&s, r#"{"\ud83d\ude01"#), Fed::Rejected(13));
    // The same key spelled two ways is still a duplicate.
    assert_ne!(feed(&s, r#"{"é":null,"\u00e9":null}"#), Fed::Complete);
    let open = Schema::any_object();
    assert_ne!(feed(&open, r#"{"é":1,"\u00e9":2}"#), Fed::Complete);
    assert_eq!(feed(&open, r#"{"é":1,"\u00e8":2}"#), Fed::Complete);
}

#[test]
fn many_properties_use_the_log() {
    let mut props = serde_json::Map::new();
    for i in 0..100 {
        props.insert(format!("k{i:03}"), json!({"type": "integer"}));
    }
    let s = schema(
        json!({"type": "object", "properties": props, "required": ["k000", "k070", "k099"]}),
    );
    check(
        &s,
        &[
            r#"{"k099":1,"k070":2,"k000":3}"#,
            r#"{"k000":1,"k080":1,"k070":2,"k099":3}"#,
        ],
        &[r#"{"k000":1,"k099":2}"#],
    );
    assert_eq!(feed(&s, r#"{"k080":1,"k080":2"#), Fed::Rejected(14));
}

#[test]
fn numbers_limits() {
    let s = Schema::any_value();
    let int = "9".repeat(usize::from(MAX_INT_DIGITS));
    assert_eq!(feed(&s, &int), Fed::Complete);
    assert_eq!(feed(&s, &format!("{int}9")), Fed::Rejected(int.len()));
    let frac = format!("0.{}", "1".repeat(usize::from(MAX_FRAC_DIGITS)));
    assert_eq!(feed(&s, &frac), Fed::Complete);
    assert_eq!(feed(&s, &format!("{frac}1")), Fed::Rejected(frac.len()));
    assert_eq!(feed(&s, "1.5e99"), Fed::Complete);
    assert_eq!(feed(&s, "1e999"), Fed::Rejected(4));
    assert_eq!(feed(&s, "-"), Fed::Incomplete);
    assert_eq!(feed(&s, "[-0,0.5,1E+2,3e-1]"), Fed::Complete);
    assert_eq!(feed(&s, "[.5]"), Fed::Rejected(1));
}

#[test]
fn nesting_is_capped() {
    let s = Schema::any_value();
    let n = MAX_NESTING as usize;
    assert_eq!(
        feed(&s, &format!("{}{}", "[".repeat(n), "]".repeat(n))),
        Fed::Complete
    );
    assert_eq!(feed(&s, &"[".repeat(n + 1)), Fed::Rejected(n));
    // A recursive schema whose values need depth: the matcher stops offering recursion
    // early enough to close everything.
    let r = schema(json!({"type": "array", "items": {"$ref": "#"}, "maxItems": 1}));
    let mut m = r.matcher();
    for _ in 0..n {
        assert!(m.advance(b"["));
    }
    assert!(!m.advance(b"["));
    for _ in 0..n {
        assert!(m.advance(b"]"));
    }
    assert!(m.is_complete());
    // Required recursion that ends: depth 3 needed, so `[` is refused near the limit.
    let deep = schema(json!({
        "$defs": {"three": {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": {"type": "array"}}}},
        "anyOf": [{"$ref": "#/$defs/three"}, {"type": "array", "items": {"$ref": "#"}}]
    }));
    let mut m = deep.matcher();
    let mut opened = 0;
    while m.advance(b"[") {
        opened += 1;
    }
    assert_eq!(opened, n);
    for _ in 0..opened {
        assert!(m.advance(b"]"), "every open array can be closed");
    }
    assert!(m.is_complete());
}

#[test]
fn tool_calls() {
    let s = schema(tool_call_schema(&[
        (
            "get_weather",
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        ),
        (
            "get_time",
            json!({"type": "object", "properties": {"tz": {"type": "string"}}}),
        ),
        ("noop", json!({})),
    ]));
    check(
        &s,
        &[
            r#"{"name":"get_weather","parameters":{"city":"Paris"}}"#,
            r#"{"parameters":{},"name":"get_time"}"#,
            r#"{"name":"noop","parameters":[1]}"#,
        ],
        &[
            r#"{"name":"get_weather","parameters":{}}"#,
            r#"{"name":"get_time","parameters":{"city":"x"}}"#,
            r#"{"name":"other","parameters":{}}"#,
            r#"{"name":"noop"}"#,
        ],
    );
    let t = byte_trie();
    let mut m = s.matcher();
    assert!(m.advance(br#"{"name":"get_"#));
    assert_eq!(allowed_bytes(&m, &t), b"tw".to_vec());
}

#[test]
fn overlapping_branches_merge() {
    let s = schema(
        json!({"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "number"}, {"enum": [1, 2]}]}}),
    );
    let mut m = s.matcher();
    let doc: String = format!("[{}1]", "1,".repeat(200));
    assert!(m.advance(doc.as_bytes()));
    assert!(m.is_complete());
    assert!(format!("{m:?}").contains("threads: 1"), "{m:?}");
}

#[test]
fn tool_call_documents_keep_their_refs() {
    let weather = json!({
        "$defs": {"unit": {"enum": ["C", "F"]}},
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"$ref": "#/$defs/unit"}},
        "required": ["city"]
    });
    let time = json!({"type": "object", "properties": {"tz": {"$ref": "#/$defs/tz"}}, "$defs": {"tz": {"type": "string"}}});
    let s = Schema::tool_call(&[("get_weather", &weather), ("get_time", &time)]).unwrap();
    check(
        &s,
        &[
            r#"{"name":"get_weather","parameters":{"city":"Paris","unit":"C"}}"#,
            r#"{"name":"get_time","parameters":{"tz":"UTC"}}"#,
        ],
        &[
            r#"{"name":"get_weather","parameters":{"city":"Paris","unit":"K"}}"#,
            r#"{"name":"get_time","parameters":{"tz":1}}"#,
            r#"{"name":"get_time","parameters":{},"x":1}"#,
            r#"{"name":"get_time"}"#,
        ],
    );
    // `name` comes first, so one thread matches the arguments.
    assert_eq!(feed(&s, r#"{"parameters":{}"#), Fed::Rejected(2));
    let mut m = s.matcher();
    assert!(m.advance(br#"{"name":"get_weather","parameters":{"city":"Par"#));
    assert!(format!("{m:?}").contains("threads: 1"), "{m:?}");
    // Errors say which tool.
    let bad = json!({"type": "string", "pattern": "x"});
    let e = Schema::tool_call(&[("ok", &json!({})), ("grep", &bad)]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported JSON Schema keyword `pattern` at tool \"grep\" parameters #/pattern: it \
         restricts which values are valid and constrained decoding cannot enforce it"
    );
    let e = Schema::tool_call(&[("never", &json!(false))]).unwrap_err();
    assert!(e.to_string().contains("tool \"never\""), "{e}");
    assert!(Schema::tool_call(&[]).is_err());
}

#[test]
fn types_are_shareable() {
    fn send_sync<T: Send + Sync>() {}
    fn send_clone_debug<T: Send + Clone + std::fmt::Debug>() {}
    send_sync::<Schema>();
    send_sync::<super::super::TokenTrie>();
    send_clone_debug::<super::super::Matcher>();
    send_clone_debug::<Schema>();
}

/// The ending `completion` gives after `prefix`, checked to finish the document.
fn ending_bytes(s: &Schema, prefix: &[u8]) -> Vec<u8> {
    let mut m = s.matcher();
    assert!(m.advance(prefix), "{prefix:?}");
    let tail = m.completion().expect("an ending");
    assert!(m.advance(&tail) && m.is_complete(), "{prefix:?} + {tail:?}");
    tail
}

fn ending(s: &Schema, prefix: &str) -> String {
    String::from_utf8(ending_bytes(s, prefix.as_bytes())).expect("UTF-8")
}

#[test]
fn completion_is_short_and_valid() {
    let person = schema(json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2},
            "tags": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
            "kind": {"enum": ["human", "cat"]},
            "pet": {"type": "object", "properties": {"legs": {"type": "integer"}}, "required": ["legs"]}
        },
        "required": ["name", "tags", "pet"]
    }));
    assert_eq!(
        ending(&person, ""),
        r#"{"name":"aa","pet":{"legs":0},"tags":[0,0]}"#
    );
    assert_eq!(
        ending(&person, r#"{"tags": [1"#),
        r#",0],"name":"aa","pet":{"legs":0}}"#
    );
    assert_eq!(
        ending(&person, r#"{"name": "A"#),
        r#"a","tags":[0,0],"pet":{"legs":0}}"#
    );
    assert_eq!(
        ending(&person, r#"{"ki"#),
        r#"nd":"cat","name":"aa","tags":[0,0],"pet":{"legs":0}}"#
    );
    assert_eq!(
        ending(&person, r#"{"kind": "hu"#),
        r#"man","name":"aa","tags":[0,0],"pet":{"legs":0}}"#
    );
    assert_eq!(
        ending(&person, r#"{"name": "x\u00"#),
        r#"00","tags":[0,0],"pet":{"legs":0}}"#
    );
    assert_eq!(
        ending(&person, r#"{"name": "x\ud83d"#),
        r#"\uDC00","tags":[0,0],"pet":{"legs":0}}"#
    );
    // Mid-number, mid-escape in a key, a raw character split in two.
    let any = Schema::any_object();
    assert_eq!(ending(&any, r#"{"a": -"#), "0}");
    assert_eq!(ending(&any, r#"{"a": 1.5e"#), "0}");
    assert_eq!(ending(&any, r#"{"\u00"#), r#"00":0}"#);
    let split = "{\"é\": \"é".as_bytes();
    assert_eq!(ending_bytes(&any, &split[..split.len() - 1]), b"\x80\"}");
    assert_eq!(ending(&any, "{}"), "");
    // A listed key reached through a partial escape.
    let keys =
        schema(json!({"type": "object", "properties": {"é": {"type": "null"}}, "required": ["é"]}));
    assert_eq!(ending(&keys, r#"{"\u00"#), r#"E9":null}"#);
    // Recursion that must end: the shortest value, not the first alternative.
    let tree = schema(
        json!({"anyOf": [{"type": "array", "items": {"$ref": "#"}, "minItems": 2}, {"const": "leaf"}]}),
    );
    assert_eq!(ending(&tree, "[[["), r#""leaf","leaf"],"leaf"],"leaf"]"#);
    // A tool call: the name in progress, then its arguments.
    let weather =
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let call = Schema::tool_call(&[("get_weather", &weather), ("noop", &json!({}))]).unwrap();
    assert_eq!(
        ending(&call, r#"{"name": "get"#),
        r#"_weather","parameters":{"city":""}}"#
    );
    assert_eq!(ending(&call, ""), r#"{"name":"noop","parameters":0}"#);
}
