//! Reading training files: each shape parsed into its typed record, and each kind of bad
//! record reported with its line number, all of them at once.
#![allow(clippy::unwrap_used)]

use ferrollama_tokenizer::chat::{Role, StopReason, ToolName};
use ferrollama_train::TrainError;
use ferrollama_train::data::{
    BadRecords, Completion, Preference, Record, RecordKind, Records, parse_jsonl,
};

fn ok(text: &str) -> Records {
    parse_jsonl("train.jsonl", text).unwrap()
}

fn bad(text: &str) -> BadRecords {
    match parse_jsonl("train.jsonl", text) {
        Err(TrainError::BadRecords(b)) => b,
        other => panic!("expected bad records, got {other:?}"),
    }
}

/// (line, what) of each shown problem.
fn problems(b: &BadRecords) -> Vec<(usize, String)> {
    b.shown.iter().map(|e| (e.line, e.what.clone())).collect()
}

#[test]
fn openai_chat_with_tools_and_weights() {
    let line = r#"{"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 2}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "content": "Cloudy.", "weight": 0},
        {"role": "user", "content": [{"type": "text", "text": "Sure"}, {"type": "text", "text": "?"}]},
        {"role": "assistant", "content": "Sunny.", "weight": 1}],
      "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}"#
        .replace('\n', " ");
    let r = ok(&line);
    assert_eq!(r.kind, RecordKind::Chat);
    assert_eq!(r.records.len(), 1);
    assert_eq!(r.records[0].line, 1);
    let Record::Chat(c) = &r.records[0].record else {
        panic!("not a chat")
    };
    let roles: Vec<Role> = c.messages.iter().map(|t| t.message.role).collect();
    use Role::*;
    assert_eq!(
        roles,
        [System, User, Assistant, Tool, Assistant, User, Assistant]
    );
    let trained: Vec<bool> = c.messages.iter().map(|t| t.trained).collect();
    assert_eq!(trained, [false, false, true, false, false, false, true]);
    let call = &c.messages[2].message.tool_calls[0];
    assert_eq!(call.call_id, "call_1");
    assert_eq!(call.tool_name, ToolName::Custom("get_weather".into()));
    assert_eq!(
        serde_json::Value::Object(call.arguments.clone()).to_string(),
        r#"{"city":"Paris","days":2}"#
    );
    assert_eq!(
        c.messages[2].message.stop_reason,
        Some(StopReason::EndOfMessage)
    );
    assert_eq!(c.messages[4].message.stop_reason, None);
    assert_eq!(c.messages[5].message.content.joined(), "Sure?");
    assert_eq!(c.tools.len(), 1);
    assert_eq!(c.tools[0].name, "get_weather");
    assert_eq!(c.tools[0].description, "Weather");
}

#[test]
fn prompt_completion_text_and_preference() {
    let r = ok(
        "{\"prompt\": \"2+2=\", \"completion\": \" 4\"}\n\n{\"prompt\": \"a\", \"completion\": \"b\"}\n",
    );
    assert_eq!(r.kind, RecordKind::Completion);
    // The blank line 2 is skipped but still counted.
    assert_eq!(r.records[1].line, 3);
    assert_eq!(
        r.records[0].record,
        Record::Completion(Completion::Raw {
            prompt: "2+2=".into(),
            completion: " 4".into()
        })
    );

    let r = ok(r#"{"prompt": [{"role": "user", "content": "Hi"}], "completion": "Hello!"}"#);
    let Record::Completion(Completion::Chat { prompt, completion }) = &r.records[0].record else {
        panic!("not a conversational completion")
    };
    assert_eq!(prompt.messages.len(), 1);
    assert!(!prompt.messages[0].trained);
    assert_eq!(completion.len(), 1);
    assert_eq!(completion[0].message.role, Role::Assistant);
    assert_eq!(completion[0].message.content.joined(), "Hello!");
    assert!(completion[0].trained);

    let r = ok("{\"text\": \"Once upon a time\"}\n{\"text\": \"The end\"}");
    assert_eq!(r.kind, RecordKind::Text);
    assert_eq!(r.records[1].record, Record::Text("The end".into()));

    let r = ok(r#"{"prompt": "Q", "chosen": "good", "rejected": "bad"}"#);
    assert_eq!(r.kind, RecordKind::Preference);
    assert_eq!(
        r.records[0].record,
        Record::Preference(Preference::Raw {
            prompt: "Q".into(),
            chosen: "good".into(),
            rejected: "bad".into()
        })
    );
    let r = ok(
        r#"{"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": "good"}], "rejected": "bad"}"#,
    );
    let Record::Preference(Preference::Chat {
        chosen, rejected, ..
    }) = &r.records[0].record
    else {
        panic!("not a conversational preference")
    };
    assert_eq!(chosen[0].message.content.joined(), "good");
    assert_eq!(rejected[0].message.content.joined(), "bad");
}

#[test]
fn every_bad_record_is_reported_with_its_line() {
    let lines = [
        /* 1 */
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#,
        /* 2 */ r#"{"messages": [{"role": "user", "content": "hi"}"#,
        /* 3 */ r#"[1, 2]"#,
        /* 4 */ r#"{"input": "x", "output": "y"}"#,
        /* 5 */ r#"{"messages": [{"role": "bot", "content": "hi"}]}"#,
        /* 6 */ r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
        /* 7 */
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "content": "42"}]}"#,
        /* 8 */
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{city: Paris}"}}]}]}"#,
        /* 9 */ r#"{"prompt": "a", "completion": "b"}"#,
        /* 10 */
        r#"{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "yo"}]}"#,
        /* 11 */ r#"{"messages": []}"#,
        /* 12 */
        r#"{"messages": [{"role": "user", "content": "hi", "weight": 1}, {"role": "assistant", "content": "yo"}]}"#,
        /* 13 */
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "weight": 0}]}"#,
        /* 14 */
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "zz", "content": "1"}, {"role": "assistant", "content": "yo"}]}"#,
        /* 15 */
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#,
        /* 16 */ "",
        /* 17 */
        r#"{"messages": [{"content": "hi"}, {"role": "assistant", "content": "yo"}]}"#,
    ];
    let b = bad(&lines.join("\n"));
    let got = problems(&b);
    let expected: [(usize, &str); 14] = [
        (2, "not JSON"),
        (3, "not a JSON object"),
        (
            4,
            "unknown shape: expected messages, prompt/completion, prompt/chosen/rejected or text; found {input, output}",
        ),
        (
            5,
            "messages[0].role is \"bot\"; expected system, user, assistant or tool",
        ),
        (6, "messages has no assistant message to train on"),
        (7, "messages[2]: a tool message needs a tool_call_id"),
        (
            8,
            "messages[1].tool_calls[0].function.arguments is not valid JSON",
        ),
        (
            9,
            "a prompt/completion record in a file of chat (messages) records (line 1 is one)",
        ),
        (10, "messages[0].content is empty"),
        (11, "messages is empty"),
        (
            12,
            "messages[0]: weight 1 on a user message; only assistant messages have a weight",
        ),
        (
            13,
            "every assistant message in messages has weight 0: nothing to train on",
        ),
        (
            14,
            "messages[1].tool_call_id \"zz\" answers no earlier tool call",
        ),
        (17, "messages[0] has no role"),
    ];
    assert_eq!(b.total, expected.len(), "{got:#?}");
    for ((line, what), (want_line, want)) in got.iter().zip(expected) {
        assert_eq!(*line, want_line, "{what}");
        assert!(
            what.starts_with(want),
            "line {line}: {what:?} should start with {want:?}"
        );
    }
    let shown = b.to_string();
    assert!(
        shown.starts_with("train.jsonl: 14 bad records\n  line 2: not JSON"),
        "{shown}"
    );
}

#[test]
fn missing_and_empty_fields_and_mixed_raw_chat() {
    let b = bad(&[
        r#"{"prompt": "a"}"#,
        r#"{"prompt": "  ", "completion": "b"}"#,
        r#"{"prompt": "a", "completion": [{"role": "assistant", "content": "b"}]}"#,
        r#"{"prompt": "a", "completion": 3}"#,
        r#"{"completion": "b"}"#,
    ]
    .join("\n"));
    let got = problems(&b);
    assert_eq!(
        got,
        [
            (1, "completion is missing".to_string()),
            (2, "prompt is empty".to_string()),
            (3, "completion is a list of messages but prompt is text; give both as text or the prompt as messages too".to_string()),
            (4, "completion is not a string".to_string()),
            (5, "prompt is missing".to_string()),
        ]
    );
    let b = bad("{\"text\": \"\"}\n{\"prompt\": \"q\", \"chosen\": \"a\"}");
    assert_eq!(problems(&b)[0], (1, "text is empty".to_string()));
    assert_eq!(
        problems(&b)[1],
        (
            2,
            "a preference (prompt/chosen/rejected) record in a file of text records (line 1 is one); one file holds one shape".to_string()
        )
    );
}

#[test]
fn tool_call_shapes_are_checked() {
    let call = |c: &str| {
        format!(
            r#"{{"messages": [{{"role": "user", "content": "hi"}}, {{"role": "assistant", "content": "", "tool_calls": [{c}]}}]}}"#
        )
    };
    let b = bad(&[
        call(r#"{"type": "function", "function": {"name": "f", "arguments": "{}"}}"#),
        call(r#"{"id": "x", "type": "function", "function": {"name": "f", "arguments": "[1]"}}"#),
        call(r#"{"id": "x", "type": "retrieval", "function": {"name": "f", "arguments": "{}"}}"#),
        call(r#"{"id": "x", "type": "function", "function": {"arguments": "{}"}}"#),
        r#"{"messages": [{"role": "user", "content": "hi", "tool_calls": []}, {"role": "assistant", "content": "yo"}]}"#.to_string(),
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "tools": [{"type": "function", "function": {"description": "no name"}}]}"#.to_string(),
    ]
    .join("\n"));
    let got: Vec<String> = problems(&b).into_iter().map(|(_, w)| w).collect();
    assert_eq!(
        got,
        [
            "messages[1].tool_calls[0] has no id",
            "messages[1].tool_calls[0].function.arguments is not a JSON object",
            "messages[1].tool_calls[0].type is \"retrieval\"; expected \"function\"",
            "messages[1].tool_calls[0].function has no name",
            "messages[0]: only assistant messages carry tool_calls",
            "tools[0].function has no name",
        ]
    );
}

#[test]
fn errors_past_the_cap_are_counted() {
    let text = vec!["nope"; 25].join("\n");
    let b = bad(&text);
    assert_eq!(b.total, 25);
    assert_eq!(b.shown.len(), 20);
    assert_eq!(b.shown[19].line, 20);
    assert!(b.to_string().ends_with("\n  ... and 5 more"), "{b}");
}

#[test]
fn an_empty_file_is_an_error() {
    for text in ["", "\n   \n\t\n"] {
        match parse_jsonl("empty.jsonl", text) {
            Err(TrainError::Data(m)) => {
                assert_eq!(m, "empty.jsonl: no records (the file is empty or blank)")
            }
            other => panic!("{other:?}"),
        }
    }
}

/// OpenAI's DPO file shape reads as the same record as its prompt/chosen/rejected twin.
#[test]
fn openai_preference_shape_equals_prompt_chosen_rejected() {
    let openai = ok(
        r#"{"input": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}]}, "preferred_output": [{"role": "assistant", "content": "good"}], "non_preferred_output": [{"role": "assistant", "content": "bad"}]}"#,
    );
    let ours = ok(
        r#"{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": "good"}], "rejected": [{"role": "assistant", "content": "bad"}]}"#,
    );
    assert_eq!(openai.kind, RecordKind::Preference);
    assert_eq!(openai.records, ours.records);

    let b = bad(concat!(
        r#"{"input": {"messages": [{"role": "user", "content": "Q"}]}, "preferred_output": "good", "non_preferred_output": [{"role": "assistant", "content": "bad"}]}"#,
        "\n",
        r#"{"preferred_output": [{"role": "assistant", "content": "good"}], "non_preferred_output": [{"role": "assistant", "content": "bad"}]}"#,
        "\n",
        r#"{"input": {"messages": []}, "prompt": "Q", "preferred_output": [], "non_preferred_output": []}"#,
    ));
    let p = problems(&b);
    assert_eq!(p.len(), 3, "{p:?}");
    assert_eq!(
        (p[0].0, p[0].1.as_str()),
        (1, "preferred_output must be a list of assistant messages")
    );
    assert_eq!((p[1].0, p[1].1.as_str()), (2, "input is missing"));
    assert_eq!(p[2].0, 3);
    assert!(p[2].1.starts_with("both preferred_output"), "{}", p[2].1);
}
