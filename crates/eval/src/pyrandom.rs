//! Python's `random.Random` (CPython's Mersenne Twister and the methods built on it), so
//! that few-shot sampling (`random.Random(1234).sample`) and lm-evaluation-harness's
//! bootstrap (`random.Random(i).choices`) draw the very same numbers here.
//!
//! What is reproduced: `seed(int)` (the integer's 32-bit words through MT19937's
//! `init_by_array`), `random()` (53 bits from two draws), `getrandbits(k ≤ 32)`, the
//! rejection-sampling `_randbelow`, `sample` (both of CPython's strategies, chosen by the
//! same set-size rule) and unweighted `choices`.

/// One Python `random.Random` generator.
#[derive(Debug, Clone)]
pub struct PyRandom {
    mt: [u32; 624],
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed (Python takes `abs()`).
    pub fn new(seed: u64) -> PyRandom {
        // CPython splits the integer into little-endian 32-bit words; zero is one word.
        let key: Vec<u32> = if seed >> 32 == 0 {
            vec![seed as u32]
        } else {
            vec![seed as u32, (seed >> 32) as u32]
        };
        let mut r = PyRandom {
            mt: [0; 624],
            index: 624,
        };
        r.init_by_array(&key);
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..624 {
            let prev = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.index = 624;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let n = 624usize;
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..n.max(key.len()) {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= n {
                self.mt[0] = self.mt[n - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..n - 1 {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= n {
                self.mt[0] = self.mt[n - 1];
                i = 1;
            }
        }
        // A non-zero initial state is guaranteed.
        self.mt[0] = 0x8000_0000;
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for k in 0..624 {
            let y = (self.mt[k] & UPPER) | (self.mt[(k + 1) % 624] & LOWER);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            self.mt[k] = self.mt[(k + 397) % 624] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// The next 32-bit output (`genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random()`: a float in [0, 1) from 53 random bits.
    pub fn random(&mut self) -> f64 {
        let a = self.next_u32() >> 5;
        let b = self.next_u32() >> 6;
        (f64::from(a) * 67_108_864.0 + f64::from(b)) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `getrandbits(k)` for `k ≤ 32`.
    fn getrandbits(&mut self, k: u32) -> u32 {
        if k == 0 {
            return 0;
        }
        self.next_u32() >> (32 - k)
    }

    /// `_randbelow(n)`: uniform in `0..n` by rejection on `n.bit_length()` bits.
    pub fn randbelow(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        let k = usize::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(k.min(32)) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// `sample(range(n), k)`: `k` distinct indices in `0..n`, in draw order. `None` when
    /// `k > n` (Python raises ValueError).
    pub fn sample(&mut self, n: usize, k: usize) -> Option<Vec<usize>> {
        if k > n {
            return None;
        }
        // CPython's rule: a list copy when it is smaller than a set of k elements would be.
        let mut setsize = 21usize;
        if k > 5 {
            let e = ((3 * k) as f64).log(4.0).ceil() as u32;
            setsize += 4usize.pow(e);
        }
        let mut out = Vec::with_capacity(k);
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow(n - i);
                out.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut selected = std::collections::HashSet::with_capacity(k);
            for _ in 0..k {
                let mut j = self.randbelow(n);
                while selected.contains(&j) {
                    j = self.randbelow(n);
                }
                selected.insert(j);
                out.push(j);
            }
        }
        Some(out)
    }

    /// `choices(range(n), k=k)` (with replacement, no weights): `floor(random() * n)`.
    pub fn choices(&mut self, n: usize, k: usize) -> Vec<usize> {
        let nf = n as f64;
        (0..k)
            .map(|_| ((self.random() * nf).floor() as usize).min(n.saturating_sub(1)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_floats_match_cpython() {
        // python3 -c "import random; print(random.Random(s).random())" for s = 0, 42, 1234.
        assert_eq!(PyRandom::new(0).random(), 0.8444218515250481);
        assert_eq!(PyRandom::new(42).random(), 0.6394267984578837);
        assert_eq!(PyRandom::new(1234).random(), 0.9664535356921388);
    }

    #[test]
    fn sample_and_choices_match_cpython() {
        // r = random.Random(1234); r.sample(range(10), 3); r.sample(range(1000), 7);
        // r.sample(range(5), 5) — the list strategy, the set strategy, then the list again.
        let mut r = PyRandom::new(1234);
        assert_eq!(r.sample(10, 3).unwrap(), [7, 1, 0]);
        assert_eq!(
            r.sample(1000, 7).unwrap(),
            [92, 932, 965, 961, 826, 596, 35]
        );
        assert_eq!(r.sample(5, 5).unwrap(), [0, 4, 1, 3, 2]);
        assert!(r.sample(2, 3).is_none());
        // random.Random(0).choices(range(7), k=10)
        assert_eq!(
            PyRandom::new(0).choices(7, 10),
            [5, 5, 2, 1, 3, 2, 5, 2, 3, 4]
        );
        // A seed over 32 bits is two key words.
        assert_eq!(PyRandom::new((1 << 40) + 5).random(), 0.5043802970418443);
    }
}
