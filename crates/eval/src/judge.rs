//! LLM-as-judge: a judge model reads a prompt made from the row, the evaluated model's
//! response and the reference, and writes a score that a regex pulls out.
//!
//! The task file's `metric: llm_judge` names `judge_template` (Jinja over the row's fields
//! plus `response`, `target` — the first reference — and `references`), `score_regex` (the
//! first capture group of its first match, else the whole match, is the score; default: the
//! first number), `judge_max_gen_toks` (32), `judge_until` and `judge_apply_chat_template`
//! (true: the prompt is one user turn in the judge's chat template). The judge generates
//! greedily. A reply without a score leaves that row out of the mean (the table's n says
//! how many were scored) and keeps the reply in the per-sample record.

use serde_json::{Value, json};

use crate::backend::{Backend, Context};
use crate::dataset::Doc;
use crate::error::Result;
use crate::task::{JudgeSpec, Task};

/// The judge's verdict on one response.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// None when the reply holds no score.
    pub score: Option<f64>,
    pub reply: String,
}

/// The score in a judge's reply: the first capture group of the first match (the whole
/// match for a pattern without groups), as a number.
pub fn parse_score(re: &regex::Regex, reply: &str) -> Option<f64> {
    let c = re.captures(reply)?;
    let m = c.get(1).or_else(|| c.get(0))?;
    m.as_str()
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

/// Asks `judge` to score `response` to `doc`.
pub fn judge(
    task: &Task,
    spec: &JudgeSpec,
    judge: &mut dyn Backend,
    doc: &Doc,
    response: &str,
    references: &[String],
) -> Result<Verdict> {
    let mut fields = doc.fields.clone();
    fields.insert("response".into(), json!(response));
    fields.insert(
        "target".into(),
        references.first().map_or(Value::Null, |r| json!(r)),
    );
    fields.insert("references".into(), json!(references));
    let prompt = task.row(doc, task.render(&spec.template, &fields))?;
    let ctx = if spec.chat {
        Context::Chat(vec![ferrollama_engine::ChatMessage::new("user", &prompt)])
    } else {
        Context::Text(prompt)
    };
    let reply = task.row(doc, judge.generate(&ctx, &spec.until, spec.max_gen_toks))?;
    Ok(Verdict {
        score: parse_score(&spec.score_regex, &reply),
        reply,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_is_first_group_of_first_match() {
        let re = regex::Regex::new(r"Score: (\d+(?:\.\d+)?)").unwrap();
        assert_eq!(parse_score(&re, "Good. Score: 7.5/10, Score: 2"), Some(7.5));
        assert_eq!(parse_score(&re, "no verdict"), None);
        let whole = regex::Regex::new(r"\d+").unwrap();
        assert_eq!(parse_score(&whole, "I give it 8"), Some(8.0));
    }
}
