//! The agent loop with scripted model replies, tools and shields: which steps run, in what
//! order, what the model is asked each time, and how a turn ends.

// Test scaffolding (scripted models and tools) outside #[test] fns unwraps freely.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferrollama_agents::*;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

/// Replies in order; records every request.
struct Script {
    replies: Mutex<Vec<InferReply>>,
    seen: Mutex<Vec<InferRequest>>,
}

impl Script {
    fn new(mut replies: Vec<InferReply>) -> Script {
        replies.reverse();
        Script {
            replies: Mutex::new(replies),
            seen: Mutex::new(Vec::new()),
        }
    }
    fn requests(&self) -> Vec<InferRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl Inference for Script {
    async fn infer(
        &self,
        req: InferRequest,
        deltas: UnboundedSender<String>,
    ) -> Result<InferReply, TurnError> {
        self.seen.lock().unwrap().push(req);
        let r = self
            .replies
            .lock()
            .unwrap()
            .pop()
            .ok_or_else(|| TurnError::Inference("script ran out".into()))?;
        for w in r.content.split_inclusive(' ') {
            deltas.send(w.to_string()).unwrap();
        }
        Ok(r)
    }
}

/// Answers `result of <name>(<args>)`; records calls.
#[derive(Default)]
struct Echo {
    calls: Mutex<Vec<(String, String)>>,
}

impl ToolExecutor for Echo {
    async fn execute(&self, session_id: &str, tool: &ToolDef, call: &ToolCall) -> ToolResponse {
        self.calls
            .lock()
            .unwrap()
            .push((session_id.to_string(), tool.name.clone()));
        ToolResponse {
            call_id: call.call_id.clone(),
            tool_name: call.tool_name.clone(),
            content: format!("result of {}({})", call.tool_name, call.arguments),
            metadata: Value::Null,
        }
    }
}

/// Flags any message containing "bomb".
struct Keyword;

impl Shields for Keyword {
    async fn check(
        &self,
        shields: &[String],
        messages: &[Message],
    ) -> Result<Option<Violation>, TurnError> {
        Ok(messages
            .iter()
            .any(|m| m.content.contains("bomb"))
            .then(|| Violation {
                violation_level: "error".into(),
                user_message: format!("{} refused", shields[0]),
                metadata: json!({}),
            }))
    }
}

fn reply(text: &str, calls: &[(&str, Value)]) -> InferReply {
    InferReply {
        content: text.into(),
        tool_calls: calls
            .iter()
            .enumerate()
            .map(|(i, (n, a))| ToolCall {
                call_id: format!("c{i}"),
                tool_name: n.to_string(),
                arguments: a.clone(),
            })
            .collect(),
        stop_reason: if calls.is_empty() {
            StopReason::EndOfTurn
        } else {
            StopReason::EndOfMessage
        },
        usage: None,
    }
}

fn tool(name: &str, kind: ToolKind) -> ToolDef {
    ToolDef {
        name: name.into(),
        description: String::new(),
        parameters: Value::Null,
        kind,
        toolgroup: None,
    }
}

fn config(tools: Vec<ToolDef>) -> TurnConfig {
    TurnConfig {
        model: "m".into(),
        instructions: "Be brief.".into(),
        tools,
        tool_choice: ToolChoice::Auto,
        max_infer_iters: 10,
        input_shields: vec![],
        output_shields: vec![],
        sampling: Value::Null,
        max_tokens: None,
    }
}

async fn run<I: Inference, S: Shields, T: ToolExecutor>(
    deps: (&I, &S, &T),
    cfg: &TurnConfig,
    history: &mut Vec<Message>,
    fresh: bool,
) -> (TurnOutcome, Vec<Event>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let n = AtomicUsize::new(0);
    let new_id = move || format!("s{}", n.fetch_add(1, Ordering::Relaxed));
    let clock = || "t".to_string();
    let ctx = TurnContext {
        session_id: "sess",
        turn_id: "turn",
        events: Some(&tx),
        clock: &clock,
        new_id: &new_id,
    };
    let out = run_turn(deps, cfg, &ctx, history, fresh).await.unwrap();
    drop(tx);
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    (out, events)
}

fn types(steps: &[Step]) -> Vec<StepType> {
    steps.iter().map(Step::step_type).collect()
}

#[tokio::test]
async fn a_reply_without_calls_completes_the_turn_in_one_step() {
    let model = Script::new(vec![reply("Hello there.", &[])]);
    let mut h = vec![Message::new(Role::User, "Hi")];
    let (out, events) = run(
        (&model, &NoShields, &Echo::default()),
        &config(vec![]),
        &mut h,
        true,
    )
    .await;
    assert_eq!(types(&out.steps), [StepType::Inference]);
    let TurnEnd::Complete(m) = &out.end else {
        panic!("{:?}", out.end)
    };
    assert_eq!(m.content, "Hello there.");
    // The instructions are the system message; the history is not changed by them.
    let req = &model.requests()[0];
    assert_eq!(req.messages[0], Message::new(Role::System, "Be brief."));
    assert_eq!(req.messages[1].content, "Hi");
    assert_eq!(h.len(), 2);
    // Events: start, the text as generated, complete.
    assert!(matches!(
        events[0],
        Event::StepStart {
            step_type: StepType::Inference,
            ..
        }
    ));
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            Event::StepProgress {
                delta: Delta::Text(t),
                ..
            } => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Hello there.");
    assert!(matches!(
        events.last(),
        Some(Event::StepComplete(Step::Inference { .. }))
    ));
}

#[tokio::test]
async fn a_builtin_call_runs_and_the_model_continues_with_its_result() {
    let model = Script::new(vec![
        reply("", &[("code_interpreter", json!({"code": "print(6*7)"}))]),
        reply("It is 42.", &[]),
    ]);
    let tools = Echo::default();
    let mut cfg = config(vec![tool("code_interpreter", ToolKind::CodeInterpreter)]);
    cfg.tool_choice = ToolChoice::Required;
    let mut h = vec![Message::new(Role::User, "6*7?")];
    let (out, events) = run((&model, &NoShields, &tools), &cfg, &mut h, true).await;
    assert_eq!(
        types(&out.steps),
        [
            StepType::Inference,
            StepType::ToolExecution,
            StepType::Inference
        ]
    );
    assert_eq!(
        *tools.calls.lock().unwrap(),
        [("sess".to_string(), "code_interpreter".to_string())]
    );
    let reqs = model.requests();
    // Forced only on the first inference: the second may answer.
    assert_eq!(reqs[0].tool_choice, ToolChoice::Required);
    assert_eq!(reqs[1].tool_choice, ToolChoice::Auto);
    // The second inference sees the call and its result as a tool message.
    let last = reqs[1].messages.last().unwrap();
    assert_eq!(last.role, Role::Tool);
    assert_eq!(last.call_id.as_deref(), Some("c0"));
    assert_eq!(
        last.content,
        r#"result of code_interpreter({"code":"print(6*7)"})"#
    );
    assert_eq!(
        reqs[1].messages[2].tool_calls[0].tool_name,
        "code_interpreter"
    );
    assert_eq!(
        reqs[1].messages[2].stop_reason,
        Some(StopReason::EndOfMessage)
    );
    assert!(matches!(&out.end, TurnEnd::Complete(m) if m.content == "It is 42."));
    // user, assistant call, tool result, assistant answer
    assert_eq!(
        h.iter().map(|m| m.role).collect::<Vec<_>>(),
        [Role::User, Role::Assistant, Role::Tool, Role::Assistant]
    );
    // The call is streamed as a tool-call delta of the first inference step.
    assert!(events.iter().any(|e| matches!(e, Event::StepProgress { delta: Delta::ToolCall(c), .. } if c.tool_name == "code_interpreter")));
}

#[tokio::test]
async fn client_tool_calls_pause_the_turn_after_server_calls_ran() {
    let model = Script::new(vec![
        reply(
            "",
            &[
                ("brave_search", json!({"query": "llamas"})),
                ("get_weather", json!({"city": "Paris"})),
            ],
        ),
        reply("Sunny, and llamas are camelids.", &[]),
    ]);
    let tools = Echo::default();
    let cfg = config(vec![
        tool("brave_search", ToolKind::BraveSearch),
        tool("get_weather", ToolKind::Client),
    ]);
    let mut h = vec![Message::new(Role::User, "weather?")];
    let (out, _) = run((&model, &NoShields, &tools), &cfg, &mut h, true).await;
    assert_eq!(
        types(&out.steps),
        [StepType::Inference, StepType::ToolExecution]
    );
    let TurnEnd::AwaitingInput(m) = &out.end else {
        panic!("{:?}", out.end)
    };
    assert_eq!(m.tool_calls.len(), 2);
    assert_eq!(
        tools.calls.lock().unwrap().len(),
        1,
        "only brave_search ran here"
    );
    // Resume: the caller's result joins the history and the loop continues.
    let n = AtomicUsize::new(100);
    let new_id = move || format!("s{}", n.fetch_add(1, Ordering::Relaxed));
    let clock = || "t".to_string();
    let ctx = TurnContext {
        session_id: "sess",
        turn_id: "turn",
        events: None,
        clock: &clock,
        new_id: &new_id,
    };
    let step = ferrollama_agents::turn::client_results_step(
        &ctx,
        &mut h,
        &m.tool_calls[1..],
        vec![ToolResponse {
            call_id: "c1".into(),
            tool_name: "get_weather".into(),
            content: "sunny".into(),
            metadata: Value::Null,
        }],
    );
    assert_eq!(step.step_type(), StepType::ToolExecution);
    let (out, _) = run((&model, &NoShields, &tools), &cfg, &mut h, false).await;
    assert!(matches!(&out.end, TurnEnd::Complete(m) if m.content.starts_with("Sunny")));
    let last = model.requests().pop().unwrap();
    let roles: Vec<Role> = last.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::System,
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::Tool
        ]
    );
}

#[tokio::test]
async fn max_infer_iters_stops_a_model_that_keeps_calling() {
    let call = || reply("", &[("brave_search", json!({"query": "again"}))]);
    let model = Script::new(vec![call(), call(), call(), call()]);
    let mut cfg = config(vec![tool("brave_search", ToolKind::BraveSearch)]);
    cfg.max_infer_iters = 2;
    let mut h = vec![Message::new(Role::User, "loop")];
    let (out, _) = run((&model, &NoShields, &Echo::default()), &cfg, &mut h, true).await;
    assert_eq!(model.requests().len(), 2);
    assert_eq!(
        types(&out.steps),
        [
            StepType::Inference,
            StepType::ToolExecution,
            StepType::Inference,
            StepType::ToolExecution
        ]
    );
    assert!(matches!(&out.end, TurnEnd::Complete(m) if m.tool_calls.len() == 1));
}

#[tokio::test]
async fn an_input_shield_violation_ends_the_turn_before_inference() {
    let model = Script::new(vec![reply("never", &[])]);
    let mut cfg = config(vec![]);
    cfg.input_shields = vec!["llama-guard".into()];
    let mut h = vec![Message::new(Role::User, "how to build a bomb")];
    let (out, _) = run((&model, &Keyword, &Echo::default()), &cfg, &mut h, true).await;
    assert!(model.requests().is_empty());
    assert_eq!(types(&out.steps), [StepType::ShieldCall]);
    let Step::ShieldCall {
        violation: Some(v), ..
    } = &out.steps[0]
    else {
        panic!()
    };
    assert_eq!(v.user_message, "llama-guard refused");
    assert!(matches!(&out.end, TurnEnd::Complete(m) if m.content == "llama-guard refused"));
}

#[tokio::test]
async fn a_passing_input_shield_is_a_step_without_violation() {
    let model = Script::new(vec![reply("fine", &[])]);
    let mut cfg = config(vec![]);
    cfg.input_shields = vec!["llama-guard".into()];
    let mut h = vec![Message::new(Role::User, "hello")];
    let (out, _) = run((&model, &Keyword, &Echo::default()), &cfg, &mut h, true).await;
    assert_eq!(
        types(&out.steps),
        [StepType::ShieldCall, StepType::Inference]
    );
    assert!(matches!(
        &out.steps[0],
        Step::ShieldCall {
            violation: None,
            ..
        }
    ));
}

#[tokio::test]
async fn an_output_shield_violation_replaces_the_reply() {
    let model = Script::new(vec![reply("here is a bomb recipe", &[])]);
    let mut cfg = config(vec![]);
    cfg.output_shields = vec!["guard".into()];
    let mut h = vec![Message::new(Role::User, "hello")];
    let (out, _) = run((&model, &Keyword, &Echo::default()), &cfg, &mut h, true).await;
    assert_eq!(
        types(&out.steps),
        [StepType::Inference, StepType::ShieldCall]
    );
    assert!(matches!(&out.end, TurnEnd::Complete(m) if m.content == "guard refused"));
    assert_eq!(
        h.last().unwrap().content,
        "guard refused",
        "the refused text is not kept"
    );
}

#[tokio::test]
async fn an_unknown_tool_is_an_error_result_the_model_reads() {
    let model = Script::new(vec![
        reply("", &[("rm_rf", json!({}))]),
        reply("sorry", &[]),
    ]);
    let tools = Echo::default();
    let cfg = config(vec![tool("brave_search", ToolKind::BraveSearch)]);
    let mut h = vec![Message::new(Role::User, "x")];
    let (out, _) = run((&model, &NoShields, &tools), &cfg, &mut h, true).await;
    let Step::ToolExecution { tool_responses, .. } = &out.steps[1] else {
        panic!()
    };
    assert!(tool_responses[0].is_error());
    assert!(tool_responses[0].content.contains("unknown tool 'rm_rf'"));
    assert!(tool_responses[0].content.contains("brave_search"));
    assert!(tools.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn tool_choice_none_sends_no_tools() {
    let model = Script::new(vec![reply("plain", &[])]);
    let mut cfg = config(vec![tool("brave_search", ToolKind::BraveSearch)]);
    cfg.tool_choice = ToolChoice::None;
    let mut h = vec![Message::new(Role::User, "x")];
    run((&model, &NoShields, &Echo::default()), &cfg, &mut h, true).await;
    assert!(model.requests()[0].tools.is_empty());
}

#[tokio::test]
async fn steps_serialize_in_llama_stack_shapes() {
    let s = Step::ToolExecution {
        turn_id: "t".into(),
        step_id: "s".into(),
        started_at: "a".into(),
        completed_at: "b".into(),
        tool_calls: vec![ToolCall {
            call_id: "c".into(),
            tool_name: "brave_search".into(),
            arguments: json!({"query": "q"}),
        }],
        tool_responses: vec![ToolResponse {
            call_id: "c".into(),
            tool_name: "brave_search".into(),
            content: "r".into(),
            metadata: Value::Null,
        }],
    };
    assert_eq!(
        serde_json::to_value(&s).unwrap(),
        json!({"step_type": "tool_execution", "turn_id": "t", "step_id": "s", "started_at": "a", "completed_at": "b",
               "tool_calls": [{"call_id": "c", "tool_name": "brave_search", "arguments": {"query": "q"}}],
               "tool_responses": [{"call_id": "c", "tool_name": "brave_search", "content": "r", "metadata": null}]})
    );
    let back: Step = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}
