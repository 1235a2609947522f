//! The system-prompt and tool-definition generators reproduce, byte for byte, the texts in
//! Meta's prompt_format.md that the conformance dialogs carry.

mod common;

use ferrollama_tokenizer::chat::{
    self, BuiltinTool, Date, SystemPrompt, ToolDefinition, ToolParam, ToolPromptFormat,
    custom_tools_prompt, system_prompt,
};

fn content(dialog_id: &str, message: usize) -> String {
    let v = common::vectors("chat_format.jsonl")
        .into_iter()
        .find(|v| v["id"] == dialog_id)
        .unwrap_or_else(|| panic!("no vector {dialog_id}"));
    let d = chat::parse_dialog(&v.to_string()).expect("dialog");
    d.messages[message].content.joined()
}

fn sept_21() -> Date {
    Date::new(2024, 9, 21).expect("date")
}

#[test]
fn builtin_tools_system_prompt() {
    let p = SystemPrompt {
        builtin_tools: vec![
            BuiltinTool::BraveSearch,
            BuiltinTool::WolframAlpha,
            BuiltinTool::CodeInterpreter,
        ],
        custom_tools: false,
        today: sept_21(),
        instruction: Some("You are a helpful assistant.".into()),
    };
    assert_eq!(system_prompt(&p), content("pf-builtin-system", 0));
}

#[test]
fn custom_tools_system_prompt_has_bare_environment() {
    let p = SystemPrompt {
        builtin_tools: vec![],
        custom_tools: true,
        today: sept_21(),
        instruction: Some("You are a helpful assistant.".into()),
    };
    assert_eq!(system_prompt(&p), content("pf-json-tools", 0));
    let ci_only = SystemPrompt {
        builtin_tools: vec![BuiltinTool::CodeInterpreter],
        custom_tools: false,
        ..p
    };
    assert_eq!(system_prompt(&ci_only), content("pf-function-tag-tools", 0));
}

#[test]
fn no_tools_system_prompt() {
    let p = SystemPrompt {
        builtin_tools: vec![],
        custom_tools: false,
        today: sept_21(),
        instruction: Some("You are a helpful assistant.".into()),
    };
    assert_eq!(system_prompt(&p), content("default-system-date", 0));
}

fn trending_songs() -> ToolDefinition {
    ToolDefinition {
        name: "trending_songs".into(),
        description: "Returns the trending songs on a Music site".into(),
        parameters: vec![
            ToolParam {
                name: "n".into(),
                param_type: "int".into(),
                description: "The number of songs to return".into(),
                required: true,
                default: None,
            },
            ToolParam {
                name: "genre".into(),
                param_type: "str".into(),
                description: "The genre of the songs to return".into(),
                required: false,
                default: Some("all".into()),
            },
        ],
    }
}

#[test]
fn json_custom_tools_prompt() {
    assert_eq!(
        custom_tools_prompt(&[trending_songs()], ToolPromptFormat::Json),
        content("pf-json-tools", 1)
    );
}

#[test]
fn function_tag_custom_tools_prompt() {
    assert_eq!(
        custom_tools_prompt(&[trending_songs()], ToolPromptFormat::FunctionTag),
        content("pf-function-tag-tools", 1)
    );
}
