//! Tool calling, BFCL-style (the Berkeley Function Calling Leaderboard's AST check of
//! its "simple" category): the model gets a question and tool definitions, its reply is
//! parsed into calls, and the first call is compared with the ground truth by function name
//! and arguments.
//!
//! Prompt: for the Llama 3.1 format, Meta's layout (a system prompt announcing
//! `Environment: ipython`, then the custom functions in its JSON definition format, as
//! `ferrollama serve` lays them out; today's date fixed at 26 July 2024 so that prompts are
//! reproducible); for other templates, the server's generic instruction to answer with a
//! JSON call. Over HTTP, OpenAI's `tools` on `/v1/chat/completions`, read back from
//! `tool_calls`.
//!
//! Ground truth: `{"name": F, "arguments": {A: V}}` (each V the one right value) or BFCL's
//! `{F: {A: [V1, V2, ...]}}` (any listed value is right; `""` in the list marks the
//! argument optional). A call is right when the name matches, every argument it passes is
//! in the ground truth with an accepted value, and every non-optional argument is passed.
//! Values compare as BFCL does: numbers by value (an integer matches the same float),
//! strings after lower-casing and removing spaces and `,./-_*^`, lists and objects
//! element by element.

use ferrollama_engine::{ChatMessage, ChatTemplate, Model};
use ferrollama_tokenizer::chat::{
    Date, StopReason, SystemPrompt, ToolDefinition, ToolName, ToolParam, ToolPromptFormat,
    custom_tools_prompt, parse_assistant_text, system_prompt,
};
use serde_json::{Map, Value, json};

use crate::error::{EvalError, Result};

/// A call the model made.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Call {
    pub name: String,
    pub arguments: Value,
}

/// The model's reply to a tool-calling question.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ToolReply {
    pub text: String,
    pub calls: Vec<Call>,
}

/// The function object of an OpenAI tool (`{"type": "function", "function": {...}}`) or
/// of a bare function definition.
fn function_of(tool: &Value) -> Option<&Map<String, Value>> {
    let o = tool.as_object()?;
    match o.get("function").and_then(Value::as_object) {
        Some(f) => Some(f),
        None => Some(o),
    }
}

/// Checks the tools and returns them as OpenAI tools.
pub fn openai_tools(tools: &Value) -> Result<Vec<Value>> {
    let list = tools
        .as_array()
        .ok_or_else(|| EvalError::Invalid("the tools must be a list".into()))?;
    list.iter()
        .map(|t| {
            let f = function_of(t)
                .filter(|f| f.get("name").and_then(Value::as_str).is_some())
                .ok_or_else(|| EvalError::Invalid(format!("not a function definition: {t}")))?;
            Ok(json!({"type": "function", "function": f}))
        })
        .collect()
}

/// The dialog that asks `question` with `tools` in `model`'s format.
pub fn tool_dialog(model: &Model, question: &str, tools: &[Value]) -> Vec<ChatMessage> {
    let system = if matches!(model.template, ChatTemplate::Llama31) {
        let defs: Vec<ToolDefinition> = tools
            .iter()
            .filter_map(function_of)
            .map(|f| ToolDefinition {
                name: f.get("name").and_then(Value::as_str).unwrap_or("").into(),
                description: f
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                parameters: ToolParam::from_json_schema(
                    f.get("parameters").unwrap_or(&Value::Null),
                ),
            })
            .collect();
        let mut s = system_prompt(&SystemPrompt {
            builtin_tools: Vec::new(),
            custom_tools: true,
            today: Date::new(2024, 7, 26).unwrap_or_else(Date::today),
            instruction: None,
        });
        s.push('\n');
        s.push_str(&custom_tools_prompt(&defs, ToolPromptFormat::Json));
        s
    } else {
        let list: Vec<Value> = tools
            .iter()
            .filter_map(function_of)
            .map(|f| json!(f))
            .collect();
        format!(
            "You can call these tools. To call one, answer with only a JSON object of the form \
             {{\"name\": tool name, \"parameters\": {{argument name: value}}}} and nothing else.\n{}",
            Value::Array(list)
        )
    };
    vec![
        ChatMessage::new("system", &system),
        ChatMessage::new("user", question),
    ]
}

/// `{"name": .., "parameters"|"arguments": {..}}` or OpenAI's function-call object.
fn json_call(v: &Value) -> Option<Call> {
    let f = function_of(v)?;
    let name = f.get("name")?.as_str()?.to_string();
    let mut arguments = f
        .get("parameters")
        .or_else(|| f.get("arguments"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    // OpenAI sends arguments as a JSON string.
    if let Value::String(s) = &arguments
        && let Ok(parsed) = serde_json::from_str::<Value>(s)
    {
        arguments = parsed;
    }
    Some(Call { name, arguments })
}

/// The calls in generated text: a JSON call, or Meta's Llama 3.1 formats.
pub fn parse_calls(model: &Model, text: &str) -> Vec<Call> {
    if let Ok(v) = serde_json::from_str::<Value>(text.trim())
        && let Some(c) = json_call(&v)
    {
        return vec![c];
    }
    if matches!(model.template, ChatTemplate::Llama31) {
        return parse_assistant_text(text, StopReason::EndOfTurn)
            .tool_calls
            .into_iter()
            .map(|c| Call {
                name: match &c.tool_name {
                    ToolName::Builtin(b) => b.name().to_string(),
                    ToolName::Custom(s) => s.clone(),
                },
                arguments: Value::Object(c.arguments),
            })
            .collect();
    }
    Vec::new()
}

/// The calls of an OpenAI chat completion's message.
pub fn calls_of_message(message: &Value) -> Vec<Call> {
    message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(json_call).collect())
        .unwrap_or_default()
}

/// The ground truth as (function name, argument → accepted values).
pub fn ground_truth(v: &Value) -> Result<(String, Map<String, Value>)> {
    let bad = || {
        EvalError::Invalid(format!(
            "tool-call target must be {{\"name\": .., \"arguments\": {{..}}}} or BFCL's \
             {{\"function\": {{\"argument\": [values]}}}}, got {v}"
        ))
    };
    let v = match v {
        Value::Array(a) if a.len() == 1 => &a[0],
        other => other,
    };
    let o = v.as_object().ok_or_else(bad)?;
    if let Some(name) = o.get("name").and_then(Value::as_str) {
        let args = o
            .get("arguments")
            .or_else(|| o.get("parameters"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let accepted = args.into_iter().map(|(k, v)| (k, json!([v]))).collect();
        return Ok((name.to_string(), accepted));
    }
    if o.len() == 1
        && let Some((name, args)) = o.iter().next()
        && let Some(args) = args.as_object()
    {
        let accepted = args
            .iter()
            .map(|(k, v)| match v {
                Value::Array(_) => Ok((k.clone(), v.clone())),
                _ => Err(bad()),
            })
            .collect::<Result<Map<String, Value>>>()?;
        return Ok((name.clone(), accepted));
    }
    Err(bad())
}

/// BFCL's `standardize_string`: lower case, without spaces and `,./-_*^`.
fn standardize(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, ' ' | ',' | '.' | '/' | '-' | '_' | '*' | '^'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a passed value equals an accepted one.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(x), Value::String(y)) => standardize(x) == standardize(y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// (name right, whole call right) for the model's first call.
pub fn check_call(calls: &[Call], truth: &(String, Map<String, Value>)) -> (bool, bool) {
    let Some(call) = calls.first() else {
        return (false, false);
    };
    if call.name != truth.0 {
        return (false, false);
    }
    let empty = Map::new();
    let passed = call.arguments.as_object().unwrap_or(&empty);
    let accepted = |k: &str| truth.1.get(k).and_then(Value::as_array);
    let args_ok = passed
        .iter()
        .all(|(k, v)| accepted(k).is_some_and(|opts| opts.iter().any(|o| same(v, o))))
        && truth.1.iter().all(|(k, opts)| {
            let optional = opts
                .as_array()
                .is_some_and(|o| o.iter().any(|x| x == &json!("")));
            optional || passed.contains_key(k)
        });
    (true, args_ok)
}
