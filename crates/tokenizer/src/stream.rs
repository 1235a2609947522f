//! Incremental, UTF-8-safe decoding for streaming.
//!
//! A token may end in the middle of a character (1,352 Llama 3 tokens are partial UTF-8), so
//! decoding token by token, as Meta's generator does, prints U+FFFD where a character is
//! split. [`StreamDecoder`] holds back an incomplete trailing sequence until the next token
//! completes it. What it emits, concatenated with [`StreamDecoder::finish`], always equals
//! [`Tokenizer::decode`] of all the ids: bytes that can never become valid are replaced
//! exactly as `decode` replaces them.

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Turns a stream of ids into a stream of text.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> StreamDecoder {
        StreamDecoder::default()
    }

    /// Adds one id; returns the text that became complete (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.pending.extend_from_slice(tok.token_bytes(id)?);
        Ok(self.take_complete())
    }

    /// Adds raw bytes; returns the text that became complete.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        self.take_complete()
    }

    /// Bytes held back, waiting for the rest of a character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Flushes what is held back (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }

    fn take_complete(&mut self) -> String {
        // Everything up to the last byte that could still start or continue a valid sequence
        // is final: invalid bytes in the middle are replaced as `from_utf8_lossy` would.
        let keep_from = incomplete_tail_start(&self.pending);
        let out = String::from_utf8_lossy(&self.pending[..keep_from]).into_owned();
        self.pending.drain(..keep_from);
        out
    }
}

/// Start of a trailing, still-completable UTF-8 sequence, or `bytes.len()` if none.
fn incomplete_tail_start(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    let mut consumed = 0;
    loop {
        match std::str::from_utf8(rest) {
            Ok(_) => return bytes.len(),
            Err(e) => match e.error_len() {
                // Unexpected end: the bytes from here are a valid prefix of a character.
                None => return consumed + e.valid_up_to(),
                Some(n) => {
                    let skip = e.valid_up_to() + n;
                    consumed += skip;
                    rest = &rest[skip..];
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_split_characters() {
        let mut d = StreamDecoder::new();
        let euro = "€".as_bytes(); // e2 82 ac
        assert_eq!(d.push_bytes(&euro[..1]), "");
        assert_eq!(d.push_bytes(&euro[1..2]), "");
        assert_eq!(d.push_bytes(&euro[2..]), "€");
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn invalid_bytes_are_replaced_like_lossy_decode() {
        let mut d = StreamDecoder::new();
        let mut got = d.push_bytes(b"a\xffb\xe2\x82");
        assert_eq!(got, "a\u{fffd}b");
        got += &d.push_bytes(b"x");
        got += &d.finish();
        assert_eq!(got, String::from_utf8_lossy(b"a\xffb\xe2\x82x"));
        let mut d = StreamDecoder::new();
        assert_eq!(d.push_bytes(b"\xe2\x82"), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }
}
