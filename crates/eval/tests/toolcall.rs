#![allow(clippy::unwrap_used)]
//! Tool calling checked BFCL-style: the first call's name and arguments against the
//! ground truth (accepted values, optional arguments, BFCL's string standardization), and
//! a `tool_call` task through the harness and the in-process backend.

use std::path::PathBuf;

use ferrollama_engine::Model;
use ferrollama_eval::toolcall::{Call, ToolReply, check_call, ground_truth, parse_calls};
use ferrollama_eval::{
    Backend, Context, EvalOptions, LocalBackend, LocalOptions, LogLikelihood, Result, Task,
    run_task,
};
use serde_json::{Value, json};

fn call(name: &str, args: Value) -> Vec<Call> {
    vec![Call {
        name: name.into(),
        arguments: args,
    }]
}

#[test]
fn calls_compared_by_name_and_accepted_arguments() {
    // BFCL form: each argument's accepted values; "" marks `unit` optional.
    let truth = ground_truth(&json!({"get_weather": {
        "city": ["San Francisco", "SF"], "days": [3], "unit": ["celsius", ""]}}))
    .unwrap();
    // Strings compare lower-cased without spaces and ,./-_*^; 3.0 equals 3.
    let ok = call("get_weather", json!({"city": "san francisco", "days": 3.0}));
    assert_eq!(check_call(&ok, &truth), (true, true));
    let ok2 = call(
        "get_weather",
        json!({"city": "SF", "days": 3, "unit": "Celsius"}),
    );
    assert_eq!(check_call(&ok2, &truth), (true, true));
    // A wrong value, a missing required argument, an argument not in the truth.
    for args in [
        json!({"city": "Paris", "days": 3}),
        json!({"city": "SF"}),
        json!({"city": "SF", "days": 3, "verbose": true}),
    ] {
        assert_eq!(
            check_call(&call("get_weather", args), &truth),
            (true, false)
        );
    }
    // A wrong name, and no call at all.
    assert_eq!(
        check_call(&call("get_time", json!({"city": "SF", "days": 3})), &truth),
        (false, false)
    );
    assert_eq!(check_call(&[], &truth), (false, false));
    // The simple form: one right value per argument, all required.
    let simple = ground_truth(&json!({"name": "add", "arguments": {"a": 1, "b": [2, 3]}})).unwrap();
    assert_eq!(
        check_call(&call("add", json!({"a": 1, "b": [2, 3]})), &simple),
        (true, true)
    );
    assert_eq!(
        check_call(&call("add", json!({"a": 1, "b": [3, 2]})), &simple),
        (true, false)
    );
    assert!(ground_truth(&json!("add(1, 2)")).is_err());
}

fn tiny() -> Model {
    Model::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-f16.gguf"),
    )
    .unwrap()
}

#[test]
fn json_calls_are_parsed() {
    let model = tiny();
    let c = parse_calls(
        &model,
        r#" {"name": "add", "parameters": {"a": 1, "b": 2}} "#,
    );
    assert_eq!(c, call("add", json!({"a": 1, "b": 2})));
    // OpenAI's shape, arguments as a JSON string.
    let c = parse_calls(
        &model,
        r#"{"type": "function", "function": {"name": "add", "arguments": "{\"a\": 1}"}}"#,
    );
    assert_eq!(c, call("add", json!({"a": 1})));
    assert!(parse_calls(&model, "I cannot help with that.").is_empty());
}

/// Calls `add` with the numbers in the question; knows no other tool.
struct Caller;

impl Backend for Caller {
    fn loglikelihood(&mut self, _: &Context, _: &[String]) -> Result<Vec<LogLikelihood>> {
        unreachable!()
    }
    fn loglikelihood_rolling(&mut self, _: &str) -> Result<f64> {
        unreachable!()
    }
    fn generate(&mut self, _: &Context, _: &[String], _: usize) -> Result<String> {
        unreachable!()
    }
    fn tool_call(&mut self, q: &str, tools: &[Value], _: usize) -> Result<ToolReply> {
        assert_eq!(tools[0]["type"], "function");
        let n: Vec<i64> = q
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|s| s.parse().ok())
            .collect();
        Ok(ToolReply {
            text: String::new(),
            calls: call("add", json!({"a": n[0], "b": n[1]})),
        })
    }
}

const TASK: &str = r#"
task: tools
dataset_path: rows.jsonl
output_type: tool_call
doc_to_text: "What is {{x}} plus {{y}}?"
doc_to_tools: tools
doc_to_target: answer
generation_kwargs: {max_gen_toks: 16}
"#;

fn rows() -> String {
    let tools = json!([{"type": "function", "function": {"name": "add", "description": "Adds",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
        "b": {"type": "integer"}}, "required": ["a", "b"]}}}]);
    [
        json!({"x": 2, "y": 3, "tools": tools, "answer": {"add": {"a": [2], "b": [3]}}}),
        json!({"x": 4, "y": 5, "tools": tools, "answer": {"name": "add", "arguments": {"a": 5, "b": 4}}}),
        json!({"x": 1, "y": 1, "tools": tools, "answer": {"sum": {"a": [1], "b": [1]}}}),
    ]
    .iter()
    .map(|r| r.to_string() + "\n")
    .collect()
}

#[test]
fn tool_call_task_through_the_harness() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rows.jsonl"), rows()).unwrap();
    let task = Task::parse(TASK, dir.path(), "t").unwrap();
    let r = run_task(
        &task,
        &mut Caller,
        None,
        &EvalOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let get = |m: &str| r.metrics.iter().find(|x| x.metric == m).unwrap().value;
    // Row 1 right; row 2 right name, swapped arguments; row 3 wrong name.
    assert!((get("tool_call_accuracy") - 1.0 / 3.0).abs() < 1e-12);
    assert!((get("tool_name_accuracy") - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(r.samples[0].tool_calls.as_ref().unwrap()[0].name, "add");

    // The in-process backend lays out the tools and parses whatever the tiny model says.
    let model = tiny();
    let mut b = LocalBackend::new(
        &model,
        LocalOptions {
            threads: 2,
            batch: 512,
            max_length: 1024,
            prefix_sharing: true,
        },
    )
    .unwrap();
    let r = run_task(&task, &mut b, None, &EvalOptions::default(), &mut |_, _| {}).unwrap();
    assert_eq!(r.n, 3);
    assert!(r.samples.iter().all(|s| s.response.is_some()));
}

#[test]
fn tool_call_task_needs_tools() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rows.jsonl"), rows()).unwrap();
    let e = Task::parse(&TASK.replace("doc_to_tools: tools\n", ""), dir.path(), "t").unwrap_err();
    assert!(e.to_string().contains("doc_to_tools"), "{e}");
    // A row whose tools are not a list is named by line.
    std::fs::write(
        dir.path().join("rows.jsonl"),
        "{\"x\": 1, \"y\": 2, \"tools\": 5, \"answer\": {\"add\": {}}}\n",
    )
    .unwrap();
    let task = Task::parse(TASK, dir.path(), "t").unwrap();
    let e = run_task(
        &task,
        &mut Caller,
        None,
        &EvalOptions::default(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("rows.jsonl:1"), "{e}");
}
