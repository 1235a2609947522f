//! Cutting text into chunks of so many tokens of the embedding model, overlapping, as
//! OpenAI's `static` strategy does. Token boundaries come from the model's tokenizer as
//! byte ranges; a chunk's text runs from its first token's start to its last token's end,
//! so the text between tokens (spaces, punctuation the tokenizer drops) is kept.

use crate::vector_stores::Chunking;

/// One chunk: its text and how many tokens it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextChunk {
    pub text: String,
    pub tokens: usize,
}

/// Cuts `text`, whose tokens are `offsets` (byte ranges, in order), by `c`.
pub fn chunk(text: &str, offsets: &[(usize, usize)], c: &Chunking) -> Vec<TextChunk> {
    let n = offsets.len();
    let max = c.max_chunk_size_tokens.max(1);
    // Overlap below the size, so every window advances.
    let overlap = c.chunk_overlap_tokens.min(max - 1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + max).min(n);
        let (a, b) = (offsets[start].0, offsets[end - 1].1);
        if let Some(t) = slice(text, a, b) {
            let t = t.trim();
            if !t.is_empty() {
                out.push(TextChunk {
                    text: t.to_string(),
                    tokens: end - start,
                });
            }
        }
        if end == n {
            break;
        }
        start = end - overlap;
    }
    out
}

/// `text[a..b]`, widened to the nearest character boundaries (offsets from a normalizing
/// tokenizer may fall inside a character).
fn slice(text: &str, mut a: usize, mut b: usize) -> Option<&str> {
    b = b.min(text.len());
    a = a.min(b);
    while a > 0 && !text.is_char_boundary(a) {
        a -= 1;
    }
    while b < text.len() && !text.is_char_boundary(b) {
        b += 1;
    }
    text.get(a..b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whitespace tokens as byte ranges.
    fn words(text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, ch) in text.char_indices() {
            match (ch.is_whitespace(), start) {
                (false, None) => start = Some(i),
                (true, Some(s)) => {
                    out.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push((s, text.len()));
        }
        out
    }

    #[test]
    fn windows_overlap_and_cover_everything() {
        let text: String = (0..10).map(|i| format!("w{i} ")).collect();
        let c = Chunking {
            max_chunk_size_tokens: 4,
            chunk_overlap_tokens: 2,
            auto: false,
        };
        let got: Vec<String> = chunk(&text, &words(&text), &c)
            .into_iter()
            .map(|c| c.text)
            .collect();
        assert_eq!(
            got,
            ["w0 w1 w2 w3", "w2 w3 w4 w5", "w4 w5 w6 w7", "w6 w7 w8 w9"]
        );
    }

    #[test]
    fn short_text_is_one_chunk_and_empty_is_none() {
        let c = Chunking::AUTO;
        let one = chunk("héllo wörld", &words("héllo wörld"), &c);
        assert_eq!(
            one,
            [TextChunk {
                text: "héllo wörld".into(),
                tokens: 2
            }]
        );
        assert!(chunk("", &[], &c).is_empty());
    }

    #[test]
    fn offsets_inside_a_character_are_widened() {
        // "é" is two bytes; an offset pointing at its second byte still slices.
        assert_eq!(slice("aé b", 0, 2), Some("aé"));
        assert_eq!(slice("aé b", 2, 3), Some("é"));
    }
}
