//! The filtering functions of Llama Stack's synthetic data generation, defined.
//!
//! Meta's API only names them (`none`, `random`, `top_k`, `top_p`, `top_k_top_p`,
//! `sigmoid`); this is what each does here. A filter sees the candidates of one prompt:
//! the replies that passed the shield and are not empty, each with its score (`None` when
//! the judge's reply held no score). Ranking is by score, highest first; equal scores keep
//! the lower generation index first. Only `none` and `random` keep unscored candidates.
//!
//! - `none`: every candidate.
//! - `random`: `k` candidates drawn uniformly without replacement (all when there are at
//!   most `k`), by a partial Fisher–Yates shuffle whose draws come from splitmix64 seeded
//!   with [`prompt_seed`]`(seed, prompt)`: draw `r`, swap position `t` with `t + r mod
//!   (len − t)`, for `t = 0, 1, ...`.
//! - `top_k`: the `k` best.
//! - `top_p`: nucleus selection over the softmax of the scores (temperature 1): the shortest
//!   run of best candidates whose softmax mass reaches `p` (at least one).
//! - `top_k_top_p`: the `k` best, then `top_p` over the softmax of those `k` only.
//! - `sigmoid`: every candidate with `sigmoid(score) = 1 / (1 + e^-score) >= threshold`
//!   (deterministic: a threshold, not a sample). With a judge's 1-10 score, threshold 0.5
//!   keeps score ≥ 0, i.e. all; with the mean log-prob reward (always ≤ 0) sigmoid is at
//!   most 0.5, and threshold t keeps reward ≥ ln(t / (1 − t)), e.g. 0.3 keeps ≥ −0.847.

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// Which filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterKind {
    None,
    Random,
    TopK,
    TopP,
    TopKTopP,
    Sigmoid,
}

impl FilterKind {
    pub const ALL: [FilterKind; 6] = [
        FilterKind::None,
        FilterKind::Random,
        FilterKind::TopK,
        FilterKind::TopP,
        FilterKind::TopKTopP,
        FilterKind::Sigmoid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FilterKind::None => "none",
            FilterKind::Random => "random",
            FilterKind::TopK => "top_k",
            FilterKind::TopP => "top_p",
            FilterKind::TopKTopP => "top_k_top_p",
            FilterKind::Sigmoid => "sigmoid",
        }
    }

    pub fn parse(s: &str) -> Result<FilterKind> {
        FilterKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                EvalError::Invalid(format!(
                    "unknown filtering function {s:?}: expected one of none, random, top_k, \
                     top_p, top_k_top_p, sigmoid"
                ))
            })
    }
}

/// A filter and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub kind: FilterKind,
    /// `random`, `top_k`, `top_k_top_p`: how many to keep per prompt (at least 1).
    pub k: usize,
    /// `top_p`, `top_k_top_p`: the softmax mass to reach, in (0, 1].
    pub p: f64,
    /// `sigmoid`: the least sigmoid(score) kept, in [0, 1].
    pub threshold: f64,
    /// `random`: the base seed.
    pub seed: u64,
}

impl Filter {
    /// `kind` with the defaults k = 1, p = 0.9, threshold = 0.5, seed 0.
    pub fn new(kind: FilterKind) -> Filter {
        Filter {
            kind,
            k: 1,
            p: 0.9,
            threshold: 0.5,
            seed: 0,
        }
    }

    /// Checks the parameters' ranges.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(EvalError::Invalid("k must be at least 1".into()));
        }
        if !(self.p > 0.0 && self.p <= 1.0) {
            return Err(EvalError::Invalid(format!(
                "p = {} must be in (0, 1]",
                self.p
            )));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(EvalError::Invalid(format!(
                "threshold = {} must be in [0, 1]",
                self.threshold
            )));
        }
        Ok(())
    }

    /// The candidates of prompt `prompt` to keep, as ascending indices into `scores`.
    pub fn keep(&self, prompt: usize, scores: &[Option<f64>]) -> Vec<usize> {
        let mut out = match self.kind {
            FilterKind::None => (0..scores.len()).collect(),
            FilterKind::Random => {
                let mut idx: Vec<usize> = (0..scores.len()).collect();
                let mut rng = SplitMix64(prompt_seed(self.seed, prompt));
                let k = self.k.min(idx.len());
                for t in 0..k {
                    let r = (rng.next_u64() % (idx.len() - t) as u64) as usize;
                    idx.swap(t, t + r);
                }
                idx.truncate(k);
                idx
            }
            FilterKind::TopK => ranked(scores).into_iter().take(self.k).collect(),
            FilterKind::TopP => nucleus(scores, &ranked(scores), self.p),
            FilterKind::TopKTopP => {
                let best: Vec<usize> = ranked(scores).into_iter().take(self.k).collect();
                nucleus(scores, &best, self.p)
            }
            FilterKind::Sigmoid => (0..scores.len())
                .filter(|&i| scores[i].is_some_and(|s| sigmoid(s) >= self.threshold))
                .collect(),
        };
        out.sort_unstable();
        out
    }
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Scored candidates, best first (ties: lower index first).
fn ranked(scores: &[Option<f64>]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).filter(|&i| scores[i].is_some()).collect();
    idx.sort_by(|&a, &b| {
        let (x, y) = (scores[a].unwrap_or(0.0), scores[b].unwrap_or(0.0));
        y.total_cmp(&x).then(a.cmp(&b))
    });
    idx
}

/// The shortest prefix of `best` (ranked) whose softmax mass, over `best` only, reaches `p`.
fn nucleus(scores: &[Option<f64>], best: &[usize], p: f64) -> Vec<usize> {
    let s: Vec<f64> = best.iter().map(|&i| scores[i].unwrap_or(0.0)).collect();
    let Some(max) = s.first().copied() else {
        return Vec::new();
    };
    // Softmax with the maximum subtracted (no overflow for large scores).
    let w: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut mass = 0.0;
    let mut out = Vec::new();
    for (&i, wi) in best.iter().zip(&w) {
        out.push(i);
        mass += wi / total;
        // A relative slack of 1e-12: p = 1 must not fail on rounding.
        if mass >= p - 1e-12 {
            break;
        }
    }
    out
}

/// splitmix64 (Steele, Lea, Flood 2014): the generator behind every seed derived here.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The seed of prompt `prompt`'s random filter: the first splitmix64 output after state
/// `seed ^ (prompt · 0x9e3779b97f4a7c15)`.
pub fn prompt_seed(seed: u64, prompt: usize) -> u64 {
    SplitMix64(seed ^ (prompt as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).next_u64()
}

/// The sampling seed of generation `index` of prompt `prompt`: the first splitmix64 output
/// after state `prompt_seed(seed, prompt) + index`. Stored in each record's provenance; a
/// rerun with the same `--seed` samples the same tokens.
pub fn generation_seed(seed: u64, prompt: usize, index: usize) -> u64 {
    SplitMix64(prompt_seed(seed, prompt).wrapping_add(index as u64)).next_u64()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn f(kind: FilterKind) -> Filter {
        Filter::new(kind)
    }

    // Scores of four candidates; the last has none.
    const S: [Option<f64>; 4] = [Some(1.0), Some(3.0), Some(2.0), None];

    #[test]
    fn splitmix64_matches_the_reference() {
        // The first outputs of Vigna's splitmix64.c from state 0 (also Java's
        // SplittableRandom): 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4.
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn none_keeps_everything_even_unscored() {
        assert_eq!(f(FilterKind::None).keep(0, &S), vec![0, 1, 2, 3]);
    }

    #[test]
    fn top_k_keeps_the_k_best_and_never_unscored() {
        let mut t = f(FilterKind::TopK);
        assert_eq!(t.keep(0, &S), vec![1]);
        t.k = 2;
        assert_eq!(t.keep(0, &S), vec![1, 2]);
        t.k = 10;
        assert_eq!(t.keep(0, &S), vec![0, 1, 2]);
        // Ties: the lower index first.
        t.k = 1;
        assert_eq!(t.keep(0, &[Some(5.0), Some(5.0)]), vec![0]);
    }

    #[test]
    fn top_p_is_the_nucleus_of_the_softmax() {
        // softmax(3, 2, 1) = (0.66524, 0.24473, 0.09003).
        let mut t = f(FilterKind::TopP);
        t.p = 0.6;
        assert_eq!(t.keep(0, &S), vec![1]);
        t.p = 0.66;
        assert_eq!(t.keep(0, &S), vec![1]);
        t.p = 0.9; // 0.66524 + 0.24473 = 0.90997
        assert_eq!(t.keep(0, &S), vec![1, 2]);
        t.p = 0.91; // needs the third
        assert_eq!(t.keep(0, &S), vec![0, 1, 2]);
        t.p = 1.0;
        assert_eq!(t.keep(0, &S), vec![0, 1, 2]);
        assert_eq!(t.keep(0, &[None, None]), Vec::<usize>::new());
    }

    #[test]
    fn top_k_top_p_renormalises_over_the_k_best() {
        // The two best are 3 and 2: softmax(3, 2) = (0.73106, 0.26894).
        let mut t = f(FilterKind::TopKTopP);
        t.k = 2;
        t.p = 0.7;
        assert_eq!(t.keep(0, &S), vec![1]);
        t.p = 0.74;
        assert_eq!(t.keep(0, &S), vec![1, 2]);
        // top_p alone at 0.74 over all three: 0.66524 < 0.74, so two as well; at 0.95
        // top_p needs three but top_k caps at two.
        t.p = 0.95;
        assert_eq!(t.keep(0, &S), vec![1, 2]);
    }

    #[test]
    fn sigmoid_is_a_threshold() {
        // sigmoid(1, 3, 2) = (0.73106, 0.95257, 0.88080).
        let mut t = f(FilterKind::Sigmoid);
        assert_eq!(t.keep(0, &S), vec![0, 1, 2]);
        t.threshold = 0.88;
        assert_eq!(t.keep(0, &S), vec![1, 2]);
        t.threshold = 0.9;
        assert_eq!(t.keep(0, &S), vec![1]);
        // A mean log-prob of -0.847 has sigmoid 0.30003.
        t.threshold = 0.3;
        assert_eq!(t.keep(0, &[Some(-0.847), Some(-0.848)]), vec![0]);
    }

    #[test]
    fn random_is_a_seeded_partial_shuffle() {
        // prompt_seed(0, p) and the two draws, worked out by hand in Python from the
        // definition above (an independent splitmix64): prompt 0 keeps {0, 3}, prompt 1
        // {0, 1}, prompt 2 {0, 2}.
        assert_eq!(prompt_seed(0, 0), 0xe220_a839_7b1d_cdaf);
        let mut t = f(FilterKind::Random);
        t.k = 2;
        let want = vec![0, 3];
        assert_eq!(t.keep(0, &S), want);
        assert_eq!(t.keep(1, &S), vec![0, 1]);
        assert_eq!(t.keep(2, &S), vec![0, 2]);
        // Same seed, same pick; k beyond the count keeps all, unscored included.
        assert_eq!(t.keep(0, &S), want);
        t.k = 9;
        assert_eq!(t.keep(0, &S), vec![0, 1, 2, 3]);
        // Over many prompts each candidate is picked about equally often (k = 1 of 4).
        t.k = 1;
        let mut counts = [0usize; 4];
        for p in 0..4000 {
            counts[t.keep(p, &S)[0]] += 1;
        }
        assert!(
            counts.iter().all(|&c| (900..1100).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn parse_names_and_errors() {
        for k in FilterKind::ALL {
            assert_eq!(FilterKind::parse(k.name()).unwrap(), k);
        }
        let e = FilterKind::parse("best").unwrap_err().to_string();
        assert!(e.contains("top_k_top_p"), "{e}");
        let mut t = f(FilterKind::TopP);
        t.p = 0.0;
        assert!(t.validate().is_err());
        t.p = 1.0;
        t.k = 0;
        assert!(t.validate().is_err());
    }
}
