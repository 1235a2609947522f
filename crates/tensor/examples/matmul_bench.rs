//! Micro benchmark for `matmul` (no criterion): decode (1 token) as weight
//! GB/s and prefill (512 tokens) as GFLOP/s (2·rows·cols·tokens / time), for
//! each weight dtype, on the shapes of Llama-3.2-1B (2048x2048, 8192x2048,
//! 2048x8192, 128256x2048) and SmolLM2-135M (576x576, 1536x576, 576x1536,
//! 49152x576), on 1 and 2 threads. Prefill is skipped for the vocab shapes.
//!
//! Usage: cargo run --release -p ferrollama-tensor --example matmul_bench [dtype...] [RxC...]
//! (dtype names as in `DType::name`, e.g. `q4_1 q8_0`; shapes like
//! `2048x2048` restrict the shape list). `FERROLLAMA_ISA=avx2` selects a lower
//! SIMD tier.

use std::time::Instant;

use ferrollama_tensor::{
    DType, PackedMatrix, ThreadPool, cpu_features, matmul, matmul_packed, quantize_acts,
    quantize_row,
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// Random weights: random quant bits with sane f16 scales (quantizing 16M
/// floats with the k-quant reference quantizers would dominate the run).
fn weights(w: DType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let rb = w.row_bytes(cols).unwrap_or(0);
    let mut b: Vec<u8> = (0..rows * rb).map(|_| (rng.next() >> 56) as u8).collect();
    let h = |v: f32| half::f16::from_f32(v).to_le_bytes();
    match w {
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q4_K => {
            for blk in b.chunks_exact_mut(w.block_bytes()) {
                blk[..2].copy_from_slice(&h(0.01 + rng.f32() * 0.01));
                if matches!(w, DType::Q4_1 | DType::Q5_1 | DType::Q4_K) {
                    blk[2..4].copy_from_slice(&h(0.01));
                }
            }
        }
        DType::Q6_K => {
            for blk in b.chunks_exact_mut(210) {
                blk[208..210].copy_from_slice(&h(0.001));
            }
        }
        _ => {
            let row: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
            for r in b.chunks_exact_mut(rb) {
                let _ = quantize_row(w, &row, r);
            }
        }
    }
    b
}

/// Best per-call time over several batches (robust to other processes
/// briefly taking a core, which matters on small shared machines).
fn time_it(mut f: impl FnMut(), min_secs: f64) -> f64 {
    f(); // warm up
    let mut best = f64::INFINITY;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < min_secs || best.is_infinite() {
        let t0 = Instant::now();
        let mut iters = 0u32;
        while iters < 1 || t0.elapsed().as_secs_f64() < min_secs / 8.0 {
            f();
            iters += 1;
        }
        best = best.min(t0.elapsed().as_secs_f64() / iters as f64);
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (shape_args, filter): (Vec<String>, Vec<String>) =
        args.into_iter().partition(|a| a.contains('x'));
    let all_shapes = [
        (2048usize, 2048usize),
        (8192, 2048),
        (2048, 8192),
        (128256, 2048),
        (576, 576),
        (1536, 576),
        (576, 1536),
        (49152, 576),
    ];
    let shapes: Vec<(usize, usize)> = all_shapes
        .into_iter()
        .filter(|(r, c)| shape_args.is_empty() || shape_args.contains(&format!("{r}x{c}")))
        .collect();
    let types = [
        DType::Q4_1,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q6_K,
        DType::Q4_0,
        DType::Q5_0,
        DType::Q5_1,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F8E4M3,
    ];
    println!("simd: {}", cpu_features());
    println!(
        "{:<7} {:>12} {:>3} {:>13} {:>15} {:>11} {:>12} {:>12}",
        "dtype",
        "rows x cols",
        "thr",
        "decode GB/s",
        "decode us/call",
        "prefill GF/s",
        "packed GB/s",
        "packed GF/s"
    );
    let mut rng = Rng(0x1234_5678);
    for w in types {
        if !filter.is_empty() && !filter.iter().any(|f| f == w.name()) {
            continue;
        }
        for &(rows, cols) in &shapes {
            let do_prefill = rows < 32768;
            let pt_tokens = if do_prefill { 512 } else { 1 };
            let wd = weights(w, rows, cols, &mut rng);
            let x: Vec<f32> = (0..cols * pt_tokens).map(|_| rng.f32()).collect();
            let mut x1 = Vec::new();
            let mut x512 = Vec::new();
            if quantize_acts(w, &x[..cols], cols, &mut x1).is_err()
                || quantize_acts(w, &x, cols, &mut x512).is_err()
            {
                continue;
            }
            let mut out1 = vec![0f32; rows];
            let mut out512 = vec![0f32; rows * pt_tokens];
            let packed = PackedMatrix::pack(w, &wd, rows, cols).ok().flatten();
            for threads in [1usize, 2] {
                let pool = ThreadPool::new(threads);
                let dt = time_it(
                    || {
                        let _ = matmul(&pool, w, &wd, rows, cols, &x1, 1, &mut out1);
                    },
                    0.3,
                );
                let gbs = wd.len() as f64 / dt / 1e9;
                let gf = if do_prefill {
                    let pt = time_it(
                        || {
                            let _ = matmul(&pool, w, &wd, rows, cols, &x512, 512, &mut out512);
                        },
                        0.5,
                    );
                    2.0 * rows as f64 * cols as f64 * 512.0 / pt / 1e9
                } else {
                    f64::NAN
                };
                let (pgbs, pgf) = match &packed {
                    Some(p) => {
                        let dt = time_it(
                            || {
                                let _ = matmul_packed(&pool, p, &x1, 1, &mut out1);
                            },
                            0.3,
                        );
                        let gf = if do_prefill {
                            let pt = time_it(
                                || {
                                    let _ = matmul_packed(&pool, p, &x512, 512, &mut out512);
                                },
                                0.5,
                            );
                            2.0 * rows as f64 * cols as f64 * 512.0 / pt / 1e9
                        } else {
                            f64::NAN
                        };
                        (wd.len() as f64 / dt / 1e9, gf)
                    }
                    None => (f64::NAN, f64::NAN),
                };
                println!(
                    "{:<7} {:>6}x{:<5} {:>3} {:>13.1} {:>15.1} {:>11.1} {:>12.1} {:>12.1}",
                    w.name(),
                    rows,
                    cols,
                    pool.n_threads(),
                    gbs,
                    dt * 1e6,
                    gf,
                    pgbs,
                    pgf
                );
            }
        }
    }
}
