//! Reading Llama Guard's answer: `safe`, or `unsafe` and a line of comma-separated codes
//! (spec §5.1), with llama-stack's rules.

use crate::categories::by_code;
use crate::error::{Result, SafetyError};

/// The regular expression guard output is constrained to, for a model with `n` categories:
/// whatever a model (even a stand-in that was never trained for it) generates under it
/// parses with [`parse`].
pub fn grammar(n: usize) -> String {
    let code = if n >= 10 {
        format!("S(?:[1-9]|1[0-{}])", n - 10)
    } else {
        format!("S[1-{n}]")
    };
    format!("safe|unsafe\n{code}(?:,{code})*")
}

/// A parsed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub safe: bool,
    /// The violated codes as the model wrote them, first occurrence order, no repeats.
    pub codes: Vec<String>,
}

/// Parses guard output as llama-stack does: trimmed, exactly `safe`, or `unsafe\n` then
/// one line of codes split on `,` (each trimmed). Codes must be known categories (`S1` ..
/// `S14`); anything else is [`SafetyError::Unparsable`].
pub fn parse(output: &str) -> Result<Answer> {
    let t = output.trim();
    if t == "safe" {
        return Ok(Answer {
            safe: true,
            codes: Vec::new(),
        });
    }
    let bad = || SafetyError::Unparsable(output.chars().take(200).collect());
    let rest = t.strip_prefix("unsafe\n").ok_or_else(bad)?;
    if rest.contains('\n') {
        return Err(bad());
    }
    let mut codes: Vec<String> = Vec::new();
    for c in rest.split(',') {
        let c = c.trim();
        if by_code(c).is_none() {
            return Err(bad());
        }
        if !codes.iter().any(|x| x == c) {
            codes.push(c.to_string());
        }
    }
    Ok(Answer { safe: false, codes })
}

/// Applies exclusions: codes the user excluded are dropped, and a violation left with no
/// code is safe (llama-stack: a violation whose codes are all excluded is safe).
pub fn apply_excluded(mut a: Answer, excluded: &[String]) -> Answer {
    a.codes.retain(|c| !excluded.contains(c));
    if a.codes.is_empty() {
        a.safe = true;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsafe_(codes: &[&str]) -> Answer {
        Answer {
            safe: false,
            codes: codes.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn well_formed_answers() {
        let safe = Answer {
            safe: true,
            codes: vec![],
        };
        assert_eq!(parse("safe"), Ok(safe.clone()));
        assert_eq!(parse("\n\nsafe\n"), Ok(safe.clone()));
        assert_eq!(parse(" safe "), Ok(safe));
        assert_eq!(parse("unsafe\nS1"), Ok(unsafe_(&["S1"])));
        assert_eq!(parse("unsafe\nS10,S3"), Ok(unsafe_(&["S10", "S3"])));
        assert_eq!(parse("\n\nunsafe\nS2, S14 \n"), Ok(unsafe_(&["S2", "S14"])));
        assert_eq!(parse("unsafe\nS1,S1"), Ok(unsafe_(&["S1"])));
    }

    #[test]
    fn malformed_answers_are_errors() {
        for bad in [
            "",
            "Safe",
            "safe\nS1",
            "unsafe",
            "unsafe\n",
            "unsafe S1",
            "unsafe\nS15",
            "unsafe\nS0",
            "unsafe\nS1,",
            "unsafe\nS1\nS2",
            "unsafe\n\nS1",
            "I cannot help",
            "unsafe\nviolence",
            "safe.",
        ] {
            assert!(
                matches!(parse(bad), Err(SafetyError::Unparsable(_))),
                "{bad:?} parsed"
            );
        }
    }

    #[test]
    fn excluded_codes_are_dropped_and_an_all_excluded_violation_is_safe() {
        let ex = vec!["S1".to_string()];
        assert_eq!(
            apply_excluded(unsafe_(&["S1", "S3"]), &ex),
            unsafe_(&["S3"])
        );
        assert!(apply_excluded(unsafe_(&["S1"]), &ex).safe);
    }

    #[test]
    fn grammar_is_the_category_range() {
        assert_eq!(
            grammar(14),
            "safe|unsafe\nS(?:[1-9]|1[0-4])(?:,S(?:[1-9]|1[0-4]))*"
        );
        assert_eq!(
            grammar(13),
            "safe|unsafe\nS(?:[1-9]|1[0-3])(?:,S(?:[1-9]|1[0-3]))*"
        );
        assert_eq!(grammar(5), "safe|unsafe\nS[1-5](?:,S[1-5])*");
    }
}
