//! `basic::regex_parser_math_response`: llama-stack's math answer normalization (from the
//! Minerva paper, its `math_utils.py`), ported step by step so the same answers compare
//! equal.
//!
//! One step differs: upstream's `try_evaluate_latex` evaluates the answer with sympy's
//! LaTeX parser (formatting the value as `.2e`) when sympy and its ANTLR runtime are
//! installed, and leaves the text as it is otherwise. Here it always leaves the text as
//! it is, as upstream does without them; `try_evaluate_frac` (numeric `\frac{a}{b}`) is
//! ported. Python's `str.isdigit` is approximated by `char::is_numeric` (they differ on
//! characters such as `½`).

use super::ScoringError;
use super::pyregex::PyRegex;
use super::pystr::format_e2;

/// Minerva's substitutions, applied in order to every occurrence.
const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
];

/// Units and filler removed from answers, in order.
const REMOVED_EXPRESSIONS: &[&str] = &[
    "square",
    "ways",
    "integers",
    "dollars",
    "mph",
    "inches",
    "ft",
    "hours",
    "km",
    "units",
    "\\ldots",
    "sue",
    "points",
    "feet",
    "minutes",
    "digits",
    "cents",
    "degrees",
    "cm",
    "gm",
    "pounds",
    "meters",
    "meals",
    "edges",
    "students",
    "childrentickets",
    "multiples",
    "\\text{s}",
    "\\text{.}",
    "\\text{\ns}",
    "\\text{}^2",
    "\\text{}^3",
    "\\text{\n}",
    "\\text{}",
    "\\mathrm{th}",
    "^\\circ",
    "^{\\circ}",
    "\\;",
    ",\\!",
    "{,}",
    "\"",
    "\\dots",
];

/// One of this module's own patterns, compiled once per process (a scoring call runs
/// them on every row).
fn fixed(pattern: &'static str) -> Result<std::sync::Arc<PyRegex>, ScoringError> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<&'static str, Arc<PyRegex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut g = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = g.get(pattern) {
        return Ok(r.clone());
    }
    let r = Arc::new(PyRegex::new(pattern)?);
    g.insert(pattern, r.clone());
    Ok(r)
}

/// Whether `generated` and `expected` are the same answer: the generated text up to any
/// `Q:` / `A:` marker, its answer extracted by `regex` (the first match), the expected
/// text's by `.*`, both normalized.
pub fn math_response_equal(
    regex: &PyRegex,
    generated: &str,
    expected: &str,
) -> Result<bool, ScoringError> {
    let g = normalize_final_answer(first_answer(generated), regex)?;
    let g = try_evaluate_frac(&g)?;
    let any = fixed(".*")?;
    let e = normalize_final_answer(expected, &any)?;
    let e = try_evaluate_frac(&e)?;
    Ok(g == e)
}

/// The text before the first `Q:`, then before the first `A:`.
pub fn first_answer(text: &str) -> &str {
    let t = text.split("Q:").next().unwrap_or(text);
    t.split("A:").next().unwrap_or(t)
}

/// Numeric `\frac{a}{b}` → `a/b` as `0.2e` (`\frac{1}{2}` → `5.00e-01`).
pub fn try_evaluate_frac(expression: &str) -> Result<String, ScoringError> {
    let re = fixed(r"\\frac{([^}]+)}{([^}]+)}")?;
    let mut out = expression.to_string();
    for m in re.find_all(expression)? {
        let (Some(Some(a)), Some(Some(b))) = (m.groups.first(), m.groups.get(1)) else {
            continue;
        };
        let (Some(a), Some(b)) = (py_float(a), py_float(b)) else {
            continue;
        };
        if b == 0.0 {
            continue; // ZeroDivisionError upstream: left as it is
        }
        out = out.replacen(&m.whole, &format_e2(a / b), 1);
    }
    Ok(out)
}

/// Python's `float(s)` for the forms fractions hold (surrounding whitespace allowed).
fn py_float(s: &str) -> Option<f64> {
    let t = s.trim().replace('_', "");
    if t.is_empty() || t.contains(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c))) {
        return None;
    }
    match t.to_ascii_lowercase().trim_start_matches(['+', '-']) {
        "inf" | "infinity" | "nan" => {}
        x if x.chars().any(|c| c.is_ascii_alphabetic() && c != 'e') => return None,
        _ => {}
    }
    t.parse().ok()
}

/// The content of the last `\boxed{...}` (or `\boxed x$`), outer braces removed; empty
/// when there is none or it is not closed.
pub fn extract_result_from_boxed(answer: &str) -> String {
    const BOX: &str = "\\boxed";
    let Some(start) = answer.rfind(BOX) else {
        return String::new();
    };
    let rest: Vec<char> = answer[start + BOX.len()..].trim().chars().collect();
    let curly = rest.first() == Some(&'{');
    let mut open = 0i64;
    let mut found = None;
    for (i, &c) in rest.iter().enumerate() {
        if c == '{' {
            open += 1;
        } else if c == '}' {
            open -= 1;
        }
        if open == 0 {
            if curly {
                found = Some(rest[..=i].iter().collect::<String>().trim().to_string());
                break;
            } else if c == '$' {
                found = Some(rest[..i].iter().collect::<String>().trim().to_string());
                break;
            }
        }
    }
    let Some(mut a) = found else {
        return String::new();
    };
    while a.starts_with('{') && a.ends_with('}') && a.len() >= 2 {
        a = a[1..a.len() - 1].trim().to_string();
    }
    a
}

/// Minerva's `normalize_final_answer` with llama-stack's extraction (the first match of
/// `regex`, else the last `\boxed{}`); an answer with nothing extracted is returned as
/// it is.
pub fn normalize_final_answer(final_answer: &str, regex: &PyRegex) -> Result<String, ScoringError> {
    // re.findall: the whole match without groups, group 1 with one; more is a tuple
    // upstream, which then fails.
    let extraction = match regex.find_all(final_answer)?.into_iter().next() {
        Some(m) => match m.groups.as_slice() {
            [] => m.whole,
            [g] => g.clone().unwrap_or_default(),
            _ => {
                return Err(ScoringError::Regex {
                    pattern: regex.pattern().to_string(),
                    message: "a math parsing regex has at most one capture group".into(),
                });
            }
        },
        None => extract_result_from_boxed(final_answer),
    };
    if extraction.is_empty() {
        return Ok(final_answer.to_string());
    }
    let mut s = extraction.rsplit('=').next().unwrap_or("").to_string();
    for (before, after) in SUBSTITUTIONS {
        s = s.replace(before, after);
    }
    for expr in REMOVED_EXPRESSIONS {
        s = s.replace(expr, "");
    }
    let group = |m: &super::pyregex::PyMatch, i: usize| {
        m.groups.get(i).cloned().flatten().unwrap_or_default()
    };
    s = fixed(r"(.*?)(\$)(.*?)(\$)(.*)")?.sub(&s, |m| format!("${}$", group(m, 2)))?;
    for p in [
        r"(\\text\{)(.*?)(\})",
        r"(\\textbf\{)(.*?)(\})",
        r"(\\overline\{)(.*?)(\})",
        r"(\\boxed\{)(.*)(\})",
    ] {
        s = fixed(p)?.sub(&s, |m| group(m, 1))?;
    }
    s = fixed(r"(frac)([^{])(.)")?.sub(&s, |m| {
        format!("frac{{{}}}{{{}}}", group(m, 1), group(m, 2))
    })?;
    s = fixed(r"(sqrt)([^{])")?.sub(&s, |m| format!("sqrt{{{}}}", group(m, 1)))?;
    s = s.replace('$', "");
    let no_commas = s.replace(',', "");
    if !no_commas.is_empty() && no_commas.chars().all(char::is_numeric) {
        s = no_commas;
    }
    if fixed(r"\([a-zA-Z]\)")?.match_start(&s)?.is_some()
        && let Some(c) = s.chars().nth(1)
    {
        s = c.to_string();
    }
    Ok(normalise_result(&s))
}

/// `_normalise_result`: the MATH dataset's string normalization.
fn normalise_result(string: &str) -> String {
    let mut s = string.replace('\n', "");
    s = s.replace("\\!", "");
    s = s.replace("\\\\", "\\");
    for f in ["cfrac", "tfrac", "dfrac"] {
        s = s.replace(f, "frac");
    }
    s = s.replace("\\left", "");
    s = s.replace("\\le", "");
    s = s.replace("\\right", "");
    s = s.replace("^{\\circ}", "");
    s = s.replace("^\\circ", "");
    s = s.replace("\\$", "");
    s = remove_right_units(&s);
    s = s.replace("\\%", "");
    s = s.replace(" .", " 0.");
    s = s.replace("{.", "{0.");
    if s.is_empty() {
        return s;
    }
    if s.starts_with('.') {
        s = format!("0{s}");
    }
    s = s.rsplit('=').next().unwrap_or("").to_string();
    s = fix_sqrt(&s);
    s = s.replace(' ', "");
    s = fix_fracs(&s);
    if s == "0.5" {
        s = "\\frac{1}{2}".into();
    }
    fix_a_slash_b(&s)
}

/// Drops a unit written as `\text{ unit}` at the end.
fn remove_right_units(s: &str) -> String {
    let parts: Vec<&str> = s.split("\\text{ ").collect();
    match parts.as_slice() {
        [before, _] => (*before).to_string(),
        _ => s.to_string(),
    }
}

/// `\sqrt3` → `\sqrt{3}`.
fn fix_sqrt(s: &str) -> String {
    if !s.contains("\\sqrt") {
        return s.to_string();
    }
    let mut splits = s.split("\\sqrt");
    let mut out = splits.next().unwrap_or("").to_string();
    for split in splits {
        let mut cs = split.chars();
        match cs.next() {
            None => return s.to_string(),
            Some('{') => {
                out.push_str("\\sqrt");
                out.push_str(split);
            }
            Some(a) => {
                out.push_str(&format!("\\sqrt{{{a}}}{}", cs.as_str()));
            }
        }
    }
    out
}

/// `\frac12` → `\frac{1}{2}`, `\frac1{72}` → `\frac{1}{72}`.
fn fix_fracs(s: &str) -> String {
    let mut substrs = s.split("\\frac");
    let mut out = substrs.next().unwrap_or("").to_string();
    for sub in substrs {
        out.push_str("\\frac");
        let cs: Vec<char> = sub.chars().collect();
        match cs.as_slice() {
            [] => return s.to_string(),
            ['{', ..] => out.push_str(sub),
            [_] => return s.to_string(),
            [a, b, rest @ ..] => {
                let rest: String = rest.iter().collect();
                if *b != '{' {
                    out.push_str(&format!("{{{a}}}{{{b}}}{rest}"));
                } else {
                    out.push_str(&format!("{{{a}}}{b}{rest}"));
                }
            }
        }
    }
    out
}

/// `3/4` → `\frac{3}{4}` when both sides are integers written plainly.
fn fix_a_slash_b(s: &str) -> String {
    let parts: Vec<&str> = s.split('/').collect();
    let canonical_int = |x: &str| {
        let d = x.strip_prefix('-').unwrap_or(x);
        !d.is_empty()
            && d.chars().all(|c| c.is_ascii_digit())
            && (d == "0" || !d.starts_with('0'))
            && x != "-0"
    };
    match parts.as_slice() {
        [a, b] if canonical_int(a) && canonical_int(b) => format!("\\frac{{{a}}}{{{b}}}"),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::scoring::functions::MATH_ANSWER_REGEX;

    fn norm(s: &str) -> String {
        normalize_final_answer(s, &PyRegex::new(".*").unwrap()).unwrap()
    }

    #[test]
    fn boxed_extraction() {
        assert_eq!(
            extract_result_from_boxed(r"so \boxed{\frac{1}{2}}."),
            r"\frac{1}{2}"
        );
        assert_eq!(extract_result_from_boxed(r"\boxed 5$ x"), "5");
        assert_eq!(extract_result_from_boxed(r"\boxed{{7}}"), "7");
        assert_eq!(extract_result_from_boxed(r"\boxed{7"), "");
        assert_eq!(extract_result_from_boxed("none"), "");
    }

    #[test]
    fn normalization_steps() {
        assert_eq!(norm("100,000"), "100000");
        assert_eq!(norm("x = 5"), "5");
        assert_eq!(norm("\\frac12"), "\\frac{1}{2}");
        assert_eq!(norm("3/4"), "\\frac{3}{4}");
        assert_eq!(norm("0.5"), "\\frac{1}{2}");
        assert_eq!(norm(".5"), "\\frac{1}{2}");
        assert_eq!(norm("\\sqrt3"), "\\sqrt{3}");
        assert_eq!(norm("(b)"), "b");
        assert_eq!(norm("10 dollars"), "10");
        assert_eq!(norm("90^\\circ"), "90");
        assert_eq!(norm("\\text{(A)}"), "A");
        assert_eq!(norm("\\dfrac{3}{4}"), "\\frac{3}{4}");
        assert_eq!(norm("5\\%"), "5");
        assert_eq!(norm(""), "");
        // Outputs of llama-stack's own math_utils.py on the same inputs.
        for (input, want) in [
            ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
            ("5\\text{ cm}", "5"),
            ("an apple = 2", "2"),
            ("\\$1,000", "1000"),
            ("The answer is $x^2$ and more", "x^2"),
            ("\\textbf{7}", "7"),
            ("\\frac1{72}", "\\frac{1}{{}72}"),
            ("-0/3", "-0/3"),
            ("\\sqrt{2}/2", "\\sqrt{2}/2"),
            ("\\overline{12}", "12"),
            ("14^{\\circ}", "14"),
        ] {
            assert_eq!(norm(input), want, "{input:?}");
        }
    }

    #[test]
    fn fractions_evaluate() {
        assert_eq!(try_evaluate_frac("\\frac{1}{2}").unwrap(), "5.00e-01");
        assert_eq!(
            try_evaluate_frac("\\frac{1}{0} \\frac{a}{2}").unwrap(),
            "\\frac{1}{0} \\frac{a}{2}"
        );
        assert_eq!(
            try_evaluate_frac("\\frac{3}{4}+\\frac{3}{4}").unwrap(),
            "7.50e-01+7.50e-01"
        );
    }

    #[test]
    fn math_response_scores() {
        let r = PyRegex::new(MATH_ANSWER_REGEX).unwrap();
        let eq = |g: &str, e: &str| math_response_equal(&r, g, e).unwrap();
        assert!(eq(
            "Thus the final answer is $\\boxed{0.5}$",
            "\\frac{1}{2}"
        ));
        assert!(eq("The final answer is: $\\boxed{\\dfrac{1}{2}}$", "1/2"));
        assert!(eq("so \\boxed{42}. Q: next", "42"));
        assert!(eq("The final answer is $\\boxed{12 dollars}$", "12"));
        assert!(!eq("The final answer is $\\boxed{13}$", "12"));
        assert!(!eq("I don't know", "12"));
    }
}
