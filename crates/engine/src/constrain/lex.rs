//! Byte-at-a-time lexing of JSON strings and numbers.
//!
//! Both lexers are small `Copy` values because matcher state is duplicated at every trie
//! node while a token mask is computed. Each rejects a byte as soon as no valid completion
//! remains: a `\u` escape that can only spell a lone surrogate dies at its second hex digit,
//! not its fourth.

use super::{MAX_EXP_DIGITS, MAX_FRAC_DIGITS, MAX_INT_DIGITS, MAX_INTEGER_DIGITS};
use std::cmp::Ordering;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Raw characters (possibly inside a multi-byte one).
    Normal,
    /// After `\`.
    Backslash,
    /// In `\uXXXX` (not the low half of a surrogate pair).
    Hex,
    /// A high surrogate was read; `\` of its low half must follow.
    LowBackslash,
    /// `u` of the low half must follow.
    LowU,
    /// In the `XXXX` of the low half.
    LowHex,
}

/// Where a string lexer is, after the opening quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StrLex {
    mode: Mode,
    /// Continuation bytes still expected in a raw multi-byte character.
    need: u8,
    /// Allowed range of the next continuation byte (the first one after some lead bytes is
    /// narrower, which is how UTF-8 rules out overlongs and surrogates).
    lo: u8,
    hi: u8,
    /// Hex digits read and their value, in `Hex`/`LowHex`.
    hex_n: u8,
    hex: u16,
    /// The high surrogate waiting for its low half.
    high: u16,
}

/// What one byte did inside a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lex {
    Reject,
    /// The closing quote.
    Quote,
    /// A raw content byte; `start` when it begins a character.
    Raw {
        start: bool,
    },
    /// `\`, which begins a character.
    EscStart,
    /// More of an escape; no character finished yet.
    EscMore,
    /// An escape finished and decoded to this character.
    Char(char),
}

/// Whether the `n` hex digits read so far (value `v`) can still end as a valid code unit:
/// a low surrogate (`DC00..=DFFF`) when `low`, otherwise anything but a lone low surrogate.
fn hex_prefix_ok(n: u8, v: u16, low: bool) -> bool {
    let shift = 4 * (4 - u32::from(n));
    let lo = u32::from(v) << shift;
    let hi = lo + (1 << shift) - 1;
    if low {
        lo <= 0xDFFF && hi >= 0xDC00
    } else {
        lo <= 0xDBFF || hi >= 0xE000
    }
}

fn hex_digit(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some(u16::from(b - b'0')),
        b'a'..=b'f' => Some(u16::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(b - b'A' + 10)),
        _ => None,
    }
}

/// UTF-16 halves of a supplementary character.
fn surrogates(c: u32) -> (u16, u16) {
    let v = c - 0x10000;
    ((0xD800 + (v >> 10)) as u16, (0xDC00 + (v & 0x3FF)) as u16)
}

impl StrLex {
    pub(crate) const fn new() -> StrLex {
        StrLex {
            mode: Mode::Normal,
            need: 0,
            lo: 0,
            hi: 0,
            hex_n: 0,
            hex: 0,
            high: 0,
        }
    }

    pub(crate) fn step(&mut self, b: u8) -> Lex {
        match self.mode {
            Mode::Normal => self.raw(b),
            Mode::Backslash => {
                let c = match b {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        self.mode = Mode::Hex;
                        self.hex_n = 0;
                        self.hex = 0;
                        return Lex::EscMore;
                    }
                    _ => return Lex::Reject,
                };
                self.mode = Mode::Normal;
                Lex::Char(c)
            }
            Mode::Hex | Mode::LowHex => {
                let low = self.mode == Mode::LowHex;
                let Some(d) = hex_digit(b) else {
                    return Lex::Reject;
                };
                self.hex = self.hex << 4 | d;
                self.hex_n += 1;
                if !hex_prefix_ok(self.hex_n, self.hex, low) {
                    return Lex::Reject;
                }
                if self.hex_n < 4 {
                    return Lex::EscMore;
                }
                let cu = u32::from(self.hex);
                if low {
                    let c = 0x10000 + ((u32::from(self.high) - 0xD800) << 10) + (cu - 0xDC00);
                    self.mode = Mode::Normal;
                    return char::from_u32(c).map_or(Lex::Reject, Lex::Char);
                }
                if (0xD800..0xDC00).contains(&cu) {
                    self.high = self.hex;
                    self.mode = Mode::LowBackslash;
                    return Lex::EscMore;
                }
                self.mode = Mode::Normal;
                char::from_u32(cu).map_or(Lex::Reject, Lex::Char)
            }
            Mode::LowBackslash if b == b'\\' => {
                self.mode = Mode::LowU;
                Lex::EscMore
            }
            Mode::LowU if b == b'u' => {
                self.mode = Mode::LowHex;
                self.hex_n = 0;
                self.hex = 0;
                Lex::EscMore
            }
            Mode::LowBackslash | Mode::LowU => Lex::Reject,
        }
    }

    fn raw(&mut self, b: u8) -> Lex {
        if self.need > 0 {
            if b < self.lo || b > self.hi {
                return Lex::Reject;
            }
            self.need -= 1;
            self.lo = 0x80;
            self.hi = 0xBF;
            return Lex::Raw { start: false };
        }
        // Lead bytes and the range of the byte after them (RFC 3629, table 3-7 of Unicode).
        let (need, lo, hi) = match b {
            b'"' => return Lex::Quote,
            b'\\' => {
                self.mode = Mode::Backslash;
                return Lex::EscStart;
            }
            0x00..=0x1F => return Lex::Reject,
            0x20..=0x7F => return Lex::Raw { start: true },
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return Lex::Reject,
        };
        self.need = need;
        self.lo = lo;
        self.hi = hi;
        Lex::Raw { start: true }
    }

    /// In the middle of an escape: whether it can still turn out to spell `c`. Used to match
    /// object keys, where only some characters may come next.
    pub(crate) fn escape_could_be(&self, c: char) -> bool {
        let c = c as u32;
        let prefix = |cu: u16| {
            let shift = 4 * (4 - u32::from(self.hex_n));
            (u32::from(cu) >> shift) == u32::from(self.hex)
        };
        match self.mode {
            Mode::Normal | Mode::Backslash => true,
            Mode::Hex => prefix(if c >= 0x10000 {
                surrogates(c).0
            } else {
                c as u16
            }),
            Mode::LowBackslash | Mode::LowU => c >= 0x10000 && surrogates(c).0 == self.high,
            Mode::LowHex => c >= 0x10000 && surrogates(c).0 == self.high && prefix(surrogates(c).1),
        }
    }

    /// Fewest bytes that finish the character in progress (any character), if one is.
    pub(crate) fn finish_any(&self) -> Vec<u8> {
        match self.mode {
            Mode::Normal if self.need > 0 => {
                let mut v = vec![self.lo];
                v.resize(usize::from(self.need), 0x80);
                v
            }
            Mode::Normal => Vec::new(),
            Mode::Backslash => b"n".to_vec(),
            Mode::Hex => {
                let (mut v, cu) = self.finish_hex(&[(0, 0xDBFF), (0xE000, 0xFFFF)]);
                if (0xD800..0xDC00).contains(&cu) {
                    v.extend_from_slice(b"\\uDC00");
                }
                v
            }
            Mode::LowBackslash => b"\\uDC00".to_vec(),
            Mode::LowU => b"uDC00".to_vec(),
            Mode::LowHex => self.finish_hex(&[(0xDC00, 0xDFFF)]).0,
        }
    }

    /// The rest of the `\\u` digits: the smallest code unit in `ranges` the digits so far
    /// begin.
    fn finish_hex(&self, ranges: &[(u32, u32)]) -> (Vec<u8>, u32) {
        let shift = 4 * (4 - u32::from(self.hex_n));
        let lo = u32::from(self.hex) << shift;
        let hi = lo + (1 << shift) - 1;
        let cu = ranges
            .iter()
            .filter(|(a, b)| *a <= hi && *b >= lo)
            .map(|(a, _)| lo.max(*a))
            .min()
            .unwrap_or(lo);
        let digits = format!("{cu:04X}");
        (digits.as_bytes()[usize::from(self.hex_n)..].to_vec(), cu)
    }

    /// Bytes that finish the escape in progress so that it spells `c` (which
    /// [`StrLex::escape_could_be`] allows); empty outside escapes.
    pub(crate) fn finish_escape_as(&self, c: char) -> Vec<u8> {
        let c = c as u32;
        let (high, low) = if c >= 0x10000 {
            surrogates(c)
        } else {
            (c as u16, 0)
        };
        let low_part = || format!("{low:04X}");
        let text = match self.mode {
            Mode::Normal => String::new(),
            Mode::Backslash | Mode::Hex => {
                let digits = format!("{high:04X}");
                let mut t = if self.mode == Mode::Backslash {
                    format!("u{digits}")
                } else {
                    digits[usize::from(self.hex_n)..].to_string()
                };
                if c >= 0x10000 {
                    t.push_str("\\u");
                    t.push_str(&low_part());
                }
                t
            }
            Mode::LowBackslash => format!("\\u{}", low_part()),
            Mode::LowU => format!("u{}", low_part()),
            Mode::LowHex => low_part()[usize::from(self.hex_n)..].to_string(),
        };
        text.into_bytes()
    }

    /// Continuation bytes still expected in a raw multi-byte character.
    pub(crate) fn pending_raw(&self) -> usize {
        if self.mode == Mode::Normal {
            usize::from(self.need)
        } else {
            0
        }
    }

    /// Between characters (not inside an escape or a multi-byte character).
    pub(crate) fn at_boundary(&self) -> bool {
        self.mode == Mode::Normal && self.need == 0
    }
}

/// Appends `c` as JSON string content: quote, backslash and control characters escaped.
pub(crate) fn push_json_char(out: &mut Vec<u8>, c: char) {
    match c {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
        c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
    }
}

/// Where a number lexer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NumSt {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NumLex {
    pub(crate) st: NumSt,
    /// Only `-?(0|[1-9][0-9]*)`, and not `-0`.
    pub(crate) integer: bool,
    /// Digits in the current part (integer, fraction or exponent).
    pub(crate) n: u8,
    /// The integer digits so far against the same-length prefix of the `i64` bound's
    /// digits (`integer` only): a number of [`MAX_INTEGER_DIGITS`] digits must not be
    /// `Greater`.
    pub(crate) vs_bound: Ordering,
    pub(crate) neg: bool,
}

/// `i64::MAX` and `-i64::MIN` in decimal, both 19 digits.
const I64_MAX_DIGITS: &[u8; 19] = b"9223372036854775807";
const I64_MIN_DIGITS: &[u8; 19] = b"9223372036854775808";

/// What one byte did to a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NumOut {
    Next,
    /// The byte is not part of the number, which is complete: the parent handles it.
    End,
    Reject,
}

impl NumLex {
    /// The lexer after the first byte `b`, if `b` can start a number.
    pub(crate) fn start(b: u8, integer: bool) -> Option<NumLex> {
        let (st, n) = match b {
            b'-' => (NumSt::Minus, 0),
            b'0' => (NumSt::Zero, 1),
            b'1'..=b'9' => (NumSt::Int, 1),
            _ => return None,
        };
        let mut lex = NumLex {
            st,
            integer,
            n: 0,
            vs_bound: Ordering::Equal,
            neg: b == b'-',
        };
        if n == 1 {
            lex.count_int_digit(b);
        }
        lex.n = n;
        Some(lex)
    }

    /// Compares one more integer digit (the `n`-th, 0-based) with the `i64` bound.
    fn count_int_digit(&mut self, b: u8) {
        let bound = if self.neg {
            I64_MIN_DIGITS
        } else {
            I64_MAX_DIGITS
        };
        if self.vs_bound == Ordering::Equal
            && let Some(&d) = bound.get(usize::from(self.n))
        {
            self.vs_bound = b.cmp(&d);
        }
    }

    /// Whether one more integer digit `b` is allowed.
    fn int_digit_fits(&self, b: u8) -> bool {
        if !self.integer {
            return self.n < MAX_INT_DIGITS;
        }
        if self.n + 1 < MAX_INTEGER_DIGITS {
            return true;
        }
        if self.n + 1 > MAX_INTEGER_DIGITS {
            return false;
        }
        // The last allowed digit: the whole number must stay within `i64`.
        let mut next = *self;
        next.count_int_digit(b);
        next.vs_bound != Ordering::Greater
    }

    /// Whether the text so far is a whole number.
    pub(crate) fn complete(&self) -> bool {
        matches!(self.st, NumSt::Zero | NumSt::Int | NumSt::Frac | NumSt::Exp)
    }

    pub(crate) fn step(&mut self, b: u8) -> NumOut {
        let digit = b.is_ascii_digit();
        let (st, n) = match (self.st, b) {
            (NumSt::Minus, b'0') if !self.integer => (NumSt::Zero, 1),
            (NumSt::Minus, b'1'..=b'9') => {
                self.count_int_digit(b);
                (NumSt::Int, 1)
            }
            (NumSt::Int, _) if digit && self.int_digit_fits(b) => {
                self.count_int_digit(b);
                (NumSt::Int, self.n + 1)
            }
            (NumSt::Zero | NumSt::Int, b'.') if !self.integer => (NumSt::Dot, 0),
            (NumSt::Zero | NumSt::Int | NumSt::Frac, b'e' | b'E') if !self.integer => (NumSt::E, 0),
            (NumSt::Dot, _) if digit => (NumSt::Frac, 1),
            (NumSt::Frac, _) if digit && self.n < MAX_FRAC_DIGITS => (NumSt::Frac, self.n + 1),
            (NumSt::E, b'+' | b'-') => (NumSt::ESign, 0),
            (NumSt::E | NumSt::ESign, _) if digit => (NumSt::Exp, 1),
            (NumSt::Exp, _) if digit && self.n < MAX_EXP_DIGITS => (NumSt::Exp, self.n + 1),
            // A digit can never follow a complete number in valid JSON, nor can `.`/`e`
            // follow an integer: rejecting here saves the parent's work.
            _ if self.complete() && !digit && !matches!(b, b'.' | b'e' | b'E') => {
                return NumOut::End;
            }
            _ => return NumOut::Reject,
        };
        self.st = st;
        self.n = n;
        NumOut::Next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex_all(s: &[u8]) -> Option<Vec<Lex>> {
        let mut l = StrLex::new();
        let mut out = Vec::new();
        for &b in s {
            let r = l.step(b);
            if r == Lex::Reject {
                return None;
            }
            out.push(r);
        }
        Some(out)
    }

    #[test]
    fn escapes_decode() {
        let r = lex_all(br#"\u00e9\n\ud83d\ude00"#).unwrap();
        let chars: Vec<char> = r
            .iter()
            .filter_map(|l| match l {
                Lex::Char(c) => Some(*c),
                _ => None,
            })
            .collect();
        assert_eq!(chars, vec!['é', '\n', '😀']);
    }

    #[test]
    fn lone_surrogates_die_early() {
        assert!(lex_all(br"\uDC").is_none(), "lone low surrogate");
        assert!(lex_all(br"\uD83D").is_some(), "high surrogate waits");
        assert!(lex_all(br"\uD83Dx").is_none(), "high surrogate alone");
        assert!(lex_all(br"\uD83D\uD8").is_none(), "two highs");
        assert!(lex_all(br"\uD83D\uDE").is_some());
    }

    #[test]
    fn utf8_rules() {
        assert!(lex_all("é😀".as_bytes()).is_some());
        assert!(lex_all(&[0xC0, 0x80]).is_none(), "overlong");
        assert!(lex_all(&[0xED, 0xA0]).is_none(), "encoded surrogate");
        assert!(lex_all(&[0xF4, 0x90]).is_none(), "above U+10FFFF");
        assert!(lex_all(&[0x80]).is_none(), "stray continuation");
        assert!(lex_all(b"a\nb").is_none(), "raw control character");
        assert!(lex_all(b"\x7f").is_some(), "DEL is allowed raw");
    }

    #[test]
    fn escape_could_be_tracks_prefix() {
        let mut l = StrLex::new();
        for &b in br"\u00" {
            l.step(b);
        }
        assert!(l.escape_could_be('é'));
        assert!(!l.escape_could_be('中'));
        let mut l = StrLex::new();
        for &b in br"\uD83D\u" {
            l.step(b);
        }
        assert!(l.escape_could_be('😀'));
        assert!(!l.escape_could_be('a'));
    }

    #[test]
    fn numbers() {
        let run = |s: &[u8], integer: bool| -> Option<bool> {
            let mut n = NumLex::start(s[0], integer)?;
            for &b in &s[1..] {
                if n.step(b) != NumOut::Next {
                    return None;
                }
            }
            Some(n.complete())
        };
        assert_eq!(run(b"-12.5e+3", false), Some(true));
        assert_eq!(run(b"0", true), Some(true));
        assert_eq!(run(b"-0", true), None, "-0 is not an integer here");
        assert_eq!(run(b"-0", false), Some(true));
        assert_eq!(run(b"1.", false), Some(false));
        assert_eq!(run(b"1.5", true), None);
        assert_eq!(run(b"01", false), None);
        assert_eq!(run(b"1e100", false), None, "exponent too long");
    }
}
