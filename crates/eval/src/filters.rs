//! Answer-extraction filters applied to generated text before scoring, as lm-eval's
//! `filter_list` (`lm_eval/filters/extraction.py`, `selection.py`, `transformation.py`).
//!
//! The `regex` filter is Python's `re.findall` then `[group_select]`: `group_select`
//! picks which *match* (negative counts from the end, so −1 is the last), not which
//! capture group. A match of a pattern with several groups is the tuple of groups, of
//! which the first non-empty one is kept. The result is stripped; no match (or a
//! `group_select` past the matches, where Python would raise) gives `fallback`.

use regex::Regex;

/// One step of a filter pipeline.
#[derive(Debug, Clone)]
pub enum FilterStep {
    Regex {
        re: Regex,
        group_select: i64,
        fallback: String,
    },
    /// Keep the first response (we generate one per document, so this is the identity).
    TakeFirst,
    Lowercase,
    Uppercase,
    /// lm-eval's `remove_whitespace`: strips leading whitespace.
    RemoveWhitespace,
}

/// A named filter pipeline; its name labels the metrics it produces (`none`,
/// `strict-match`, `flexible-extract`, ...).
#[derive(Debug, Clone)]
pub struct Filter {
    pub name: String,
    pub steps: Vec<FilterStep>,
}

impl Filter {
    /// lm-eval's default when a task names no filters.
    pub fn none() -> Filter {
        Filter {
            name: "none".into(),
            steps: vec![FilterStep::TakeFirst],
        }
    }

    pub fn apply(&self, response: &str) -> String {
        let mut s = response.to_string();
        for step in &self.steps {
            s = step.apply(&s);
        }
        s
    }
}

impl FilterStep {
    pub fn apply(&self, s: &str) -> String {
        match self {
            FilterStep::Regex {
                re,
                group_select,
                fallback,
            } => regex_extract(re, *group_select, fallback, s),
            FilterStep::TakeFirst => s.to_string(),
            FilterStep::Lowercase => s.to_lowercase(),
            FilterStep::Uppercase => s.to_uppercase(),
            FilterStep::RemoveWhitespace => s.trim_start().to_string(),
        }
    }
}

/// What `re.findall` returns for one match: the whole match without groups, the group
/// with one, the groups (unmatched ones empty) with several.
fn findall(re: &Regex, s: &str) -> Vec<Vec<String>> {
    let groups = re.captures_len() - 1;
    re.captures_iter(s)
        .map(|c| {
            if groups == 0 {
                vec![c.get(0).map_or("", |m| m.as_str()).to_string()]
            } else {
                (1..=groups)
                    .map(|g| c.get(g).map_or("", |m| m.as_str()).to_string())
                    .collect()
            }
        })
        .collect()
}

fn regex_extract(re: &Regex, group_select: i64, fallback: &str, s: &str) -> String {
    let matches = findall(re, s);
    let n = matches.len() as i64;
    let i = if group_select < 0 {
        n + group_select
    } else {
        group_select
    };
    if matches.is_empty() || i < 0 || i >= n {
        return fallback.to_string();
    }
    let m = &matches[i as usize];
    let picked = if m.len() == 1 {
        Some(m[0].as_str())
    } else {
        m.iter().map(String::as_str).find(|g| !g.is_empty())
    };
    match picked {
        Some(p) => p.trim().to_string(),
        None => fallback.to_string(),
    }
}
