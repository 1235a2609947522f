//! Output constrained to a regular expression, for short fixed-format answers such as a
//! Llama Guard verdict (`safe` or `unsafe\nS1,S10`).
//!
//! The expression is compiled once into a dense DFA (regex-automata), anchored at the start
//! of the output and matched against the whole output: generation may stop only where the
//! text so far is a full match. A DFA state is one integer, so a step is one table lookup
//! and a vocabulary mask walks the token trie with one state per depth.
//!
//! Key choices: the expression is matched as `(?:regex)$`, so a match state is only ever
//! reached at the end of the output; match semantics are `All` (not leftmost-first), so the DFA keeps going after
//! a match (`S1` may still become `S10`); only states from which some match is reachable
//! survive (regex-automata turns the others into its dead state), so an accepted prefix is
//! never a dead end. Expressions with look-around other than `^`/`$` are refused by the
//! DFA builder. Unicode classes are allowed but can make the DFA large: the build is capped
//! at [`MAX_DFA_BYTES`].

use std::sync::Arc;

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};

use super::ConstraintError;
use super::trie::TokenTrie;

/// Largest DFA a pattern may compile to.
pub const MAX_DFA_BYTES: usize = 8 << 20;
/// Most bytes [`PatternMatcher::completion`] searches for a shortest ending.
const MAX_COMPLETION: usize = 4096;

/// A compiled regular expression that output must match as a whole.
#[derive(Clone)]
pub struct Pattern {
    dfa: Arc<dense::DFA<Vec<u32>>>,
    start: StateID,
    source: Arc<str>,
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pattern")
            .field("source", &self.source)
            .field("dfa_bytes", &self.dfa.memory_usage())
            .finish()
    }
}

/// Where generation stands in a [`Pattern`].
#[derive(Clone)]
pub struct PatternMatcher {
    dfa: Arc<dense::DFA<Vec<u32>>>,
    state: StateID,
}

impl std::fmt::Debug for PatternMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternMatcher")
            .field("state", &self.state)
            .finish()
    }
}

impl Pattern {
    /// Compiles `regex` (Rust `regex` syntax). The whole output must match it.
    pub fn new(regex: &str) -> Result<Pattern, ConstraintError> {
        let invalid = |message: String| ConstraintError::Invalid {
            pointer: "#".into(),
            message,
        };
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .minimize(true)
                    .dfa_size_limit(Some(MAX_DFA_BYTES))
                    .determinize_size_limit(Some(4 * MAX_DFA_BYTES)),
            )
            // Matches may end only at the end of the output: without `$` the DFA would report
            // a match of a prefix one byte late, from a state that cannot go on.
            .build(&format!("(?:{regex})$"))
            .map_err(|e| invalid(format!("pattern {regex:?}: {e}")))?;
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| invalid(format!("pattern {regex:?}: {e}")))?;
        let p = Pattern {
            dfa: Arc::new(dfa),
            start,
            source: regex.into(),
        };
        if p.matcher().completion().is_none() {
            return Err(invalid(format!("pattern {regex:?} matches no text")));
        }
        Ok(p)
    }

    /// The expression as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// A matcher at the start of the output.
    pub fn matcher(&self) -> PatternMatcher {
        PatternMatcher {
            dfa: self.dfa.clone(),
            state: self.start,
        }
    }

    /// Whether all of `text` matches.
    pub fn is_match(&self, text: &str) -> bool {
        let mut m = self.matcher();
        m.advance(text.as_bytes()) && m.is_complete()
    }
}

impl PatternMatcher {
    fn step(&self, s: StateID, b: u8) -> Option<StateID> {
        let n = self.dfa.next_state(s, b);
        (!self.dfa.is_dead_state(n) && !self.dfa.is_quit_state(n)).then_some(n)
    }

    /// Feeds bytes; returns false and leaves the matcher unchanged when no match can
    /// continue with them.
    pub fn advance(&mut self, bytes: &[u8]) -> bool {
        let mut s = self.state;
        for &b in bytes {
            match self.step(s, b) {
                Some(n) => s = n,
                None => return false,
            }
        }
        self.state = s;
        true
    }

    /// Whether `bytes` may come next.
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        let mut s = self.state;
        bytes.iter().all(|&b| match self.step(s, b) {
            Some(n) => {
                s = n;
                true
            }
            None => false,
        })
    }

    /// The output so far is a full match: EOS is allowed.
    pub fn is_complete(&self) -> bool {
        self.dfa.is_match_state(self.dfa.next_eoi_state(self.state))
    }

    /// Whether some byte may still come.
    pub fn can_continue(&self) -> bool {
        (0..=255u8).any(|b| self.step(self.state, b).is_some())
    }

    /// The shortest text (fewest bytes, then smallest bytes) that makes the output a full
    /// match: a breadth-first search over DFA states. `None` when no match is reachable
    /// within [`MAX_COMPLETION`] bytes.
    pub fn completion(&self) -> Option<Vec<u8>> {
        let mut seen = std::collections::HashSet::new();
        let mut frontier: Vec<(StateID, Vec<u8>)> = vec![(self.state, Vec::new())];
        seen.insert(self.state);
        for _ in 0..=MAX_COMPLETION {
            let mut next = Vec::new();
            for (s, path) in &frontier {
                if self.dfa.is_match_state(self.dfa.next_eoi_state(*s)) {
                    return Some(path.clone());
                }
            }
            for (s, path) in &frontier {
                for b in 0..=255u8 {
                    if let Some(n) = self.step(*s, b)
                        && seen.insert(n)
                    {
                        let mut p = path.clone();
                        p.push(b);
                        next.push((n, p));
                    }
                }
            }
            if next.is_empty() {
                return None;
            }
            frontier = next;
        }
        None
    }

    /// Sets `out[id]` to whether token `id` may come next (see
    /// [`super::Matcher::allowed_tokens`]; EOS is the caller's, allowed when complete).
    pub fn allowed_tokens(&self, vocab: &TokenTrie, out: &mut [bool]) {
        out.fill(false);
        let nodes = vocab.nodes();
        let ids = vocab.ids();
        // State after the prefix of each depth; [0] is the matcher's.
        let mut states = vec![self.state; vocab.max_depth() + 1];
        let mut i = 0;
        while i < nodes.len() {
            let n = nodes[i];
            let d = usize::from(n.depth);
            match self.step(states[d - 1], n.byte) {
                Some(s) => {
                    states[d] = s;
                    for &id in &ids[n.tok_start as usize..n.tok_end as usize] {
                        if let Some(o) = out.get_mut(id as usize) {
                            *o = true;
                        }
                    }
                    i += 1;
                }
                None => i = n.end as usize,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUARD: &str = "safe|unsafe\nS(?:[1-9]|1[0-4])(?:,S(?:[1-9]|1[0-4]))*";

    #[test]
    fn guard_grammar_full_matches_only() {
        let p = Pattern::new(GUARD).expect("compiles");
        for ok in ["safe", "unsafe\nS1", "unsafe\nS10,S3", "unsafe\nS14,S1,S2"] {
            assert!(p.is_match(ok), "{ok:?}");
        }
        for bad in [
            "",
            "saf",
            "unsafe",
            "unsafe\n",
            "unsafe\nS15",
            "unsafe\nS0",
            "safe\n",
            "unsafe\nS1,",
        ] {
            assert!(!p.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_continue_and_dead_ends_are_refused() {
        let p = Pattern::new(GUARD).expect("compiles");
        let mut m = p.matcher();
        assert!(m.accepts(b"uns"));
        assert!(!m.accepts(b"sx"));
        assert!(m.advance(b"unsafe\nS1"));
        assert!(m.is_complete());
        // S1 may become S10..S14 or go on with a comma.
        assert!(m.can_continue());
        assert!(m.accepts(b"0") && m.accepts(b",S2") && !m.accepts(b"5"));
        assert!(!m.advance(b"9"));
        assert!(m.advance(b"4"));
        assert!(!m.accepts(b"0"));
        let mut safe = p.matcher();
        assert!(safe.advance(b"safe") && safe.is_complete() && !safe.can_continue());
    }

    #[test]
    fn completion_is_the_shortest_ending() {
        let p = Pattern::new(GUARD).expect("compiles");
        assert_eq!(p.matcher().completion().as_deref(), Some(&b"safe"[..]));
        let mut m = p.matcher();
        assert!(m.advance(b"un"));
        assert_eq!(m.completion().as_deref(), Some(&b"safe\nS1"[..]));
    }

    #[test]
    fn mask_allows_exactly_the_viable_tokens() {
        let p = Pattern::new(GUARD).expect("compiles");
        let vocab: Vec<&[u8]> = vec![
            b"safe", b"unsafe", b"un", b"\n", b"S", b"1", b"12", b"x", b"", b"s",
        ];
        let trie = TokenTrie::new(vocab.iter().enumerate().map(|(i, t)| (i as u32, *t)));
        let mut out = vec![false; vocab.len()];
        p.matcher().allowed_tokens(&trie, &mut out);
        assert_eq!(
            out,
            [
                true, true, true, false, false, false, false, false, false, true
            ]
        );
        let mut m = p.matcher();
        assert!(m.advance(b"unsafe\nS"));
        m.allowed_tokens(&trie, &mut out);
        assert_eq!(
            out,
            [
                false, false, false, false, false, true, true, false, false, false
            ]
        );
    }

    #[test]
    fn unmatchable_and_malformed_patterns_are_errors() {
        assert!(Pattern::new("a[").is_err());
        assert!(Pattern::new("[^\\x00-\\x{10FFFF}]").is_err());
    }
}
