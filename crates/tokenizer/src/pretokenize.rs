//! Meta's pre-tokenization pattern, matched by hand.
//!
//! ```text
//! (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//! ```
//!
//! tiktoken runs this through a backtracking regex engine (fancy-regex), which is where most
//! of its time goes. Every alternative here is a run of one character class with at most one
//! character of look-ahead or give-back, so a single forward scan reproduces the
//! leftmost-first, greedy-with-backtracking semantics exactly and in linear time:
//!
//! 1. contractions: `'` then `s t m d` / `re ve ll`, case-insensitive under simple case
//!    folding (so `ſ`, U+017F, matches `s`, as the regex engines do);
//! 2. letters, with one optional leading character that is not CR/LF, letter or number;
//! 3. one to three numbers;
//! 4. an optional ASCII space, a run of "other" characters, then any CR/LF;
//! 5. a whitespace run up to and including its last CR/LF;
//! 6. a whitespace run at the end of the text, or all of it but its last character (which
//!    then leads the next piece);
//! 7. a single whitespace character.
//!
//! Qwen2's pattern (llama.cpp `LLAMA_VOCAB_PRE_TYPE_QWEN2`, from Qwen's `tokenizer.json`)
//! is the same but for numbers, which are single characters (`\p{N}`, not `\p{N}{1,3}`);
//! [`qwen2_pieces`] scans it with the same code. Its contractions follow llama.cpp's form
//! of the pattern, `'[sS]|'[tT]|...`: ASCII case only, so `'ſ` is not one (llama.cpp's
//! Qwen2 splitter lowercases with `unicode_tolower`, which leaves `ſ` as it is).

use crate::class::{Class, class_of};

/// Which of the two patterns a [`Pieces`] scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern {
    /// Meta's: up to three numbers per piece, contractions under simple case folding.
    Llama3,
    /// Qwen2's: one number per piece, contractions in ASCII case only.
    Qwen2,
}

/// Iterator over the pieces of `text`, as `&str` slices covering it without gaps.
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    text: &'a str,
    pos: usize,
    pattern: Pattern,
}

/// The pieces of `text` under Meta's pattern.
pub fn pieces(text: &str) -> Pieces<'_> {
    Pieces {
        text,
        pos: 0,
        pattern: Pattern::Llama3,
    }
}

/// The pieces of `text` under Qwen2's pattern (single-character numbers).
pub fn qwen2_pieces(text: &str) -> Pieces<'_> {
    Pieces {
        text,
        pos: 0,
        pattern: Pattern::Qwen2,
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let end = piece_end(self.text, start, self.pattern);
        self.pos = end;
        Some(&self.text[start..end])
    }
}

/// Decodes the char starting at byte `i` (which must be a char boundary inside `s`).
#[inline]
fn char_at(s: &str, i: usize) -> Option<(char, usize)> {
    let b = *s.as_bytes().get(i)?;
    if b < 0x80 {
        return Some((b as char, 1));
    }
    let c = s.get(i..)?.chars().next()?;
    Some((c, c.len_utf8()))
}

#[inline]
fn class_at(s: &str, i: usize) -> Option<(Class, char, usize)> {
    char_at(s, i).map(|(c, n)| (class_of(c), c, n))
}

/// End (exclusive) of the run of `class` characters starting at byte `i`.
#[inline]
fn run_end(s: &str, mut i: usize, want: impl Fn(Class) -> bool) -> usize {
    let bytes = s.as_bytes();
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            if !want(class_of(b as char)) {
                break;
            }
            i += 1;
        } else {
            match class_at(s, i) {
                Some((cls, _, n)) if want(cls) => i += n,
                _ => break,
            }
        }
    }
    i
}

/// Length in bytes of a contraction starting at byte `i` (which holds `'`), or 0.
#[inline]
fn contraction_len(s: &str, i: usize, pattern: Pattern) -> usize {
    let fold = |c: char| match c {
        'ſ' if pattern == Pattern::Llama3 => 's',
        c => c.to_ascii_lowercase(),
    };
    let Some((c1, n1)) = char_at(s, i + 1) else {
        return 0;
    };
    match fold(c1) {
        's' | 't' | 'm' | 'd' => 1 + n1,
        second @ ('r' | 'v' | 'l') => {
            let third = if second == 'l' { 'l' } else { 'e' };
            match char_at(s, i + 1 + n1) {
                Some((c2, n2)) if fold(c2) == third => 1 + n1 + n2,
                _ => 0,
            }
        }
        _ => 0,
    }
}

/// End of the piece that starts at byte `start` (< `s.len()`).
fn piece_end(s: &str, start: usize, pattern: Pattern) -> usize {
    let Some((cls, c, n)) = class_at(s, start) else {
        return s.len();
    };
    // 1. contractions
    if c == '\'' {
        let len = contraction_len(s, start, pattern);
        if len > 0 {
            return start + len;
        }
    }
    let next = class_at(s, start + n);
    let next_cls = next.map(|(k, _, _)| k);
    // 2. [^\r\n\p{L}\p{N}]?\p{L}+
    if cls == Class::Letter {
        return run_end(s, start + n, |k| k == Class::Letter);
    }
    if matches!(cls, Class::Space | Class::Other) && next_cls == Some(Class::Letter) {
        return run_end(s, start + n, |k| k == Class::Letter);
    }
    // 3. \p{N}{1,3} (Qwen2: \p{N})
    if cls == Class::Number {
        let mut end = start + n;
        let more = match pattern {
            Pattern::Llama3 => 2,
            Pattern::Qwen2 => 0,
        };
        for _ in 0..more {
            match class_at(s, end) {
                Some((Class::Number, _, m)) => end += m,
                _ => break,
            }
        }
        return end;
    }
    // 4.  ?[^\s\p{L}\p{N}]+[\r\n]*
    let punct_from = if cls == Class::Other {
        Some(start)
    } else if c == ' ' && next_cls == Some(Class::Other) {
        Some(start + n)
    } else {
        None
    };
    if let Some(from) = punct_from {
        let end = run_end(s, from, |k| k == Class::Other);
        return run_end(s, end, |k| k == Class::Newline);
    }
    // 5-7. whitespace (the only class left)
    let mut end = start;
    let mut last_newline_end = None;
    let mut last_char_start = start;
    while let Some((k, _, m)) = class_at(s, end) {
        if !k.is_space() {
            break;
        }
        last_char_start = end;
        end += m;
        if k == Class::Newline {
            last_newline_end = Some(end);
        }
    }
    // 5. \s*[\r\n]+ : backtrack to the last line break of the run
    if let Some(e) = last_newline_end {
        return e;
    }
    // 6. \s+(?!\S) : whole run at end of text, else give back the last char if any remain
    if end == s.len() || last_char_start == start {
        // 7. \s+ (a single whitespace char followed by non-space) also lands here
        return end;
    }
    last_char_start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        pieces(s).collect()
    }

    #[test]
    fn worked_example_from_the_spec() {
        assert_eq!(split("   \n\n   x"), ["   \n\n", "  ", " x"]);
    }

    #[test]
    fn contractions_win_over_letters() {
        assert_eq!(
            split("'sam I'LL we'Ve"),
            ["'s", "am", " I", "'LL", " we", "'Ve"]
        );
        assert_eq!(split("'ſ"), ["'ſ"]);
        assert_eq!(split("'x"), ["'x"]);
        assert_eq!(split("'"), ["'"]);
        assert_eq!(split("'r"), ["'r"]);
    }

    #[test]
    fn numbers_group_by_three_from_the_left() {
        assert_eq!(split("1234567890"), ["123", "456", "789", "0"]);
        assert_eq!(split(" 12"), [" ", "12"]);
    }

    #[test]
    fn punctuation_takes_one_space_and_trailing_newlines() {
        assert_eq!(split("a ...\r\n\nb"), ["a", " ...\r\n\n", "b"]);
        assert_eq!(split("!?abc"), ["!?", "abc"]);
        assert_eq!(split("(abc"), ["(abc"]);
        assert_eq!(split("\t!"), ["\t", "!"]);
    }

    #[test]
    fn whitespace_runs() {
        assert_eq!(split("a  "), ["a", "  "]);
        assert_eq!(split("a \n b"), ["a", " \n", " b"]);
        assert_eq!(split("\n  x"), ["\n", " ", " x"]);
        assert_eq!(split("a\u{3000}b"), ["a", "\u{3000}b"]);
    }

    #[test]
    fn qwen2_numbers_are_single_characters() {
        fn q(s: &str) -> Vec<&str> {
            qwen2_pieces(s).collect()
        }
        assert_eq!(q("1234 x٣4"), ["1", "2", "3", "4", " x", "٣", "4"]);
        assert_eq!(q("I'LL 'ſ"), ["I", "'LL", " '", "ſ"]);
        assert_eq!(split("'ſ"), ["'ſ"], "Meta's pattern folds ſ");
        assert_eq!(q("a ...\r\n\nb"), ["a", " ...\r\n\n", "b"]);
    }

    #[test]
    fn marks_split_indic_words_like_the_regex() {
        assert_eq!(split("नमस्ते"), ["नमस", "्त", "े"]);
    }
}
