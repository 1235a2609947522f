//! The full fine-tuning loop on the tiny PyTorch-pinned model (`testdata/train`): it
//! learns a pattern, a resumed run repeats an uninterrupted one bit for bit, a failed
//! checkpoint write leaves the previous checkpoint whole, and a non-finite loss stops the
//! run with the last good checkpoint kept.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferrollama_model::{LlamaConfig, RopeScaling};
use ferrollama_tensor::ThreadPool;
use ferrollama_train::checkpoint::{self, CHECKPOINT_FILE};
use ferrollama_train::weights::load_params;
use ferrollama_train::{
    AdamWConfig, Event, Length, Lora, LoraConfig, ParamSet, Params, Sequence, Shape, Target,
    TrainConfig, TrainError, Trainer,
};

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/train")
}

/// The tiny model of `tiny_reference.json` (dim 32, 2 layers, vocab 64).
fn tiny() -> (Shape, Params<f32>) {
    let cfg = LlamaConfig {
        dim: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        rope_dims: 8,
        ffn_dim: 64,
        vocab_size: 64,
        norm_eps: 1e-5,
        rope_theta: 500_000.0,
        max_seq_len: 64,
        rope_scaling: Some(RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0,
        }),
    };
    let p = load_params(&testdata().join("tiny_init.safetensors"), &cfg).unwrap();
    (Shape::of(&cfg), p)
}

/// Counting sequences `s, s+k, s+2k, ...` (mod 64): learnable from the first two tokens.
fn pattern(n: usize, offset: u32) -> Vec<Sequence> {
    (0..n as u32)
        .map(|i| {
            let (s, k) = ((i * 7 + offset) % 64, 1 + (i + offset) % 3);
            let toks: Vec<u32> = (0..13).map(|j| (s + j * k) % 64).collect();
            let mut seq = Sequence::causal(&toks);
            seq.counted[0] = false;
            seq
        })
        .collect()
}

fn config(steps: u64) -> TrainConfig {
    TrainConfig {
        length: Length::Steps(steps),
        lr: 3e-3,
        warmup: 2,
        batch_size: 2,
        grad_accum: 2,
        max_grad_norm: 1.0,
        adamw: AdamWConfig::default(),
        seed: 42,
        eval_every: 0,
        checkpoint_every: 0,
        recompute: false,
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrollama-trainer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn losses(t: &mut Trainer, pool: &ThreadPool, n: u64) -> Vec<f64> {
    (0..n).map(|_| t.step(pool).unwrap().loss).collect()
}

#[test]
fn loss_falls_on_a_learnable_pattern() {
    let pool = ThreadPool::new(2);
    let (sh, p) = tiny();
    let eval = pattern(4, 100);
    let mut t = Trainer::new(config(40), sh, p, pattern(12, 0)).unwrap();
    let before = t.evaluate(&pool, &eval).unwrap();
    let mut events = Vec::new();
    t.run(&pool, &eval, None, &mut |e| events.push(e.clone()))
        .unwrap();
    let steps: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Step(r) => Some(r.loss),
            _ => None,
        })
        .collect();
    assert_eq!(steps.len(), 40);
    let first = steps[0];
    let last = steps[36..].iter().sum::<f64>() / 4.0;
    eprintln!("loss {first:.4} -> {last:.4}");
    assert!(
        last < first - 1.0,
        "the loss did not fall: {first} -> {last}"
    );
    let Some(Event::Eval {
        step: 40,
        loss: after,
    }) = events.last().cloned()
    else {
        panic!("no final evaluation: {:?}", events.last());
    };
    assert!(after < before - 0.5, "eval loss {before} -> {after}");
}

#[test]
fn epochs_round_up_to_whole_steps() {
    let (sh, p) = tiny();
    let mut c = config(0);
    c.length = Length::Epochs(2);
    // 2 epochs of 6 sequences at 4 per step: 3 steps.
    let t = Trainer::new(c, sh, p, pattern(6, 0)).unwrap();
    assert_eq!(t.total_steps(), 3);
}

#[test]
fn resume_repeats_the_uninterrupted_run_bit_for_bit() {
    let pool = ThreadPool::new(2);
    let (sh, p) = tiny();
    // 6 sequences, 4 a step: steps cross epoch boundaries, so the data order matters.
    let data = pattern(6, 0);
    let mut straight = Trainer::new(config(10), sh.clone(), p.clone(), data.clone()).unwrap();
    let want = losses(&mut straight, &pool, 10);

    let dir = tmpdir("resume");
    let mut first = Trainer::new(config(10), sh.clone(), p.clone(), data.clone()).unwrap();
    let mut got = losses(&mut first, &pool, 4);
    first.save(&dir).unwrap();
    drop(first);
    let ck = checkpoint::load(&dir, &sh, p.clone(), AdamWConfig::default()).unwrap();
    assert_eq!(ck.progress.step, 4);
    let mut resumed = Trainer::resume(ck, sh.clone(), data).unwrap();
    got.extend(losses(&mut resumed, &pool, 6));
    assert!(resumed.is_done());
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want), "{got:?} vs {want:?}");
    assert!(resumed.params == straight.params, "final weights differ");
    // Resuming on other data is refused rather than silently misaligned.
    let ck = checkpoint::load(&dir, &sh, p.clone(), AdamWConfig::default()).unwrap();
    let (sh, _) = tiny();
    assert!(Trainer::resume(ck, sh, pattern(7, 0)).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failed_checkpoint_write_keeps_the_previous_checkpoint() {
    let pool = ThreadPool::new(1);
    let (sh, p) = tiny();
    let dir = tmpdir("atomic");
    let mut t = Trainer::new(config(10), sh.clone(), p.clone(), pattern(6, 0)).unwrap();
    losses(&mut t, &pool, 2);
    t.save(&dir).unwrap();
    let saved = t.params.clone();
    let bytes = std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap();
    losses(&mut t, &pool, 2);
    // The temporary file's name is taken by a directory: the write fails.
    let tmp = dir.join(format!(".{CHECKPOINT_FILE}.tmp"));
    std::fs::create_dir(&tmp).unwrap();
    let e = t.save(&dir).unwrap_err();
    assert!(matches!(e, TrainError::Io { .. }), "{e}");
    assert_eq!(std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap(), bytes);
    let ck = checkpoint::load(&dir, &sh, p.clone(), AdamWConfig::default()).unwrap();
    assert_eq!(ck.progress.step, 2);
    assert!(ck.params == saved);
    std::fs::remove_dir(&tmp).unwrap();

    // A writer failing half way (a full disk): the old file stays, no temporary is left.
    let target = dir.join(CHECKPOINT_FILE);
    let e = checkpoint::atomic_write(&target, |w| {
        w.write_all(b"partial")?;
        Err(std::io::Error::other("no space left on device"))
    })
    .unwrap_err();
    assert!(e.to_string().contains("no space"), "{e}");
    assert_eq!(std::fs::read(&target).unwrap(), bytes);
    assert!(!tmp.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let pool = ThreadPool::new(1);
    let (sh, p) = tiny();
    let dir = tmpdir("nan");
    let mut t = Trainer::new(config(10), sh.clone(), p.clone(), pattern(6, 0)).unwrap();
    losses(&mut t, &pool, 2);
    t.save(&dir).unwrap();
    let saved = t.params.clone();
    t.params.norm[0] = f32::INFINITY;
    let mut seen = Vec::new();
    let e = t
        .run(&pool, &[], Some(&dir), &mut |e| seen.push(e.clone()))
        .unwrap_err();
    assert!(matches!(e, TrainError::NotFinite { step: 3, .. }), "{e}");
    assert!(seen.is_empty(), "{seen:?}");
    let ck = checkpoint::load(&dir, &sh, p.clone(), AdamWConfig::default()).unwrap();
    assert_eq!(ck.progress.step, 2);
    assert!(ck.params == saved);

    // An absurd learning rate blows the weights up within a few steps; checkpoints taken
    // every step stop at the last finite one.
    let mut c = config(20);
    c.lr = 1e30;
    c.warmup = 0;
    c.checkpoint_every = 1;
    let dir2 = tmpdir("nan-lr");
    let mut t = Trainer::new(c, sh.clone(), p.clone(), pattern(6, 0)).unwrap();
    let mut done = 0u64;
    let e = t
        .run(&pool, &[], Some(&dir2), &mut |e| {
            if let Event::Checkpoint { step } = e {
                done = *step;
            }
        })
        .unwrap_err();
    let TrainError::NotFinite { step, loss } = e else {
        panic!("{e}");
    };
    assert!(!loss.is_finite());
    assert!(
        step > done && done >= 1,
        "step {step}, last checkpoint {done}"
    );
    let ck = checkpoint::load(&dir2, &sh, p.clone(), AdamWConfig::default()).unwrap();
    assert_eq!(ck.progress.step, done);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir2);
}

#[test]
fn config_round_trips_through_json() {
    let mut c = config(7);
    c.seed = u64::MAX;
    c.recompute = true;
    assert_eq!(TrainConfig::from_json(&c.to_json()), Some(c.clone()));
    c.length = Length::Epochs(3);
    assert_eq!(TrainConfig::from_json(&c.to_json()), Some(c));
}

/// A rank-4 adapter on every projection of the tiny model.
fn tiny_lora(sh: &Shape, p: &Params<f32>, seed: u64) -> Lora<f32> {
    let cfg = LoraConfig {
        dropout: 0.0,
        rank: 4,
        alpha: 8.0,
        targets: Target::ALL.to_vec(),
    };
    let mut l = Lora::zeros(sh, p.layers.len(), cfg).unwrap();
    // Lora::new's initialization, drawn for the tiny shapes: A uniform in ±1/√in.
    let mut s = seed;
    for (_, t) in l.tensors_mut() {
        let n = t.len();
        let is_a = n > 0;
        for x in t.iter_mut() {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *x = ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * 0.2 * f32::from(is_a);
        }
    }
    for layer in &mut l.layers {
        for p in layer.iter_mut().flatten() {
            p.b.fill(0.0);
        }
    }
    l
}

#[test]
fn lora_learns_the_pattern_with_the_base_frozen() {
    let pool = ThreadPool::new(2);
    let (sh, p) = tiny();
    let eval = pattern(4, 100);
    let mut c = config(60);
    c.lr = 3e-2;
    let lora = tiny_lora(&sh, &p, 7);
    let mut t = Trainer::new_lora(c, sh, p.clone(), lora, pattern(12, 0)).unwrap();
    let before = t.evaluate(&pool, &eval).unwrap();
    let first = t.step(&pool).unwrap().loss;
    // B starts at zero: step 0's loss is the base model's, whatever A is.
    assert!((first - before).abs() < 0.5, "{first} vs {before}");
    let rest = losses(&mut t, &pool, 59);
    let last = rest[55..].iter().sum::<f64>() / 4.0;
    let after = t.evaluate(&pool, &eval).unwrap();
    eprintln!("lora train loss {first:.4} -> {last:.4}, eval loss {before:.4} -> {after:.4}");
    assert!(last < first - 1.0, "train loss {first} -> {last}");
    assert!(after < before - 0.3, "eval loss {before} -> {after}");
    assert!(t.params == p, "the frozen base changed");
    let l = t.lora().unwrap();
    assert!(l.layers[0][0].as_ref().unwrap().b.iter().any(|&x| x != 0.0));
}

#[test]
fn lora_resume_repeats_the_uninterrupted_run_bit_for_bit() {
    lora_resume_case(0.0);
}

/// Dropout's masks come from the seed, step and micro-batch, so a resumed run draws the
/// uninterrupted run's masks (the checkpoint keeps the rate in the adapter's settings).
#[test]
fn lora_resume_with_dropout_repeats_the_uninterrupted_run_bit_for_bit() {
    lora_resume_case(0.3);
}

fn lora_resume_case(dropout: f64) {
    let pool = ThreadPool::new(2);
    let (sh, p) = tiny();
    let data = pattern(6, 0);
    let mut lora = tiny_lora(&sh, &p, 3);
    lora.config.dropout = dropout;
    let mut straight =
        Trainer::new_lora(config(8), sh.clone(), p.clone(), lora.clone(), data.clone()).unwrap();
    let want = losses(&mut straight, &pool, 8);

    let dir = tmpdir(&format!("lora-resume-{dropout}"));
    let mut first =
        Trainer::new_lora(config(8), sh.clone(), p.clone(), lora, data.clone()).unwrap();
    first.base = Some("tiny".into());
    let mut got = losses(&mut first, &pool, 3);
    first.save(&dir).unwrap();
    drop(first);
    // Only the adapter and its moments are saved, not the base.
    let st = std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&st).unwrap();
    let names: Vec<String> = header.tensors().keys().cloned().collect();
    assert_eq!(names.len(), 3 * 2 * 7 * 2, "{names:?}");
    assert!(names.iter().all(|n| n.contains(".lora_")), "{names:?}");
    let ck = checkpoint::load(&dir, &sh, p.clone(), AdamWConfig::default()).unwrap();
    assert_eq!(ck.base.as_deref(), Some("tiny"));
    assert_eq!(ck.tuned.method(), "lora");
    let mut resumed = Trainer::resume(ck, sh.clone(), data.clone()).unwrap();
    got.extend(losses(&mut resumed, &pool, 5));
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want), "{got:?} vs {want:?}");
    assert!(resumed.lora() == straight.lora(), "final adapters differ");
    assert_eq!(resumed.lora().unwrap().config.dropout, dropout);
    if dropout > 0.0 {
        // The dropout run is not the plain one.
        let plain = tiny_lora(&sh, &p, 3);
        let mut t = Trainer::new_lora(config(8), sh, p, plain, data).unwrap();
        let other = losses(&mut t, &pool, 8);
        assert_ne!(
            bits(&other[1..]),
            bits(&want[1..]),
            "dropout changed nothing"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
