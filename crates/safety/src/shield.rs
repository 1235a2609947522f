//! The shield abstraction: a named check over a conversation that returns a [`Verdict`],
//! whatever model (or rule) is behind it, and the [`ShieldRegistry`] the server lists.
//!
//! Kinds:
//! - `llama-guard`: [`LlamaGuard`] on one of the engine's models;
//! - `prompt-guard`: [`PromptGuardShield`], Prompt Guard on the engine's thread pool;
//! - `regex`: [`RegexShield`], a rule that flags text matching a regular expression (a
//!   blocklist, and a shield whose verdict a test controls).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use ferrollama_engine::scheduler::Engine;
use serde_json::{Value, json};

use crate::error::{Result, SafetyError};
use crate::llama_guard::{LlamaGuard, Speaker, Turn};
use crate::prompt_guard_shield::PromptGuardShield;

/// What llama-stack tells the user when a shield blocks a message.
pub const REFUSAL: &str = "I can't answer that. Can I help with something else?";

/// A shield's finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub flagged: bool,
    /// Violated codes: `S1`..`S14` (Llama Guard), `jailbreak` / `prompt_injection` (Prompt
    /// Guard), or a regex shield's code.
    pub codes: Vec<String>,
    /// Human names of the codes, in the same order.
    pub categories: Vec<String>,
    /// Scores by code, for every code the shield can score (flagged or not).
    pub scores: Vec<(String, f32)>,
    /// Shield-specific details (the guard's raw answer, probabilities, ...).
    pub detail: Value,
}

/// Which check a shield runs.
#[derive(Debug, Clone)]
pub enum ShieldKind {
    LlamaGuard(LlamaGuard),
    PromptGuard(PromptGuardShield),
    Regex(RegexShield),
}

/// A registered shield.
#[derive(Debug, Clone)]
pub struct Shield {
    /// The id clients use (`shield_id`).
    pub id: String,
    /// `llama-guard`, `prompt-guard` or `regex`.
    pub provider_id: String,
    /// The model id behind it (or the pattern for a regex shield).
    pub provider_resource_id: String,
    /// The parameters it was registered with.
    pub params: Value,
    pub kind: ShieldKind,
}

impl Shield {
    /// Checks `turns` (the last message is the one judged).
    pub async fn check(&self, engine: &Engine, turns: &[Turn]) -> Result<Verdict> {
        match &self.kind {
            ShieldKind::LlamaGuard(g) => {
                let v = g.check(engine, turns).await?;
                let scores = g
                    .size
                    .categories()
                    .iter()
                    .filter(|c| !g.excluded.iter().any(|e| e == c.code))
                    .map(|c| {
                        let s = if v.codes.iter().any(|x| x == c.code) {
                            v.unsafe_score
                        } else {
                            0.0
                        };
                        (c.code.to_string(), s)
                    })
                    .collect();
                Ok(Verdict {
                    flagged: !v.safe,
                    codes: v.codes,
                    categories: v.categories,
                    scores,
                    detail: json!({
                        "unsafe_score": v.unsafe_score,
                        "output": v.output,
                        "prompt_tokens": v.prompt_tokens,
                        "cached_tokens": v.cached_tokens,
                    }),
                })
            }
            ShieldKind::PromptGuard(p) => p.check(engine, last_text(turns)?).await,
            ShieldKind::Regex(r) => Ok(r.check(last_text(turns)?)),
        }
    }

    /// The Llama Stack `Shield` resource.
    pub fn resource(&self) -> Value {
        json!({
            "identifier": self.id,
            "provider_resource_id": self.provider_resource_id,
            "provider_id": self.provider_id,
            "type": "shield",
            "params": self.params,
        })
    }
}

/// The text of the last message (what Prompt Guard and regex shields judge, as
/// llama-stack's Prompt Guard shield does).
fn last_text(turns: &[Turn]) -> Result<&str> {
    turns.last().map(|t| t.text.as_str()).ok_or_else(|| {
        SafetyError::Invalid("the conversation is empty: give at least one message".into())
    })
}

/// Flags text in which a regular expression finds a match.
#[derive(Debug, Clone)]
pub struct RegexShield {
    pub pattern: regex::Regex,
    /// The code reported (default `blocked`).
    pub code: String,
    /// Its human name (default: the pattern).
    pub name: String,
}

impl RegexShield {
    /// From registration params `{"pattern": "...", "code"?: "...", "name"?: "..."}`.
    pub fn from_params(params: &Value) -> Result<RegexShield> {
        let pattern = params
            .get("pattern")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                SafetyError::Invalid(
                    "a regex shield needs params.pattern (a regular expression)".into(),
                )
            })?;
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| SafetyError::Invalid(format!("params.pattern: {e}")))?;
        let s = |k: &str| params.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(RegexShield {
            code: s("code").unwrap_or_else(|| "blocked".into()),
            name: s("name").unwrap_or_else(|| format!("matches {pattern}")),
            pattern: re,
        })
    }

    pub fn check(&self, text: &str) -> Verdict {
        let hit = self.pattern.is_match(text);
        Verdict {
            flagged: hit,
            codes: if hit { vec![self.code.clone()] } else { vec![] },
            categories: if hit { vec![self.name.clone()] } else { vec![] },
            scores: vec![(self.code.clone(), if hit { 1.0 } else { 0.0 })],
            detail: json!({}),
        }
    }
}

/// The shields a server offers, by id.
#[derive(Debug, Default)]
pub struct ShieldRegistry {
    shields: RwLock<BTreeMap<String, Arc<Shield>>>,
}

impl ShieldRegistry {
    pub fn new() -> ShieldRegistry {
        ShieldRegistry::default()
    }

    pub fn list(&self) -> Vec<Arc<Shield>> {
        self.shields
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Shield>> {
        self.shields
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Adds `shield`; an id already taken is an error.
    pub fn insert(&self, shield: Shield) -> Result<Arc<Shield>> {
        let mut m = self.shields.write().unwrap_or_else(|e| e.into_inner());
        if m.contains_key(&shield.id) {
            return Err(SafetyError::Invalid(format!(
                "a shield named {:?} already exists; delete it first or pick another shield_id",
                shield.id
            )));
        }
        let s = Arc::new(shield);
        m.insert(s.id.clone(), s.clone());
        Ok(s)
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Shield>> {
        self.shields
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }
}

/// A conversation from role names and texts (`system`, `user`, `assistant`, `tool` or
/// `ipython`); an unknown role is an error naming it.
pub fn turns_from(messages: impl IntoIterator<Item = (String, String)>) -> Result<Vec<Turn>> {
    messages
        .into_iter()
        .enumerate()
        .map(|(i, (role, text))| {
            let speaker = Speaker::parse(&role).ok_or_else(|| {
                SafetyError::Invalid(format!(
                    "messages[{i}].role {role:?} is not one of system, user, assistant, tool"
                ))
            })?;
            Ok(Turn::new(speaker, text))
        })
        .collect()
}
