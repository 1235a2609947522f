//! Vector index latency and recall: flat scan vs HNSW at 10K and 100K 384-d vectors.
//!
//! ```sh
//! cargo run --release -p ferrollama-rag --example vector_bench            # 10K, 100K
//! cargo run --release -p ferrollama-rag --example vector_bench -- 10000    # sizes to run
//! ```
//!
//! Corpora are seeded synthetic embeddings (`tests/support/synth.rs`): "clustered"
//! imitates sentence embeddings (topics, each varying along a few directions); "uniform"
//! is the structureless worst case. Queries are fresh samples from the same distribution.
//! Recall@10 is against `exact_search` on the same index. `FERROLLAMA_ISA` picks the SIMD
//! tier, `EF` a comma list of search beams (default 64,96,128,200).

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/synth.rs"]
mod synth;

use std::time::Instant;

use ferrollama_rag::{IndexParams, VectorIndex};
use synth::{Clustered, recall, uniform};

const DIM: usize = 384;
const QUERIES: usize = 300;
const K: usize = 10;

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    let i = ((sorted_ms.len() as f64 - 1.0) * p).round() as usize;
    sorted_ms[i.min(sorted_ms.len() - 1)]
}

/// Runs every query, returns (ids per query, p50 ms, p99 ms).
fn timed(queries: &[f32], f: impl Fn(&[f32]) -> Vec<(u64, f32)>) -> (Vec<Vec<u64>>, f64, f64) {
    let mut ids = Vec::new();
    let mut ms = Vec::new();
    for q in queries.chunks_exact(DIM) {
        let t = Instant::now();
        let r = f(q);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        ids.push(r.into_iter().map(|(id, _)| id).collect());
    }
    ms.sort_by(f64::total_cmp);
    (ids, percentile(&ms, 0.5), percentile(&ms, 0.99))
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    let efs: Vec<usize> = std::env::var("EF")
        .unwrap_or_else(|_| "64,96,128,200".into())
        .split(',')
        .filter_map(|e| e.trim().parse().ok())
        .collect();
    let defaults = IndexParams::default();
    println!(
        "ISA {}; HNSW M={} efConstruction={}; {} queries, k={}, dim={}",
        ferrollama_tensor::cpu_features(),
        defaults.m,
        defaults.ef_construction,
        QUERIES,
        K,
        DIM
    );
    println!(
        "| corpus | n | build s | flat p50 ms | flat p99 ms | ef | hnsw p50 ms | hnsw p99 ms | recall@10 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        for corpus in ["clustered", "uniform"] {
            let (data, queries) = if corpus == "clustered" {
                let model = Clustered::new(DIM, (n / 1000).max(10), 1);
                (model.sample(n, 2), model.sample(QUERIES, 3))
            } else {
                (uniform(n, DIM, 4), uniform(QUERIES, DIM, 5))
            };
            // Threshold 0: the graph is linked from the first insert, at every size.
            let mut ix = VectorIndex::with_params(
                DIM,
                IndexParams {
                    hnsw_threshold: 0,
                    ..defaults
                },
            );
            let t = Instant::now();
            for (i, v) in data.chunks_exact(DIM).enumerate() {
                ix.insert(i as u64, v).unwrap();
            }
            let build_s = t.elapsed().as_secs_f64();
            let (exact, f50, f99) = timed(&queries, |q| ix.exact_search(q, K, None).unwrap());
            for &ef in &efs {
                ix.set_ef_search(ef);
                let (approx, h50, h99) = timed(&queries, |q| ix.search(q, K, None).unwrap());
                println!(
                    "| {corpus} | {n} | {build_s:.1} | {f50:.2} | {f99:.2} | {ef} | {h50:.3} | {h99:.3} | {:.4} |",
                    recall(&approx, &exact)
                );
            }
        }
    }
}
