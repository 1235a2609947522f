//! A Responses request's parts as the agent loop's: `input` items as [`Message`]s (plus
//! the items stored for `GET .../input_items`), `tools` as [`ToolDef`]s (MCP servers listed
//! now), `tool_choice`, `text.format` and the sampling parameters.
//!
//! Everything is checked before the turn starts, so a bad request is a 400 naming the
//! parameter rather than a failed response later.

use std::collections::HashSet;
use std::sync::Arc;

use ferrollama_agents::runtime::builtin_tool;
use ferrollama_agents::{Message, Role, StopReason, ToolCall, ToolChoice, ToolDef, ToolKind};
use ferrollama_engine::constrain::Schema;
use serde_json::{Value, json};

use crate::agents::tools::{ToolGroup, group_tools};
use crate::error::ApiError;
use crate::state::AppState;

/// A fresh item id with OpenAI's prefix for its kind (`msg_`, `fc_`, `ws_`, ...).
pub fn item_id(prefix: &str) -> String {
    format!("{prefix}_{}", crate::agents::api::new_id().replace('-', ""))
}

/// An MCP server of the request: its label (the output items name it) and its tools.
#[derive(Debug, Clone)]
pub struct McpServer {
    pub label: String,
    pub url: String,
    pub tools: Vec<ToolDef>,
}

/// The request's tools for the loop.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    pub defs: Vec<ToolDef>,
    pub mcp: Vec<McpServer>,
}

impl Tools {
    /// The label of the MCP server at `endpoint`.
    pub fn mcp_label(&self, endpoint: &str) -> Option<&str> {
        self.mcp
            .iter()
            .find(|m| m.url == endpoint)
            .map(|m| m.label.as_str())
    }

    fn add(&mut self, param: &str, d: ToolDef) -> Result<(), ApiError> {
        if let Some(prev) = self.defs.iter().find(|t| t.name == d.name) {
            // The same built-in twice (web_search and web_search_preview) is harmless.
            if prev.kind == d.kind && d.kind != ToolKind::Client {
                return Ok(());
            }
            return Err(ApiError::invalid_param(
                param,
                format!(
                    "two tools are named '{}'; tool names must be unique",
                    d.name
                ),
            ));
        }
        self.defs.push(d);
        Ok(())
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `tools`: function tools run by the client, built-ins and MCP servers run here.
pub async fn tools(app: &AppState, list: Option<&[Value]>) -> Result<Tools, ApiError> {
    let mut out = Tools::default();
    for (i, t) in list.unwrap_or_default().iter().enumerate() {
        let param = format!("tools[{i}]");
        let kind = str_field(t, "type").ok_or_else(|| {
            ApiError::invalid_param(
                &param,
                format!("{param} needs a `type` (function, web_search, code_interpreter, mcp)"),
            )
        })?;
        match kind {
            "function" => {
                let name = str_field(t, "name").unwrap_or("");
                if name.is_empty() {
                    let hint = if t.get("function").is_some() {
                        ": Responses function tools are flat ({\"type\": \"function\", \"name\": ..., \"parameters\": {...}}), not nested under `function` as in chat completions"
                    } else {
                        ""
                    };
                    return Err(ApiError::invalid_param(
                        &param,
                        format!("{param}.name is required{hint}"),
                    ));
                }
                if name.len() > 128 {
                    return Err(ApiError::invalid_param(
                        &param,
                        format!("{param}.name must be 1 to 128 characters"),
                    ));
                }
                let parameters = match t.get("parameters") {
                    None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                    Some(p @ Value::Object(_)) => p.clone(),
                    Some(_) => {
                        return Err(ApiError::invalid_param(
                            &param,
                            format!("{param}.parameters must be a JSON Schema object"),
                        ));
                    }
                };
                out.add(
                    &param,
                    ToolDef {
                        name: name.to_string(),
                        description: str_field(t, "description").unwrap_or("").to_string(),
                        parameters,
                        kind: ToolKind::Client,
                        toolgroup: None,
                    },
                )?;
            }
            "web_search"
            | "web_search_preview"
            | "web_search_preview_2025_03_11"
            | "web_search_2025_08_26" => {
                if let Some(d) = builtin_tool("web_search") {
                    out.add(&param, d)?;
                }
            }
            "code_interpreter" => {
                if let Some(d) = builtin_tool("code_interpreter") {
                    out.add(&param, d)?;
                }
            }
            "mcp" => {
                let server = mcp_server(app, t, &param).await?;
                for d in &server.tools {
                    out.add(&param, d.clone())?;
                }
                out.mcp.push(server);
            }
            "file_search" => {
                let ids: Vec<String> = t
                    .get("vector_store_ids")
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .filter(|v: &Vec<String>| !v.is_empty())
                    .ok_or_else(|| {
                        ApiError::invalid_param(
                            &param,
                            format!("{param}.vector_store_ids must be a non-empty list of vector store ids"),
                        )
                    })?;
                let max_results = match t.get("max_num_results") {
                    None | Some(Value::Null) => 10,
                    Some(v) => v
                        .as_u64()
                        .filter(|n| (1..=50).contains(n))
                        .map(|n| n as usize)
                        .ok_or_else(|| {
                            ApiError::invalid_param(
                                &param,
                                format!("{param}.max_num_results must be from 1 to 50"),
                            )
                        })?,
                };
                for id in &ids {
                    let key = id.clone();
                    let db = app.files.vectors.clone();
                    let found = tokio::task::spawn_blocking(move || db.get_vector_store(&key))
                        .await
                        .map_err(ApiError::internal)?
                        .map_err(|e| ApiError::internal(format!("vector store database: {e}")))?;
                    if found.is_none() {
                        return Err(ApiError::invalid_param(
                            &param,
                            format!("{param}: no vector store with id '{id}'"),
                        ));
                    }
                }
                if let Some(mut d) = builtin_tool("knowledge_search") {
                    d.kind = ToolKind::KnowledgeSearch {
                        vector_store_ids: ids,
                        max_results,
                    };
                    out.add(&param, d)?;
                }
            }
            k => {
                return Err(ApiError::invalid_param(
                    &param,
                    format!(
                        "unsupported tool type '{k}' (function, web_search, web_search_preview, code_interpreter, mcp, file_search)"
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// An `mcp` tool: checks it and lists the server's tools (filtered by `allowed_tools`).
async fn mcp_server(app: &AppState, t: &Value, param: &str) -> Result<McpServer, ApiError> {
    let label = str_field(t, "server_label").unwrap_or("");
    if label.is_empty() {
        return Err(ApiError::invalid_param(
            param,
            format!("{param}.server_label is required for an mcp tool"),
        ));
    }
    if t.get("connector_id").is_some_and(|c| !c.is_null()) {
        return Err(ApiError::invalid_param(
            param,
            format!("{param}: connectors are OpenAI's; give the MCP server's `server_url`"),
        ));
    }
    let url = str_field(t, "server_url").unwrap_or("");
    // A stdio endpoint would run a command on this machine: only the operator may
    // configure those (`serve --mcp`).
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ApiError::invalid_param(
            param,
            format!("{param}.server_url must be an http:// or https:// URL"),
        ));
    }
    if t.get("headers")
        .and_then(Value::as_object)
        .is_some_and(|h| !h.is_empty())
    {
        return Err(ApiError::invalid_param(
            param,
            format!("{param}.headers: sending headers to MCP servers is not supported yet"),
        ));
    }
    // Approvals need a paused response the client approves; until then only servers whose
    // calls need no approval are accepted. Absent means "never" here (Llama Stack's
    // behaviour), not OpenAI's "always": the calls run without asking.
    match t.get("require_approval") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "never" => {}
        Some(Value::Object(o)) if !o.contains_key("always") => {}
        Some(_) => {
            return Err(ApiError::invalid_param(
                param,
                format!(
                    "{param}.require_approval: approvals are not supported yet; set require_approval to \"never\""
                ),
            ));
        }
    }
    let allowed: Option<Vec<String>> = match t.get("allowed_tools") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(names(a, param)?),
        Some(Value::Object(o)) => match o.get("tool_names") {
            Some(Value::Array(a)) => Some(names(a, param)?),
            _ => None,
        },
        Some(_) => {
            return Err(ApiError::invalid_param(
                param,
                format!("{param}.allowed_tools must be a list of tool names"),
            ));
        }
    };
    let group = ToolGroup {
        identifier: label.to_string(),
        provider_id: "model-context-protocol".into(),
        mcp_endpoint: Some(url.to_string()),
        args: None,
    };
    let mut tools = group_tools(app, &group).await?;
    if let Some(allowed) = &allowed {
        tools.retain(|d| allowed.contains(&d.name));
    }
    Ok(McpServer {
        label: label.to_string(),
        url: url.to_string(),
        tools,
    })
}

fn names(a: &[Value], param: &str) -> Result<Vec<String>, ApiError> {
    a.iter()
        .map(|v| {
            v.as_str().map(str::to_string).ok_or_else(|| {
                ApiError::invalid_param(
                    param,
                    format!("{param}.allowed_tools must be a list of tool names"),
                )
            })
        })
        .collect()
}

/// `tool_choice`: `auto` / `none` / `required`, or an object forcing one tool.
pub fn tool_choice(v: Option<&Value>, tools: &Tools) -> Result<ToolChoice, ApiError> {
    let bad = |m: String| ApiError::invalid_param("tool_choice", m);
    let choice = match v {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            s => {
                return Err(bad(format!(
                    "tool_choice '{s}' is not one of auto, none, required"
                )));
            }
        },
        Some(o @ Value::Object(_)) => match str_field(o, "type").unwrap_or("") {
            "function" | "mcp" => match str_field(o, "name") {
                Some(n) => ToolChoice::Named(n.to_string()),
                // {"type": "mcp", "server_label": ...} alone: any tool, but one.
                None if str_field(o, "type") == Some("mcp") => ToolChoice::Required,
                None => return Err(bad("tool_choice of type function needs a `name`".into())),
            },
            "web_search" | "web_search_preview" | "web_search_preview_2025_03_11" => {
                ToolChoice::Named("brave_search".into())
            }
            "code_interpreter" => ToolChoice::Named("code_interpreter".into()),
            t => {
                return Err(bad(format!(
                    "unsupported tool_choice type '{t}' (function, mcp, web_search_preview, code_interpreter)"
                )));
            }
        },
        Some(_) => {
            return Err(bad(
                "tool_choice must be a string or an object naming a tool".into(),
            ));
        }
    };
    match &choice {
        ToolChoice::Named(n) if !tools.defs.iter().any(|t| &t.name == n) => Err(bad(format!(
            "tool_choice names '{n}', which is not one of the request's tools"
        ))),
        ToolChoice::Required if tools.defs.is_empty() => {
            Err(bad("tool_choice 'required' needs at least one tool".into()))
        }
        _ => Ok(choice),
    }
}

/// `text.format`: the schema replies are constrained to (None: free text).
pub fn text_format(text: Option<&Value>) -> Result<Option<Arc<Schema>>, ApiError> {
    let Some(format) = text.and_then(|t| t.get("format")).filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match str_field(format, "type") {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Arc::new(Schema::any_object()))),
        Some("json_schema") => {
            let schema = format.get("schema").ok_or_else(|| {
                ApiError::invalid_param(
                    "text.format",
                    "text.format of type json_schema needs a `schema`",
                )
            })?;
            crate::job::compile_schema(schema, "text.format").map(Some)
        }
        _ => Err(ApiError::invalid_param(
            "text.format",
            "text.format.type must be text, json_object or json_schema",
        )),
    }
}

/// The Llama Stack sampling parameters the loop passes to the engine: OpenAI's defaults
/// (temperature 1, top_p 1), greedy at temperature 0.
pub fn sampling(temperature: Option<f32>, top_p: Option<f32>) -> Result<Value, ApiError> {
    let t = temperature.unwrap_or(1.0);
    let p = top_p.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&t) {
        return Err(ApiError::invalid_param(
            "temperature",
            "temperature must be between 0 and 2",
        ));
    }
    if !(p > 0.0 && p <= 1.0) {
        return Err(ApiError::invalid_param(
            "top_p",
            "top_p must be greater than 0 and at most 1",
        ));
    }
    Ok(if t == 0.0 {
        json!({"strategy": {"type": "greedy"}})
    } else {
        json!({"strategy": {"type": "top_p", "temperature": t, "top_p": p}})
    })
}

/// The new input as messages, and as the items `GET .../input_items` lists.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub messages: Vec<Message>,
    pub items: Vec<Value>,
}

/// The text of a message's `content` (a string or a list of text parts).
fn content_text(v: &Value, param: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let kind = str_field(p, "type").unwrap_or("");
                match kind {
                    "input_text" | "output_text" | "text" => {
                        out.push(str_field(p, "text").unwrap_or("").to_string());
                    }
                    "refusal" => out.push(str_field(p, "refusal").unwrap_or("").to_string()),
                    k => {
                        return Err(ApiError::invalid_param(
                            param,
                            format!(
                                "{param}.content[{j}]: '{k}' parts are not supported (text models: input_text, output_text)"
                            ),
                        ));
                    }
                }
            }
            Ok(out.join("\n"))
        }
        _ => Err(ApiError::invalid_param(
            param,
            format!("{param}.content must be a string or a list of input_text parts"),
        )),
    }
}

/// The tool named by the call `call_id` among `messages` (newest first).
fn call_name<'a>(messages: &[&'a [Message]], call_id: &str) -> Option<&'a str> {
    messages
        .iter()
        .rev()
        .flat_map(|ms| ms.iter().rev())
        .flat_map(|m| m.tool_calls.iter())
        .find(|c| c.call_id == call_id)
        .map(|c| c.tool_name.as_str())
}

/// `input` (a string, or a list of items) after `history` (the conversation so far).
pub fn input(v: &Value, history: &[Message]) -> Result<Input, ApiError> {
    let mut out = Input::default();
    match v {
        Value::String(s) => {
            out.messages.push(Message::new(Role::User, s.clone()));
            out.items.push(json!({
                "id": item_id("msg"), "type": "message", "role": "user", "status": "completed",
                "content": [{"type": "input_text", "text": s}],
            }));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, &format!("input[{i}]"), history, &mut out)?;
            }
        }
        _ => {
            return Err(ApiError::invalid_param(
                "input",
                "input must be a string or a list of input items",
            ));
        }
    }
    if out.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "input",
            "input must hold at least one message or function_call_output",
        ));
    }
    // Every function call of the conversation needs its output before the model goes on
    // (OpenAI answers the same 400).
    let answered: HashSet<&str> = history
        .iter()
        .chain(&out.messages)
        .filter_map(|m| m.call_id.as_deref())
        .collect();
    if let Some(c) = history
        .iter()
        .chain(&out.messages)
        .flat_map(|m| m.tool_calls.iter())
        .find(|c| !answered.contains(c.call_id.as_str()))
    {
        return Err(ApiError::invalid_param(
            "input",
            format!(
                "no function_call_output for the function call '{}' ({}); send it in input",
                c.call_id, c.tool_name
            ),
        ));
    }
    Ok(out)
}

fn input_item(
    item: &Value,
    param: &str,
    history: &[Message],
    out: &mut Input,
) -> Result<(), ApiError> {
    if !item.is_object() {
        return Err(ApiError::invalid_param(
            param,
            format!("{param} must be an object (a message, function_call or function_call_output)"),
        ));
    }
    // Easy input messages may leave `type` out.
    let kind = str_field(item, "type").unwrap_or(if item.get("role").is_some() {
        "message"
    } else {
        ""
    });
    let id = |prefix: &str| str_field(item, "id").map_or_else(|| item_id(prefix), str::to_string);
    match kind {
        "message" => {
            let role_name = str_field(item, "role").unwrap_or("");
            let role = match role_name {
                "user" => Role::User,
                "system" | "developer" => Role::System,
                "assistant" => Role::Assistant,
                r => {
                    return Err(ApiError::invalid_param(
                        param,
                        format!(
                            "{param}.role '{r}' is not one of user, system, developer, assistant"
                        ),
                    ));
                }
            };
            let text = content_text(item.get("content").unwrap_or(&Value::Null), param)?;
            let part = if role == Role::Assistant {
                json!({"type": "output_text", "text": text, "annotations": []})
            } else {
                json!({"type": "input_text", "text": text})
            };
            out.items.push(json!({
                "id": id("msg"), "type": "message", "role": role_name, "status": "completed",
                "content": [part],
            }));
            let mut m = Message::new(role, text);
            if role == Role::Assistant {
                m.stop_reason = Some(StopReason::EndOfTurn);
            }
            out.messages.push(m);
        }
        "function_call" => {
            let call_id = str_field(item, "call_id").unwrap_or("");
            let name = str_field(item, "name").unwrap_or("");
            if call_id.is_empty() || name.is_empty() {
                return Err(ApiError::invalid_param(
                    param,
                    format!("{param}: a function_call needs `call_id` and `name`"),
                ));
            }
            let arguments = match item.get("arguments") {
                Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
                    ApiError::invalid_param(param, format!("{param}.arguments is not JSON: {e}"))
                })?,
                Some(v @ Value::Object(_)) => v.clone(),
                _ => json!({}),
            };
            out.items.push(json!({
                "id": id("fc"), "type": "function_call", "call_id": call_id, "name": name,
                "arguments": arguments.to_string(), "status": "completed",
            }));
            let call = ToolCall {
                call_id: call_id.to_string(),
                tool_name: name.to_string(),
                arguments,
            };
            // Calls made in one reply are one assistant message with several calls.
            match out.messages.last_mut() {
                Some(m) if m.role == Role::Assistant => {
                    m.tool_calls.push(call);
                    m.stop_reason = Some(StopReason::EndOfMessage);
                }
                _ => out.messages.push(Message {
                    tool_calls: vec![call],
                    stop_reason: Some(StopReason::EndOfMessage),
                    ..Message::new(Role::Assistant, "")
                }),
            }
        }
        "function_call_output" => {
            let call_id = str_field(item, "call_id").unwrap_or("");
            if call_id.is_empty() {
                return Err(ApiError::invalid_param(
                    param,
                    format!("{param}: a function_call_output needs `call_id`"),
                ));
            }
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(v @ Value::Array(_)) => content_text(v, param)?,
                _ => {
                    return Err(ApiError::invalid_param(
                        param,
                        format!("{param}.output must be a string"),
                    ));
                }
            };
            let name = call_name(&[history, &out.messages], call_id)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        param,
                        format!(
                            "{param}: no function call '{call_id}' in this conversation (continue the response that made it with previous_response_id)"
                        ),
                    )
                })?
                .to_string();
            out.items.push(json!({
                "id": id("fco"), "type": "function_call_output", "call_id": call_id,
                "output": output, "status": "completed",
            }));
            out.messages
                .push(Message::tool_result(call_id, &name, output));
        }
        // Records of calls that ran here, sent back by a client replaying a response's
        // output: their results are not in them, so they add nothing the model can use.
        "web_search_call"
        | "code_interpreter_call"
        | "mcp_call"
        | "mcp_list_tools"
        | "reasoning" => {}
        k => {
            return Err(ApiError::invalid_param(
                param,
                format!(
                    "{param}: unsupported input item type '{k}' (message, function_call, function_call_output)"
                ),
            ));
        }
    }
    Ok(())
}
