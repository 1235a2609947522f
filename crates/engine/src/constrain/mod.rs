//! Constrained decoding for JSON output: `response_format: {"type": "json_object"}`,
//! `{"type": "json_schema", ...}` and forced tool calls.
//!
//! What we guarantee: text accepted by a [`Matcher`] is always a prefix of a JSON document
//! that `serde_json` parses and that [`Schema::validate`] accepts, and from every accepted
//! prefix some valid completion remains (no dead ends), so generation only fails to finish
//! when `max_tokens` cuts it — and [`Matcher::completion`] gives a short valid ending to
//! append before that happens. Three pieces:
//!
//! - [`Schema`]: a JSON Schema compiled into a small graph ([`Schema::compile`]). Only
//!   keywords we can enforce byte by byte are accepted; anything else that changes what
//!   validates is an error naming the keyword and its JSON pointer, so the server can answer
//!   400 instead of producing output that might not validate.
//! - [`Matcher`]: an incremental recognizer fed the bytes of generated text. `anyOf`
//!   alternatives run in parallel as separate stacks (an NFA), dead ones are dropped. The
//!   cost of a step (and of a mask) grows with the alternatives alive at once.
//! - [`TokenTrie`]: a model's vocabulary as a byte trie, walked once per mask so shared
//!   prefixes are checked once ([`Schema::allowed_tokens`]). [`Schema::accepts`] checks a
//!   single sampled token, which is usually enough (sample first, mask only on rejection).
//!
//! Forced tool calls: [`Schema::tool_call`] builds `{"name": ..., "parameters": ...}` with
//! each tool's parameters schema as its own document (its `$ref`s keep working) and `name`
//! first (so the other tools' branches die before the arguments).
//!
//! Supported keywords: `type` (a name or a list), `properties`, `required`,
//! `additionalProperties` (`true`, `false` or a schema), `items` (one schema), `minItems`,
//! `maxItems`, `minLength`, `maxLength` (in characters), `enum`, `const`, `anyOf`, `oneOf`,
//! `allOf` of a single schema, `$ref` (JSON pointers into the same document: `#`,
//! `#/$defs/..`, `#/definitions/..`; recursion is fine), `$defs`/`definitions`, and boolean
//! schemas. Ignored annotations: `title`, `description`, `default`, `examples`, `$schema`,
//! `format`, `$comment`, `$id`, `$anchor`, `deprecated`, `readOnly`, `writeOnly`,
//! `contentMediaType`, `contentEncoding` and `x-*`. Everything else (`pattern`, `minimum`,
//! `maximum`, `multipleOf`, `not`, `allOf` of several schemas, `if`, `patternProperties`,
//! `uniqueItems`, `minProperties`, `items` as an array, value keywords next to
//! `anyOf`/`oneOf`/`allOf`/`$ref`, remote `$ref`s, ...) is refused.
//!
//! Key choices (each is a restriction of what JSON Schema allows, so whatever we generate
//! still validates under a standard validator):
//! - `additionalProperties` defaults to `false` when `properties` is given (a model should
//!   not invent keys); without `properties` any key is allowed. `true` or a schema opts in.
//!   A `required` key missing from `properties` is allowed (any value) unless
//!   `additionalProperties` says otherwise.
//!   A key may appear once; `}` is refused until every `required` key is present.
//! - `oneOf` is treated as `anyOf` (exclusivity cannot be checked while generating, and
//!   tool-call schemas built from distinct `name` constants are exclusive anyway).
//! - Integers are `-?(0|[1-9][0-9]*)` but never `-0`: serde_json parses `-0` as the float
//!   `-0.0`, which breaks clients that deserialize the field into an integer. For the same
//!   reason a `"type": "integer"` value stays within `i64` (at most [`MAX_INTEGER_DIGITS`]
//!   digits, and a 19-digit one no larger than `i64::MAX`/`i64::MIN`): serde_json turns a
//!   larger one into a float such as `1.2e23`.
//! - Numbers are kept in `f64` range: at most [`MAX_INT_DIGITS`] integer digits,
//!   [`MAX_FRAC_DIGITS`] fraction digits and [`MAX_EXP_DIGITS`] exponent digits
//!   (serde_json rejects `1e400` as out of range).
//! - `enum`/`const` values are generated as their compact serde_json text.
//! - Whitespace only as a pretty-printer lays it out (below), and at most [`MAX_NESTING`]
//!   nested arrays/objects (serde_json refuses more than 128).
//!
//! Whitespace between tokens (inside strings it is content, and free). Left free, a model
//! pads output with space runs and blank lines, as in
//! `{\n  "name"            : "R..."\n \n,\n"age"`. So only the layouts of `json.dumps`
//! (one space after `:` and `,`), of `json.dumps(indent=2)`, `JSON.stringify(v, null, 4)`
//! and serde_json's pretty printer (a newline and indentation) are allowed, and none at all
//! (what OpenAI's structured outputs return):
//!
//! ```text
//! after `{` `[` `,`, before `}` `]`:  ""  |  " "  |  "\n" " "{0,4*depth}
//! after `:`:                          ""  |  " "
//! before `:` or `,`, around the top-level value:  nothing
//! ```
//!
//! `depth` is the number of open arrays/objects ([`INDENT_PER_LEVEL`] spaces per level).
//! Tabs, `\r`, blank lines, trailing spaces and space runs without a newline are refused.
//! Whitespace after a value is allowed only where its container may close. Per thread this
//! is one small enum and a whitespace byte is a single match, so the mask costs what it
//! did. There is no compact-only mode: compact output is always accepted, and a mode would
//! not make the mask cheaper.
//!
//! A decoding loop (the caller allows EOS exactly when the matcher is complete):
//!
//! ```
//! use ferrollama_engine::constrain::{Schema, TokenTrie};
//!
//! let schema = Schema::compile(&serde_json::json!({
//!     "type": "object",
//!     "properties": {"city": {"type": "string"}},
//!     "required": ["city"]
//! }))
//! .expect("a supported schema");
//! // Once per model: the bytes each token decodes to (control tokens decode to none).
//! let vocab: Vec<&[u8]> = vec![b"{", b"\"city\"", b":", b" \"Paris\"", b"}", b""];
//! let trie = TokenTrie::new(vocab.iter().enumerate().map(|(id, t)| (id as u32, *t)));
//! let mut m = schema.matcher();
//! let mut mask = vec![false; vocab.len()];
//! while !m.is_complete() {
//!     // A sampler would first try its own pick with `schema.accepts(&m, bytes)`.
//!     schema.allowed_tokens(&m, &trie, &mut mask);
//!     let pick = mask.iter().rposition(|&ok| ok).expect("never stuck");
//!     assert!(m.advance(vocab[pick]));
//! }
//! assert!(!m.can_continue()); // only EOS now
//! ```

mod analyze;
mod compile;
mod complete;
mod error;
mod lex;
mod matcher;
mod pattern;
mod schema;
mod state;
mod trie;
mod validate;

#[cfg(test)]
mod tests;

pub use error::ConstraintError;
pub use matcher::Matcher;
pub use pattern::{MAX_DFA_BYTES, Pattern, PatternMatcher};
pub use schema::Schema;
pub use trie::TokenTrie;

use std::sync::Arc;

/// What a sequence's output must be: a JSON document of a schema, or a whole match of a
/// regular expression.
#[derive(Debug, Clone)]
pub enum Constraint {
    Json(Arc<Schema>),
    Pattern(Arc<Pattern>),
}

/// Where generation stands in a [`Constraint`].
#[derive(Debug, Clone)]
pub enum Progress {
    Json(Matcher),
    Pattern(PatternMatcher),
}

impl Constraint {
    /// A cursor at the start of the output.
    pub fn start(&self) -> Progress {
        match self {
            Constraint::Json(s) => Progress::Json(s.matcher()),
            Constraint::Pattern(p) => Progress::Pattern(p.matcher()),
        }
    }
}

impl Progress {
    /// Feeds bytes; false (and unchanged) when they cannot continue valid output.
    pub fn advance(&mut self, bytes: &[u8]) -> bool {
        match self {
            Progress::Json(m) => m.advance(bytes),
            Progress::Pattern(m) => m.advance(bytes),
        }
    }

    /// Whether `bytes` may come next.
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        match self {
            Progress::Json(m) => m.accepts(bytes),
            Progress::Pattern(m) => m.accepts(bytes),
        }
    }

    /// The output is whole: EOS is allowed.
    pub fn is_complete(&self) -> bool {
        match self {
            Progress::Json(m) => m.is_complete(),
            Progress::Pattern(m) => m.is_complete(),
        }
    }

    /// Whether some byte may still come.
    pub fn can_continue(&self) -> bool {
        match self {
            Progress::Json(m) => m.can_continue(),
            Progress::Pattern(m) => m.can_continue(),
        }
    }

    /// A short ending that makes the output whole (see [`Matcher::completion`]).
    pub fn completion(&self) -> Option<Vec<u8>> {
        match self {
            Progress::Json(m) => m.completion(),
            Progress::Pattern(m) => m.completion(),
        }
    }

    /// Which tokens may come next (see [`Matcher::allowed_tokens`]).
    pub fn allowed_tokens(&self, vocab: &TokenTrie, out: &mut [bool]) {
        match self {
            Progress::Json(m) => m.allowed_tokens(vocab, out),
            Progress::Pattern(m) => m.allowed_tokens(vocab, out),
        }
    }
}

/// Most indentation spaces per open array/object after a newline between tokens: 4 covers
/// the usual 2-, 3- and 4-space pretty-printers at every depth (see the module docs).
pub const INDENT_PER_LEVEL: u16 = 4;
/// Most arrays/objects open at once in generated output, and in values [`Schema::validate`]
/// accepts.
pub const MAX_NESTING: u32 = 64;
/// Most nested subschemas in a schema document.
pub const MAX_SCHEMA_DEPTH: usize = 64;
/// Most subschemas, properties and `enum` values in one schema.
pub const MAX_SCHEMA_NODES: usize = 10_000;
/// Most digits before the decimal point of a generated number.
pub const MAX_INT_DIGITS: u8 = 24;
/// Most digits of a `"type": "integer"` value, as in `i64::MAX`.
pub const MAX_INTEGER_DIGITS: u8 = 19;
/// Most digits after the decimal point of a generated number.
pub const MAX_FRAC_DIGITS: u8 = 32;
/// Most exponent digits of a generated number.
pub const MAX_EXP_DIGITS: u8 = 2;
/// Most `anyOf` branches alive at once; beyond this the latest are dropped (which only
/// narrows what may be generated, never lets an invalid document through).
pub const MAX_THREADS: usize = 256;
