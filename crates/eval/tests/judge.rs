#![allow(clippy::unwrap_used)]
//! LLM-as-judge and generation scoring through the harness, with scripted backends: the
//! judge's prompt is the task's template over the row, the response and the reference; its
//! score comes out by regex; a reply without a score leaves the row out of the mean.

use ferrollama_eval::{Backend, Context, EvalOptions, LogLikelihood, Result, Task, run_task};

/// Answers each question with a fixed text; scores nothing.
struct Student;

impl Backend for Student {
    fn loglikelihood(&mut self, _: &Context, c: &[String]) -> Result<Vec<LogLikelihood>> {
        Ok(vec![
            LogLikelihood {
                ll: -1.0,
                is_greedy: false
            };
            c.len()
        ])
    }
    fn loglikelihood_rolling(&mut self, _: &str) -> Result<f64> {
        Ok(-1.0)
    }
    fn generate(&mut self, ctx: &Context, until: &[String], _: usize) -> Result<String> {
        let Context::Text(p) = ctx else {
            panic!("text prompt expected")
        };
        assert_eq!(until, ["\n"]);
        Ok(if p.contains("2+2") {
            " The answer is 4.".into()
        } else if p.contains("3+3") {
            " #### 7".into()
        } else {
            " I do not know".into()
        })
    }
}

/// Scores 9 when the response holds the reference, 1 otherwise, and says nothing
/// scorable about "I do not know"; records the prompts it saw.
struct Judge(Vec<String>);

impl Backend for Judge {
    fn loglikelihood(&mut self, _: &Context, _: &[String]) -> Result<Vec<LogLikelihood>> {
        unreachable!()
    }
    fn loglikelihood_rolling(&mut self, _: &str) -> Result<f64> {
        unreachable!()
    }
    fn generate(&mut self, ctx: &Context, _: &[String], max: usize) -> Result<String> {
        assert_eq!(max, 16);
        let Context::Chat(m) = ctx else {
            panic!("chat prompt expected")
        };
        let p = m[0].text().to_string();
        self.0.push(p.clone());
        Ok(if p.contains("do not know") {
            "Hard to say.".into()
        } else if p.contains("Reference: 4\n") && p.contains("4.") {
            "Rating: 9".into()
        } else {
            "Rating: 1".into()
        })
    }
}

#[test]
fn judge_scores_and_exact_match_per_filter() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("q.jsonl"),
        "{\"q\": \"2+2\", \"a\": \"4\"}\n{\"q\": \"3+3\", \"a\": \"6\"}\n{\"q\": \"x\", \"a\": \"1\"}\n",
    )
    .unwrap();
    let yaml = r#####"
task: judged
dataset_path: q.jsonl
output_type: generate_until
doc_to_text: "Q: {{q}}\nA:"
doc_to_target: a
generation_kwargs: {until: ["\n"], max_gen_toks: 8}
filter_list:
  - name: strict-match
    filter:
      - {function: regex, regex_pattern: "#### (\\-?[0-9]+)"}
  - name: flexible-extract
    filter:
      - {function: regex, regex_pattern: "(-?[0-9]+)", group_select: -1}
metric_list:
  - metric: exact_match
  - metric: llm_judge
    judge_template: "Question: {{q}}\nReference: {{target}}\nResponse: {{response}}\nRate 1-10."
    score_regex: "Rating: (\\d+)"
    judge_max_gen_toks: 16
"#####;
    let task = Task::parse(yaml, dir.path(), "t").unwrap();
    let mut judge = Judge(Vec::new());
    let r = run_task(
        &task,
        &mut Student,
        Some(&mut judge),
        &EvalOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let row = |f: &str, m: &str| {
        r.metrics
            .iter()
            .find(|x| x.filter == f && x.metric == m)
            .unwrap()
            .clone()
    };
    // strict: only "#### 7" extracts, and 7 ≠ 6 → 0/3.
    assert_eq!(row("strict-match", "exact_match").value, 0.0);
    // flexible: last number: "4" (right), "7" (wrong), "[invalid]" → 1/3.
    let flex = row("flexible-extract", "exact_match");
    assert!((flex.value - 1.0 / 3.0).abs() < 1e-12);
    // Judge: 9 and 1 scored, the third unscorable → mean 5 over n = 2; stderr
    // sqrt(((9−5)² + (1−5)²) / 1) / sqrt(2) = sqrt(32) / sqrt(2) = 4.
    let j = row("none", "llm_judge");
    assert_eq!((j.value, j.n), (5.0, 2));
    assert!((j.stderr.unwrap() - 4.0).abs() < 1e-12);
    assert_eq!(
        judge.0[0],
        "Question: 2+2\nReference: 4\nResponse:  The answer is 4.\nRate 1-10."
    );
    let rec = &r.samples[2];
    assert_eq!(rec.judgements.as_ref().unwrap()[0].score, None);
    assert_eq!(rec.judgements.as_ref().unwrap()[0].reply, "Hard to say.");
}

#[test]
fn judge_needs_a_template() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("q.jsonl"), "{\"q\": \"a\", \"a\": \"b\"}\n").unwrap();
    let yaml = "dataset_path: q.jsonl\noutput_type: generate_until\ndoc_to_text: q\n\
                doc_to_target: a\nmetric_list:\n  - metric: llm_judge\n";
    let e = Task::parse(yaml, dir.path(), "t").unwrap_err();
    assert!(
        e.to_string().contains("metric_list[0].judge_template"),
        "{e}"
    );
}
