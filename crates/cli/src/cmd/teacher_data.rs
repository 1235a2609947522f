//! Sequence-level distillation's data (`finetune --method distill --distill-mode
//! sequences`): the teacher answers every prompt of the training file with greedy decoding,
//! and its answers are written as a prompt/completion JSONL file that the student then
//! learns as ordinary supervised fine-tuning. Unlike distillation from logits, the teacher
//! may have another tokenizer: only text passes between the two.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ferrollama_engine::{
    ChatMessage, FinishReason, GenerateParams, Model, SamplerConfig, Session, generate,
};
use ferrollama_model::KvType;
use ferrollama_tokenizer::chat::Role;
use ferrollama_train::data::{self, Chat, Prompt};
use serde_json::{Value, json};

/// How the teacher answers.
#[derive(Debug, Clone, Copy)]
pub struct TeacherGen {
    /// Tokens per answer at most.
    pub max_tokens: usize,
    pub threads: usize,
}

/// What [`write_teacher_data`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub records: usize,
    /// Answers cut at `max_tokens` (kept: the student learns what the teacher said).
    pub cut: usize,
}

/// The teacher's answers to the prompts of `data`, written to `out` (replaced atomically:
/// a temporary file, then a rename). `progress(done, total)` after each answer.
pub fn write_teacher_data(
    teacher: &Model,
    data: &Path,
    out: &Path,
    g: TeacherGen,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Written> {
    let shown = data.display().to_string();
    let records = data::read_jsonl(data)?;
    let prompts = data::prompts(&shown, &records.records)?;
    let ctx = teacher.llama.config.max_seq_len.clamp(1, 8192);
    let mut session = Session::new(teacher, ctx, g.threads.max(1), 256, KvType::F16)?;
    let params = GenerateParams {
        max_tokens: g.max_tokens,
        sampler: SamplerConfig::greedy(),
        stop: Vec::new(),
    };
    let tmp = out.with_extension("jsonl.tmp");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    let mut written = Written { records: 0, cut: 0 };
    for (i, (line, prompt)) in prompts.iter().enumerate() {
        let (ids, prompt_json) = match prompt {
            Prompt::Raw(p) => (teacher.encode(p, true, false), Value::String(p.clone())),
            Prompt::Chat(c) => {
                let messages = chat_messages(c)
                    .with_context(|| format!("{shown}:{line}: cannot prompt the teacher"))?;
                let json: Vec<Value> = messages
                    .iter()
                    .map(|m| json!({"role": m.role, "content": m.text()}))
                    .collect();
                let ids = teacher
                    .chat_prompt(&messages)
                    .with_context(|| format!("{shown}:{line}: cannot render the prompt"))?;
                (ids, Value::Array(json))
            }
        };
        if ids.len() + 1 >= ctx {
            bail!(
                "{shown}:{line}: the prompt has {} tokens, more than the teacher's context of \
                 {ctx} leaves room for an answer",
                ids.len()
            );
        }
        session.reset();
        let gen_ = generate(teacher, &mut session, &ids, &params, &mut |_| {})
            .with_context(|| format!("{shown}:{line}: the teacher failed to answer"))?;
        if matches!(
            gen_.finish,
            FinishReason::Length | FinishReason::ContextFull
        ) {
            written.cut += 1;
        }
        let rec = json!({"prompt": prompt_json, "completion": gen_.text});
        writeln!(file, "{rec}").with_context(|| format!("cannot write {}", tmp.display()))?;
        written.records += 1;
        progress(i + 1, prompts.len());
    }
    let file = file
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", tmp.display(), e.error()))?;
    file.sync_all()
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(written)
}

/// A dialog's messages as templates see them: text only (a teacher is not given tools).
fn chat_messages(c: &Chat) -> Result<Vec<ChatMessage>> {
    if !c.tools.is_empty() {
        bail!("dialogs with tools are not supported for sequence-level distillation yet");
    }
    c.messages
        .iter()
        .map(|t| {
            let m = &t.message;
            if m.role == Role::Tool || !m.tool_calls.is_empty() {
                bail!(
                    "tool calls and results are not supported for sequence-level distillation yet"
                );
            }
            Ok(ChatMessage::new(m.role.header(), &m.content.joined()))
        })
        .collect()
}
