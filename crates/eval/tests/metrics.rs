#![allow(clippy::unwrap_used)]
//! lm-evaluation-harness's metric definitions against values worked out by hand (or, for
//! the bootstrap, by lm-eval's algorithm run in Python: `bootstrap_stderr(perplexity, xs,
//! 2000)` with `random.Random(i).choices`).

use ferrollama_eval::filters::{Filter, FilterStep};
use ferrollama_eval::metrics::{
    self, ExactMatchOptions, Metric, SampleValue, aggregate, exact_match, score_choices,
};
use regex::Regex;

#[test]
fn acc_and_acc_norm_disagree_when_lengths_differ() {
    // ll = [-2, -4] for "a" and "bbbb": raw, "a" wins; per character −2 vs −1, "bbbb" wins.
    let choices = vec!["a".to_string(), "bbbb".to_string()];
    let s = score_choices(&[-2.0, -4.0], &[true, false], &choices, &[1]);
    assert_eq!((s.pred, s.pred_norm), (0, 1));
    assert_eq!((s.acc, s.acc_norm), (0.0, 1.0));
    // exact_match: greedy decoding gives choice 0, not the gold 1.
    assert_eq!(s.exact_match, 0.0);
    // Characters, not bytes (Python's len of the choice): "é" is one character, two bytes.
    // Per character −1.5 vs −1.25, "ab" wins; per byte it would be −0.75 vs −1.25, "é".
    let c2 = vec!["é".to_string(), "ab".to_string()];
    let s2 = score_choices(&[-1.5, -2.5], &[false, false], &c2, &[0]);
    assert_eq!(s2.pred_norm, 1);
    // A tie goes to the first choice, as np.argmax.
    let s3 = score_choices(&[-1.0, -1.0], &[false, false], &c2, &[1]);
    assert_eq!(s3.acc, 0.0);
}

#[test]
fn mean_stderr_is_sample_stddev_over_sqrt_n() {
    // [1, 0, 1, 1]: mean 0.75; Σ(x−μ)² = 3·0.0625 + 0.5625 = 0.75; /(n−1) = 0.25;
    // stddev 0.5; / sqrt(4) = 0.25.
    let v: Vec<SampleValue> = [1.0, 0.0, 1.0, 1.0].map(SampleValue::Scalar).to_vec();
    let a = aggregate(Metric::Acc, &v, 0);
    assert_eq!(a.value, 0.75);
    assert_eq!(a.stderr, Some(0.25));
    // One sample: no standard error (lm-eval prints N/A).
    assert_eq!(aggregate(Metric::Acc, &v[..1], 0).stderr, None);
}

#[test]
fn perplexity_aggregations() {
    // Two documents: ll −10 over 5 words / 20 bytes, ll −6 over 3 words / 10 bytes.
    let words = [SampleValue::Pair(-10.0, 5.0), SampleValue::Pair(-6.0, 3.0)];
    let bytes = [
        SampleValue::Pair(-10.0, 20.0),
        SampleValue::Pair(-6.0, 10.0),
    ];
    let wp = aggregate(Metric::WordPerplexity, &words, 1000);
    assert!((wp.value - 2f64.exp()).abs() < 1e-12);
    assert_eq!(wp.stderr, None);
    let bp = aggregate(Metric::BytePerplexity, &bytes, 1000);
    assert!((bp.value - (16.0f64 / 30.0).exp()).abs() < 1e-12);
    let bpb = aggregate(Metric::BitsPerByte, &bytes, 1000);
    assert!((bpb.value - 16.0 / 30.0 / std::f64::consts::LN_2).abs() < 1e-12);
    assert_eq!(bpb.stderr, None);
    // perplexity over documents: exp(−mean(ll)) = exp(2) for [−1, −3].
    let p = aggregate(
        Metric::Perplexity,
        &[SampleValue::Scalar(-1.0), SampleValue::Scalar(-3.0)],
        0,
    );
    assert!((p.value - 2f64.exp()).abs() < 1e-12);
}

#[test]
fn bootstrap_stderr_reproduces_lm_eval_draws() {
    let xs = [-1.0, -2.5, -0.3, -4.0, -1.7];
    assert!((metrics::perplexity(&xs) - 6.6858944422792685).abs() < 1e-12);
    let se = metrics::bootstrap_stderr(metrics::perplexity, &xs, 2000);
    assert!((se - 5.16711200845309).abs() < 1e-9, "{se}");
    let v: Vec<SampleValue> = xs.iter().map(|&x| SampleValue::Scalar(x)).collect();
    let a = aggregate(Metric::Perplexity, &v, 2000);
    assert!((a.stderr.unwrap() - 5.16711200845309).abs() < 1e-9);
}

fn gsm8k_filters() -> (Filter, Filter) {
    let strict = Filter {
        name: "strict-match".into(),
        steps: vec![
            FilterStep::Regex {
                re: Regex::new(r"#### (\-?[0-9\.\,]+)").unwrap(),
                group_select: 0,
                fallback: "[invalid]".into(),
            },
            FilterStep::TakeFirst,
        ],
    };
    let flexible = Filter {
        name: "flexible-extract".into(),
        steps: vec![
            FilterStep::Regex {
                re: Regex::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)").unwrap(),
                group_select: -1,
                fallback: "[invalid]".into(),
            },
            FilterStep::TakeFirst,
        ],
    };
    (strict, flexible)
}

#[test]
fn exact_match_after_gsm8k_regex_filters() {
    let (strict, flexible) = gsm8k_filters();
    let opts = ExactMatchOptions {
        regexes_to_ignore: [",", r"\$", "(?s).*#### ", r"\.$"]
            .iter()
            .map(|r| Regex::new(r).unwrap())
            .collect(),
        ignore_case: true,
        ..Default::default()
    };
    let gold = vec!["1234".to_string()];
    let r = "so 3+4 = 7.\n#### 1,234";
    assert_eq!(strict.apply(r), "1,234");
    // findall gives ('', '3'), ('', '4'), ('7.', ''), ('1,234', ''): the last, first
    // non-empty group.
    assert_eq!(flexible.apply(r), "1,234");
    assert_eq!(exact_match(&strict.apply(r), &gold, &opts), 1.0);
    let r2 = "The answer is 42.";
    assert_eq!(strict.apply(r2), "[invalid]");
    assert_eq!(flexible.apply(r2), "42.");
    let g42 = vec!["42".to_string()];
    assert_eq!(exact_match(&flexible.apply(r2), &g42, &opts), 1.0);
    assert_eq!(exact_match(&strict.apply(r2), &g42, &opts), 0.0);
    // Without the options the trailing period makes it a miss.
    assert_eq!(
        exact_match(&flexible.apply(r2), &g42, &ExactMatchOptions::default()),
        0.0
    );
    // group_select 0 picks the first match ("3"), not a capture group.
    let first = Filter {
        name: "first".into(),
        steps: vec![FilterStep::Regex {
            re: Regex::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)").unwrap(),
            group_select: 0,
            fallback: "[invalid]".into(),
        }],
    };
    assert_eq!(first.apply(r), "3");
}
