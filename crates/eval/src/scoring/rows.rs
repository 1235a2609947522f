//! Row scores, as llama-stack's basic and llm-as-judge scoring functions compute them.
//! A row is a JSON object; its columns are compared as Python compares the values.

use serde_json::{Map, Value, json};

use super::ScoringError;
use super::functions::{Scorer, ScoringFnParams};
use super::math;
use super::pyregex::PyRegex;
use super::pystr;

/// One dataset row.
pub type Row = Map<String, Value>;

/// Checks that every row has the columns `scorer` reads, naming the first row and column
/// that lacks one (llama-stack raises a KeyError there).
pub fn check_columns(function: &str, scorer: Scorer, rows: &[Row]) -> Result<(), ScoringError> {
    for (i, row) in rows.iter().enumerate() {
        for &column in scorer.columns() {
            if !row.contains_key(column) {
                return Err(ScoringError::MissingColumn {
                    row: i,
                    column,
                    function: function.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// A scorer that needs no model, ready to run over many rows (its regexes compiled once).
#[derive(Debug)]
pub enum RowScorer {
    Equality,
    SubsetOf,
    RegexParser(Vec<PyRegex>),
    MathResponse(PyRegex),
}

impl RowScorer {
    /// The scorer for `scorer` with these params; `None` for the judge, which needs a
    /// model (see [`JudgeScorer`]).
    pub fn new(
        scorer: Scorer,
        params: Option<&ScoringFnParams>,
    ) -> Result<Option<RowScorer>, ScoringError> {
        let regexes = || -> Result<&Vec<String>, ScoringError> {
            match params {
                Some(ScoringFnParams::RegexParser {
                    parsing_regexes, ..
                }) => Ok(parsing_regexes),
                _ => Err(ScoringError::Params(
                    "this scoring function needs params of type 'regex_parser'".into(),
                )),
            }
        };
        Ok(Some(match scorer {
            Scorer::Equality => RowScorer::Equality,
            Scorer::SubsetOf => RowScorer::SubsetOf,
            Scorer::RegexParser => RowScorer::RegexParser(
                regexes()?
                    .iter()
                    .map(|r| PyRegex::new(r))
                    .collect::<Result<_, _>>()?,
            ),
            Scorer::MathResponse => {
                let r = regexes()?;
                // llama-stack asserts exactly one.
                let [one] = r.as_slice() else {
                    return Err(ScoringError::Params(format!(
                        "regex_parser_math_response takes exactly one parsing regex, not {}",
                        r.len()
                    )));
                };
                RowScorer::MathResponse(PyRegex::new(one)?)
            }
            Scorer::LlmAsJudge => return Ok(None),
        }))
    }

    /// Row `i`'s score row (`{"score": 1.0}` or `{"score": 0.0}`); the columns must be
    /// there (see [`check_columns`]).
    pub fn score(&self, function: &str, i: usize, row: &Row) -> Result<Row, ScoringError> {
        let expected = row.get("expected_answer").unwrap_or(&Value::Null);
        let generated = row.get("generated_answer").unwrap_or(&Value::Null);
        let text = |column: &'static str, v: &'_ Value| -> Result<String, ScoringError> {
            v.as_str()
                .map(str::to_string)
                .ok_or(ScoringError::ColumnType {
                    row: i,
                    column,
                    expected: "a string",
                    function: function.to_string(),
                })
        };
        let hit = match self {
            RowScorer::Equality => py_eq(expected, generated),
            RowScorer::SubsetOf => match (expected, generated) {
                (Value::String(e), Value::String(g)) => g.contains(e.as_str()),
                (e, Value::Array(g)) => g.iter().any(|x| py_eq(e, x)),
                (e, Value::Object(g)) => e.as_str().is_some_and(|k| g.contains_key(k)),
                _ => {
                    return Err(ScoringError::ColumnType {
                        row: i,
                        column: "generated_answer",
                        expected: "a string containing expected_answer (or a list)",
                        function: function.to_string(),
                    });
                }
            },
            RowScorer::RegexParser(regexes) => {
                let g = text("generated_answer", generated)?;
                let mut parsed = None;
                for r in regexes {
                    if let Some(m) = r.search(&g)? {
                        parsed = Some(group1(r, &m.groups)?);
                        break;
                    }
                }
                // Python: `parsed_answer and parsed_answer == expected_answer`.
                matches!(parsed, Some(Some(p)) if !p.is_empty() && expected.as_str() == Some(p.as_str()))
            }
            RowScorer::MathResponse(r) => {
                let g = text("generated_answer", generated)?;
                let e = text("expected_answer", expected)?;
                math::math_response_equal(r, &g, &e)?
            }
        };
        let mut out = Row::new();
        out.insert("score".into(), json!(if hit { 1.0 } else { 0.0 }));
        Ok(out)
    }
}

/// A match's group 1 (Python's `match.group(1)`); a pattern without one is refused.
fn group1(r: &PyRegex, groups: &[Option<String>]) -> Result<Option<String>, ScoringError> {
    match groups.first() {
        Some(g) => Ok(g.clone()),
        None => Err(ScoringError::Regex {
            pattern: r.pattern().to_string(),
            message: "the pattern needs a capture group: group 1 is the parsed value".into(),
        }),
    }
}

/// Python's `==` on JSON values: numbers compare by value whatever their form (1 == 1.0),
/// `True == 1`, lists and dicts element by element.
pub fn py_eq(a: &Value, b: &Value) -> bool {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    };
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(p), Some(q)) => p == q,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Bool(_) | Value::Number(_), Value::Bool(_) | Value::Number(_)) => num(a) == num(b),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        _ => a == b,
    }
}

/// The judge's pure parts: its prompt for a row and the rating parsed from its reply.
#[derive(Debug)]
pub struct JudgeScorer {
    pub judge_model: String,
    template: String,
    regexes: Vec<PyRegex>,
}

impl JudgeScorer {
    /// From `llm_as_judge` params; llama-stack asserts a prompt template and the regexes.
    pub fn new(params: Option<&ScoringFnParams>) -> Result<JudgeScorer, ScoringError> {
        let Some(ScoringFnParams::LlmAsJudge {
            judge_model,
            prompt_template,
            judge_score_regexes,
            ..
        }) = params
        else {
            return Err(ScoringError::Params(
                "llm-as-judge needs params of type 'llm_as_judge' (judge_model, prompt_template, judge_score_regexes)".into(),
            ));
        };
        let template = prompt_template.clone().ok_or_else(|| {
            ScoringError::Params("llm_as_judge params need a prompt_template".into())
        })?;
        let regexes = judge_score_regexes
            .iter()
            .map(|r| PyRegex::new(r))
            .collect::<Result<Vec<_>, _>>()?;
        for r in &regexes {
            if r.groups() == 0 {
                return Err(ScoringError::Regex {
                    pattern: r.pattern().to_string(),
                    message: "the pattern needs a capture group: group 1 is the rating".into(),
                });
            }
        }
        Ok(JudgeScorer {
            judge_model: judge_model.clone(),
            template,
            regexes,
        })
    }

    /// The user message sent to the judge for `row`.
    pub fn prompt(&self, row: &Row) -> Result<String, ScoringError> {
        let mut fields = Map::new();
        for k in Scorer::LlmAsJudge.columns() {
            fields.insert(
                (*k).to_string(),
                row.get(*k).cloned().unwrap_or(Value::Null),
            );
        }
        pystr::format_named(&self.template, &fields)
    }

    /// The score row for the judge's `reply`: `{"score": rating or null, "judge_feedback":
    /// reply}`, the rating being group 1 of the first regex that matches (as llama-stack:
    /// no match leaves the score null).
    pub fn score(&self, reply: &str) -> Result<Row, ScoringError> {
        let mut rating = Value::Null;
        for r in &self.regexes {
            if let Some(m) = r.search(reply)? {
                rating = group1(r, &m.groups)?.map_or(Value::Null, Value::String);
                break;
            }
        }
        let mut out = Row::new();
        out.insert("score".into(), rating);
        out.insert("judge_feedback".into(), Value::String(reply.to_string()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::scoring::functions::builtins;

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap()
    }

    fn score(s: &RowScorer, v: Value) -> f64 {
        s.score("f", 0, &row(v)).unwrap()["score"].as_f64().unwrap()
    }

    #[test]
    fn equality_and_subset() {
        let e = RowScorer::Equality;
        assert_eq!(
            score(
                &e,
                json!({"expected_answer": "Paris", "generated_answer": "Paris"})
            ),
            1.0
        );
        assert_eq!(
            score(
                &e,
                json!({"expected_answer": "Paris", "generated_answer": "paris"})
            ),
            0.0
        );
        assert_eq!(
            score(&e, json!({"expected_answer": 1, "generated_answer": 1.0})),
            1.0
        );
        assert_eq!(
            score(&e, json!({"expected_answer": "1", "generated_answer": 1})),
            0.0
        );
        let s = RowScorer::SubsetOf;
        assert_eq!(
            score(
                &s,
                json!({"expected_answer": "Paris", "generated_answer": "It is Paris."})
            ),
            1.0
        );
        assert_eq!(
            score(
                &s,
                json!({"expected_answer": "Rome", "generated_answer": "It is Paris."})
            ),
            0.0
        );
        assert_eq!(
            score(&s, json!({"expected_answer": "", "generated_answer": "x"})),
            1.0
        );
        assert!(
            s.score(
                "f",
                3,
                &row(json!({"expected_answer": "a", "generated_answer": 5}))
            )
            .is_err()
        );
    }

    #[test]
    fn multiple_choice_regexes() {
        let b = builtins();
        let s = RowScorer::new(b[2].scorer, b[2].params.as_ref())
            .unwrap()
            .unwrap();
        let cases = [
            ("The best answer is B", "B", 1.0),
            ("answer: c", "C", 0.0), // the parsed letter keeps its case, as upstream
            ("answer: c", "c", 1.0),
            ("Answer :  D because", "D", 1.0),
            ("Antwort: A", "A", 1.0),
            ("答案：B", "B", 1.0),
            ("I think A", "A", 0.0),
            ("Answer: Ｂ", "Ｂ", 1.0),
        ];
        for (g, e, want) in cases {
            assert_eq!(
                score(&s, json!({"expected_answer": e, "generated_answer": g})),
                want,
                "{g:?} vs {e:?}"
            );
        }
    }

    #[test]
    fn missing_columns_name_row_and_column() {
        let rows = vec![
            row(json!({"expected_answer": "a", "generated_answer": "a"})),
            row(json!({"expected_answer": "a"})),
        ];
        let e = check_columns("basic::equality", Scorer::Equality, &rows).unwrap_err();
        assert_eq!(
            e,
            ScoringError::MissingColumn {
                row: 1,
                column: "generated_answer",
                function: "basic::equality".into()
            }
        );
        let e = check_columns("j", Scorer::LlmAsJudge, &rows[..1]).unwrap_err();
        assert!(
            e.to_string()
                .contains("row 0: missing column 'input_query'"),
            "{e}"
        );
    }

    #[test]
    fn judge_prompt_and_rating() {
        let p = ScoringFnParams::LlmAsJudge {
            judge_model: "m".into(),
            prompt_template: Some(
                "Q={input_query} E={expected_answer} G={generated_answer}".into(),
            ),
            judge_score_regexes: vec![r"Score:\s*(\d)".into(), r"(\d+)/10".into()],
            aggregation_functions: vec![],
        };
        let j = JudgeScorer::new(Some(&p)).unwrap();
        let r = row(json!({"input_query": "1+1", "expected_answer": 2, "generated_answer": "2"}));
        assert_eq!(j.prompt(&r).unwrap(), "Q=1+1 E=2 G=2");
        assert_eq!(j.score("ok. Score: 4").unwrap()["score"], json!("4"));
        assert_eq!(j.score("7/10").unwrap()["score"], json!("7"));
        let none = j.score("no idea").unwrap();
        assert_eq!(none["score"], Value::Null);
        assert_eq!(none["judge_feedback"], json!("no idea"));
        let bad = ScoringFnParams::LlmAsJudge {
            judge_model: "m".into(),
            prompt_template: Some("x".into()),
            judge_score_regexes: vec![r"\d".into()],
            aggregation_functions: vec![],
        };
        assert!(JudgeScorer::new(Some(&bad)).is_err());
    }
}
