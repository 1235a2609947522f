//! The Llama 3.1 prompt format: dialogs to ids, tool-call syntaxes, system prompts, and
//! parsing generated assistant messages back into content and tool calls.

pub mod format;
pub mod message;
pub mod parse;
pub mod pyfmt;
pub mod pylit;
pub mod system_prompt;
pub mod wire;

pub use format::{ChatFormat, encode_tool_call};
pub use message::{
    Arguments, BuiltinTool, Content, Message, Role, StopReason, ToolCall, ToolName,
    ToolPromptFormat,
};
pub use parse::{decode_assistant_message, parse_assistant_text};
pub use system_prompt::{
    Date, SystemPrompt, ToolDefinition, ToolParam, custom_tools_prompt, system_prompt,
};
pub use wire::{Dialog, parse_dialog};
