//! Properties that must hold for any input, checked on arbitrary Unicode.

mod common;

use std::sync::OnceLock;

use ferrollama_tokenizer::chat::{ChatFormat, Message, Role, ToolPromptFormat};
use ferrollama_tokenizer::{AllowedSpecial, StreamDecoder, Tokenizer};
use proptest::prelude::*;

fn tok() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(common::tokenizer)
}

/// Text biased toward the interesting parts of the pattern: specials, apostrophes, line
/// breaks, digits, marks, wide scripts.
fn texty() -> impl Strategy<Value = String> {
    let atoms = prop_oneof![
        any::<char>().prop_map(|c| c.to_string()),
        Just("<|eot_id|>".to_string()),
        Just("<|start_header_id|>".to_string()),
        Just("<|".to_string()),
        Just("'s".to_string()),
        Just("'LL".to_string()),
        Just(" \r\n".to_string()),
        Just("   ".to_string()),
        Just("12345".to_string()),
        Just("नमस्ते".to_string()),
        Just("สวัสดี".to_string()),
        Just("😀👍🏽".to_string()),
        "[a-zA-Z ]{1,12}",
    ];
    proptest::collection::vec(atoms, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decode_inverts_encode(s in texty()) {
        let ids = tok().encode(&s, false, false, AllowedSpecial::None);
        prop_assert_eq!(tok().decode(&ids).expect("decode"), s);
    }

    #[test]
    fn decode_inverts_encode_on_any_unicode(s in any::<String>()) {
        let ids = tok().encode(&s, false, false, AllowedSpecial::None);
        prop_assert_eq!(tok().decode(&ids).expect("decode"), s);
    }

    #[test]
    fn content_never_yields_special_ids_unless_allowed(s in texty()) {
        let ids = tok().encode(&s, false, false, AllowedSpecial::None);
        prop_assert!(ids.iter().all(|&i| !tok().is_special(i)));
        // Through the chat format: the only special ids are the structural ones.
        let m = Message::new(Role::User, s.clone());
        let prompt = ChatFormat::new(tok()).encode_dialog_prompt(&[m], ToolPromptFormat::Json).expect("encode");
        let specials: Vec<u32> = prompt.iter().copied().filter(|&i| tok().is_special(i)).collect();
        prop_assert_eq!(specials, vec![128000, 128006, 128007, 128009, 128006, 128007]);
    }

    #[test]
    fn allowed_specials_round_trip(s in texty()) {
        let ids = tok().encode(&s, false, false, AllowedSpecial::All);
        prop_assert_eq!(tok().decode(&ids).expect("decode"), s.clone());
        let n = s.matches("<|eot_id|>").count();
        prop_assert_eq!(ids.iter().filter(|&&i| i == 128009).count(), n);
    }

    #[test]
    fn streaming_decode_equals_decode(s in texty(), cut in 0usize..8) {
        let mut ids = tok().encode(&s, false, false, AllowedSpecial::None);
        // Also feed a token that is only part of a character, and drop some ids, so that
        // invalid sequences occur mid-stream.
        ids.insert(ids.len().min(cut), 188 + (cut as u32 % 4));
        let mut d = StreamDecoder::new();
        let mut out = String::new();
        for &i in &ids {
            out += &d.push(tok(), i).expect("push");
        }
        out += &d.finish();
        prop_assert_eq!(out, tok().decode(&ids).expect("decode"));
    }
}
