//! The pipeline: seeds → N sampled replies each from the teacher (through the engine, many
//! sequences at once) → the shield drops unsafe pairs → a score → the filter → records.
//!
//! Every (prompt index, generation index) key is one future that generates, shields and
//! scores; up to `concurrency` of them run at once, so the engine batches the teacher's
//! decoding and the guard's and judge's checks together. Results come back in key order, so
//! each prompt's records are written as soon as its last generation is in, and a run is
//! reproducible whatever the concurrency: each key samples with its own seed
//! ([`generation_seed`]).
//!
//! Scores: with a judge, the number its reply gives (see [`Judge`]); without, the reward is
//! the reply's mean token log-probability under the teacher: the mean over the generated
//! tokens (the end-of-turn token excluded) of log softmax(logits)[token], the model's raw
//! distribution at temperature 1 whatever the sampling temperature. It is in (−∞, 0];
//! higher is a reply the teacher finds more typical.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferrollama_engine::scheduler::{Engine, Event, Finish, SeqRequest};
use ferrollama_engine::{ChatMessage, FinishReason, Lora, SamplerConfig};
use ferrollama_safety::Shield;
use ferrollama_safety::shield::turns_from;
use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::filter::{Filter, generation_seed};
use super::seeds::Seed;
use crate::error::{EvalError, Result};

/// (prompt index, generation index).
pub type Key = (usize, usize);

/// The judge's default prompt: `{{ prompt }}` is the last user message, `{{ response }}`
/// the reply.
pub const DEFAULT_JUDGE_TEMPLATE: &str = "Rate how well the response answers the \
question, from 1 (useless) to 10 (perfect).\n\nQuestion: {{ prompt }}\n\nResponse: {{ response \
}}\n\nAnswer with the rating only, as: Score: N";

/// The default score pattern: the first number after `Score:`, else the first number.
pub const DEFAULT_SCORE_REGEX: &str = r"(?i)score:\s*(-?\d+(?:\.\d+)?)|(-?\d+(?:\.\d+)?)";

/// The teacher: a model of the engine, optionally with an adapter.
#[derive(Debug, Clone)]
pub struct Teacher {
    pub model: usize,
    /// Its name, in the provenance.
    pub name: String,
    pub lora: Option<Arc<Lora>>,
}

/// A judge model of the engine: it reads the Jinja `template` (over `prompt` and
/// `response`) as one user message in its chat template, answers greedily in at most
/// `max_tokens` tokens, and the first capture group of `score_regex` that matched (else the
/// whole match) is the score.
#[derive(Debug, Clone)]
pub struct Judge {
    pub model: usize,
    pub name: String,
    pub template: String,
    pub score_regex: regex::Regex,
    pub max_tokens: usize,
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct SdgConfig {
    pub teacher: Teacher,
    /// Replies per prompt.
    pub n: usize,
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    /// The teacher's prompt: a system message and/or few-shot turns put before every seed
    /// when the teacher generates, never stored in the records (what a student distils is
    /// the behaviour without them).
    pub teacher_prompt: Vec<ChatMessage>,
    pub judge: Option<Judge>,
    pub filter: Filter,
    /// Keys in flight at once.
    pub concurrency: usize,
}

impl SdgConfig {
    /// What must match for a rerun to resume a run (not the concurrency, which changes no
    /// result). `seeds` fingerprints the seed prompts.
    pub fn settings(&self, seeds: &[Seed], shield: Option<&str>) -> Value {
        json!({
            "model": self.teacher.name,
            "n": self.n,
            "max_tokens": self.max_tokens,
            "temperature": short(self.temperature),
            "top_p": short(self.top_p),
            "seed": self.seed,
            "teacher_prompt": self.teacher_prompt,
            "judge": self.judge.as_ref().map(|j| json!({
                "model": j.name,
                "template": j.template,
                "score_regex": j.score_regex.as_str(),
                "max_tokens": j.max_tokens,
            })),
            "shield": shield,
            "filter": self.filter,
            "prompts": seeds.len(),
            "seeds_fnv1a": fingerprint(seeds),
        })
    }
}

/// An `f32` setting as the f64 of its shortest decimal (0.8, not 0.800000011920929).
fn short(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// FNV-1a (64 bits) of the seeds' roles and contents: changes when the seeds file does.
fn fingerprint(seeds: &[Seed]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h ^= u64::from(x);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for s in seeds {
        for m in &s.messages {
            eat(m.role.as_bytes());
            eat(&[0]);
            eat(m.content.as_deref().unwrap_or("").as_bytes());
            eat(&[1]);
        }
        eat(&[2]);
    }
    format!("{h:016x}")
}

/// A shield's finding on one reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShieldFinding {
    pub shield_id: String,
    pub flagged: bool,
    pub codes: Vec<String>,
}

/// A judge's verdict on one reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeFinding {
    pub model: String,
    pub score: Option<f64>,
    pub reply: String,
}

/// One generation and what was found about it: a journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub prompt: usize,
    pub index: usize,
    /// The sampler's seed.
    pub seed: u64,
    pub reply: String,
    pub tokens: usize,
    /// `stop` (end of turn) or `length` (max_tokens reached).
    pub finish: String,
    /// Mean token log-probability; `None` for an empty reply.
    pub reward: Option<f64>,
    #[serde(default)]
    pub judge: Option<JudgeFinding>,
    #[serde(default)]
    pub shield: Option<ShieldFinding>,
}

impl Generation {
    /// The score the filter ranks by: the judge's when there is a judge, else the reward.
    pub fn score(&self, judged: bool) -> Option<f64> {
        if judged {
            self.judge.as_ref().and_then(|j| j.score)
        } else {
            self.reward
        }
    }
}

/// Where results go, as soon as they are known.
pub trait Sink {
    /// Every generation (kept or not), once generated, shielded and scored.
    fn generation(&mut self, g: &Generation) -> Result<()>;
    /// A kept record.
    fn record(&mut self, record: &Value) -> Result<()>;
}

/// Keeps the records in memory (the HTTP route).
#[derive(Debug, Default)]
pub struct Collect(pub Vec<Value>);

impl Sink for Collect {
    fn generation(&mut self, _: &Generation) -> Result<()> {
        Ok(())
    }
    fn record(&mut self, record: &Value) -> Result<()> {
        self.0.push(record.clone());
        Ok(())
    }
}

/// A run's counts (Llama Stack's `statistics`).
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub prompts: usize,
    /// prompts × n.
    pub generations: usize,
    /// Generated in this run (the rest came from the journal).
    pub generated: usize,
    pub resumed: usize,
    /// Dropped by the shield.
    pub unsafe_dropped: usize,
    /// Empty replies, dropped.
    pub empty_dropped: usize,
    /// Candidates without a score (the judge's reply held none).
    pub unscored: usize,
    /// Candidates the filter dropped.
    pub filtered_out: usize,
    /// Records kept, this run and earlier.
    pub kept: usize,
    /// Records written in this run.
    pub written: usize,
    pub filtering_function: String,
}

/// Checks that a judge template renders (with empty `prompt` and `response`).
pub fn check_judge_template(template: &str) -> Result<()> {
    minijinja::Environment::new()
        .render_str(
            template,
            minijinja::context! { prompt => "", response => "" },
        )
        .map(|_| ())
        .map_err(|e| EvalError::Invalid(format!("the judge template: {e}")))
}

/// One finished sequence: its text, generated tokens' log-probabilities and finish.
async fn complete(engine: &Engine, req: SeqRequest) -> Result<(String, Vec<f32>, String)> {
    let mut rx = engine
        .submit(req)
        .map_err(|e| EvalError::Generate(e.to_string()))?;
    let mut text = String::new();
    let mut lps = Vec::new();
    loop {
        match rx.recv().await {
            Some(Event::Token {
                text: t, logprob, ..
            }) => {
                text.push_str(&t);
                if let Some(l) = logprob {
                    lps.push(l.logprob);
                }
            }
            Some(Event::Done(d)) => {
                text.push_str(&d.text);
                let finish = match d.finish {
                    Finish::Generation(FinishReason::Length | FinishReason::ContextFull) => {
                        "length".to_string()
                    }
                    Finish::Generation(_) => "stop".to_string(),
                    Finish::Timeout | Finish::Shutdown | Finish::ContentFilter => {
                        return Err(EvalError::Generate(
                            "the engine stopped the sequence (timeout or shutdown)".into(),
                        ));
                    }
                };
                return Ok((text, lps, finish));
            }
            Some(Event::Error(e)) => return Err(EvalError::Generate(e)),
            None => {
                return Err(EvalError::Generate(
                    "the engine dropped the sequence".into(),
                ));
            }
        }
    }
}

fn request(
    model: usize,
    prompt: Vec<u32>,
    max_tokens: usize,
    sampler: SamplerConfig,
) -> SeqRequest {
    SeqRequest {
        model,
        prompt,
        max_tokens,
        sampler,
        stop: Vec::new(),
        ignore_eos: false,
        logprobs: Some(0),
        prompt_logprobs: None,
        constraint: None,
        watch: Vec::new(),
        deadline: None,
        lora: None,
    }
}

/// A leading system message's text, and the rest.
fn split_system(ms: &[ChatMessage]) -> (Option<String>, &[ChatMessage]) {
    match ms.split_first() {
        Some((m, rest)) if m.role == "system" => (m.content.clone(), rest),
        _ => (None, ms),
    }
}

/// The teacher's dialog: its prompt's turns before the seed's, one system message first (the
/// teacher prompt's and the seed's own joined by a blank line).
fn teacher_dialog(prefix: &[ChatMessage], seed: &Seed) -> Vec<ChatMessage> {
    let (psys, pturns) = split_system(prefix);
    let (ssys, sturns) = split_system(&seed.messages);
    let system = match (psys, ssys) {
        (Some(a), Some(b)) => Some(format!("{a}\n\n{b}")),
        (a, b) => a.or(b),
    };
    system
        .map(|t| ChatMessage::new("system", &t))
        .into_iter()
        .chain(pturns.iter().cloned())
        .chain(sturns.iter().cloned())
        .collect()
}

/// Generates, shields and scores key `key`.
async fn one(
    engine: &Engine,
    shield: Option<&Shield>,
    cfg: &SdgConfig,
    seed: &Seed,
    ids: &[u32],
    key: Key,
) -> Result<Generation> {
    let s = generation_seed(cfg.seed, key.0, key.1);
    let sampler = SamplerConfig {
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        seed: s,
        ..SamplerConfig::default()
    };
    let mut req = request(cfg.teacher.model, ids.to_vec(), cfg.max_tokens, sampler);
    req.lora = cfg.teacher.lora.clone();
    let (reply, lps, finish) = complete(engine, req).await?;
    let reply = reply.trim().to_string();
    let reward = (!lps.is_empty() && !reply.is_empty())
        .then(|| lps.iter().map(|&l| f64::from(l)).sum::<f64>() / lps.len() as f64);
    let mut g = Generation {
        prompt: key.0,
        index: key.1,
        seed: s,
        tokens: lps.len(),
        finish,
        reward,
        judge: None,
        shield: None,
        reply,
    };
    if g.reply.is_empty() {
        return Ok(g);
    }
    if let Some(sh) = shield {
        let mut turns: Vec<(String, String)> = seed
            .messages
            .iter()
            .filter(|m| m.role != "system")
            .map(|m| (m.role.clone(), m.content.clone().unwrap_or_default()))
            .collect();
        turns.push(("assistant".into(), g.reply.clone()));
        let v = sh.check(engine, &turns_from(turns)?).await?;
        g.shield = Some(ShieldFinding {
            shield_id: sh.id.clone(),
            flagged: v.flagged,
            codes: v.codes,
        });
        if v.flagged {
            return Ok(g);
        }
    }
    if let Some(j) = &cfg.judge {
        let question = seed
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .and_then(|m| m.content.clone())
            .unwrap_or_default();
        let prompt = minijinja::Environment::new()
            .render_str(
                &j.template,
                minijinja::context! { prompt => question, response => &g.reply },
            )
            .map_err(|e| EvalError::Invalid(format!("the judge template: {e}")))?;
        let model = engine
            .model(j.model)
            .ok_or_else(|| EvalError::Invalid(format!("judge model {} is not loaded", j.model)))?;
        let ids = model.chat_prompt(&[ChatMessage::new("user", &prompt)])?;
        let (reply, _, _) = complete(
            engine,
            request(j.model, ids, j.max_tokens, SamplerConfig::greedy()),
        )
        .await?;
        g.judge = Some(JudgeFinding {
            model: j.name.clone(),
            score: crate::judge::parse_score(&j.score_regex, &reply),
            reply,
        });
    }
    Ok(g)
}

/// Prompt `i`'s kept records, by its generations (all `n` of them, in index order).
fn records(
    cfg: &SdgConfig,
    seed: &Seed,
    i: usize,
    gens: &[Generation],
    stats: &mut Stats,
) -> Vec<(Key, Value)> {
    let mut cands = Vec::new();
    for g in gens {
        if g.reply.is_empty() {
            stats.empty_dropped += 1;
        } else if g.shield.as_ref().is_some_and(|s| s.flagged) {
            stats.unsafe_dropped += 1;
        } else {
            cands.push(g);
        }
    }
    let judged = cfg.judge.is_some();
    let scores: Vec<Option<f64>> = cands.iter().map(|g| g.score(judged)).collect();
    stats.unscored += scores.iter().filter(|s| s.is_none()).count();
    let keep = cfg.filter.keep(i, &scores);
    stats.filtered_out += cands.len() - keep.len();
    keep.into_iter()
        .map(|c| {
            let g = cands[c];
            let mut messages = json!(seed.messages);
            if let Some(a) = messages.as_array_mut() {
                a.push(json!({"role": "assistant", "content": g.reply}));
            }
            let record = json!({
                "messages": messages,
                "provenance": {
                    "prompt_index": i,
                    "generation_index": g.index,
                    "model": cfg.teacher.name,
                    "seed": g.seed,
                    "temperature": short(cfg.temperature),
                    "top_p": short(cfg.top_p),
                    "score": scores[c],
                    "reward": g.reward,
                    "judge": g.judge.as_ref().map(|j| json!({"model": j.model, "score": j.score})),
                    "shield": g.shield,
                    "filtering_function": cfg.filter.kind.name(),
                },
            });
            ((i, g.index), record)
        })
        .collect()
}

/// Runs the pipeline over `seeds`. `done` holds generations an earlier run finished (not
/// generated again), `written` the keys whose records are already in the output (not
/// written again). `progress(done, total)` follows the generations.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    engine: &Engine,
    shield: Option<&Shield>,
    cfg: &SdgConfig,
    seeds: &[Seed],
    mut done: HashMap<Key, Generation>,
    written: &HashSet<Key>,
    sink: &mut (dyn Sink + Send),
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<Stats> {
    if cfg.n == 0 || cfg.max_tokens == 0 || cfg.concurrency == 0 {
        return Err(EvalError::Invalid(
            "n, max_tokens and concurrency must each be at least 1".into(),
        ));
    }
    cfg.filter.validate()?;
    if let Some(j) = &cfg.judge {
        check_judge_template(&j.template)?;
    }
    let teacher = engine.model(cfg.teacher.model).ok_or_else(|| {
        EvalError::Invalid(format!("teacher model {} is not loaded", cfg.teacher.model))
    })?;
    let ctx = engine.context(cfg.teacher.model).unwrap_or(0);
    // Every prompt is checked before anything is generated.
    let mut ids = Vec::with_capacity(seeds.len());
    for (i, s) in seeds.iter().enumerate() {
        super::seeds::check_dialog(&s.messages)
            .map_err(|e| EvalError::Invalid(format!("prompt {i}: {e}")))?;
        let p = teacher.chat_prompt(&teacher_dialog(&cfg.teacher_prompt, s))?;
        if p.len() + cfg.max_tokens > ctx {
            return Err(EvalError::Invalid(format!(
                "prompt {i} has {} tokens; with max_tokens {} it does not fit the teacher's \
                 context of {ctx}: shorten it, lower max_tokens or raise the context size",
                p.len(),
                cfg.max_tokens
            )));
        }
        ids.push(p);
    }
    let total = seeds.len() * cfg.n;
    let mut stats = Stats {
        prompts: seeds.len(),
        generations: total,
        filtering_function: cfg.filter.kind.name().into(),
        ..Stats::default()
    };
    done.retain(|k, _| k.0 < seeds.len() && k.1 < cfg.n);
    stats.resumed = done.len();
    let todo: Vec<Key> = (0..seeds.len())
        .flat_map(|i| (0..cfg.n).map(move |j| (i, j)))
        .filter(|k| !done.contains_key(k))
        .collect();
    let mut next_prompt = 0;
    // Writes the records of every prompt whose generations are all in, in prompt order.
    let flush = |done: &mut HashMap<Key, Generation>,
                 next_prompt: &mut usize,
                 stats: &mut Stats,
                 sink: &mut (dyn Sink + Send)|
     -> Result<()> {
        while *next_prompt < seeds.len()
            && (0..cfg.n).all(|j| done.contains_key(&(*next_prompt, j)))
        {
            let i = *next_prompt;
            let gens: Vec<Generation> = (0..cfg.n).filter_map(|j| done.remove(&(i, j))).collect();
            for (key, r) in records(cfg, &seeds[i], i, &gens, stats) {
                stats.kept += 1;
                if !written.contains(&key) {
                    sink.record(&r)?;
                    stats.written += 1;
                }
            }
            *next_prompt += 1;
        }
        Ok(())
    };
    flush(&mut done, &mut next_prompt, &mut stats, sink)?;
    let mut finished = stats.resumed;
    progress(finished, total);
    let mut results = stream::iter(todo)
        .map(|k| one(engine, shield, cfg, &seeds[k.0], &ids[k.0], k))
        .buffered(cfg.concurrency);
    while let Some(g) = results.next().await {
        let g = g?;
        sink.generation(&g)?;
        stats.generated += 1;
        done.insert((g.prompt, g.index), g);
        flush(&mut done, &mut next_prompt, &mut stats, sink)?;
        finished += 1;
        progress(finished, total);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_teacher_prompt_goes_first_with_one_system_message() {
        let plain = Seed::user("q");
        let sys = [ChatMessage::new("system", "S")];
        let d = teacher_dialog(&sys, &plain);
        assert_eq!(
            d,
            vec![
                ChatMessage::new("system", "S"),
                ChatMessage::new("user", "q")
            ]
        );
        let own = Seed {
            messages: vec![
                ChatMessage::new("system", "own"),
                ChatMessage::new("user", "q"),
            ],
        };
        let shots = [
            ChatMessage::new("system", "S"),
            ChatMessage::new("user", "u1"),
            ChatMessage::new("assistant", "a1"),
        ];
        let d = teacher_dialog(&shots, &own);
        assert_eq!(
            d,
            vec![
                ChatMessage::new("system", "S\n\nown"),
                ChatMessage::new("user", "u1"),
                ChatMessage::new("assistant", "a1"),
                ChatMessage::new("user", "q"),
            ]
        );
        assert_eq!(
            teacher_dialog(&shots[1..], &own)[0],
            ChatMessage::new("system", "own")
        );
        assert_eq!(teacher_dialog(&[], &plain), plain.messages);
    }

    #[test]
    fn fingerprint_follows_the_seeds() {
        let a = [Seed::user("a"), Seed::user("b")];
        let b = [Seed::user("a"), Seed::user("c")];
        let c = [Seed::user("ab")];
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
    }
}
