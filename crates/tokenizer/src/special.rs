//! Meta's 256 special tokens, appended after the BPE ranks (ids 128000..=128255 for Llama 3).
//!
//! Names follow llama-models 0.3.0 (`<|image|>` at index 11, so `reserved_special_token_2`
//! starts at index 12). Other sources number the reserved tokens differently; ids are what is
//! stable, so code refers to the core tokens through [`Special`], never by reserved names.

/// How many special ids follow the BPE ranks.
pub const NUM_SPECIAL: usize = 256;

/// The special tokens with a role, by their index after the BPE ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Special {
    BeginOfText = 0,
    EndOfText = 1,
    FinetuneRightPad = 4,
    StepId = 5,
    StartHeader = 6,
    EndHeader = 7,
    EndOfMessage = 8,
    EndOfTurn = 9,
    PythonTag = 10,
    Image = 11,
}

impl Special {
    /// The token's text.
    pub fn text(self) -> &'static str {
        CORE[self as usize]
    }
}

const CORE: [&str; 12] = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
];

/// The text of the special token at `index` (0..256).
pub fn special_name(index: usize) -> String {
    match CORE.get(index) {
        Some(s) => (*s).to_string(),
        None => format!("<|reserved_special_token_{}|>", index - CORE.len() + 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_numbering_matches_llama_models_0_3_0() {
        assert_eq!(special_name(11), "<|image|>");
        assert_eq!(special_name(12), "<|reserved_special_token_2|>");
        assert_eq!(special_name(255), "<|reserved_special_token_245|>");
        assert_eq!(Special::EndOfTurn.text(), "<|eot_id|>");
    }
}
