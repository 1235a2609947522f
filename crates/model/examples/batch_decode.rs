//! Decode step time for B sequences at once (the serving engine's steady state), without
//! HTTP or sampling: `cargo run --release -p ferrollama-model --example batch_decode --
//! MODEL.gguf [B=16] [CTX=160] [STEPS=20]`. Prints ms per step and tok/s, with the
//! single-sequence figure for comparison.

use std::time::Instant;

use ferrollama_model::gguf::GgufFile;
use ferrollama_model::{KV_BLOCK, KvCache, KvType, Llama, Logits, SeqChunk};
use ferrollama_tensor::ThreadPool;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: batch_decode MODEL.gguf [B] [CTX] [STEPS]")?;
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (b_max, ctx, steps) = (arg(2, 16), arg(3, 160), arg(4, 20));
    let f = GgufFile::open(path)?;
    let llama = Llama::from_gguf(&f)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = ThreadPool::new(threads);
    for b in [1, b_max] {
        let per = ctx.div_ceil(KV_BLOCK);
        let mut kv = KvCache::with_blocks(&llama.config, per * b, KvType::F16)?;
        let mut st = llama.new_state(b.max(ctx), ctx, threads);
        let tables: Vec<Vec<u32>> = (0..b)
            .map(|s| ((s * per) as u32..((s + 1) * per) as u32).collect())
            .collect();
        // Fill each sequence's first ctx - steps - 1 positions (one prompt each).
        let fill = ctx - steps - 1;
        let prompt: Vec<u32> = (0..fill as u32).map(|i| 100 + i).collect();
        for t in &tables {
            let seq = SeqChunk {
                tokens: &prompt,
                pos0: 0,
                blocks: t,
                logits: Logits::Last,
            };
            llama.forward_batch(&pool, std::slice::from_ref(&seq), &mut kv, &mut st)?;
        }
        let toks: Vec<[u32; 1]> = (0..b).map(|i| [500 + i as u32]).collect();
        let mut times = Vec::new();
        for s in 0..steps {
            let seqs: Vec<SeqChunk<'_>> = (0..b)
                .map(|i| SeqChunk {
                    tokens: &toks[i],
                    pos0: fill + s,
                    blocks: &tables[i],
                    logits: Logits::Last,
                })
                .collect();
            let t0 = Instant::now();
            llama.forward_batch(&pool, &seqs, &mut kv, &mut st)?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        println!(
            "B={b:2}: {med:.1} ms/step (median of {steps}), {:.1} tok/s",
            b as f64 * 1e3 / med
        );
    }
    Ok(())
}
