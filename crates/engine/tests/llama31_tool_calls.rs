//! Assistant tool-call messages in the Llama 3.1 prompt, pinned to Meta's own encoding
//! (testdata/llama3/chat_format.jsonl, made by llama-models' ChatFormat): `<|python_tag|>`
//! before a code_interpreter call, built-ins as `NAME.call(query="...")`, custom calls as
//! `json.dumps({"type": "function", ...})`, `<|eom_id|>` after the calls — what the agent
//! loop sends back to the model after running a tool. The tiny model has its own small
//! vocabulary with Llama 3.1's special tokens, so the prompt is compared as text (special
//! tokens included) with the text of Meta's ids.

use std::path::Path;

use ferrollama_engine::{ChatMessage, Model, TemplateToolCall};
use serde_json::Value;

#[test]
fn tool_call_messages_encode_as_metas_chat_format() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = Model::load(&root.join("testdata/tiny/tiny-q8_0.gguf")).expect("tiny model");
    let text =
        std::fs::read_to_string(root.join("testdata/llama3/chat_format.jsonl")).expect("vectors");
    let wanted = [
        "code-interpreter-call",
        "brave-call-and-result",
        "pf-wolfram-full",
        "two-tool-calls",
        "custom-call-non-ascii",
    ];
    let mut seen = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("json");
        let id = v["id"].as_str().unwrap_or("");
        if !wanted.contains(&id) {
            continue;
        }
        seen += 1;
        let messages: Vec<ChatMessage> = v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| {
                let mut c = ChatMessage::new(
                    m["role"].as_str().unwrap_or(""),
                    m["content"].as_str().unwrap_or(""),
                );
                c.tool_calls = m["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        TemplateToolCall::new(
                            None,
                            t["tool_name"].as_str().unwrap_or(""),
                            t["arguments"].clone(),
                        )
                    })
                    .collect();
                c
            })
            .collect();
        let ids = model
            .chat_prompt_with_tools(&messages, &[])
            .expect("prompt");
        let text: Vec<u8> = ids
            .iter()
            .flat_map(|&i| {
                model
                    .tokenizer
                    .bpe
                    .token_bytes(i, true)
                    .unwrap_or(&[])
                    .to_vec()
            })
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&text),
            v["text"].as_str().unwrap_or(""),
            "vector {id}"
        );
        // Specials are single tokens: python_tag and eom are there as ids, not as text.
        for special in ["<|python_tag|>", "<|eom_id|>"] {
            if let Some(sid) = model.tokenizer.bpe.token_id(special)
                && v["text"].as_str().unwrap_or("").contains(special)
            {
                assert!(ids.contains(&sid), "vector {id}: {special} is one token");
            }
        }
    }
    assert_eq!(seen, wanted.len());
}
