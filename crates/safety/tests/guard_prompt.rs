//! The Llama Guard 3 prompt against vectors made by Meta's own code
//! (`testdata/llama3/make_guard_vectors.py`: llama-stack 0.2.12's `LlamaGuardShield` for the
//! text, llama-models 0.3.0's `ChatFormat` for the ids).

mod common;

use ferrollama_safety::llama_guard::{GuardSize, Speaker, Turn, llama31_user_prompt, render};
use ferrollama_tokenizer::chat::{ChatFormat, Message, Role, ToolPromptFormat};
use ferrollama_tokenizer::{AllowedSpecial, Tokenizer};

fn turns(v: &serde_json::Value) -> Vec<Turn> {
    v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            let role = m["role"].as_str().expect("role");
            let speaker = Speaker::parse(role).unwrap_or_else(|| panic!("role {role}"));
            Turn::new(speaker, m["content"].as_str().expect("text content"))
        })
        .collect()
}

fn vectors() -> Vec<serde_json::Value> {
    let v = common::jsonl(common::testdata().join("llama3/guard_prompt.jsonl"));
    assert!(v.len() >= 10, "the guard vectors are missing");
    v
}

#[test]
fn guard_prompt_text_is_meta_s_byte_for_byte() {
    for v in vectors() {
        let size = GuardSize::parse(v["guard_model"].as_str().expect("size")).expect("1b/8b");
        let excluded: Vec<String> =
            serde_json::from_value(v["excluded_categories"].clone()).expect("excluded list");
        let text =
            render(&turns(&v), size, &excluded).unwrap_or_else(|e| panic!("{}: {e}", v["id"]));
        assert_eq!(text, v["text"].as_str().expect("text"), "{}", v["id"]);
    }
}

#[test]
fn guard_prompt_ids_match_meta_chat_format() {
    let tok = Tokenizer::from_file(common::tokenizer_path()).unwrap_or_else(|e| {
        panic!("{e}: Meta's tokenizer.model is needed; run ./scripts/test or `ferrollama fetch tokenizer`")
    });
    for v in vectors() {
        let want: Vec<u32> = serde_json::from_value(v["ids"].clone()).expect("ids");
        let text = v["text"].as_str().expect("text");
        // The CLI's path: Meta's ChatFormat with one user message.
        let cf = ChatFormat::new(&tok)
            .encode_dialog_prompt(&[Message::new(Role::User, text)], ToolPromptFormat::Json)
            .expect("encodes");
        assert_eq!(cf, want, "{} (ChatFormat)", v["id"]);
        // The engine's path, which builds the same ids from any Llama 3 vocabulary.
        let built = llama31_user_prompt(
            text,
            |t| tok.special_id(t),
            |s, out| out.extend(tok.encode(s, false, false, AllowedSpecial::None)),
        )
        .expect("Llama 3 control tokens");
        assert_eq!(built, want, "{} (engine path)", v["id"]);
    }
}
