//! Character classes used by Meta's pre-tokenization pattern.
//!
//! The pattern only ever asks four questions of a character: is it a letter (`\p{L}`), a
//! number (`\p{N}`), whitespace (`\s`, Unicode `White_Space`), and among whitespace, is it a
//! line break (`[\r\n]`). Everything else is "other" (punctuation, symbols, marks, controls).
//! Asking `unicode-general-category` per character is a binary search; we instead build a
//! two-level table once (blocks of 256 code points, identical blocks shared), so each lookup
//! is two array reads. ASCII, the bulk of most text, has its own flat table.

use std::sync::OnceLock;

use unicode_general_category::{GeneralCategory, get_general_category};

/// The class of one character, as the pattern sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Class {
    /// `\p{L}`: Lu, Ll, Lt, Lm, Lo.
    Letter = 0,
    /// `\p{N}`: Nd, Nl, No.
    Number = 1,
    /// `\s` other than CR and LF.
    Space = 2,
    /// `\r` or `\n` (also `\s`).
    Newline = 3,
    /// Anything else: `[^\s\p{L}\p{N}]`.
    Other = 4,
}

impl Class {
    #[inline]
    pub fn is_space(self) -> bool {
        matches!(self, Class::Space | Class::Newline)
    }

    const fn from_u8(v: u8) -> Class {
        match v {
            0 => Class::Letter,
            1 => Class::Number,
            2 => Class::Space,
            3 => Class::Newline,
            _ => Class::Other,
        }
    }
}

fn classify_slow(c: char) -> Class {
    if c == '\r' || c == '\n' {
        return Class::Newline;
    }
    // Unicode White_Space is exactly what the regex crates (and tiktoken's fancy-regex) use for `\s`.
    if c.is_whitespace() {
        return Class::Space;
    }
    use GeneralCategory as G;
    match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => Class::Letter,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => Class::Number,
        _ => Class::Other,
    }
}

const ASCII: [Class; 128] = {
    let mut t = [Class::Other; 128];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        t[i] = if b == b'\r' || b == b'\n' {
            Class::Newline
        } else if b == b' ' || (b >= 0x09 && b <= 0x0d) {
            Class::Space
        } else if b.is_ascii_alphabetic() {
            Class::Letter
        } else if b.is_ascii_digit() {
            Class::Number
        } else {
            Class::Other
        };
        i += 1;
    }
    t
};

struct Table {
    /// For each 256-code-point block, the index of its class block in `blocks`.
    index: Vec<u16>,
    /// Deduplicated blocks of 256 classes.
    blocks: Vec<[u8; 256]>,
}

const N_BLOCKS: usize = 0x11_0000 / 256;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut index = Vec::with_capacity(N_BLOCKS);
        let mut blocks: Vec<[u8; 256]> = Vec::new();
        let mut seen: rustc_hash::FxHashMap<[u8; 256], u16> = Default::default();
        for b in 0..N_BLOCKS {
            let mut block = [Class::Other as u8; 256];
            for (i, slot) in block.iter_mut().enumerate() {
                // Surrogates are not chars; they stay Other and are never looked up.
                if let Some(c) = char::from_u32((b * 256 + i) as u32) {
                    *slot = classify_slow(c) as u8;
                }
            }
            let next = blocks.len() as u16;
            let id = *seen.entry(block).or_insert_with(|| {
                blocks.push(block);
                next
            });
            index.push(id);
        }
        Table { index, blocks }
    })
}

/// The class of `c`.
#[inline]
pub fn class_of(c: char) -> Class {
    let cp = c as usize;
    if cp < 128 {
        return ASCII[cp];
    }
    let t = table();
    let block = t.index[cp >> 8] as usize;
    Class::from_u8(t.blocks[block][cp & 0xff])
}

/// Python's `str.isspace()`, which Meta's run splitter uses: Unicode `White_Space` plus the
/// four information separators U+001C..=U+001F (bidi class B/S in Python's definition).
#[inline]
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_agrees_with_direct_classification_everywhere() {
        for cp in 0..0x11_0000u32 {
            if let Some(c) = char::from_u32(cp) {
                assert_eq!(class_of(c), classify_slow(c), "U+{cp:04X}");
            }
        }
    }

    #[test]
    fn hand_checked_classes() {
        assert_eq!(class_of('a'), Class::Letter);
        assert_eq!(class_of('ſ'), Class::Letter);
        assert_eq!(class_of('न'), Class::Letter);
        assert_eq!(class_of('्'), Class::Other, "virama is a mark, not a letter");
        assert_eq!(class_of('٣'), Class::Number);
        assert_eq!(class_of('Ⅻ'), Class::Number, "Nl counts as \\p{{N}}");
        assert_eq!(class_of('½'), Class::Number);
        assert_eq!(class_of('\u{3000}'), Class::Space);
        assert_eq!(class_of('\u{a0}'), Class::Space);
        assert_eq!(class_of('\u{2028}'), Class::Space);
        assert_eq!(
            class_of('\u{1c}'),
            Class::Other,
            "not \\s, but Python isspace()"
        );
        assert!(py_isspace('\u{1c}'));
        assert_eq!(class_of('\r'), Class::Newline);
        assert_eq!(class_of('\u{b}'), Class::Space);
        assert_eq!(class_of('😀'), Class::Other);
    }
}
