//! Dialog -> prompt token ids, exactly as Meta's `ChatFormat.encode_dialog_prompt`.
//!
//! ```text
//! prompt  := BOS message* <|start_header_id|>assistant<|end_header_id|>\n\n
//! message := <|start_header_id|>ROLE<|end_header_id|>\n\n [<|python_tag|>] content
//!            [\n\n context] tool_call* (<|eom_id|> | <|eot_id|>)
//! ```
//!
//! Every piece of text is its own `encode` call with special-token text treated as text,
//! so content can never produce a structural token and `\n\n` is always id 271. Special ids
//! are only ever inserted here.

use crate::chat::message::ToolPromptFormat;
use crate::chat::message::{BuiltinTool, Content, Message, Role, StopReason, ToolCall, ToolName};
use crate::chat::pyfmt::{json_dumps, python_list_value, python_str};
use crate::error::{Result, TokenizerError};
use crate::special::Special;
use crate::tokenizer::{AllowedSpecial, Tokenizer};

/// Encodes dialogs for a Llama 3 tokenizer.
#[derive(Debug, Clone, Copy)]
pub struct ChatFormat<'a> {
    tok: &'a Tokenizer,
}

impl<'a> ChatFormat<'a> {
    pub fn new(tok: &'a Tokenizer) -> ChatFormat<'a> {
        ChatFormat { tok }
    }

    pub fn tokenizer(&self) -> &'a Tokenizer {
        self.tok
    }

    fn text(&self, s: &str, out: &mut Vec<u32>) {
        self.tok
            .encode_into(s, false, false, AllowedSpecial::None, out);
    }

    /// `<|start_header_id|>ROLE<|end_header_id|>\n\n`.
    pub fn encode_header(&self, role: Role, out: &mut Vec<u32>) {
        out.push(self.tok.special(Special::StartHeader));
        self.text(role.header(), out);
        out.push(self.tok.special(Special::EndHeader));
        self.text("\n\n", out);
    }

    /// Meta's `encode_message`.
    pub fn encode_message(
        &self,
        m: &Message,
        fmt: ToolPromptFormat,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        self.encode_header(m.role, out);
        let assistant = m.role == Role::Assistant;
        // Meta (since llama-models PR #283) inserts <|python_tag|> only for code_interpreter.
        if assistant
            && m.tool_calls.first().map(|t| &t.tool_name)
                == Some(&ToolName::Builtin(BuiltinTool::CodeInterpreter))
        {
            out.push(self.tok.special(Special::PythonTag));
        }
        match &m.content {
            Content::Text(s) => self.text(s, out),
            Content::Items(items) => items.iter().for_each(|s| self.text(s, out)),
        }
        if m.role == Role::User
            && let Some(ctx) = &m.context
        {
            self.text("\n\n", out);
            self.text(ctx, out);
        }
        if assistant {
            for call in &m.tool_calls {
                self.text(&encode_tool_call(call, fmt)?, out);
            }
        }
        let eom = assistant && m.stop_reason == Some(StopReason::EndOfMessage);
        out.push(self.tok.special(if eom {
            Special::EndOfMessage
        } else {
            Special::EndOfTurn
        }));
        Ok(())
    }

    /// Meta's `encode_dialog_prompt`: BOS, each message, then the assistant header.
    pub fn encode_dialog_prompt(
        &self,
        msgs: &[Message],
        fmt: ToolPromptFormat,
    ) -> Result<Vec<u32>> {
        let mut out = vec![self.tok.special(Special::BeginOfText)];
        for m in msgs {
            self.encode_message(m, fmt, &mut out)?;
        }
        self.encode_header(Role::Assistant, &mut out);
        Ok(out)
    }
}

/// Meta's `ToolUtils.encode_tool_call`: the text of one call as the model would write it.
pub fn encode_tool_call(call: &ToolCall, fmt: ToolPromptFormat) -> Result<String> {
    let arg = |key: &str| {
        call.arguments.get(key).map(python_str).ok_or_else(|| {
            TokenizerError::InvalidMessage(format!(
                "{} call needs a '{key}' argument",
                call.tool_name
            ))
        })
    };
    Ok(match &call.tool_name {
        ToolName::Builtin(BuiltinTool::CodeInterpreter) => arg("code")?,
        ToolName::Builtin(b) => format!("{}.call(query=\"{}\")", b.name(), arg("query")?),
        ToolName::Custom(name) => match fmt {
            ToolPromptFormat::Json => {
                let mut obj = serde_json::Map::new();
                obj.insert("type".into(), "function".into());
                obj.insert("name".into(), name.clone().into());
                obj.insert("parameters".into(), call.arguments.clone().into());
                json_dumps(&obj.into())
            }
            ToolPromptFormat::FunctionTag => format!(
                "<function={name}>{}</function>",
                json_dumps(&call.arguments.clone().into())
            ),
            ToolPromptFormat::PythonList => {
                let args: Vec<String> = call
                    .arguments
                    .iter()
                    .map(|(k, v)| format!("{k}={}", python_list_value(v)))
                    .collect();
                format!("[{name}({})]", args.join(", "))
            }
        },
    })
}
