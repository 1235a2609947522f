//! The loop's events as a Response's output items and streaming events.
//!
//! One [`Builder`] serves both modes: it turns each loop [`Event`] into output items
//! (`message`, `function_call`, `web_search_call`, `code_interpreter_call`, `mcp_call`)
//! and, as it goes, into the SSE frames of the Responses stream, each with its
//! `sequence_number`. A non-streamed response just never reads the frames, so both modes
//! produce the same items.
//!
//! When items appear: a `message` opens at the first text delta of an inference step and
//! closes when the step completes (its final text is the step's reply, which the deltas
//! add up to); a client `function_call` appears when its inference step completes; a
//! server-side call's item when its tool execution completes (it carries the result).

use ferrollama_agents::{Delta, Event, Step, StepType, ToolCall, ToolDef, ToolKind, ToolResponse};
use serde_json::{Value, json};

use super::input::{Tools, item_id};

/// The `message` item being streamed.
#[derive(Debug)]
struct OpenMessage {
    index: usize,
    id: String,
}

/// Builds a response's output from the loop's events.
#[derive(Debug)]
pub struct Builder {
    seq: u64,
    /// SSE frames not yet sent.
    frames: Vec<String>,
    pub output: Vec<Value>,
    open: Option<OpenMessage>,
    tools: Tools,
    /// The code interpreter's session (OpenAI's `container_id`).
    container: String,
}

impl Builder {
    pub fn new(tools: Tools, container: String) -> Builder {
        Builder {
            seq: 0,
            frames: Vec::new(),
            output: Vec::new(),
            open: None,
            tools,
            container,
        }
    }

    /// The frames produced since the last call.
    pub fn take_frames(&mut self) -> Vec<String> {
        std::mem::take(&mut self.frames)
    }

    /// Queues one event; `fields` is its object without `type` and `sequence_number`.
    pub fn emit(&mut self, kind: &str, mut fields: Value) {
        if let Some(o) = fields.as_object_mut() {
            o.insert("type".into(), json!(kind));
            o.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq += 1;
        self.frames
            .push(format!("event: {kind}\ndata: {fields}\n\n"));
    }

    /// Adds a finished item (`output_item.added` then `.done`).
    fn add_item(&mut self, item: Value) {
        let index = self.output.len();
        let mut added = item.clone();
        if added.get("status").is_some() {
            added["status"] = json!("in_progress");
        }
        self.emit(
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        self.emit(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        self.output.push(item);
    }

    /// The `mcp_list_tools` item of each MCP server (first in the output, as OpenAI).
    pub fn list_mcp_tools(&mut self) {
        let items: Vec<Value> = self
            .tools
            .mcp
            .iter()
            .map(|m| {
                let tools: Vec<Value> = m
                    .tools
                    .iter()
                    .map(|t| {
                        json!({"name": t.name, "description": t.description, "input_schema": t.parameters})
                    })
                    .collect();
                json!({"id": item_id("mcpl"), "type": "mcp_list_tools", "server_label": m.label, "tools": tools})
            })
            .collect();
        for item in items {
            self.add_item(item);
        }
    }

    pub fn on_event(&mut self, e: &Event) {
        match e {
            Event::StepProgress {
                step_type: StepType::Inference,
                delta: Delta::Text(t),
                ..
            } if !t.is_empty() => {
                let (index, id) = self.open_message();
                self.emit(
                    "response.output_text.delta",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t, "logprobs": []}),
                );
            }
            Event::StepComplete(Step::Inference { model_response, .. }) => {
                if !model_response.content.is_empty() || self.open.is_some() {
                    self.open_message();
                    self.close_message(&model_response.content);
                }
                for c in &model_response.tool_calls {
                    if self
                        .tool(&c.tool_name)
                        .is_some_and(|t| t.kind == ToolKind::Client)
                    {
                        self.function_call(c);
                    }
                }
            }
            Event::StepComplete(Step::ToolExecution {
                tool_calls,
                tool_responses,
                ..
            }) => {
                for c in tool_calls {
                    let r = tool_responses.iter().find(|r| r.call_id == c.call_id);
                    if let Some(item) = self.server_call_item(c, r) {
                        self.add_item(item);
                    }
                }
            }
            _ => {}
        }
    }

    fn tool(&self, name: &str) -> Option<&ToolDef> {
        self.tools.defs.iter().find(|t| t.name == name)
    }

    /// The streamed message item, opened if needed: (output index, item id).
    fn open_message(&mut self) -> (usize, String) {
        if let Some(m) = &self.open {
            return (m.index, m.id.clone());
        }
        let index = self.output.len();
        let id = item_id("msg");
        let item = json!({"id": id, "type": "message", "role": "assistant", "status": "in_progress", "content": []});
        self.output.push(item.clone());
        self.emit(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        );
        self.emit(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": []}}),
        );
        self.open = Some(OpenMessage {
            index,
            id: id.clone(),
        });
        (index, id)
    }

    fn close_message(&mut self, text: &str) {
        let Some(m) = self.open.take() else { return };
        let part = json!({"type": "output_text", "text": text, "annotations": []});
        let item = json!({"id": m.id, "type": "message", "role": "assistant", "status": "completed", "content": [part]});
        self.emit(
            "response.output_text.done",
            json!({"item_id": m.id, "output_index": m.index, "content_index": 0, "text": text, "logprobs": []}),
        );
        self.emit(
            "response.content_part.done",
            json!({"item_id": m.id, "output_index": m.index, "content_index": 0, "part": part}),
        );
        self.emit(
            "response.output_item.done",
            json!({"output_index": m.index, "item": item}),
        );
        if let Some(slot) = self.output.get_mut(m.index) {
            *slot = item;
        }
    }

    /// A client tool call: its item, its arguments (in one delta) and its completion.
    fn function_call(&mut self, c: &ToolCall) {
        let index = self.output.len();
        let id = item_id("fc");
        let arguments = arguments_string(&c.arguments);
        let item = |args: &str, status: &str| {
            json!({"id": id, "type": "function_call", "call_id": c.call_id, "name": c.tool_name,
                   "arguments": args, "status": status})
        };
        self.emit(
            "response.output_item.added",
            json!({"output_index": index, "item": item("", "in_progress")}),
        );
        self.emit(
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": index, "delta": arguments}),
        );
        self.emit(
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": index, "arguments": arguments}),
        );
        let done = item(&arguments, "completed");
        self.emit(
            "response.output_item.done",
            json!({"output_index": index, "item": done}),
        );
        self.output.push(done);
    }

    /// The item of a call that ran here (None for a tool the model made up: the loop told
    /// it so, and there is no item type for it).
    fn server_call_item(&self, c: &ToolCall, r: Option<&ToolResponse>) -> Option<Value> {
        let tool = self.tool(&c.tool_name)?;
        let failed = r.is_none_or(ToolResponse::is_error);
        let status = if failed { "failed" } else { "completed" };
        let content = r.map(|r| r.content.as_str());
        match &tool.kind {
            ToolKind::BraveSearch => Some(json!({
                "id": item_id("ws"), "type": "web_search_call", "status": status,
                "action": {"type": "search", "query": arg(&c.arguments, "query")},
            })),
            ToolKind::CodeInterpreter => Some(json!({
                "id": item_id("ci"), "type": "code_interpreter_call", "status": status,
                "code": arg(&c.arguments, "code"), "container_id": self.container,
                "outputs": [{"type": "logs", "logs": content.unwrap_or("")}],
            })),
            ToolKind::Mcp { endpoint } => Some(json!({
                "id": item_id("mcp"), "type": "mcp_call", "name": c.tool_name,
                "arguments": arguments_string(&c.arguments),
                "server_label": self.tools.mcp_label(endpoint).unwrap_or(""),
                "output": if failed { Value::Null } else { json!(content) },
                "error": if failed { json!(content.unwrap_or("the call did not run")) } else { Value::Null },
            })),
            ToolKind::KnowledgeSearch { .. } => Some(json!({
                "id": item_id("fs"), "type": "file_search_call", "status": status,
                "queries": [arg(&c.arguments, "query")],
                "results": r.filter(|_| !failed).and_then(|r| r.metadata.get("results").cloned()),
            })),
            ToolKind::WolframAlpha | ToolKind::Client => None,
        }
    }
}

/// Arguments as OpenAI sends them: a JSON string.
pub fn arguments_string(v: &Value) -> String {
    match v {
        // Already a string of JSON (some parsers keep it so).
        Value::String(s) => s.clone(),
        Value::Null => "{}".into(),
        v => v.to_string(),
    }
}

/// A string argument of a call, for the item that shows it.
fn arg(args: &Value, key: &str) -> Value {
    let parsed;
    let args = match args {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
            &parsed
        }
        a => a,
    };
    match args.get(key) {
        Some(Value::String(s)) => json!(s),
        Some(v) if !v.is_null() => json!(v.to_string()),
        _ => Value::Null,
    }
}
