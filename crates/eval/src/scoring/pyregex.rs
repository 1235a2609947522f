//! Python `re` patterns on Rust: llama-stack's scoring functions and the regexes callers
//! register are written for Python, so they are translated to `fancy-regex` syntax (which
//! adds the backtracking features Python has: lookaround, backreferences) before
//! compiling.
//!
//! The translation covers what differs in practice: a `{` that does not start a valid
//! repetition is a literal in Python and an error in Rust (llama-stack's math regex has
//! `\boxed{(?P<X>.*)}`); `{,m}` means `{0,m}`; `\Z` is Rust's `\z`; `(?P=name)` is
//! `\k<name>`; and inside a character class `[`, `&&` and `~~` are plain characters in
//! Python but set syntax in Rust.

use super::ScoringError;

/// A compiled Python-syntax pattern.
#[derive(Debug, Clone)]
pub struct PyRegex {
    pattern: String,
    re: fancy_regex::Regex,
}

/// A match's text and its capture groups (`None`: the group did not take part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyMatch {
    pub whole: String,
    pub groups: Vec<Option<String>>,
}

impl PyRegex {
    /// Compiles `pattern` as Python's `re.compile` would.
    pub fn new(pattern: &str) -> Result<PyRegex, ScoringError> {
        let translated = translate(pattern);
        let re = fancy_regex::Regex::new(&translated).map_err(|e| ScoringError::Regex {
            pattern: pattern.to_string(),
            message: e.to_string(),
        })?;
        Ok(PyRegex {
            pattern: pattern.to_string(),
            re,
        })
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// How many capture groups the pattern has (not counting the whole match).
    pub fn groups(&self) -> usize {
        self.re.captures_len().saturating_sub(1)
    }

    fn run_error(&self, e: fancy_regex::Error) -> ScoringError {
        ScoringError::Regex {
            pattern: self.pattern.clone(),
            message: e.to_string(),
        }
    }

    fn to_match(c: &fancy_regex::Captures<'_>) -> PyMatch {
        PyMatch {
            whole: c.get(0).map_or(String::new(), |m| m.as_str().to_string()),
            groups: (1..c.len())
                .map(|i| c.get(i).map(|m| m.as_str().to_string()))
                .collect(),
        }
    }

    /// `re.search`: the first match anywhere in `text`.
    pub fn search(&self, text: &str) -> Result<Option<PyMatch>, ScoringError> {
        let c = self.re.captures(text).map_err(|e| self.run_error(e))?;
        Ok(c.as_ref().map(Self::to_match))
    }

    /// `re.match`: a match that starts at the beginning of `text`.
    pub fn match_start(&self, text: &str) -> Result<Option<PyMatch>, ScoringError> {
        let c = self.re.captures(text).map_err(|e| self.run_error(e))?;
        // The first match is the leftmost; if it does not start at 0, none does.
        Ok(c.filter(|c| c.get(0).is_some_and(|m| m.start() == 0))
            .as_ref()
            .map(Self::to_match))
    }

    /// Every non-overlapping match, in order (`re.finditer`).
    pub fn find_all(&self, text: &str) -> Result<Vec<PyMatch>, ScoringError> {
        self.re
            .captures_iter(text)
            .map(|c| c.map(|c| Self::to_match(&c)).map_err(|e| self.run_error(e)))
            .collect()
    }

    /// `re.sub(pattern, repl, text)` where `repl` builds each replacement from the match.
    pub fn sub(
        &self,
        text: &str,
        mut repl: impl FnMut(&PyMatch) -> String,
    ) -> Result<String, ScoringError> {
        let mut out = String::new();
        let mut last = 0;
        for c in self.re.captures_iter(text) {
            let c = c.map_err(|e| self.run_error(e))?;
            let Some(m) = c.get(0) else { continue };
            out.push_str(&text[last..m.start()]);
            out.push_str(&repl(&Self::to_match(&c)));
            last = m.end();
        }
        out.push_str(&text[last..]);
        Ok(out)
    }
}

/// Python pattern syntax → fancy-regex syntax (see the module docs).
pub fn translate(p: &str) -> String {
    let chars: Vec<char> = p.chars().collect();
    let mut out = String::with_capacity(p.len() + 8);
    let mut i = 0;
    let mut in_class = false;
    // Index of the class's first character, where `]` (or `^]`) is a literal.
    let mut class_start = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            match chars.get(i + 1) {
                Some('Z') if !in_class => out.push_str("\\z"),
                Some(&n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
            i += 2;
            continue;
        }
        if in_class {
            match c {
                ']' if i > class_start => {
                    in_class = false;
                    out.push(']');
                }
                ']' => out.push_str("\\]"),
                '[' => out.push_str("\\["),
                '&' | '~' => {
                    out.push('\\');
                    out.push(c);
                }
                '^' if i == class_start => {
                    out.push('^');
                    class_start = i + 1;
                }
                _ => out.push(c),
            }
            i += 1;
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                class_start = i + 1;
                out.push('[');
            }
            '(' if chars[i..].starts_with(&['(', '?', 'P', '=']) => {
                // (?P=name) → \k<name>
                let rest: String = chars[i + 4..].iter().collect();
                if let Some(end) = rest.find(')') {
                    out.push_str("\\k<");
                    out.push_str(&rest[..end]);
                    out.push('>');
                    i += 4 + rest[..end].chars().count() + 1;
                    continue;
                }
                out.push('(');
            }
            '{' => match repetition(&chars[i..]) {
                Some((len, lo, hi)) => {
                    out.push('{');
                    out.push_str(if lo.is_empty() { "0" } else { &lo });
                    if let Some(hi) = hi {
                        out.push(',');
                        out.push_str(&hi);
                    }
                    out.push('}');
                    i += len;
                    continue;
                }
                None => out.push_str("\\{"),
            },
            '}' => out.push_str("\\}"),
            ']' => out.push_str("\\]"),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// A repetition `{m}`, `{m,}`, `{,n}` or `{m,n}` at the start of `s`: its length in
/// characters, the lower bound and the upper bound (`Some("")` for an open one).
fn repetition(s: &[char]) -> Option<(usize, String, Option<String>)> {
    let close = s.iter().position(|&c| c == '}')?;
    let inner: String = s[1..close].iter().collect();
    let (lo, hi) = match inner.split_once(',') {
        Some((lo, hi)) => (lo.to_string(), Some(hi.to_string())),
        None => (inner.clone(), None),
    };
    let digits = |x: &str| x.chars().all(|c| c.is_ascii_digit());
    if !digits(&lo) || !hi.as_deref().is_none_or(digits) {
        return None;
    }
    // Python: `{}` and `{,}` are literals.
    if lo.is_empty() && hi.as_deref().is_none_or(str::is_empty) {
        return None;
    }
    Some((close + 1, lo, hi))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn translates_python_only_syntax() {
        assert_eq!(
            translate(r"\$\\boxed{(?P<X>.*)}\$"),
            r"\$\\boxed\{(?P<X>.*)\}\$"
        );
        assert_eq!(translate(r"a{2}b{,3}c{1,}d{}"), r"a{2}b{0,3}c{1,}d\{\}");
        assert_eq!(translate(r"x\Z[[&&]]"), r"x\z[\[\&\&]\]");
        assert_eq!(translate(r"(?P<q>a)(?P=q)"), r"(?P<q>a)\k<q>");
        assert_eq!(translate(r"[]a]"), r"[\]a]");
    }

    #[test]
    fn search_groups_and_sub() {
        let r = PyRegex::new(r"(?i)Answer\s*:\s*([A-D])").unwrap();
        let m = r.search("so... answer: c.").unwrap().unwrap();
        assert_eq!(m.groups, vec![Some("c".to_string())]);
        let r = PyRegex::new(r"(a)|(b)").unwrap();
        assert_eq!(
            r.search("b").unwrap().unwrap().groups,
            vec![None, Some("b".into())]
        );
        let r = PyRegex::new(r"(\\text\{)(.*?)(\})").unwrap();
        let s = r
            .sub(r"1\text{cm} and \text{x}", |m| {
                m.groups[1].clone().unwrap_or_default()
            })
            .unwrap();
        assert_eq!(s, "1cm and x");
        assert!(PyRegex::new("(").is_err());
        let r = PyRegex::new(r"b").unwrap();
        assert!(r.match_start("ab").unwrap().is_none());
        assert!(r.match_start("ba").unwrap().is_some());
    }
}
