//! Chat templates: the Llama 3.1 native format, or the Jinja `tokenizer.chat_template`
//! stored in a GGUF file, rendered by a sandboxed engine (minijinja: no file or network
//! access, and a fuel limit so a hostile template cannot run forever).
//!
//! Templates that know tools (Qwen2.5's, Hermes-style) get what transformers and llama.cpp
//! give them: `tools` in OpenAI's shape, assistant messages with `tool_calls` whose
//! `arguments` are objects, and `tool` messages. `tojson` is Python's
//! `json.dumps(ensure_ascii=False)` (separators `", "` and `": "`, keys in insertion order),
//! because the model was trained on prompts rendered that way; minijinja's own `tojson` is
//! compact and HTML-escapes `<`, `>`, `&` and `'`.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error as JinjaError, ErrorKind, Value, context};
use serde::Serialize;

use crate::error::{ModelError, Result};

/// A chat message as templates see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    /// `None` (null in the template) for an assistant message that only calls tools, as
    /// OpenAI clients send it.
    pub content: Option<String>,
    /// Calls an assistant message made (left out of the template context when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<TemplateToolCall>,
    /// The call a `tool` message answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The tool a `tool` message comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }

    /// The content, or "" when there is none.
    pub fn text(&self) -> &str {
        self.content.as_deref().unwrap_or("")
    }
}

/// A tool call as templates see it: `{"id", "type": "function", "function": {"name",
/// "arguments"}}`, `arguments` an object (Qwen's template writes `arguments | tojson`, which
/// would quote a JSON string a second time).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateToolCall {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: TemplateFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateFunction {
    pub name: String,
    pub arguments: serde_json::Value,
}

impl TemplateToolCall {
    pub fn new(id: Option<String>, name: &str, arguments: serde_json::Value) -> TemplateToolCall {
        TemplateToolCall {
            id,
            kind: "function",
            function: TemplateFunction {
                name: name.into(),
                arguments,
            },
        }
    }
}

/// How a model wants dialogs laid out.
#[derive(Debug, Clone)]
pub enum ChatTemplate {
    /// Meta's Llama 3.1 format (header/eot special tokens by id; content never parsed for
    /// special tokens).
    Llama31,
    /// A Hugging Face-style Jinja template.
    Jinja {
        source: String,
        bos_token: String,
        eos_token: String,
    },
}

/// Upper bound on template work (minijinja "fuel" instructions).
const FUEL: u64 = 5_000_000;

impl ChatTemplate {
    /// Chooses the template: Llama 3.1 when the template is Llama 3's (recognised by its
    /// header tokens), the Jinja source otherwise, and Llama 3.1 when there is none.
    pub fn detect(source: Option<&str>, bos_token: &str, eos_token: &str) -> ChatTemplate {
        match source {
            Some(s) if !s.contains("<|start_header_id|>") => ChatTemplate::Jinja {
                source: s.to_string(),
                bos_token: bos_token.into(),
                eos_token: eos_token.into(),
            },
            _ => ChatTemplate::Llama31,
        }
    }

    /// Whether the template lays out tools itself (it reads a `tools` variable, as Qwen2.5's
    /// and other Hermes-style templates do); then tools, tool calls and tool results go
    /// through it rather than through a system prompt of ours.
    pub fn knows_tools(&self) -> bool {
        match self {
            ChatTemplate::Jinja { source, .. } => mentions_tools(source),
            ChatTemplate::Llama31 => false,
        }
    }

    /// Renders a Jinja template to text. `tools` (OpenAI's `{"type": "function",
    /// "function": {...}}` objects) are given to the template only when there are some, as
    /// transformers passes `None` otherwise.
    pub fn render_jinja(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |_fmt: String| -> String {
            // Templates ask for today's date; a fixed-format UTC date keeps output honest
            // without a time-zone database.
            ferrollama_tokenizer::chat::Date::today().long_format()
        });
        env.add_filter("tojson", tojson);
        env.add_template("chat", source)
            .map_err(|e| ModelError::Template(format!("the chat template does not parse: {e}")))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| ModelError::Template(e.to_string()))?;
        let tools = (!tools.is_empty()).then_some(tools);
        tmpl.render(context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
        })
        .map_err(|e| ModelError::Template(format!("rendering the chat template failed: {e}")))
    }
}

/// Whether a template source reads a `tools` variable (a word, not part of another name).
fn mentions_tools(source: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    source.match_indices("tools").any(|(i, _)| {
        let before = source[..i].chars().next_back();
        let after = source[i + "tools".len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// transformers' `tojson`: `json.dumps(value, ensure_ascii=False, indent=indent)`.
fn tojson(
    value: &Value,
    indent: Option<Value>,
    args: Kwargs,
) -> std::result::Result<Value, JinjaError> {
    let indent = match indent {
        Some(i) => Some(i),
        None => args.get::<Option<Value>>("indent")?,
    };
    // Accepted for Python compatibility; the output is always ensure_ascii=False with
    // insertion-ordered keys, as the templates we know ask for.
    let _: Option<Value> = args.get("ensure_ascii")?;
    let _: Option<Value> = args.get("sort_keys")?;
    args.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(usize::try_from(v).map_err(|_| {
            JinjaError::new(
                ErrorKind::InvalidOperation,
                "tojson: indent must be a number",
            )
        })?),
    };
    let mut out = String::new();
    write_json(&mut out, value, indent, 0)?;
    Ok(Value::from_safe_string(out))
}

/// Appends `v` as Python's `json.dumps` writes it.
fn write_json(
    out: &mut String,
    v: &Value,
    indent: Option<usize>,
    level: usize,
) -> std::result::Result<(), JinjaError> {
    if level > 128 {
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            "tojson: value nested too deeply",
        ));
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    // json.dumps separators: ", " and ": " compact, "," and ": " with indent.
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number if v.is_integer() => out.push_str(&v.to_string()),
        ValueKind::Number => {
            let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
            out.push_str(&python_float(f));
        }
        ValueKind::String => out.push_str(&json_string(v.as_str().unwrap_or(""))),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                write_json(out, item, indent, level + 1)?;
            }
            newline(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                // json.dumps turns non-string keys into strings.
                let key = match k.as_str() {
                    Some(s) => s.to_string(),
                    None => k.to_string(),
                };
                out.push_str(&json_string(&key));
                out.push_str(": ");
                write_json(out, &v.get_item(k)?, indent, level + 1)?;
            }
            newline(out, level);
            out.push('}');
        }
        _ => {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot write a {} as JSON", v.kind()),
            ));
        }
    }
    Ok(())
}

/// A JSON string as `json.dumps(ensure_ascii=False)` writes it: the same escapes as
/// serde_json (`\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, other controls as `\u00xx`).
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Python's `repr` of a float: `1.0`, `1e+20`, `NaN`, `Infinity` (as json.dumps allows).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // serde_json (ryu) switches to exponents where Python does; Python writes the exponent
    // signed and with at least two digits (`1e+20`, `1e-07`).
    let s = serde_json::to_string(&f).unwrap_or_else(|_| "0.0".into());
    let Some((mantissa, exp)) = s.split_once(['e', 'E']) else {
        return s;
    };
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp.trim_start_matches('+')),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_smollm2_chatml() {
        let out = ChatTemplate::render_jinja(
            CHATML,
            "",
            "",
            &[ChatMessage::new("user", "Hi")],
            &[],
            true,
        )
        .expect("render");
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_and_raise_exception_work() {
        let t = "{{ messages[0].content.strip().upper() }}{% if messages|length > 1 %}{{ raise_exception('only one') }}{% endif %}";
        let out =
            ChatTemplate::render_jinja(t, "", "", &[ChatMessage::new("user", "  hi ")], &[], false)
                .expect("render");
        assert_eq!(out, "HI");
        let two = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
        let e = ChatTemplate::render_jinja(t, "", "", &two, &[], false).expect_err("raises");
        assert!(e.to_string().contains("only one"), "{e}");
    }

    #[test]
    fn hostile_templates_fail_cleanly() {
        let e = ChatTemplate::render_jinja(
            "{% for i in range(100000000) %}x{% endfor %}",
            "",
            "",
            &[],
            &[],
            false,
        );
        assert!(e.is_err(), "fuel limit");
        assert!(ChatTemplate::render_jinja("{% include 'x' %}", "", "", &[], &[], false).is_err());
        assert!(ChatTemplate::render_jinja("{{ unclosed", "", "", &[], &[], false).is_err());
    }

    #[test]
    fn tools_are_detected_as_a_word() {
        let t = |src: &str| ChatTemplate::detect(Some(src), "", "").knows_tools();
        assert!(t("{%- if tools %}{{ tools | length }}{% endif %}"));
        assert!(!t(CHATML));
        assert!(!t("{{ my_tools_list }}{{ toolset }}"));
        assert!(!ChatTemplate::Llama31.knows_tools());
    }

    /// `tojson` writes what Python's `json.dumps(ensure_ascii=False)` writes: insertion
    /// order, `", "` and `": "`, non-ASCII and `<>&'` as they are, Python float spellings.
    #[test]
    fn tojson_is_pythons_json_dumps() {
        let v = serde_json::json!({"z": 1, "a": [true, null, 0.5, 1e20, -3, 1e-7, 2.5e-300],
            "s": "é <b> & 'q' \"\\\n\u{1}", "e": {}, "l": []});
        let msg = ChatMessage {
            role: "assistant".into(),
            content: None,
            tool_calls: vec![TemplateToolCall::new(None, "f", v)],
            tool_call_id: None,
            name: None,
        };
        let out = ChatTemplate::render_jinja(
            "{{ messages[0].tool_calls[0].function.arguments | tojson }}|{{ messages[0].content | tojson }}|{{ [1, {'k': 'v'}] | tojson(indent=2) }}",
            "",
            "",
            &[msg],
            &[],
            false,
        )
        .expect("render");
        assert_eq!(
            out,
            "{\"z\": 1, \"a\": [true, null, 0.5, 1e+20, -3, 1e-07, 2.5e-300], \"s\": \"é <b> & 'q' \\\"\\\\\\n\\u0001\", \"e\": {}, \"l\": []}|null|[\n  1,\n  {\n    \"k\": \"v\"\n  }\n]"
        );
    }

    #[test]
    fn tools_reach_the_template_only_when_given() {
        let t = "{% if tools %}{% for t in tools %}{{ t.function.name }};{% endfor %}{% else %}none{% endif %}";
        let tools = [serde_json::json!({"type": "function", "function": {"name": "f"}})];
        let m = [ChatMessage::new("user", "x")];
        assert_eq!(
            ChatTemplate::render_jinja(t, "", "", &m, &tools, false).expect("render"),
            "f;"
        );
        assert_eq!(
            ChatTemplate::render_jinja(t, "", "", &m, &[], false).expect("render"),
            "none"
        );
    }
}
