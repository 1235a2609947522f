//! The GPT-2 pre-tokenization pattern, and the SmolLM variant that first isolates digits.
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! ```
//!
//! Used by byte-level BPE vocabularies embedded in GGUF files (`tokenizer.ggml.pre` "gpt2",
//! "smollm", ...). Like Meta's pattern in [`crate::pretokenize`], every alternative is a run of
//! one class with one character of look-ahead, so a forward scan reproduces it in linear time.
//! Contractions are case-sensitive here, unlike Meta's.

use crate::class::{Class, class_of};

/// Pieces of `text` under the GPT-2 pattern, as byte ranges.
pub fn gpt2_pieces(text: &str, mut f: impl FnMut(&str)) {
    let mut pos = 0;
    while pos < text.len() {
        let end = piece_end(text, pos);
        f(&text[pos..end]);
        pos = end;
    }
}

/// SmolLM's pre-tokenizer (llama.cpp `LLAMA_VOCAB_PRE_TYPE_SMOLLM`): every `\p{N}` character
/// is its own piece, and the text between them is split by the GPT-2 pattern.
pub fn smollm_pieces(text: &str, mut f: impl FnMut(&str)) {
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if class_of(c) == Class::Number {
            if start < i {
                gpt2_pieces(&text[start..i], &mut f);
            }
            f(&text[i..i + c.len_utf8()]);
            start = i + c.len_utf8();
        }
    }
    if start < text.len() {
        gpt2_pieces(&text[start..], &mut f);
    }
}

fn char_at(s: &str, i: usize) -> Option<(char, usize)> {
    let c = s.get(i..)?.chars().next()?;
    Some((c, c.len_utf8()))
}

fn run_end(s: &str, mut i: usize, want: impl Fn(Class) -> bool) -> usize {
    while let Some((c, n)) = char_at(s, i) {
        if !want(class_of(c)) {
            break;
        }
        i += n;
    }
    i
}

fn piece_end(s: &str, start: usize) -> usize {
    let Some((c, n)) = char_at(s, start) else {
        return s.len();
    };
    let cls = class_of(c);
    if c == '\'' {
        let rest = &s[start + 1..];
        for suffix in ["re", "ve", "ll", "s", "t", "m", "d"] {
            if rest.starts_with(suffix) {
                return start + 1 + suffix.len();
            }
        }
    }
    let next = char_at(s, start + n).map(|(c2, _)| class_of(c2));
    // An optional single space before letters, numbers or other characters.
    let (body, body_cls) =
        if c == ' ' && matches!(next, Some(Class::Letter | Class::Number | Class::Other)) {
            (start + n, next)
        } else {
            (start, Some(cls))
        };
    match body_cls {
        Some(Class::Letter) => return run_end(s, body, |k| k == Class::Letter),
        Some(Class::Number) => return run_end(s, body, |k| k == Class::Number),
        Some(Class::Other) => return run_end(s, body, |k| k == Class::Other),
        _ => {}
    }
    // Whitespace: all of it at the end of the text, else all but the last character.
    let mut end = start;
    let mut last = start;
    while let Some((c2, m)) = char_at(s, end) {
        if !class_of(c2).is_space() {
            break;
        }
        last = end;
        end += m;
    }
    if end == s.len() || last == start {
        end
    } else {
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str, smollm: bool) -> Vec<String> {
        let mut v = Vec::new();
        if smollm {
            smollm_pieces(s, |p| v.push(p.to_string()));
        } else {
            gpt2_pieces(s, |p| v.push(p.to_string()));
        }
        v
    }

    #[test]
    fn gpt2_pattern() {
        assert_eq!(
            split("Hello world's 123 !!", false),
            ["Hello", " world", "'s", " 123", " !!"]
        );
        assert_eq!(split("a  b", false), ["a", " ", " b"]);
        assert_eq!(split("a\n\nb", false), ["a", "\n", "\n", "b"]);
        assert_eq!(split("x  ", false), ["x", "  "]);
        assert_eq!(split("I'LL", false), ["I", "'", "LL"]);
    }

    #[test]
    fn smollm_isolates_digits() {
        assert_eq!(
            split("in 2024, x", true),
            ["in", " ", "2", "0", "2", "4", ",", " x"]
        );
    }
}
