//! The prompt of each document, built as lm-eval's `ConfigurableTask.fewshot_context`
//! does: `description`, then the few-shot examples (each `doc_to_text`, the target
//! delimiter and the answer, then the few-shot delimiter), then the document's own
//! `doc_to_text`.
//!
//! Few-shot examples are drawn by lm-eval's samplers with one `random.Random(seed)`
//! (1234 unless told) shared by the documents in order: `rnd.sample(pool, n)`, or the
//! first n for `first_n`. When the examples come from the evaluated rows themselves, one
//! extra is drawn and the document being asked is dropped from its own examples.
//!
//! With the chat template, as lm-eval's `--apply_chat_template`: the description becomes
//! the system message and the whole few-shot prompt one user turn, or with
//! `--fewshot-as-multiturn` each example a user turn answered by an assistant turn.

use ferrollama_engine::ChatMessage;

use crate::backend::Context;
use crate::dataset::Doc;
use crate::error::{EvalError, Result};
use crate::pyrandom::PyRandom;
use crate::task::{Sampler, Task};

/// How prompts are laid out.
#[derive(Debug, Clone, Copy)]
pub struct PromptOptions {
    pub num_fewshot: usize,
    pub seed: u64,
    pub chat: bool,
    pub multiturn: bool,
}

/// Builds the prompts of a task's documents, in order.
#[derive(Debug)]
pub struct PromptBuilder<'t> {
    task: &'t Task,
    rnd: PyRandom,
    opts: PromptOptions,
}

impl<'t> PromptBuilder<'t> {
    pub fn new(task: &'t Task, opts: PromptOptions) -> Result<PromptBuilder<'t>> {
        let pool = task.fewshot_docs.as_ref().unwrap_or(&task.docs).docs.len();
        let same = task.fewshot_docs.is_none();
        let need = opts.num_fewshot + usize::from(same && opts.num_fewshot > 0);
        if need > pool {
            return Err(EvalError::Invalid(format!(
                "{} few-shot examples asked for, but the few-shot rows hold {pool}{}",
                opts.num_fewshot,
                if same {
                    " (examples come from the evaluated rows, less the one asked)"
                } else {
                    ""
                }
            )));
        }
        Ok(PromptBuilder {
            task,
            rnd: PyRandom::new(opts.seed),
            opts,
        })
    }

    /// The few-shot examples for `doc`.
    fn examples(&mut self, doc: &Doc) -> Vec<&'t Doc> {
        let k = self.opts.num_fewshot;
        if k == 0 {
            return Vec::new();
        }
        let (pool, same) = match &self.task.fewshot_docs {
            Some(d) => (&d.docs, false),
            None => (&self.task.docs.docs, true),
        };
        let n = k + usize::from(same);
        let picked: Vec<usize> = match self.task.sampler {
            Sampler::FirstN => (0..n).collect(),
            // `new` checked that n rows exist.
            Sampler::Random => self.rnd.sample(pool.len(), n).unwrap_or_default(),
        };
        picked
            .into_iter()
            .map(|i| &pool[i])
            .filter(|d| d.fields != doc.fields)
            .take(k)
            .collect()
    }

    /// The prompt of `doc`.
    pub fn context(&mut self, doc: &Doc) -> Result<Context> {
        let task = self.task;
        let examples = self.examples(doc);
        let description = task.description(doc)?;
        let question = task.doc_to_text(doc)?;
        let mut shots = Vec::with_capacity(examples.len());
        for d in examples {
            shots.push((task.doc_to_text(d)?, task.fewshot_target(d)?));
        }
        if !self.opts.chat {
            let mut s = description;
            for (text, target) in &shots {
                s.push_str(text);
                if !target.is_empty() {
                    s.push_str(&task.target_delimiter);
                    s.push_str(target);
                }
                s.push_str(&task.fewshot_delimiter);
            }
            s.push_str(&question);
            return Ok(Context::Text(s));
        }
        let mut msgs = Vec::new();
        if !description.is_empty() {
            msgs.push(ChatMessage::new("system", &description));
        }
        if self.opts.multiturn {
            for (text, target) in &shots {
                msgs.push(ChatMessage::new("user", text));
                msgs.push(ChatMessage::new("assistant", target));
            }
            msgs.push(ChatMessage::new("user", &question));
        } else {
            let mut s = String::new();
            for (text, target) in &shots {
                s.push_str(text);
                if !target.is_empty() {
                    s.push_str(&task.target_delimiter);
                    s.push_str(target);
                }
                s.push_str(&task.fewshot_delimiter);
            }
            s.push_str(&question);
            msgs.push(ChatMessage::new("user", &s));
        }
        Ok(Context::Chat(msgs))
    }
}
