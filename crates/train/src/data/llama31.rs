//! The Llama 3.1 chat format as a [`ChatRenderer`], written through the tokenizer crate's
//! [`ChatFormat`] so that training tokens are the ones inference builds, byte for byte.
//!
//! The dialog is laid out as the server lays it out for the Llama 3.1 template:
//! - every system message is joined (with `\n`) into one system message at the top;
//! - with tools, that system message is Meta's: `Environment: ipython`, built-in tools
//!   listed, the knowledge and today dates, the instruction, then the custom functions in
//!   Meta's JSON layout. The date is fixed (default 26 July 2024, the date in Meta's own
//!   template examples) rather than today's: a dataset must render the same on every run;
//! - an assistant message with tool calls ends in `<|eom_id|>` (the model stops to wait for
//!   the results), every other message in `<|eot_id|>`; tool results are `ipython`.

use ferrollama_tokenizer::chat::{
    BuiltinTool, ChatFormat, Content, Date, Message, Role, SystemPrompt, ToolDefinition, ToolParam,
    ToolPromptFormat, custom_tools_prompt, system_prompt,
};
use ferrollama_tokenizer::{AllowedSpecial, Special, Tokenizer};

use crate::data::openai::Check;
use crate::data::record::{Chat, ToolSpec};
use crate::data::render::{ChatRenderer, Masked};

/// 2024-07-26 00:00 UTC.
const DEFAULT_TODAY_UNIX: i64 = 1_721_952_000;

/// Renders dialogs for a Llama 3 tokenizer in the Llama 3.1 format.
#[derive(Debug, Clone, Copy)]
pub struct Llama31Renderer<'a> {
    format: ChatFormat<'a>,
    today: Date,
}

impl<'a> Llama31Renderer<'a> {
    pub fn new(tok: &'a Tokenizer) -> Llama31Renderer<'a> {
        Llama31Renderer {
            format: ChatFormat::new(tok),
            today: Date::from_unix(DEFAULT_TODAY_UNIX),
        }
    }

    /// The "Today Date" written in the system prompt of dialogs with tools.
    pub fn with_today(self, today: Date) -> Llama31Renderer<'a> {
        Llama31Renderer { today, ..self }
    }

    /// The one system message: the dialog's system texts, and the tools when there are.
    fn system_text(&self, chat: &Chat) -> Option<String> {
        let system: Vec<String> = chat
            .messages
            .iter()
            .filter(|t| t.message.role == Role::System)
            .map(|t| t.message.content.joined())
            .collect();
        if chat.tools.is_empty() {
            return (!system.is_empty()).then(|| system.join("\n"));
        }
        let builtin_tools: Vec<BuiltinTool> = chat
            .tools
            .iter()
            .filter_map(|t| BuiltinTool::parse(&t.name))
            .collect();
        let customs: Vec<ToolDefinition> = chat
            .tools
            .iter()
            .filter(|t| BuiltinTool::parse(&t.name).is_none())
            .map(definition)
            .collect();
        let mut s = system_prompt(&SystemPrompt {
            builtin_tools,
            custom_tools: !customs.is_empty(),
            today: self.today,
            instruction: (!system.is_empty()).then(|| system.join("\n")),
        });
        if !customs.is_empty() {
            s.push('\n');
            s.push_str(&custom_tools_prompt(&customs, ToolPromptFormat::Json));
        }
        Some(s)
    }
}

impl ChatRenderer for Llama31Renderer<'_> {
    fn render_chat(&self, chat: &Chat) -> Check<Masked> {
        let tok = self.format.tokenizer();
        let mut out = Masked::default();
        out.push(&[tok.special(Special::BeginOfText)], false);
        let mut ids = Vec::new();
        if let Some(s) = self.system_text(chat) {
            let m = Message::new(Role::System, Content::Text(s));
            self.format
                .encode_message(&m, ToolPromptFormat::Json, &mut ids)
                .map_err(|e| e.to_string())?;
            out.push(&ids, false);
        }
        let mut header = Vec::new();
        for t in chat
            .messages
            .iter()
            .filter(|t| t.message.role != Role::System)
        {
            ids.clear();
            header.clear();
            self.format
                .encode_message(&t.message, ToolPromptFormat::Json, &mut ids)
                .map_err(|e| e.to_string())?;
            // encode_message starts with exactly encode_header's tokens; the header is the
            // prompt builder's, never the model's, so it is never counted.
            self.format.encode_header(t.message.role, &mut header);
            let (head, body) = ids.split_at(header.len().min(ids.len()));
            out.push(head, false);
            out.push(body, t.trained);
        }
        Ok(out)
    }

    fn encode_text(&self, text: &str) -> Vec<u32> {
        self.format
            .tokenizer()
            .encode(text, false, false, AllowedSpecial::None)
    }

    fn begin_of_text(&self) -> u32 {
        self.format.tokenizer().special(Special::BeginOfText)
    }

    fn end_of_text(&self) -> u32 {
        self.format.tokenizer().special(Special::EndOfText)
    }
}

/// A tool as Meta's custom-tool prompt lists it, from its JSON schema (as the server reads
/// OpenAI tools).
fn definition(t: &ToolSpec) -> ToolDefinition {
    let parameters = ToolParam::from_json_schema(&t.parameters);
    ToolDefinition {
        name: t.name.clone(),
        description: t.description.clone(),
        parameters,
    }
}
