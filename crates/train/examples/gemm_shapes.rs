//! GFLOP/s of `Float::gemm` (f32: pack + SIMD GEMM) on the training pass's products of
//! SmolLM2-135M at 512 tokens, one line per product, and its process CPU time.
//!
//!     cargo build --profile ci -p ferrollama-train --example gemm_shapes
//!     target/ci/examples/gemm_shapes [THREADS] [TOKENS]

/// CPU seconds of the process so far: with other processes on the machine the wall
/// clock counts their time slices too.
fn cpu_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

struct Instant(f64);
impl Instant {
    fn now() -> Instant {
        Instant(cpu_now())
    }
    fn elapsed(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(cpu_now() - self.0)
    }
}

use ferrollama_tensor::ThreadPool;
use ferrollama_train::Float;
use ferrollama_train::float::Layout;
use ferrollama_train::ops::matmul;

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let t: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
    let pool = ThreadPool::new(threads);
    if std::env::var("KERNEL").is_ok() {
        kernel_only(&pool);
        return;
    }
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    };
    // (name, c, oc)
    let shapes = [
        ("q/o 576->576", 576, 576),
        ("k/v 576->192", 576, 192),
        ("gate/up 576->1536", 576, 1536),
        ("down 1536->576", 1536, 576),
        ("output 576->49152", 576, 49152),
    ];
    let (mut all_f, mut all_s) = (0.0, [0.0f64; 3]);
    for (name, c, oc) in shapes {
        let w = rnd(oc * c);
        let x = rnd(t * c);
        let dy = rnd(t * oc);
        let mut y = vec![0.0f32; t * oc];
        let mut dx = vec![0.0f32; t * c];
        let mut dw = vec![0.0f32; oc * c];
        let reps = ((2e9 / (2.0 * (t * oc * c) as f64)).ceil() as usize).max(1);
        let time = |f: &mut dyn FnMut()| {
            f();
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t0 = Instant::now();
                for _ in 0..reps {
                    f();
                }
                best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
            }
            best
        };
        let fwd = time(&mut || f32::gemm(&pool, &mut y, &x, &w, Layout::Rows, c, oc, false));
        let bdx = time(&mut || matmul::backward(&pool, Some(&mut dx), None, &dy, &x, &w, c, oc));
        let bdw = time(&mut || matmul::backward(&pool, None, Some(&mut dw), &dy, &x, &w, c, oc));
        let pk = time(&mut || {
            std::hint::black_box(ferrollama_tensor::PackedF32::pack_on(&pool, &w, oc, c).ok());
        });
        let pkt = time(&mut || {
            std::hint::black_box(
                ferrollama_tensor::PackedF32::pack_transposed_on(&pool, &w, oc, c).ok(),
            );
        });
        let tr = time(&mut || {
            std::hint::black_box(matmul::transpose(&pool, &dy, t, oc));
        });
        println!(
            "{name:>20}: pack {:.2} ms, pack transposed {:.2} ms, transpose dy {:.2} ms",
            pk * 1e3,
            pkt * 1e3,
            tr * 1e3
        );
        let f = 2.0 * (t * oc * c) as f64;
        all_f += f;
        for (a, b) in all_s.iter_mut().zip([fwd, bdx, bdw]) {
            *a += b;
        }
        println!(
            "{name:>20}: fwd {:6.1}  dX {:6.1}  dW {:6.1} GFLOP/s  ({:.2} / {:.2} / {:.2} ms)",
            f / fwd / 1e9,
            f / bdx / 1e9,
            f / bdw / 1e9,
            fwd * 1e3,
            bdx * 1e3,
            bdw * 1e3
        );
    }
    println!(
        "{:>20}: fwd {:6.1}  dX {:6.1}  dW {:6.1} GFLOP/s",
        "all",
        all_f / all_s[0] / 1e9,
        all_f / all_s[1] / 1e9,
        all_f / all_s[2] / 1e9
    );
}

/// The kernel on a pre-packed matrix, no packing per call: `(tokens, rows, cols)`.
#[allow(dead_code)]
pub fn kernel_only(pool: &ThreadPool) {
    use ferrollama_tensor::{PackedF32, matmul_f32_packed};
    for (tokens, rows, cols) in [
        (480, 128, 128),
        (480, 128, 256),
        (480, 128, 576),
        (480, 128, 1536),
        (96, 64, 256),
        (512, 576, 576),
    ] {
        let w: Vec<f32> = (0..rows * cols).map(|i| (i % 7) as f32 * 0.1).collect();
        let x: Vec<f32> = (0..tokens * cols).map(|i| (i % 5) as f32 * 0.1).collect();
        let p = PackedF32::pack(&w, rows, cols).expect("pack");
        let mut out = vec![0.0f32; tokens * rows];
        let f = 2.0 * (tokens * rows * cols) as f64;
        let reps = (3e9 / f).ceil() as usize;
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t0 = Instant::now();
            for _ in 0..reps {
                matmul_f32_packed(pool, &p, &x, tokens, &mut out).expect("gemm");
            }
            best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
        }
        println!(
            "kernel {tokens}x{cols} -> {rows}: {:6.1} GFLOP/s",
            f / best / 1e9
        );
    }
}
