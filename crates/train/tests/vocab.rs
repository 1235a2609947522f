//! The prompt format follows the model's vocabulary: the tiny test model's 512-token
//! vocabulary (Llama 3's first 505 tokens and 7 control tokens) is not Llama 3's, so it
//! trains on text through its own tokenizer and refuses chats.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferrollama_model::ModelTokenizer;
use ferrollama_model::gguf::GgufFile;
use ferrollama_train::data::{ChatRenderer, pack};
use ferrollama_train::vocab::{TextOnlyRenderer, llama3_tokenizer};

#[test]
fn a_small_vocabulary_trains_on_text_only() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-f16.gguf");
    let tok = ModelTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    assert!(llama3_tokenizer(&tok).is_none());
    let r = TextOnlyRenderer::new(&tok).unwrap();
    assert_eq!((r.begin_of_text(), r.end_of_text()), (505, 506));
    assert_eq!(r.encode_text("the cat"), tok.bpe.encode("the cat", false));
    let packed = pack("t", &["the cat sat on the mat"; 4], &r, 8).unwrap();
    assert_eq!(packed.sequences[0].inputs[0], 505);
    assert!(packed.sequences.iter().all(|s| s.inputs.len() == 8));
    let chat = ferrollama_train::data::parse_jsonl(
        "c",
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#,
    )
    .unwrap();
    let ferrollama_train::data::Record::Chat(c) = &chat.records[0].record else {
        panic!("not a chat");
    };
    assert!(r.render_chat(c).unwrap_err().contains("not Llama 3"));
}
