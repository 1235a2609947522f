//! The batching engine against the one-sequence path: whatever runs beside a sequence, and
//! however its KV blocks are handed out, shared or taken away, its greedy tokens must be
//! the ones it gets alone.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrollama_engine::scheduler::{Engine, EngineConfig, Event, Finish, SeqRequest};
use ferrollama_engine::{FinishReason, GenerateParams, Model, SamplerConfig, Session, generate};
use ferrollama_model::KvType;

fn tiny() -> Arc<Model> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-q8_0.gguf");
    Arc::new(Model::load(&p).expect("tiny model"))
}

fn prompt(i: u32, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|k| (k * 37 + i * 101 + 5) % 500)
        .collect()
}

fn request(prompt: Vec<u32>, max_tokens: usize) -> SeqRequest {
    SeqRequest {
        model: 0,
        prompt,
        max_tokens,
        sampler: SamplerConfig::greedy(),
        stop: Vec::new(),
        ignore_eos: true,
        logprobs: None,
        prompt_logprobs: None,
        constraint: None,
        watch: Vec::new(),
        deadline: None,
        lora: None,
    }
}

/// Tokens the one-sequence path generates.
fn alone(model: &Model, prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let mut s = Session::new(model, 512, 2, 64, KvType::F16).expect("session");
    let params = GenerateParams {
        max_tokens,
        sampler: SamplerConfig::greedy(),
        stop: Vec::new(),
    };
    // The tiny model's stop tokens are rare; ignore_eos in the engine matches this only
    // when neither path meets one, which the comparison below checks.
    generate(model, &mut s, prompt, &params, &mut |_| {})
        .expect("generate")
        .tokens
}

/// Drains one sequence's events.
fn collect(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> (Vec<u32>, ferrollama_engine::scheduler::Done) {
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

fn config(kv_positions: usize, step_tokens: usize) -> EngineConfig {
    EngineConfig {
        threads: 2,
        step_tokens,
        max_running: 16,
        max_queue: 64,
        kv_positions,
        ctx: 512,
        kv_type: KvType::F16,
    }
}

fn wait_idle(engine: &Engine) {
    use std::sync::atomic::Ordering::Relaxed;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let s = engine.stats();
        if s.running.load(Relaxed) == 0
            && s.queue_depth.load(Relaxed) == 0
            && s.kv_blocks_used.load(Relaxed) == 0
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the engine did not go idle: sequences or blocks leaked");
}

#[test]
fn concurrent_sequences_match_each_alone() {
    let model = tiny();
    let lens = [3usize, 17, 40, 64, 90, 7, 33, 150];
    let want: Vec<Vec<u32>> = lens
        .iter()
        .enumerate()
        .map(|(i, &l)| alone(&model, &prompt(i as u32, l), 24))
        .collect();
    // A small step budget forces chunked prefill interleaved with decoding.
    let engine = Engine::start(vec![model.clone()], config(4096, 48)).expect("engine");
    let rxs: Vec<_> = lens
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            engine
                .submit(request(prompt(i as u32, l), 24))
                .expect("submit")
        })
        .collect();
    for (i, rx) in rxs.into_iter().enumerate() {
        let (got, done) = collect(rx);
        let n = want[i].len();
        assert_eq!(
            &got[..n],
            &want[i][..],
            "sequence {i} (prompt {} tokens)",
            lens[i]
        );
        assert_eq!(done.completion_tokens, got.len());
        assert_eq!(done.finish, Finish::Generation(FinishReason::Length));
    }
    wait_idle(&engine);
    engine.shutdown();
}

#[test]
fn repeated_prompt_reuses_cached_blocks_and_gives_the_same_tokens() {
    let model = tiny();
    let engine = Engine::start(vec![model.clone()], config(4096, 256)).expect("engine");
    let p = prompt(7, 70);
    let (first, d1) = collect(engine.submit(request(p.clone(), 12)).expect("submit"));
    assert_eq!(d1.cached_tokens, 0);
    let (second, d2) = collect(engine.submit(request(p.clone(), 12)).expect("submit"));
    // 70 prompt tokens + 12 generated: 4 full blocks of the prompt are named, but the
    // last prompt token is always recomputed, so 64 positions come from the cache.
    assert_eq!(
        d2.cached_tokens, 64,
        "full prompt blocks come from the prefix cache"
    );
    assert_eq!(first, second);
    assert_eq!(first, alone(&model, &p, 12));
    // A prompt that extends the first conversation reuses its generated blocks too.
    let mut longer = p.clone();
    longer.extend_from_slice(&first);
    longer.extend(prompt(9, 5));
    let (_, d3) = collect(engine.submit(request(longer, 4)).expect("submit"));
    assert_eq!(d3.cached_tokens, 80);
    wait_idle(&engine);
    engine.shutdown();
}

#[test]
fn preempted_sequences_still_match_when_memory_is_short() {
    let model = tiny();
    // 12 blocks (192 positions) for 6 sequences of 40 + 40 tokens each: they cannot all
    // run at once, so some are preempted and recomputed.
    let engine = Engine::start(vec![model.clone()], config(192, 64)).expect("engine");
    let want: Vec<Vec<u32>> = (0..6).map(|i| alone(&model, &prompt(i, 40), 40)).collect();
    let rxs: Vec<_> = (0..6)
        .map(|i| engine.submit(request(prompt(i, 40), 40)).expect("submit"))
        .collect();
    for (i, rx) in rxs.into_iter().enumerate() {
        let (got, _) = collect(rx);
        assert_eq!(&got[..want[i].len()], &want[i][..], "sequence {i}");
    }
    use std::sync::atomic::Ordering::Relaxed;
    assert!(
        engine.stats().preemptions.load(Relaxed) > 0,
        "the test must exercise preemption"
    );
    wait_idle(&engine);
    engine.shutdown();
}

#[test]
fn dropped_receivers_cancel_and_free_blocks() {
    let model = tiny();
    let engine = Engine::start(vec![model], config(4096, 64)).expect("engine");
    for i in 0..20 {
        let rx = engine.submit(request(prompt(i, 50), 400)).expect("submit");
        drop(rx);
    }
    // One more that runs to the end proves the engine is still serving.
    let (got, _) = collect(engine.submit(request(prompt(99, 10), 5)).expect("submit"));
    assert_eq!(got.len(), 5);
    wait_idle(&engine);
    engine.shutdown();
}

#[test]
fn full_queue_is_refused_with_retry_after() {
    let model = tiny();
    let mut c = config(4096, 64);
    c.max_queue = 2;
    c.max_running = 1;
    let engine = Engine::start(vec![model], c).expect("engine");
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..10 {
        match engine.submit(request(prompt(i, 20), 300)) {
            Ok(rx) => held.push(rx),
            Err(ferrollama_engine::scheduler::SubmitError::QueueFull { .. }) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(
        refused > 0,
        "a bounded queue must refuse some of 10 requests"
    );
    drop(held);
    wait_idle(&engine);
    engine.shutdown();
}

#[test]
fn too_long_prompt_and_bad_model_are_invalid() {
    let model = tiny();
    let engine = Engine::start(vec![model], config(1024, 64)).expect("engine");
    assert!(
        engine.submit(request(prompt(0, 600), 4)).is_err(),
        "ctx is 512"
    );
    assert!(engine.submit(request(Vec::new(), 4)).is_err());
    // A token outside the vocabulary would fail the whole batched step.
    assert!(engine.submit(request(vec![1, u32::MAX], 4)).is_err());
    let mut r = request(prompt(0, 5), 4);
    r.model = 3;
    assert!(engine.submit(r).is_err());
    engine.shutdown();
}

#[test]
fn shutdown_drains_running_sequences_and_refuses_new_ones() {
    let model = tiny();
    let engine = Engine::start(vec![model], config(4096, 64)).expect("engine");
    let rx = engine.submit(request(prompt(1, 30), 60)).expect("submit");
    let e2 = engine.clone();
    let stopper = std::thread::spawn(move || e2.shutdown());
    // The running sequence still finishes normally.
    let (got, done) = collect(rx);
    assert_eq!(got.len(), 60);
    assert_eq!(done.finish, Finish::Generation(FinishReason::Length));
    stopper.join().expect("shutdown returns once drained");
    assert!(matches!(
        engine.submit(request(prompt(2, 5), 4)),
        Err(ferrollama_engine::scheduler::SubmitError::ShuttingDown)
    ));
}

#[test]
fn grace_period_ends_running_sequences_with_a_final_event() {
    let model = tiny();
    let engine = Engine::start(vec![model], config(4096, 64)).expect("engine");
    let mut rx = engine.submit(request(prompt(3, 30), 480)).expect("submit");
    // The first token proves the sequence runs; then the grace period is zero.
    let first = match rx.blocking_recv() {
        Some(Event::Token { id, .. }) => id,
        other => panic!("expected a token, got {other:?}"),
    };
    engine.begin_shutdown(Duration::ZERO);
    assert!(engine.is_closed());
    assert!(matches!(
        engine.submit(request(prompt(4, 5), 4)),
        Err(ferrollama_engine::scheduler::SubmitError::ShuttingDown)
    ));
    let (mut got, done) = collect(rx);
    got.insert(0, first);
    assert_eq!(done.finish, Finish::Shutdown);
    assert!(got.len() < 480, "the sequence was not cut short");
    assert_eq!(done.completion_tokens, got.len());
    // Waiting for the actor returns promptly, and nothing leaked.
    let t = Instant::now();
    engine.shutdown();
    assert!(t.elapsed() < Duration::from_secs(5));
}
