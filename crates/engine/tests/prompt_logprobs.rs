#![allow(clippy::unwrap_used)]
//! Prompt scoring through the engine (OpenAI's `echo` with `logprobs`): the log-probability
//! the engine reports for each prompt token must be the log-softmax of the model's own
//! logits at the position before it, however the prompt is cut into chunks and whatever
//! the prefix cache holds.

use std::path::Path;
use std::sync::Arc;

use ferrollama_engine::scheduler::{Done, Engine, EngineConfig, Event, SeqRequest};
use ferrollama_engine::{Model, SamplerConfig};
use ferrollama_model::{KvCache, KvType};
use ferrollama_tensor::ThreadPool;

fn tiny() -> Arc<Model> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-q8_0.gguf");
    Arc::new(Model::load(&p).expect("tiny model"))
}

fn prompt(len: usize) -> Vec<u32> {
    (0..len as u32).map(|k| (k * 53 + 7) % 500).collect()
}

fn request(prompt: Vec<u32>, max_tokens: usize, scored: Option<usize>) -> SeqRequest {
    SeqRequest {
        model: 0,
        prompt,
        max_tokens,
        sampler: SamplerConfig::greedy(),
        stop: Vec::new(),
        ignore_eos: true,
        logprobs: None,
        prompt_logprobs: scored,
        constraint: None,
        watch: Vec::new(),
        deadline: None,
        lora: None,
    }
}

fn run(engine: &Engine, req: SeqRequest) -> (Vec<u32>, Done) {
    let mut rx = engine.submit(req).unwrap();
    let mut toks = Vec::new();
    loop {
        match rx.blocking_recv() {
            Some(Event::Token { id, .. }) => toks.push(id),
            Some(Event::Done(d)) => return (toks, d),
            Some(Event::Error(e)) => panic!("engine error: {e}"),
            None => panic!("engine dropped the sequence"),
        }
    }
}

/// Log-softmax of every row of the whole prompt's logits, by one plain forward pass.
fn direct(model: &Model, tokens: &[u32]) -> Vec<Vec<f64>> {
    let cfg = &model.llama.config;
    let mut kv = KvCache::new(cfg, 256, KvType::F16).unwrap();
    let mut st = model.llama.new_state(tokens.len(), 256, 2);
    let pool = ThreadPool::new(2);
    let logits = model
        .llama
        .forward(&pool, tokens, &mut kv, &mut st, true)
        .unwrap();
    logits
        .chunks_exact(cfg.vocab_size)
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            row.iter().map(|&x| x as f64 - lse).collect()
        })
        .collect()
}

#[test]
fn prompt_logprobs_are_the_log_softmax_of_the_models_logits() {
    let model = tiny();
    let config = EngineConfig {
        threads: 2,
        // Small steps: the prompt is scored over several chunks.
        step_tokens: 16,
        max_running: 4,
        max_queue: 16,
        kv_positions: 1024,
        ctx: 256,
        kv_type: KvType::F16,
    };
    let engine = Engine::start(vec![model.clone()], config).unwrap();
    let p = prompt(70);
    let want = direct(&model, &p);
    // A plain run first, so the prompt's blocks are in the prefix cache: scoring must not
    // reuse them (they carry no logits).
    let (plain, _) = run(&engine, request(p.clone(), 2, None));
    assert_eq!(plain.len(), 2);
    for (max_tokens, top) in [(0, 3), (2, 0)] {
        let (toks, done) = run(&engine, request(p.clone(), max_tokens, Some(top)));
        assert_eq!(toks.len(), max_tokens, "max_tokens {max_tokens}");
        assert_eq!(done.completion_tokens, max_tokens);
        assert_eq!(done.prompt_logprobs.len(), p.len() - 1);
        for (i, lp) in done.prompt_logprobs.iter().enumerate() {
            let row = &want[i];
            let expect = row[p[i + 1] as usize];
            assert!(
                (f64::from(lp.logprob) - expect).abs() < 1e-4,
                "token {}: {} vs {expect}",
                i + 1,
                lp.logprob
            );
            assert_eq!(lp.top.len(), top);
            for &(t, l) in &lp.top {
                assert!((f64::from(l) - row[t as usize]).abs() < 1e-4);
            }
            if let Some(&(_, best)) = lp.top.first() {
                let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                assert!((f64::from(best) - max).abs() < 1e-4);
            }
        }
        if max_tokens > 0 {
            assert_eq!(toks, plain, "scoring changes no generated token");
        }
    }
    // Scored beside plain sequences in the same steps: each row goes to its own sequence.
    let other = prompt(23)
        .iter()
        .map(|t| (t + 11) % 500)
        .collect::<Vec<_>>();
    let (alone, _) = run(&engine, request(other.clone(), 5, None));
    let plain_rx = engine.submit(request(other.clone(), 5, None)).unwrap();
    let (toks, done) = run(&engine, request(p.clone(), 3, Some(2)));
    assert_eq!(toks[..2], plain[..], "greedy tokens as before");
    for (i, lp) in done.prompt_logprobs.iter().enumerate() {
        assert!((f64::from(lp.logprob) - want[i][p[i + 1] as usize]).abs() < 1e-4);
    }
    let mut rx = plain_rx;
    let mut beside = Vec::new();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            Event::Token { id, .. } => beside.push(id),
            Event::Done(d) => {
                assert!(d.prompt_logprobs.is_empty(), "only scored sequences report");
                break;
            }
            Event::Error(e) => panic!("{e}"),
        }
    }
    assert_eq!(beside, alone);
    engine.shutdown();
}
