//! Metric definitions and their aggregations, as lm-evaluation-harness 0.4 defines them
//! (`lm_eval/api/metrics.py` and `ConfigurableTask.process_results` in
//! `lm_eval/api/task.py`).
//!
//! * multiple choice: `acc` = 1 when the choice with the highest summed log-likelihood is
//!   the gold one; `acc_norm` the same after dividing each log-likelihood by the length of
//!   its choice string. lm-eval's code takes Python's `len()` of the choice (Unicode code
//!   points; its docs say "bytes", which is the same for ASCII choices), so we count chars.
//!   Ties go to the first choice (`np.argmax`).
//! * `exact_match` (Hugging Face `evaluate`'s, which lm-eval calls): strip
//!   `regexes_to_ignore`, optionally lower-case, drop punctuation / digits, compare.
//! * loglikelihood: `perplexity` = exp(−mean ll) over documents, `acc` = is_greedy.
//! * loglikelihood_rolling: `word_perplexity` and `byte_perplexity` =
//!   exp(−Σ ll / Σ words|bytes) (`weighted_perplexity`), `bits_per_byte` =
//!   −Σ ll / Σ bytes / ln 2.
//!
//! * `llm_judge` (not lm-eval's): a judge model's score of each generation, averaged.
//!
//! Standard errors: for `mean` aggregations `sample_stddev / sqrt(n)`; for the `perplexity`
//! aggregation lm-eval bootstraps (`bootstrap_stderr`: chunks of 1000 resamples, chunk `i`
//! drawn by `random.Random(i).choices`), reproduced here draw for draw with
//! [`crate::pyrandom::PyRandom`]; `weighted_perplexity` and `bits_per_byte` have no standard
//! error in lm-eval (its table prints N/A), so none here either. With one sample, none.

use crate::pyrandom::PyRandom;

/// A metric lm-eval knows by this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Acc,
    AccNorm,
    ExactMatch,
    Perplexity,
    WordPerplexity,
    BytePerplexity,
    BitsPerByte,
    /// A judge model's score of a generation (see [`crate::judge`]).
    LlmJudge,
}

impl Metric {
    pub fn parse(name: &str) -> Option<Metric> {
        Some(match name {
            "acc" => Metric::Acc,
            "acc_norm" => Metric::AccNorm,
            "exact_match" => Metric::ExactMatch,
            "perplexity" => Metric::Perplexity,
            "word_perplexity" => Metric::WordPerplexity,
            "byte_perplexity" => Metric::BytePerplexity,
            "bits_per_byte" => Metric::BitsPerByte,
            "llm_judge" => Metric::LlmJudge,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Acc => "acc",
            Metric::AccNorm => "acc_norm",
            Metric::ExactMatch => "exact_match",
            Metric::Perplexity => "perplexity",
            Metric::WordPerplexity => "word_perplexity",
            Metric::BytePerplexity => "byte_perplexity",
            Metric::BitsPerByte => "bits_per_byte",
            Metric::LlmJudge => "llm_judge",
        }
    }

    /// The aggregation lm-eval registers for the metric.
    pub fn aggregation(self) -> Aggregation {
        match self {
            Metric::Acc | Metric::AccNorm | Metric::ExactMatch | Metric::LlmJudge => {
                Aggregation::Mean
            }
            Metric::Perplexity => Aggregation::Perplexity,
            Metric::WordPerplexity | Metric::BytePerplexity => Aggregation::WeightedPerplexity,
            Metric::BitsPerByte => Aggregation::BitsPerByte,
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::Acc | Metric::AccNorm | Metric::ExactMatch | Metric::LlmJudge
        )
    }
}

/// How per-sample values become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    Mean,
    Perplexity,
    WeightedPerplexity,
    BitsPerByte,
}

/// One document's value of a metric: a number, or (log-likelihood, words|bytes) for the
/// weighted aggregations.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum SampleValue {
    Scalar(f64),
    Pair(f64, f64),
}

/// Python's `sum(xs) / len(xs)`, summed left to right as Python does.
pub fn mean(xs: &[f64]) -> f64 {
    let mut s = 0.0;
    for &x in xs {
        s += x;
    }
    s / xs.len() as f64
}

/// lm-eval's `sample_stddev`: `sqrt(Σ (x − μ)² / (n − 1))`.
pub fn sample_stddev(xs: &[f64]) -> f64 {
    let mu = mean(xs);
    let mut s = 0.0;
    for &x in xs {
        s += (x - mu) * (x - mu);
    }
    (s / (xs.len() as f64 - 1.0)).sqrt()
}

/// lm-eval's `mean_stderr`: `sample_stddev / sqrt(n)`.
pub fn mean_stderr(xs: &[f64]) -> f64 {
    sample_stddev(xs) / (xs.len() as f64).sqrt()
}

/// lm-eval's `perplexity` aggregation: `exp(−mean(ll))`.
pub fn perplexity(lls: &[f64]) -> f64 {
    (-mean(lls)).exp()
}

fn weighted_mean(pairs: &[(f64, f64)]) -> f64 {
    let (mut a, mut b) = (0.0, 0.0);
    for &(x, w) in pairs {
        a += x;
        b += w;
    }
    a / b
}

/// lm-eval's `weighted_perplexity`: `exp(−Σ ll / Σ weight)`.
pub fn weighted_perplexity(pairs: &[(f64, f64)]) -> f64 {
    (-weighted_mean(pairs)).exp()
}

/// lm-eval's `bits_per_byte`: `−Σ ll / Σ bytes / ln 2`.
pub fn bits_per_byte(pairs: &[(f64, f64)]) -> f64 {
    -weighted_mean(pairs) / std::f64::consts::LN_2
}

/// lm-eval's `bootstrap_stderr(f, xs, iters)`: `iters / 1000` chunks of `min(1000, iters)`
/// resamples, chunk `i` from `random.Random(i)`, then the sample standard deviation of all
/// the statistics.
pub fn bootstrap_stderr(f: fn(&[f64]) -> f64, xs: &[f64], iters: usize) -> f64 {
    let chunk = iters.min(1000);
    if chunk == 0 {
        return f64::NAN;
    }
    let mut stats = Vec::with_capacity(iters);
    let mut resample = vec![0.0; xs.len()];
    for i in 0..iters / chunk {
        let mut rnd = PyRandom::new(i as u64);
        for _ in 0..chunk {
            for (slot, j) in resample.iter_mut().zip(rnd.choices(xs.len(), xs.len())) {
                *slot = xs[j];
            }
            stats.push(f(&resample));
        }
    }
    sample_stddev(&stats)
}

/// An aggregated metric: the value and its standard error (None where lm-eval prints N/A).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Aggregate {
    pub value: f64,
    pub stderr: Option<f64>,
}

/// Aggregates one metric's per-sample values as lm-eval does.
pub fn aggregate(metric: Metric, values: &[SampleValue], bootstrap_iters: usize) -> Aggregate {
    let scalars = || {
        values
            .iter()
            .map(|v| match *v {
                SampleValue::Scalar(x) => x,
                SampleValue::Pair(x, _) => x,
            })
            .collect::<Vec<f64>>()
    };
    let pairs = || {
        values
            .iter()
            .map(|v| match *v {
                SampleValue::Scalar(x) => (x, 1.0),
                SampleValue::Pair(x, w) => (x, w),
            })
            .collect::<Vec<(f64, f64)>>()
    };
    let n = values.len();
    match metric.aggregation() {
        Aggregation::Mean => {
            let xs = scalars();
            Aggregate {
                value: mean(&xs),
                stderr: (n > 1).then(|| mean_stderr(&xs)),
            }
        }
        Aggregation::Perplexity => {
            let xs = scalars();
            Aggregate {
                value: perplexity(&xs),
                stderr: (n > 1 && bootstrap_iters > 0)
                    .then(|| bootstrap_stderr(perplexity, &xs, bootstrap_iters)),
            }
        }
        Aggregation::WeightedPerplexity => Aggregate {
            value: weighted_perplexity(&pairs()),
            stderr: None,
        },
        Aggregation::BitsPerByte => Aggregate {
            value: bits_per_byte(&pairs()),
            stderr: None,
        },
    }
}

/// The first index of the largest value (`np.argmax`).
pub fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// One multiple-choice question's outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChoiceScore {
    pub pred: usize,
    pub pred_norm: usize,
    pub acc: f64,
    pub acc_norm: f64,
    /// Whether greedy decoding would produce a gold choice (lm-eval's multiple-choice
    /// `exact_match`).
    pub exact_match: f64,
}

/// lm-eval's multiple-choice `process_results`: `lls[i]` and `greedy[i]` for `choices[i]`;
/// `gold` holds one index, or several when the task has more than one right answer.
pub fn score_choices(
    lls: &[f64],
    greedy: &[bool],
    choices: &[String],
    gold: &[usize],
) -> ChoiceScore {
    let pred = argmax(lls);
    let normed: Vec<f64> = lls
        .iter()
        .zip(choices)
        .map(|(&ll, c)| ll / c.chars().count() as f64)
        .collect();
    let pred_norm = argmax(&normed);
    let hit = |p: usize| if gold.contains(&p) { 1.0 } else { 0.0 };
    let em = gold
        .iter()
        .any(|&g| greedy.get(g).copied().unwrap_or(false));
    ChoiceScore {
        pred,
        pred_norm,
        acc: hit(pred),
        acc_norm: hit(pred_norm),
        exact_match: if em { 1.0 } else { 0.0 },
    }
}

/// `exact_match`'s options (Hugging Face `evaluate`'s arguments, set in a task's
/// `metric_list`).
#[derive(Debug, Clone, Default)]
pub struct ExactMatchOptions {
    pub regexes_to_ignore: Vec<regex::Regex>,
    pub ignore_case: bool,
    pub ignore_punctuation: bool,
    pub ignore_numbers: bool,
}

impl ExactMatchOptions {
    fn normalize(&self, s: &str) -> String {
        let mut s = s.to_string();
        for re in &self.regexes_to_ignore {
            s = re.replace_all(&s, "").into_owned();
        }
        if self.ignore_case {
            s = s.to_lowercase();
        }
        if self.ignore_punctuation {
            // Python's string.punctuation: ASCII only.
            s.retain(|c| !c.is_ascii_punctuation());
        }
        if self.ignore_numbers {
            s.retain(|c| !c.is_ascii_digit());
        }
        s
    }
}

/// 1 when the prediction equals a reference after normalization (any of several
/// references: lm-eval scores a multi-target document by its best target).
pub fn exact_match(prediction: &str, references: &[String], opts: &ExactMatchOptions) -> f64 {
    let p = opts.normalize(prediction);
    if references.iter().any(|r| opts.normalize(r) == p) {
        1.0
    } else {
        0.0
    }
}

/// lm-eval's `count_words`: `len(re.split(r"\s+", text))` — leading or trailing whitespace
/// counts an empty word, as Python's split does.
pub fn count_words(text: &str) -> usize {
    // One more piece than there are maximal runs of whitespace.
    let mut runs = 0;
    let mut in_run = false;
    for c in text.chars() {
        let ws = c.is_whitespace();
        if ws && !in_run {
            runs += 1;
        }
        in_run = ws;
    }
    runs + 1
}

/// lm-eval's `count_bytes`: UTF-8 length.
pub fn count_bytes(text: &str) -> usize {
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_counted_like_python_re_split() {
        // len(re.split(r"\s+", s)) in Python for each string.
        for (s, n) in [
            ("a b", 2),
            ("a  b", 2),
            ("a b ", 3),
            (" a", 2),
            ("", 1),
            ("a\n\n b\tc", 3),
            ("  ", 2),
        ] {
            assert_eq!(count_words(s), n, "{s:?}");
        }
    }
}
