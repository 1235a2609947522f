//! Records to sequences: the loss mask lies exactly on what the assistant (or the
//! completion) says, the chat tokens are the inference prompt's, packing fills every
//! sequence, and the length policy truncates or refuses.
//!
//! The tokenizer is a byte-level one (every byte its own id, plus `\n\n`) with Meta's 256
//! special tokens after it, so expected ids can be derived by hand and no model file is
//! needed; the chat layout is the tokenizer crate's, pinned to Meta's ids there.
#![allow(clippy::unwrap_used)]

use ferrollama_tokenizer::chat::{ChatFormat, Message, Role, ToolPromptFormat};
use ferrollama_tokenizer::{Tokenizer, Vocab};
use ferrollama_train::data::{
    ChatRenderer, LengthPolicy, Llama31Renderer, SequenceOptions, TrainingData, build, pack,
    parse_jsonl, preference_pairs, sft_sequences,
};
use ferrollama_train::{Sequence, TrainError};

/// Byte `b` is id `b`; `\n\n` is 256; special tokens start at 257.
fn tokenizer() -> Tokenizer {
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    tokens.push(b"\n\n".to_vec());
    Tokenizer::from_vocab(Vocab::from_tokens(tokens).unwrap())
}
const BOS: u32 = 257;
const EOS: u32 = 258;
const START_HEADER: u32 = 263;
const END_HEADER: u32 = 264;

const LONG: SequenceOptions = SequenceOptions {
    seq_len: 4096,
    policy: LengthPolicy::Refuse,
};

fn sft(tok: &Tokenizer, jsonl: &str, opts: SequenceOptions) -> Vec<Sequence> {
    let r = parse_jsonl("t.jsonl", jsonl).unwrap();
    sft_sequences("t.jsonl", &r.records, &Llama31Renderer::new(tok), opts)
        .unwrap()
        .items
}

/// The whole sequence as text: its first input, then every target.
fn text(tok: &Tokenizer, s: &Sequence) -> String {
    let mut ids = s.inputs[..1].to_vec();
    ids.extend(&s.targets);
    tok.decode(&ids).unwrap()
}

/// Each run of consecutive counted targets, decoded.
fn counted_runs(tok: &Tokenizer, s: &Sequence) -> Vec<String> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for (&t, &c) in s.targets.iter().zip(&s.counted) {
        if c {
            run.push(t);
        } else if !run.is_empty() {
            runs.push(tok.decode(&std::mem::take(&mut run)).unwrap());
        }
    }
    if !run.is_empty() {
        runs.push(tok.decode(&run).unwrap());
    }
    runs
}

#[test]
fn only_trained_assistant_bodies_and_end_tokens_are_counted() {
    let tok = tokenizer();
    let s = sft(
        &tok,
        r#"{"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Lyon.", "weight": 0}, {"role": "user", "content": "Sure?"}, {"role": "assistant", "content": "Paris."}]}"#,
        LONG,
    );
    assert_eq!(s.len(), 1);
    let s = &s[0];
    // The system message moves to the top, as the server lays out a dialog.
    assert_eq!(
        text(&tok, s),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nCapital of France?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nLyon.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nSure?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>"
    );
    assert_eq!(counted_runs(&tok, s), ["Paris.<|eot_id|>"]);
    assert_eq!(s.n_counted(), "Paris.".len() + 1);
    // The counted run is the very end; the assistant header before it is not counted.
    let n = s.targets.len();
    assert!(s.counted[n - 7..].iter().all(|&c| c));
    assert!(!s.counted[n - 8]);
    assert_eq!(s.targets[n - 8], 256); // "\n\n" ending the header
    for (&t, &c) in s.targets.iter().zip(&s.counted) {
        assert!(!(c && (t == START_HEADER || t == END_HEADER || t == BOS)));
    }
    assert_eq!(s.inputs.len(), s.targets.len());
    assert_eq!(s.inputs[1..], s.targets[..n - 1]);
}

#[test]
fn chat_tokens_are_the_inference_prompt_followed_by_the_answer() {
    let tok = tokenizer();
    let s = &sft(
        &tok,
        r#"{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}]}"#,
        LONG,
    )[0];
    let prompt = ChatFormat::new(&tok)
        .encode_dialog_prompt(
            &[
                Message::new(Role::System, "S"),
                Message::new(Role::User, "Hi there"),
            ],
            ToolPromptFormat::Json,
        )
        .unwrap();
    let mut all = s.inputs[..1].to_vec();
    all.extend(&s.targets);
    assert_eq!(all[..prompt.len()], prompt[..]);
    assert_eq!(tok.decode(&all[prompt.len()..]).unwrap(), "Hello<|eot_id|>");
    // Exactly the tokens after the prompt are counted.
    let first_counted = s.counted.iter().position(|&c| c).unwrap();
    assert_eq!(first_counted + 1, prompt.len());
}

#[test]
fn tool_calls_end_in_eom_and_tool_results_are_not_counted() {
    let tok = tokenizer();
    let s = &sft(
        &tok,
        r#"{"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}], "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City"}}, "required": ["city"]}}}]}"#,
        LONG,
    )[0];
    assert_eq!(
        counted_runs(&tok, s),
        [
            r#"{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}<|eom_id|>"#,
            "Sunny.<|eot_id|>"
        ]
    );
    let all = text(&tok, s);
    assert!(
        all.starts_with(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
             Environment: ipython\n\nCutting Knowledge Date: December 2023\n\
             Today Date: 26 July 2024\n\nAnswer the user's question by making use of the \
             following functions if needed.\n"
        ),
        "{all}"
    );
    assert!(all.contains("\"name\": \"get_weather\",\n        \"description\": \"Weather now\""));
    assert!(all.contains("<|start_header_id|>ipython<|end_header_id|>\n\nsunny<|eot_id|>"));
}

#[test]
fn a_call_the_format_cannot_write_is_reported_with_its_line() {
    let tok = tokenizer();
    let ok = r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#;
    let bad = r#"{"messages": [{"role": "user", "content": "news?"}, {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "brave_search", "arguments": "{\"q\": \"news\"}"}}]}], "tools": [{"type": "function", "function": {"name": "brave_search"}}]}"#;
    let r = parse_jsonl("t.jsonl", &format!("{ok}\n{bad}")).unwrap();
    match sft_sequences("t.jsonl", &r.records, &Llama31Renderer::new(&tok), LONG) {
        Err(TrainError::BadRecords(b)) => {
            assert_eq!(b.total, 1);
            assert_eq!(b.shown[0].line, 2);
            assert!(b.shown[0].what.contains("'query'"), "{}", b.shown[0].what);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn raw_prompt_completion_counts_the_completion_and_end_of_text() {
    let tok = tokenizer();
    let s = sft(&tok, r#"{"prompt": "ab", "completion": "cd"}"#, LONG);
    assert_eq!(
        s,
        [Sequence {
            inputs: vec![BOS, 97, 98, 99, 100],
            targets: vec![97, 98, 99, 100, EOS],
            counted: vec![false, false, true, true, true],
        }]
    );
}

#[test]
fn conversational_completion_counts_only_the_reply() {
    let tok = tokenizer();
    let s = &sft(
        &tok,
        r#"{"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Earlier", "weight": 1}, {"role": "user", "content": "Again"}], "completion": "Hello!"}"#,
        LONG,
    )[0];
    assert_eq!(counted_runs(&tok, s), ["Hello!<|eot_id|>"]);
    assert!(
        text(&tok, s)
            .ends_with("<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>")
    );
}

#[test]
fn preference_pairs_share_the_uncounted_prompt() {
    let tok = tokenizer();
    let r = Llama31Renderer::new(&tok);
    let recs = parse_jsonl(
        "p.jsonl",
        r#"{"prompt": "Q", "chosen": "yes", "rejected": "no"}"#,
    )
    .unwrap();
    let pairs = preference_pairs("p.jsonl", &recs.records, &r, LONG)
        .unwrap()
        .items;
    assert_eq!(pairs[0].chosen.inputs, [BOS, 81, 121, 101, 115]);
    assert_eq!(pairs[0].chosen.targets, [81, 121, 101, 115, EOS]);
    assert_eq!(pairs[0].chosen.counted, [false, true, true, true, true]);
    assert_eq!(pairs[0].rejected.targets, [81, 110, 111, EOS]);
    assert_eq!(pairs[0].rejected.counted, [false, true, true, true]);

    let recs = parse_jsonl(
        "p.jsonl",
        r#"{"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": "yes"}], "rejected": "no"}"#,
    )
    .unwrap();
    let p = &preference_pairs("p.jsonl", &recs.records, &r, LONG)
        .unwrap()
        .items[0];
    assert_eq!(counted_runs(&tok, &p.chosen), ["yes<|eot_id|>"]);
    assert_eq!(counted_runs(&tok, &p.rejected), ["no<|eot_id|>"]);
    let prompt_len = p.chosen.counted.iter().position(|&c| c).unwrap();
    assert_eq!(
        p.rejected.counted.iter().position(|&c| c).unwrap(),
        prompt_len
    );
    assert_eq!(
        p.chosen.targets[..prompt_len],
        p.rejected.targets[..prompt_len]
    );
}

#[test]
fn packing_fills_every_sequence_with_the_documents_and_separators() {
    let tok = tokenizer();
    let r = Llama31Renderer::new(&tok);
    // Stream: BOS a b c EOS BOS d e EOS (9 tokens): two windows of 5 overlapping by one.
    let p = pack("t", &["abc", "de"], &r, 4).unwrap();
    assert_eq!(
        p.sequences,
        [
            Sequence {
                inputs: vec![BOS, 97, 98, 99],
                targets: vec![97, 98, 99, EOS],
                counted: vec![true; 4],
            },
            Sequence {
                inputs: vec![EOS, BOS, 100, 101],
                targets: vec![BOS, 100, 101, EOS],
                counted: vec![true; 4],
            },
        ]
    );
    assert_eq!(p.dropped, 0);

    // Windows of 4 tokens: the tail "e EOS" fills no third one.
    let p = pack("t", &["abc", "de"], &r, 3).unwrap();
    assert_eq!(p.sequences.len(), 2);
    assert_eq!(p.dropped, 2);
    let mut stream = p.sequences[0].inputs[..1].to_vec();
    for s in &p.sequences {
        assert_eq!(s.inputs.len(), 3);
        assert_eq!(s.n_counted(), 3);
        assert_eq!(s.inputs[0], *stream.last().unwrap());
        stream.extend(&s.targets);
    }
    assert_eq!(stream, [BOS, 97, 98, 99, EOS, BOS, 100]);

    match pack("t", &["ab"], &r, 4) {
        Err(TrainError::Data(m)) => assert_eq!(
            m,
            "t: the text is 4 tokens, too short for one sequence of 4 positions (5 tokens)"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn text_records_build_packed_pretraining_data() {
    let tok = tokenizer();
    let recs = parse_jsonl("t", "{\"text\": \"abc\"}\n{\"text\": \"de\"}").unwrap();
    let opts = SequenceOptions {
        seq_len: 4,
        policy: LengthPolicy::Refuse,
    };
    match build("t", &recs, &Llama31Renderer::new(&tok), opts).unwrap() {
        TrainingData::Pretraining(p) => assert_eq!(p.sequences.len(), 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn long_records_are_refused_with_their_lines_or_truncated() {
    let tok = tokenizer();
    let r = Llama31Renderer::new(&tok);
    // 8 tokens (7 positions), then 9 tokens whose prompt alone fills 4 positions, then 4.
    let text = "{\"prompt\": \"ab\", \"completion\": \"cdef\"}\n\
                {\"prompt\": \"abcdef\", \"completion\": \"g\"}\n\
                {\"prompt\": \"a\", \"completion\": \"b\"}";
    let recs = parse_jsonl("t", text).unwrap();
    let refuse = SequenceOptions {
        seq_len: 4,
        policy: LengthPolicy::Refuse,
    };
    match sft_sequences("t", &recs.records, &r, refuse) {
        Err(TrainError::BadRecords(b)) => {
            assert_eq!(b.total, 2);
            assert_eq!(
                b.to_string(),
                "t: 2 bad records\n  line 1: 8 tokens make 7 positions, more than the sequence \
                 length 4; shorten the record, raise the sequence length, or truncate\n  \
                 line 2: 9 tokens make 8 positions, more than the sequence length 4; shorten \
                 the record, raise the sequence length, or truncate"
            );
        }
        other => panic!("{other:?}"),
    }
    let truncate = SequenceOptions {
        policy: LengthPolicy::Truncate,
        ..refuse
    };
    let built = sft_sequences("t", &recs.records, &r, truncate).unwrap();
    assert_eq!(built.truncated, [1]);
    assert_eq!(built.skipped, [2]);
    assert_eq!(
        built.items,
        [
            Sequence {
                inputs: vec![BOS, 97, 98, 99],
                targets: vec![97, 98, 99, 100],
                counted: vec![false, false, true, true],
            },
            Sequence {
                inputs: vec![BOS, 97, 98],
                targets: vec![97, 98, EOS],
                counted: vec![false, true, true],
            },
        ]
    );
    // Nothing left to train on at all is an error, not an empty run.
    let only_long = parse_jsonl("t", "{\"prompt\": \"abcdef\", \"completion\": \"g\"}").unwrap();
    assert!(matches!(
        sft_sequences("t", &only_long.records, &r, truncate),
        Err(TrainError::Data(_))
    ));
}

#[test]
fn the_renderer_is_a_trait_object() {
    let tok = tokenizer();
    let r: &dyn ChatRenderer = &Llama31Renderer::new(&tok);
    assert_eq!((r.begin_of_text(), r.end_of_text()), (BOS, EOS));
    assert_eq!(r.encode_text("<|eot_id|>").len(), "<|eot_id|>".len());
}

#[test]
fn preference_pairs_follow_the_length_policy() {
    let tok = tokenizer();
    let r = Llama31Renderer::new(&tok);
    // chosen: BOS Q y e s EOS (5 positions); rejected: BOS Q n o EOS (4 positions).
    let recs = parse_jsonl("p", r#"{"prompt": "Q", "chosen": "yes", "rejected": "no"}"#).unwrap();
    let opts = SequenceOptions {
        seq_len: 4,
        policy: LengthPolicy::Refuse,
    };
    match preference_pairs("p", &recs.records, &r, opts) {
        Err(TrainError::BadRecords(b)) => {
            assert_eq!(b.shown[0].line, 1);
            assert!(
                b.shown[0]
                    .what
                    .starts_with("chosen: 6 tokens make 5 positions")
            );
        }
        other => panic!("{other:?}"),
    }
    let opts = SequenceOptions {
        policy: LengthPolicy::Truncate,
        ..opts
    };
    let built = preference_pairs("p", &recs.records, &r, opts).unwrap();
    assert_eq!(built.truncated, [1]);
    assert_eq!(built.items[0].chosen.targets, [81, 121, 101, 115]);
    assert_eq!(built.items[0].rejected.targets, [81, 110, 111, EOS]);
}
