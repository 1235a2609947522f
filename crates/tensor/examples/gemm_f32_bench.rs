//! GFLOP/s of the f32 panel GEMM (`matmul_f32_packed_with`) on the encoder's shapes
//! (all-MiniLM-L6-v2: hidden 384, intermediate 1536), one thread by default.
//!
//!     cargo run --release -p ferrollama-tensor --example gemm_f32_bench -- [TOKENS] [THREADS]

use std::time::Instant;

use ferrollama_tensor::{Epilogue, PackedF32, ThreadPool, matmul_f32_packed_with};

fn main() {
    let mut args = std::env::args().skip(1);
    let tokens: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let pool = ThreadPool::new(threads);
    // (name, out rows, in cols, GELU)
    let shapes = [
        ("qkv", 1152, 384, false),
        ("attn out", 384, 384, false),
        ("ffn up+gelu", 1536, 384, true),
        ("ffn down", 384, 1536, false),
    ];
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % 2001) as f32 / 1000.0 - 1.0
    };
    let (mut flops, mut secs) = (0.0, 0.0);
    for (name, rows, cols, gelu) in shapes {
        let w: Vec<f32> = (0..rows * cols).map(|_| rnd()).collect();
        let bias: Vec<f32> = (0..rows).map(|_| rnd()).collect();
        let x: Vec<f32> = (0..tokens * cols).map(|_| rnd()).collect();
        let p = PackedF32::pack(&w, rows, cols).expect("pack");
        let mut out = vec![0.0f32; tokens * rows];
        let epi = Epilogue {
            bias: Some(&bias),
            gelu,
            accumulate: false,
        };
        let run = |out: &mut [f32]| {
            matmul_f32_packed_with(&pool, &p, &x, tokens, out, epi).expect("gemm");
        };
        run(&mut out);
        let reps = (4e9 / (2.0 * (tokens * rows * cols) as f64)).ceil() as usize;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                run(&mut out);
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        let f = 2.0 * (tokens * rows * cols) as f64;
        flops += f;
        secs += best;
        println!(
            "{name:>12} {tokens}x{cols} -> {rows}: {:7.1} GFLOP/s ({:.3} ms)",
            f / best / 1e9,
            best * 1e3
        );
    }
    println!("{:>12} {:7.1} GFLOP/s", "all", flops / secs / 1e9);
}
