//! The sampler chain: penalties, then temperature, top-k, top-p and min-p, then a draw —
//! or argmax when the temperature is 0.
//!
//! Each request carries its own seeded generator, so the same seed gives the same tokens
//! whatever else runs. Buffers are kept between steps, so sampling does not allocate.

/// Sampling settings; the defaults are Meta's (temperature 0.6, top-p 0.9).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// 0 (or less) means greedy argmax.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// 1.0 disables; divides positive logits and multiplies negative ones of seen tokens.
    pub repetition_penalty: f32,
    /// Subtracted `count` times per occurrence (OpenAI semantics).
    pub frequency_penalty: f32,
    /// Subtracted once for any token already seen.
    pub presence_penalty: f32,
    /// How many recent tokens the penalties look at (0 = all).
    pub penalty_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.6,
            top_k: 0,
            top_p: 0.9,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding.
    pub fn greedy() -> SamplerConfig {
        SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        }
    }

    /// Checks ranges; errors say which setting is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |v: f32, name: &str| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("{name} must be a finite number"))
            }
        };
        finite(self.temperature, "temperature")?;
        finite(self.top_p, "top_p")?;
        finite(self.min_p, "min_p")?;
        finite(self.repetition_penalty, "repetition_penalty")?;
        finite(self.frequency_penalty, "frequency_penalty")?;
        finite(self.presence_penalty, "presence_penalty")?;
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(format!("top_p {} must be in [0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p {} must be in [0, 1]", self.min_p));
        }
        if self.repetition_penalty <= 0.0 {
            return Err("repetition_penalty must be positive".into());
        }
        Ok(())
    }
}

/// xoshiro256** seeded by splitmix64: small, fast, and identical on every platform.
#[derive(Debug, Clone)]
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A sampler for one sequence.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub config: SamplerConfig,
    rng: Rng,
    candidates: Vec<(u32, f32)>,
    counts: Vec<u32>,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        Sampler {
            rng: Rng::new(config.seed),
            config,
            candidates: Vec::new(),
            counts: Vec::new(),
        }
    }

    /// Picks the next token from `logits`, given the tokens so far (for penalties).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let c = &self.config;
        let penalize =
            c.repetition_penalty != 1.0 || c.frequency_penalty != 0.0 || c.presence_penalty != 0.0;
        self.candidates.clear();
        self.candidates
            .extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        if penalize {
            let window = if c.penalty_last_n == 0 {
                history
            } else {
                &history[history.len().saturating_sub(c.penalty_last_n)..]
            };
            self.counts.clear();
            self.counts.resize(logits.len(), 0);
            for &t in window {
                if let Some(n) = self.counts.get_mut(t as usize) {
                    *n += 1;
                }
            }
            for (t, l) in self.candidates.iter_mut() {
                let n = self.counts[*t as usize];
                if n == 0 {
                    continue;
                }
                *l = if *l > 0.0 {
                    *l / c.repetition_penalty
                } else {
                    *l * c.repetition_penalty
                };
                *l -= n as f32 * c.frequency_penalty + c.presence_penalty;
            }
        }
        if c.temperature <= 0.0 {
            // Greedy: the first maximum, as argmax does.
            let mut best = (0u32, f32::NEG_INFINITY);
            for &(t, l) in &self.candidates {
                if l > best.1 {
                    best = (t, l);
                }
            }
            return best.0;
        }
        let cands = &mut self.candidates;
        cands.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if c.top_k > 0 && c.top_k < cands.len() {
            cands.truncate(c.top_k);
        }
        let max = cands[0].1;
        let mut sum = 0.0f64;
        for (_, l) in cands.iter_mut() {
            *l = ((*l - max) / c.temperature).exp();
            sum += f64::from(*l);
        }
        for (_, l) in cands.iter_mut() {
            *l = (f64::from(*l) / sum) as f32;
        }
        if c.min_p > 0.0 {
            let floor = cands[0].1 * c.min_p;
            let keep = cands.iter().take_while(|x| x.1 >= floor).count().max(1);
            cands.truncate(keep);
        }
        if c.top_p < 1.0 {
            // Keep the smallest prefix whose mass reaches top_p (the crossing token stays).
            let mut cum = 0.0;
            let mut keep = cands.len();
            for (i, &(_, p)) in cands.iter().enumerate() {
                cum += p;
                if cum >= c.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cands.truncate(keep.max(1));
        }
        let total: f32 = cands.iter().map(|x| x.1).sum();
        let mut r = self.rng.next_f32() * total;
        for &(t, p) in cands.iter() {
            if r < p {
                return t;
            }
            r -= p;
        }
        cands[cands.len() - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_first_maximum() {
        let mut s = Sampler::new(SamplerConfig::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_p: 1.0,
            seed: 42,
            ..SamplerConfig::default()
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(cfg.clone());
            (0..50).map(|_| s.sample(&logits, &[])).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(cfg.clone());
            (0..50).map(|_| s.sample(&logits, &[])).collect()
        };
        assert_eq!(a, b);
        let c: Vec<u32> = {
            let mut s = Sampler::new(SamplerConfig { seed: 43, ..cfg });
            (0..50).map(|_| s.sample(&logits, &[])).collect()
        };
        assert_ne!(a, c);
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let logits = [0.0, 1.0, 5.0, 2.0];
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
            ..SamplerConfig::default()
        });
        assert!((0..20).all(|_| s.sample(&logits, &[]) == 2));
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_p: 0.01,
            ..SamplerConfig::default()
        });
        assert!((0..20).all(|_| s.sample(&logits, &[]) == 2));
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // p = softmax([0, ln 3]) = [0.25, 0.75]
        let logits = [0.0, 3f32.ln()];
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_p: 1.0,
            seed: 7,
            ..SamplerConfig::default()
        });
        let ones = (0..20_000).filter(|_| s.sample(&logits, &[]) == 1).count();
        let frac = ones as f64 / 20_000.0;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
    }

    #[test]
    fn penalties_push_seen_tokens_down() {
        let logits = [2.0, 1.9];
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0,
            repetition_penalty: 1.5,
            ..SamplerConfig::default()
        });
        assert_eq!(s.sample(&logits, &[0]), 1);
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0,
            presence_penalty: 0.2,
            ..SamplerConfig::default()
        });
        assert_eq!(s.sample(&logits, &[0]), 1);
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0,
            frequency_penalty: 0.05,
            ..SamplerConfig::default()
        });
        assert_eq!(
            s.sample(&logits, &[0]),
            0,
            "one occurrence: 2.0 - 0.05 > 1.9"
        );
        assert_eq!(s.sample(&logits, &[0, 0, 0]), 1);
    }
}
