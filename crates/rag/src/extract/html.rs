//! HTML's visible text, from html5ever's tokenizer (the WHATWG algorithm, so entities,
//! raw-text elements and broken markup read as a browser reads them) without building a DOM:
//! a few flags decide what is hidden, which keeps memory linear in the text.
//!
//! Hidden: `<head>` (also when it closes implicitly), `<script>`, `<style>`, `<noscript>`,
//! `<template>`, comments. Block elements become line breaks; runs of whitespace become one
//! space; empty lines are dropped. Not modelled: CSS (`display:none`), `<pre>` whitespace.

use std::cell::RefCell;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer,
};

use super::{ExtractError, Limits};

/// Elements whose start tag puts the tokenizer in a raw-text state (the tree builder does
/// this in a browser; without it `<script>if (a<b)...` would be read as markup).
fn raw_kind(name: &str) -> Option<RawKind> {
    match name {
        "script" => Some(RawKind::ScriptData),
        // `noscript` is raw text when scripting is on, as in every browser.
        "style" | "xmp" | "iframe" | "noembed" | "noframes" | "noscript" => Some(RawKind::Rawtext),
        "title" | "textarea" => Some(RawKind::Rcdata),
        _ => None,
    }
}

/// Elements whose content is never shown.
fn hidden(name: &str) -> bool {
    matches!(
        name,
        "script" | "style" | "noscript" | "template" | "title" | "iframe" | "noembed" | "noframes"
    )
}

/// Elements that may sit in `<head>`; any other start tag there closes it implicitly.
fn head_content(name: &str) -> bool {
    matches!(
        name,
        "title" | "meta" | "link" | "style" | "script" | "noscript" | "base" | "template"
    )
}

/// Elements that start a new line of text.
fn block(name: &str) -> bool {
    matches!(
        name,
        "address"
            | "article"
            | "aside"
            | "blockquote"
            | "body"
            | "br"
            | "caption"
            | "dd"
            | "details"
            | "dialog"
            | "div"
            | "dl"
            | "dt"
            | "fieldset"
            | "figcaption"
            | "figure"
            | "footer"
            | "form"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "header"
            | "hr"
            | "li"
            | "main"
            | "nav"
            | "ol"
            | "p"
            | "pre"
            | "section"
            | "summary"
            | "table"
            | "tbody"
            | "thead"
            | "tfoot"
            | "tr"
            | "ul"
            | "option"
            | "legend"
    )
}

#[derive(Default)]
struct State {
    out: String,
    /// Inside `<head>` (explicit or implied by the tags seen).
    in_head: bool,
    /// Depth of open hidden elements (`<template>` nests; the raw-text ones cannot).
    hidden_depth: usize,
    /// The output passed the limit; the rest of the input is skipped.
    overflow: bool,
}

struct Sink<'a> {
    state: RefCell<State>,
    limit: &'a Limits,
}

impl Sink<'_> {
    fn tag(&self, st: &mut State, tag: &Tag) -> TokenSinkResult<()> {
        let name: &str = &tag.name;
        match tag.kind {
            TagKind::StartTag => {
                if name == "head" {
                    st.in_head = true;
                } else if name == "body" || (st.in_head && !head_content(name)) {
                    st.in_head = false;
                }
                if hidden(name) && !tag.self_closing {
                    st.hidden_depth += 1;
                }
                if block(name) || matches!(name, "td" | "th") {
                    st.out.push(if block(name) { '\n' } else { ' ' });
                }
                if let Some(kind) = raw_kind(name) {
                    return TokenSinkResult::RawData(kind);
                }
                if name == "plaintext" {
                    return TokenSinkResult::Plaintext;
                }
            }
            TagKind::EndTag => {
                if name == "head" {
                    st.in_head = false;
                }
                if hidden(name) {
                    st.hidden_depth = st.hidden_depth.saturating_sub(1);
                }
                if block(name) {
                    st.out.push('\n');
                } else if matches!(name, "td" | "th") {
                    st.out.push(' ');
                }
            }
        }
        TokenSinkResult::Continue
    }

    fn text(&self, st: &mut State, text: &StrTendril) {
        if st.in_head || st.hidden_depth > 0 {
            return;
        }
        st.out.push_str(text);
        // Raw output may be larger than the final text (whitespace collapses), so the limit
        // is checked with slack here and exactly at the end.
        if st.out.len() > self.limit.max_output_bytes.saturating_mul(2) {
            st.overflow = true;
        }
    }
}

impl TokenSink for Sink<'_> {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut st = self.state.borrow_mut();
        if st.overflow {
            return TokenSinkResult::Continue;
        }
        match token {
            Token::TagToken(tag) => self.tag(&mut st, &tag),
            Token::CharacterTokens(text) => {
                self.text(&mut st, &text);
                TokenSinkResult::Continue
            }
            // Comments, doctypes, NULs, parse errors (the tokenizer recovers) and EOF add no text.
            _ => TokenSinkResult::Continue,
        }
    }
}

/// The visible text of an HTML document, one line per block.
pub(super) fn visible_text(src: &str, limits: &Limits) -> Result<String, ExtractError> {
    let sink = Sink {
        state: RefCell::new(State::default()),
        limit: limits,
    };
    let tokenizer = Tokenizer::new(sink, Default::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(src));
    // `feed` returns early only for `Script` results, which this sink never gives.
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    let st = tokenizer.sink.state.into_inner();
    if st.overflow {
        return Err(too_large(limits));
    }
    let mut text = String::with_capacity(st.out.len());
    for line in st.out.lines() {
        // `split_whitespace` also folds the no-break spaces that `&nbsp;` decodes to.
        let mut words = line.split_whitespace().peekable();
        if words.peek().is_none() {
            continue;
        }
        for (i, word) in words.enumerate() {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(word);
        }
        text.push('\n');
    }
    if text.len() > limits.max_output_bytes {
        return Err(too_large(limits));
    }
    Ok(text)
}

fn too_large(limits: &Limits) -> ExtractError {
    ExtractError::TooLarge(format!(
        "the page's text is over {} bytes; split the file into smaller ones",
        limits.max_output_bytes
    ))
}
