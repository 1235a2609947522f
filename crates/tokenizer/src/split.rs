//! Meta's input splitting before the regex (`Tokenizer.encode` in llama-models).
//!
//! The text is cut into windows of 400,000 characters, and each window into slices so that
//! no run of whitespace or of non-whitespace (by Python's `str.isspace`) is longer than
//! 25,000 characters. Each slice is then encoded on its own. This changes token ids on
//! pathological inputs, so it is part of the format, not an optimisation.

use crate::class::py_isspace;

/// `TIKTOKEN_MAX_ENCODE_CHARS`.
pub const WINDOW_CHARS: usize = 400_000;
/// `MAX_NO_WHITESPACES_CHARS`.
pub const MAX_RUN_CHARS: usize = 25_000;

/// Calls `f` with each slice of `text`, in order. An empty text gives one empty slice.
pub fn for_each_slice<'a>(text: &'a str, mut f: impl FnMut(&'a str)) {
    // No run can exceed the limit when the whole text is shorter (in bytes, so in chars).
    if text.len() <= MAX_RUN_CHARS {
        f(text);
        return;
    }
    let mut slice_start = 0;
    let mut window_chars = 0;
    let mut run_len = 0;
    let mut run_space = false;
    for (i, c) in text.char_indices() {
        if window_chars == WINDOW_CHARS {
            f(&text[slice_start..i]);
            slice_start = i;
            window_chars = 0;
        }
        let space = py_isspace(c);
        if window_chars == 0 || space != run_space {
            run_space = space;
            run_len = 1;
        } else {
            run_len += 1;
            if run_len > MAX_RUN_CHARS {
                f(&text[slice_start..i]);
                slice_start = i;
                run_len = 1;
            }
        }
        window_chars += 1;
    }
    f(&text[slice_start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slices(s: &str) -> Vec<usize> {
        let mut v = Vec::new();
        for_each_slice(s, |x| v.push(x.chars().count()));
        v
    }

    #[test]
    fn runs_longer_than_the_limit_are_cut() {
        assert_eq!(slices(&"b".repeat(25_000)), [25_000]);
        assert_eq!(slices(&"b".repeat(25_001)), [25_000, 1]);
        assert_eq!(
            slices(&format!("{}{}", " ".repeat(30_000), "x")),
            [25_000, 5_001]
        );
        assert_eq!(slices(&"ab ".repeat(10_000)), [30_000]);
        // U+001C is a space for Python's isspace: alternating never forms a long run.
        assert_eq!(slices(&"a\u{1c}".repeat(20_000)), [40_000]);
        assert_eq!(slices(""), [0]);
    }

    #[test]
    fn windows_of_400k_chars_reset_the_run_count() {
        let s = "é ".repeat(250_000); // 500,000 chars, no long runs
        assert_eq!(slices(&s), [400_000, 100_000]);
        let s = "x".repeat(410_000);
        let mut want = vec![25_000; 16];
        want.push(10_000);
        assert_eq!(slices(&s), want);
    }
}
