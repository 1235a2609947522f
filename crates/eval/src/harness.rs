//! Runs a task on a backend: a prompt per document, the requests its output type needs,
//! lm-eval's per-document metrics, then the aggregates with their standard errors.

use std::collections::BTreeMap;

use serde_json::json;

use crate::backend::{Backend, Context};
use crate::dataset::Doc;
use crate::error::{EvalError, Result};
use crate::metrics::{self, Metric, SampleValue, count_bytes, count_words, exact_match};
use crate::prompt::{PromptBuilder, PromptOptions};
use crate::report::{MetricRow, Report, SampleRecord};
use crate::task::{OutputType, Target, Task};

/// How to run a task.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Evaluate the first N rows only.
    pub limit: Option<usize>,
    /// Overrides the task file's `num_fewshot`.
    pub num_fewshot: Option<usize>,
    /// Few-shot sampling seed (lm-eval's `--fewshot_random_seed`, 1234).
    pub seed: u64,
    pub apply_chat_template: bool,
    pub fewshot_as_multiturn: bool,
    /// Resamples for bootstrapped standard errors (lm-eval's `--bootstrap_iters`, 100000).
    pub bootstrap_iters: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            limit: None,
            num_fewshot: None,
            seed: 1234,
            apply_chat_template: false,
            fewshot_as_multiturn: false,
            bootstrap_iters: 100_000,
        }
    }
}

/// The gold choice indices of a multiple-choice document.
fn gold_indices(target: &Target, choices: &[String]) -> Result<Vec<usize>> {
    let index = |i: i64| {
        usize::try_from(i)
            .ok()
            .filter(|&i| i < choices.len())
            .ok_or_else(|| {
                EvalError::Invalid(format!(
                    "doc_to_target {i} is not an index into the {} choices",
                    choices.len()
                ))
            })
    };
    match target {
        Target::Index(i) => Ok(vec![index(*i)?]),
        Target::Indices(v) => v.iter().map(|&i| index(i)).collect(),
        Target::Text(t) => choices
            .iter()
            .position(|c| c == t)
            .map(|i| vec![i])
            .ok_or_else(|| {
                EvalError::Invalid(format!("doc_to_target `{t}` is not one of the choices"))
            }),
        Target::Texts(_) => Err(EvalError::Invalid(
            "doc_to_target is a list of texts; multiple choice needs indices".into(),
        )),
    }
}

/// A target as the reference texts of a generation or the continuation to score.
fn target_texts(target: &Target, choices: Option<&[String]>) -> Result<Vec<String>> {
    let text = |i: i64| match choices {
        None => Ok(i.to_string()),
        Some(c) => usize::try_from(i)
            .ok()
            .and_then(|i| c.get(i).cloned())
            .ok_or_else(|| {
                EvalError::Invalid(format!(
                    "doc_to_target {i} is not an index into the {} choices",
                    c.len()
                ))
            }),
    };
    match target {
        Target::Text(t) => Ok(vec![t.clone()]),
        Target::Texts(v) => Ok(v.clone()),
        Target::Index(i) => Ok(vec![text(*i)?]),
        Target::Indices(v) => v.iter().map(|&i| text(i)).collect(),
    }
}

fn key(metric: Metric, filter: &str) -> String {
    format!("{},{filter}", metric.name())
}

/// Evaluates `task` on `backend`; `progress(done, total)` after each document. `judge`
/// scores generations for `llm_judge` metrics (None: the evaluated model judges itself).
pub fn run_task(
    task: &Task,
    backend: &mut dyn Backend,
    mut judge: Option<&mut dyn Backend>,
    opts: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report> {
    let num_fewshot = opts.num_fewshot.unwrap_or(task.num_fewshot);
    if task.output_type == OutputType::LoglikelihoodRolling && num_fewshot > 0 {
        return Err(EvalError::Invalid(
            "loglikelihood_rolling scores whole texts and takes no few-shot examples".into(),
        ));
    }
    if opts.limit == Some(0) {
        return Err(EvalError::Invalid("--limit must be at least 1".into()));
    }
    let docs: &[Doc] =
        &task.docs.docs[..opts.limit.unwrap_or(usize::MAX).min(task.docs.docs.len())];
    let mut prompts = PromptBuilder::new(
        task,
        PromptOptions {
            num_fewshot,
            seed: opts.seed,
            chat: opts.apply_chat_template,
            multiturn: opts.fewshot_as_multiturn,
        },
    )?;
    let mut samples = Vec::with_capacity(docs.len());
    progress(0, docs.len());
    for (i, doc) in docs.iter().enumerate() {
        let rec = match task.output_type {
            OutputType::LoglikelihoodRolling => {
                let target = task.doc_to_target(doc)?;
                let text = task.row(doc, target_texts(&target, None))?.join("");
                let ll = task.row(doc, backend.loglikelihood_rolling(&text))?;
                let (words, bytes) = (count_words(&text) as f64, count_bytes(&text) as f64);
                let mut m = BTreeMap::new();
                for spec in &task.metrics {
                    let v = match spec.metric {
                        Metric::WordPerplexity => SampleValue::Pair(ll, words),
                        _ => SampleValue::Pair(ll, bytes),
                    };
                    m.insert(key(spec.metric, "none"), v);
                }
                SampleRecord {
                    doc_index: i,
                    line: doc.line,
                    prompt: Context::Text(String::new()),
                    target,
                    choices: None,
                    continuations: Some(vec![text]),
                    loglikelihoods: Some(vec![ll]),
                    is_greedy: None,
                    response: None,
                    filtered: None,
                    judgements: None,
                    prediction: None,
                    metrics: m,
                }
            }
            _ => one_doc(task, backend, &mut judge, &mut prompts, i, doc, opts)?,
        };
        samples.push(rec);
        progress(i + 1, docs.len());
    }
    // Aggregate per filter, in the task's metric order; a judge scores the raw response.
    let filters: Vec<String> = match task.output_type {
        OutputType::GenerateUntil => task.filters.iter().map(|f| f.name.clone()).collect(),
        _ => vec!["none".into()],
    };
    let mut rows = Vec::new();
    for (j, f) in filters.iter().enumerate() {
        for spec in &task.metrics {
            let judged = spec.metric == Metric::LlmJudge;
            if judged && j > 0 {
                continue;
            }
            let f: &str = if judged { "none" } else { f };
            let k = key(spec.metric, f);
            let values: Vec<SampleValue> = samples
                .iter()
                .filter_map(|s: &SampleRecord| s.metrics.get(&k).copied())
                .collect();
            let agg = metrics::aggregate(spec.metric, &values, opts.bootstrap_iters);
            rows.push(MetricRow {
                filter: f.to_string(),
                metric: spec.metric.name().into(),
                value: agg.value,
                stderr: agg.stderr,
                n: values.len(),
                higher_is_better: spec.metric.higher_is_better(),
            });
        }
    }
    Ok(Report {
        task: task.name.clone(),
        output_type: task.output_type,
        num_fewshot,
        n: samples.len(),
        metrics: rows,
        samples,
    })
}

/// A document of a multiple-choice, generation or log-likelihood task.
fn one_doc(
    task: &Task,
    backend: &mut dyn Backend,
    judge: &mut Option<&mut dyn Backend>,
    prompts: &mut PromptBuilder<'_>,
    i: usize,
    doc: &Doc,
    opts: &EvalOptions,
) -> Result<SampleRecord> {
    let prompt = prompts.context(doc)?;
    let target = task.doc_to_target(doc)?;
    let choices = task.doc_to_choice(doc)?;
    let mut m = BTreeMap::new();
    let mut rec = SampleRecord {
        doc_index: i,
        line: doc.line,
        prompt,
        target: target.clone(),
        choices: choices.clone(),
        continuations: None,
        loglikelihoods: None,
        is_greedy: None,
        response: None,
        filtered: None,
        judgements: None,
        prediction: None,
        metrics: BTreeMap::new(),
    };
    match task.output_type {
        OutputType::MultipleChoice => {
            let choices = choices.unwrap_or_default();
            let gold = task.row(doc, gold_indices(&target, &choices))?;
            // lm-eval drops the delimiter under the chat template: the choice is the reply.
            let delim = if opts.apply_chat_template {
                ""
            } else {
                task.target_delimiter.as_str()
            };
            let conts: Vec<String> = choices.iter().map(|c| format!("{delim}{c}")).collect();
            let lls = task.row(doc, backend.loglikelihood(&rec.prompt, &conts))?;
            let ll: Vec<f64> = lls.iter().map(|l| l.ll).collect();
            let greedy: Vec<bool> = lls.iter().map(|l| l.is_greedy).collect();
            let s = metrics::score_choices(&ll, &greedy, &choices, &gold);
            for spec in &task.metrics {
                let v = match spec.metric {
                    Metric::AccNorm => s.acc_norm,
                    Metric::ExactMatch => s.exact_match,
                    _ => s.acc,
                };
                m.insert(key(spec.metric, "none"), SampleValue::Scalar(v));
            }
            rec.prediction = Some(json!({"acc": s.pred, "acc_norm": s.pred_norm}));
            rec.continuations = Some(conts);
            rec.loglikelihoods = Some(ll);
            rec.is_greedy = Some(greedy);
        }
        OutputType::Loglikelihood => {
            let cont = task
                .row(doc, target_texts(&target, choices.as_deref()))?
                .into_iter()
                .next()
                .unwrap_or_default();
            let conts = vec![cont];
            let l = task.row(doc, backend.loglikelihood(&rec.prompt, &conts))?;
            let l = l.first().copied().ok_or_else(|| {
                EvalError::Invalid("the backend returned no log-likelihood".into())
            })?;
            for spec in &task.metrics {
                let v = match spec.metric {
                    Metric::Perplexity => l.ll,
                    _ => f64::from(u8::from(l.is_greedy)),
                };
                m.insert(key(spec.metric, "none"), SampleValue::Scalar(v));
            }
            rec.continuations = Some(conts);
            rec.loglikelihoods = Some(vec![l.ll]);
            rec.is_greedy = Some(vec![l.is_greedy]);
        }
        OutputType::GenerateUntil => {
            let refs = task.row(doc, target_texts(&target, choices.as_deref()))?;
            let response = task.row(
                doc,
                backend.generate(&rec.prompt, &task.until, task.max_gen_toks),
            )?;
            let mut filtered = BTreeMap::new();
            for f in &task.filters {
                let extracted = f.apply(&response);
                for spec in task
                    .metrics
                    .iter()
                    .filter(|s| s.metric == Metric::ExactMatch)
                {
                    let v = exact_match(&extracted, &refs, &spec.exact_match);
                    m.insert(key(spec.metric, &f.name), SampleValue::Scalar(v));
                }
                if rec.prediction.is_none() {
                    rec.prediction = Some(json!(extracted));
                }
                filtered.insert(f.name.clone(), extracted);
            }
            let mut verdicts = Vec::new();
            for spec in &task.metrics {
                let Some(j) = &spec.judge else { continue };
                let v = match judge {
                    Some(b) => crate::judge::judge(task, j, &mut **b, doc, &response, &refs)?,
                    None => crate::judge::judge(task, j, backend, doc, &response, &refs)?,
                };
                if let Some(score) = v.score {
                    m.insert(key(Metric::LlmJudge, "none"), SampleValue::Scalar(score));
                }
                verdicts.push(v);
            }
            if !verdicts.is_empty() {
                rec.judgements = Some(verdicts);
            }
            rec.response = Some(response);
            rec.filtered = Some(filtered);
        }
        OutputType::LoglikelihoodRolling => {}
    }
    rec.metrics = m;
    Ok(rec)
}
