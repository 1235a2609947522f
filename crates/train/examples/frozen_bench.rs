//! The products of a frozen base matrix at training's sequence lengths, by kernel: the
//! f32 GEMM on a widened matrix (what a `Params` base runs), the frozen matrix decoding
//! panels on the fly (`FrozenMatrix`, forward and backward), and inference's kernels on
//! quantized activations (`quantize_acts` + `matmul`, forward only: they have no
//! `dy · W`). Shapes are SmolLM2-135M's; one JSON line per (shape, type, kernel).
//!
//!     cargo build --profile ci -p ferrollama-train --example frozen_bench
//!     target/ci/examples/frozen_bench [--tokens 512] [--threads 1] [--reps 5] [--cpu-time]
//!         [--shape q|k|gate|down|output]

use std::time::Instant;

use ferrollama_model::Tensor;
use ferrollama_tensor::{DType, ThreadPool, matmul, quantize_acts, quantize_row};
use ferrollama_train::{BaseCompute, FrozenMatrix, Projection};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

/// Nanoseconds this thread has run on a CPU (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (r == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Best of `reps` timings of `f`, milliseconds. With `--cpu-time` (1 thread only) the
/// time the calling thread ran, not the wall clock: on a machine that other processes
/// share, the time descheduled is left out.
fn best_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    let cpu = std::env::args().any(|a| a == "--cpu-time");
    f();
    (0..reps)
        .map(|_| {
            let (t, c) = (Instant::now(), thread_cpu_ns());
            f();
            match (cpu, c, thread_cpu_ns()) {
                (true, Some(a), Some(b)) => (b - a) as f64 / 1e6,
                _ => t.elapsed().as_secs_f64() * 1e3,
            }
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t = arg(&args, "--tokens", 512);
    let threads = arg(&args, "--threads", 1);
    let reps = arg(&args, "--reps", 5);
    let pool = ThreadPool::new(threads);
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % 20001) as f32 / 10000.0 - 1.0
    };
    // (name, out, in): gate/up, down, and the tied output matrix.
    let only: Option<String> = args
        .iter()
        .position(|a| a == "--shape")
        .and_then(|i| args.get(i + 1).cloned());
    for (name, rows, cols) in [
        ("q", 576, 576),
        ("k", 192, 576),
        ("gate", 1536, 576),
        ("down", 576, 1536),
        ("output", 49152, 576),
    ] {
        if only.as_ref().is_some_and(|o| o != name) {
            continue;
        }
        let w: Vec<f32> = (0..rows * cols).map(|_| rnd() * 0.05).collect();
        let x: Vec<f32> = (0..t * cols).map(|_| rnd()).collect();
        let dy: Vec<f32> = (0..t * rows).map(|_| rnd()).collect();
        let mut y = vec![0f32; t * rows];
        let mut dx = vec![0f32; t * cols];
        let flops = 2.0 * (t * rows * cols) as f64;
        let report = |dtype: &str, kernel: &str, fwd: f64, bwd: Option<f64>| {
            let gf = |ms: f64| flops / ms / 1e6;
            let bwd_s = bwd.map_or("null".to_string(), |b| format!("{b:.3}"));
            let bwd_gf = bwd.map_or("null".to_string(), |b| format!("{:.1}", gf(b)));
            println!(
                "{{\"shape\": \"{name} {rows}x{cols}\", \"tokens\": {t}, \"threads\": {threads}, \"type\": \"{dtype}\", \"kernel\": \"{kernel}\", \"forward_ms\": {fwd:.3}, \"forward_gflops\": {:.1}, \"backward_ms\": {bwd_s}, \"backward_gflops\": {bwd_gf}}}",
                gf(fwd)
            );
        };
        // The f32 Params path (repacks the matrix on every call, as training does).
        let fwd = best_ms(reps, || {
            Projection::forward(&w[..], &pool, &mut y, &x, cols, rows);
        });
        let bwd = best_ms(reps, || {
            Projection::backward_input(&w[..], &pool, &mut dx, &dy, cols, rows);
        });
        report("f32", "f32 gemm (params)", fwd, Some(bwd));
        for dtype in [
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::Q8_0,
            DType::Q4_1,
            DType::Q4_K,
        ] {
            let Some(rb) = dtype.row_bytes(cols) else {
                continue;
            };
            let mut data = vec![0u8; rows * rb];
            for (src, dst) in w.chunks_exact(cols).zip(data.chunks_exact_mut(rb)) {
                quantize_row(dtype, src, dst)?;
            }
            let m = FrozenMatrix::new(&Tensor::owned(dtype, rows, cols, data.clone())?)?;
            let fwd = best_ms(reps, || {
                let _ = m.forward(&pool, &mut y, &x);
            });
            let bwd = best_ms(reps, || {
                let _ = m.backward_input(&pool, &mut dx, &dy);
            });
            report(dtype.name(), "frozen (decoded panels)", fwd, Some(bwd));
            if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
                let mut xq = Vec::new();
                let fwd = best_ms(reps, || {
                    let _ = quantize_acts(dtype, &x, cols, &mut xq);
                    let _ = matmul(&pool, dtype, &data, rows, cols, &xq, t, &mut y);
                });
                report(dtype.name(), "inference (quantized x)", fwd, None);
            }
            let mut mi = m.clone();
            mi.set_compute(BaseCompute::Int8, &pool)?;
            let fwd = best_ms(reps, || {
                let _ = mi.forward(&pool, &mut y, &x);
            });
            let bwd = best_ms(reps, || {
                let _ = mi.backward_input(&pool, &mut dx, &dy);
            });
            report(dtype.name(), "frozen int8 (16-bit x)", fwd, Some(bwd));
        }
    }
    Ok(())
}
