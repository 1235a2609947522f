//! Seeded synthetic embeddings for the vector index's tests and `vector_bench` example.
//!
//! Real sentence embeddings are clustered and locally low-dimensional (topics, and within
//! a topic a few directions of variation), which is what makes graph indexes work on them.
//! [`Clustered`] imitates that: each point is a cluster centre plus a point of a random
//! 48-dimensional subspace of that cluster plus a little isotropic noise, normalized.
//! [`uniform`] is the opposite extreme (directions uniform on the 384-d sphere, no
//! structure), the hardest case for any approximate index.

#![allow(dead_code)]

/// splitmix64 with Box-Muller Gaussians.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    pub fn gauss(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// `n` directions uniform on the sphere, row-major `(n, dim)`.
pub fn uniform(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let mut v: Vec<f32> = (0..dim).map(|_| rng.gauss()).collect();
        normalize(&mut v);
        out.extend_from_slice(&v);
    }
    out
}

/// A mixture of clusters; sample database points and queries from the same mixture.
pub struct Clustered {
    dim: usize,
    /// `(clusters, dim)` unit centres.
    centres: Vec<f32>,
    /// `(clusters, RANK, dim)` subspace directions, each scaled to norm ~1.
    bases: Vec<f32>,
}

/// Directions of variation inside a cluster.
const RANK: usize = 48;
/// Norm of the in-cluster (subspace) displacement relative to the unit centre.
const SPREAD: f32 = 0.6;
/// Norm of the isotropic noise.
const NOISE: f32 = 0.5;

impl Clustered {
    pub fn new(dim: usize, clusters: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let centres = uniform(clusters, dim, rng.next_u64());
        let bases = uniform(clusters * RANK, dim, rng.next_u64());
        Clustered {
            dim,
            centres,
            bases,
        }
    }

    fn clusters(&self) -> usize {
        self.centres.len() / self.dim
    }

    /// `n` unit vectors, row-major `(n, dim)`.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let (dim, mut rng) = (self.dim, Rng::new(seed));
        let mut out = Vec::with_capacity(n * dim);
        let mut v = vec![0f32; dim];
        for _ in 0..n {
            let c = (rng.next_u64() % self.clusters() as u64) as usize;
            v.copy_from_slice(&self.centres[c * dim..(c + 1) * dim]);
            for r in 0..RANK {
                let z = rng.gauss() * SPREAD / (RANK as f32).sqrt();
                let b = &self.bases[(c * RANK + r) * dim..(c * RANK + r + 1) * dim];
                v.iter_mut().zip(b).for_each(|(x, bi)| *x += z * bi);
            }
            let s = NOISE / (dim as f32).sqrt();
            v.iter_mut().for_each(|x| *x += rng.gauss() * s);
            normalize(&mut v);
            out.extend_from_slice(&v);
        }
        out
    }
}

/// Mean fraction of the exact top-k ids that the approximate top-k contains.
pub fn recall(approx: &[Vec<u64>], exact: &[Vec<u64>]) -> f64 {
    let mut hit = 0usize;
    let mut total = 0usize;
    for (a, e) in approx.iter().zip(exact) {
        total += e.len();
        hit += e.iter().filter(|id| a.contains(id)).count();
    }
    if total == 0 {
        1.0
    } else {
        hit as f64 / total as f64
    }
}
