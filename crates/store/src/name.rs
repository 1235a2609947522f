//! Entry names and repository file paths: what may become a path under the store root.
//!
//! An entry name is one path component by construction: ASCII letters, digits and
//! `. _ + -`, starting with a letter or digit (so never `.`, `..` or a hidden file), at most
//! 128 bytes. A file path from a hub is relative, `/`-separated, and each component is a
//! plain name: no `..`, `.`, empty component, backslash, drive letter or control
//! character. Both checks run on everything read back from a manifest as well, so a
//! tampered manifest cannot point outside its entry either.

use crate::error::{Result, StoreError};

const MAX_NAME: usize = 128;

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')
}

/// Checks that `name` is a valid entry name.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why| {
        Err(StoreError::BadName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME {
        return bad("longer than 128 bytes");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("must start with a letter or digit");
    }
    if !name.chars().all(name_char) {
        return bad("only letters, digits and . _ + - are allowed");
    }
    Ok(())
}

/// A valid entry name made from `s` (a file stem or repository name): other characters
/// become `-`, leading non-alphanumerics are dropped, long names are cut.
pub fn derive_name(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| if name_char(c) { c } else { '-' })
        .collect();
    let trimmed = mapped.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut out: String = trimmed.chars().take(MAX_NAME).collect();
    if out.is_empty() {
        out = "model".into();
    }
    out
}

/// Checks a repository-relative file path (from a hub listing or a manifest) and returns
/// why it is refused.
pub fn check_rel_path(path: &str) -> std::result::Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.len() > 1024 {
        return Err("longer than 1024 bytes");
    }
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if path.contains('\\') {
        return Err("backslash in path");
    }
    if path.chars().any(|c| c.is_control()) {
        return Err("control character in path");
    }
    let first = path.split('/').next().unwrap_or_default();
    if first.len() >= 2 && first.as_bytes()[1] == b':' {
        return Err("drive letter in path");
    }
    for part in path.split('/') {
        match part {
            "" => return Err("empty path component"),
            "." | ".." => return Err("`.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// [`check_rel_path`] as a [`StoreError::UnsafePath`].
pub fn validate_rel_path(path: &str) -> Result<()> {
    check_rel_path(path).map_err(|why| StoreError::UnsafePath {
        path: path.to_string(),
        why,
    })
}

/// Names among `candidates` close to `name`: same text ignoring case, one containing the
/// other, or within a small edit distance. Best first, at most five.
pub fn close_matches<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let lower = name.to_ascii_lowercase();
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter_map(|c| {
            let cl = c.to_ascii_lowercase();
            let d = edit_distance(&lower, &cl);
            let budget = (lower.len().max(cl.len()) / 3).max(2);
            if d <= budget {
                Some((d, c))
            } else if cl.contains(&lower) || lower.contains(&cl) {
                Some((budget + 1, c))
            } else {
                None
            }
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(5)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// Levenshtein distance over bytes (names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["SmolLM2-135M-Instruct.Q4_1", "a", "Llama-3.2-1B", "x+y_z"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".", "..", "../x", "a/b", "/abs", ".hidden", "a\\b", "a b", "-x",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_name(&"a".repeat(129)).is_err());
        assert_eq!(derive_name("../weird name/x"), "weird-name-x");
        assert_eq!(derive_name("..."), "model");
        assert!(validate_name(&derive_name("é/ü")).is_ok());
    }

    #[test]
    fn paths() {
        for ok in [
            "model.gguf",
            "original/params.json",
            "a/b/c.safetensors",
            "..x.gguf",
        ] {
            assert!(check_rel_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../../etc/x",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "C:/x",
            "a\\..\\b",
            "a\nb",
        ] {
            assert!(check_rel_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn close() {
        let c = ["SmolLM2-135M-Instruct.Q4_1", "Llama-3.2-1B", "tiny"];
        assert_eq!(
            close_matches("smollm2-135m-instruct.q4_1", c),
            vec!["SmolLM2-135M-Instruct.Q4_1"]
        );
        assert_eq!(close_matches("tiny2", c), vec!["tiny"]);
        assert_eq!(
            close_matches("SmolLM2", c),
            vec!["SmolLM2-135M-Instruct.Q4_1"]
        );
        assert!(close_matches("zzzzzzzz", c).is_empty());
    }
}
