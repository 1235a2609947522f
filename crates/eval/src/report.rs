//! The outcome of a task run: aggregated metrics for the table and per-sample records
//! for `--json`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::backend::Context;
use crate::metrics::SampleValue;
use crate::task::{OutputType, Target};

/// One aggregated metric (one row of lm-eval's table).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MetricRow {
    pub filter: String,
    pub metric: String,
    pub value: f64,
    /// None where lm-eval prints N/A (weighted perplexities, bits per byte, one sample).
    pub stderr: Option<f64>,
    pub n: usize,
    pub higher_is_better: bool,
}

/// What happened to one document.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SampleRecord {
    /// Index among the evaluated rows (0-based) and the file line it came from.
    pub doc_index: usize,
    pub line: usize,
    pub prompt: Context,
    pub target: Target,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    /// The continuations scored (choices with their delimiter, or the target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuations: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loglikelihoods: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_greedy: Option<Vec<bool>>,
    /// Generated text, before filters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Each filter's extraction from the response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filtered: Option<BTreeMap<String, String>>,
    /// The judge's replies and scores (`llm_judge` metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judgements: Option<Vec<crate::judge::Verdict>>,
    /// The predicted choice index (multiple choice) or the first filter's extraction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Value>,
    /// `metric,filter` → this document's value.
    pub metrics: BTreeMap<String, SampleValue>,
}

/// A task's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub task: String,
    pub output_type: OutputType,
    pub num_fewshot: usize,
    pub n: usize,
    pub metrics: Vec<MetricRow>,
    pub samples: Vec<SampleRecord>,
}

impl Report {
    /// lm-eval's results table: task, filter, n-shot, metric, value, ± stderr, n.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 7]> = vec![[
            "Task".into(),
            "Filter".into(),
            "n-shot".into(),
            "Metric".into(),
            "Value".into(),
            "Stderr".into(),
            "n".into(),
        ]];
        for (i, m) in self.metrics.iter().enumerate() {
            rows.push([
                if i == 0 {
                    self.task.clone()
                } else {
                    String::new()
                },
                m.filter.clone(),
                self.num_fewshot.to_string(),
                format!(
                    "{} {}",
                    m.metric,
                    if m.higher_is_better { "↑" } else { "↓" }
                ),
                format!("{:.4}", m.value),
                m.stderr.map_or("N/A".into(), |s| format!("± {s:.4}")),
                m.n.to_string(),
            ]);
        }
        let widths: Vec<usize> = (0..7)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (i, r) in rows.iter().enumerate() {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (s, &w))| {
                    let pad = w - s.chars().count();
                    // Numbers right-aligned, text left-aligned.
                    if matches!(c, 2 | 4 | 5 | 6) {
                        format!("{}{s}", " ".repeat(pad))
                    } else {
                        format!("{s}{}", " ".repeat(pad))
                    }
                })
                .collect();
            out.push_str(&format!("|{}|\n", cells.join("|")));
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
                out.push_str(&format!("|{}|\n", rule.join("|")));
            }
        }
        out
    }
}
