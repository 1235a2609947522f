//! Records to training sequences with their loss masks.
//!
//! - chat: the renderer's tokens; counted are the trained assistant messages' bodies and
//!   end tokens ([`ChatRenderer::render_chat`]).
//! - prompt/completion, raw: `<|begin_of_text|>` prompt completion `<|end_of_text|>`, prompt
//!   and completion tokenized apart (so the boundary is exact), only the completion and
//!   `<|end_of_text|>` counted. Conversational: the prompt's messages then the completion's,
//!   rendered as a chat, only the completion's assistant messages counted.
//! - preference pairs: the chosen and the rejected sequence, each made as a completion of
//!   the shared prompt; the prompt is not counted in either.
//! - text: packed, see [`mod@crate::data::pack`].
//!
//! A sequence of `n` tokens has `n - 1` positions. When that is more than `seq_len`, the
//! [`LengthPolicy`] decides.

use crate::data::openai::Check;
use crate::data::problems::Problems;
use crate::data::record::{Chat, Completion, Numbered, Preference, Record, Turn};
use crate::data::render::{ChatRenderer, Masked};
use crate::error::{Result, TrainError};
use crate::model::Sequence;

/// What to do with a record longer than `seq_len` positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LengthPolicy {
    /// Keep the first `seq_len` positions (`seq_len + 1` tokens). What is lost is the end:
    /// the rest of the answer and its end token, so the model never learns where that
    /// answer stops, and later turns of a dialog are dropped whole. A record with nothing
    /// counted left (its prompt alone fills `seq_len`) is skipped and its line reported in
    /// [`Built::skipped`].
    Truncate,
    /// Reject the dataset, naming every line that is too long.
    #[default]
    Refuse,
}

/// How sequences are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceOptions {
    /// Positions per sequence (`--seq-len`).
    pub seq_len: usize,
    pub policy: LengthPolicy,
}

/// A preference pair for DPO: the same prompt with the preferred and the dispreferred
/// answer. The prompt's tokens are the same leading tokens of both and counted in neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferencePair {
    pub chosen: Sequence,
    pub rejected: Sequence,
}

/// Items built from records, and what the length policy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built<T> {
    pub items: Vec<T>,
    /// Lines whose record was cut to `seq_len`.
    pub truncated: Vec<usize>,
    /// Lines left with nothing to train on after the cut, and so left out.
    pub skipped: Vec<usize>,
}

impl<T> Built<T> {
    fn new() -> Built<T> {
        Built {
            items: Vec::new(),
            truncated: Vec::new(),
            skipped: Vec::new(),
        }
    }
}

/// Supervised fine-tuning sequences from chat or prompt/completion records.
pub fn sft_sequences(
    source_name: &str,
    records: &[Numbered],
    r: &dyn ChatRenderer,
    opts: SequenceOptions,
) -> Result<Built<Sequence>> {
    check_seq_len(opts)?;
    let mut built = Built::new();
    let mut problems = Problems::new();
    for n in records {
        let masked = match &n.record {
            Record::Chat(c) => r.render_chat(c),
            Record::Completion(c) => completion(c, r),
            other => {
                return Err(TrainError::Data(format!(
                    "{source_name}: {} records are not fine-tuning data",
                    other.kind().describe()
                )));
            }
        };
        match masked.and_then(|m| fit(m, opts)) {
            Ok(Fit::Whole(m)) => built.items.push(m.to_sequence()),
            Ok(Fit::Cut(m)) => {
                built.truncated.push(n.line);
                built.items.push(m.to_sequence());
            }
            Ok(Fit::Nothing) => built.skipped.push(n.line),
            Err(what) => problems.add(n.line, what),
        }
    }
    problems.finish(source_name)?;
    nonempty(source_name, built)
}

/// DPO pairs from preference records.
pub fn preference_pairs(
    source_name: &str,
    records: &[Numbered],
    r: &dyn ChatRenderer,
    opts: SequenceOptions,
) -> Result<Built<PreferencePair>> {
    check_seq_len(opts)?;
    let mut built = Built::new();
    let mut problems = Problems::new();
    for n in records {
        let Record::Preference(p) = &n.record else {
            return Err(TrainError::Data(format!(
                "{source_name}: {} records are not preference pairs",
                n.record.kind().describe()
            )));
        };
        let (chosen, rejected) = match pair(p, r) {
            Ok(both) => both,
            Err(what) => {
                problems.add(n.line, what);
                continue;
            }
        };
        match (fit(chosen, opts), fit(rejected, opts)) {
            (Err(a), _) => problems.add(n.line, format!("chosen: {a}")),
            (_, Err(b)) => problems.add(n.line, format!("rejected: {b}")),
            (Ok(Fit::Nothing), _) | (_, Ok(Fit::Nothing)) => built.skipped.push(n.line),
            (Ok(a), Ok(b)) => {
                if matches!(a, Fit::Cut(_)) || matches!(b, Fit::Cut(_)) {
                    built.truncated.push(n.line);
                }
                if let (Some(a), Some(b)) = (a.kept(), b.kept()) {
                    built.items.push(PreferencePair {
                        chosen: a.to_sequence(),
                        rejected: b.to_sequence(),
                    });
                }
            }
        }
    }
    problems.finish(source_name)?;
    nonempty(source_name, built)
}

fn check_seq_len(opts: SequenceOptions) -> Result<()> {
    if opts.seq_len == 0 {
        return Err(TrainError::Data(
            "the sequence length must be at least 1".into(),
        ));
    }
    Ok(())
}

fn nonempty<T>(source_name: &str, built: Built<T>) -> Result<Built<T>> {
    if built.items.is_empty() {
        return Err(TrainError::Data(format!(
            "{source_name}: no record has anything to train on within the sequence length \
             (all {} were skipped after truncation)",
            built.skipped.len()
        )));
    }
    Ok(built)
}

/// A prompt/completion record's tokens.
fn completion(c: &Completion, r: &dyn ChatRenderer) -> Check<Masked> {
    match c {
        Completion::Raw { prompt, completion } => Ok(raw(prompt, completion, r)),
        Completion::Chat { prompt, completion } => r.render_chat(&continued(prompt, completion)),
    }
}

fn pair(p: &Preference, r: &dyn ChatRenderer) -> Check<(Masked, Masked)> {
    Ok(match p {
        Preference::Raw {
            prompt,
            chosen,
            rejected,
        } => (raw(prompt, chosen, r), raw(prompt, rejected, r)),
        Preference::Chat {
            prompt,
            chosen,
            rejected,
        } => (
            r.render_chat(&continued(prompt, chosen))?,
            r.render_chat(&continued(prompt, rejected))?,
        ),
    })
}

/// `<|begin_of_text|>` prompt completion `<|end_of_text|>`, the completion and the end
/// counted.
fn raw(prompt: &str, completion: &str, r: &dyn ChatRenderer) -> Masked {
    let mut m = Masked::default();
    m.push(&[r.begin_of_text()], false);
    m.push(&r.encode_text(prompt), false);
    m.push(&r.encode_text(completion), true);
    m.push(&[r.end_of_text()], true);
    m
}

/// The prompt's dialog followed by the reply's messages.
fn continued(prompt: &Chat, reply: &[Turn]) -> Chat {
    let mut chat = prompt.clone();
    chat.messages.extend_from_slice(reply);
    chat
}

enum Fit {
    Whole(Masked),
    Cut(Masked),
    /// Cut, with nothing counted left.
    Nothing,
}

impl Fit {
    fn kept(self) -> Option<Masked> {
        match self {
            Fit::Whole(m) | Fit::Cut(m) => Some(m),
            Fit::Nothing => None,
        }
    }
}

/// Applies the length policy: at most `seq_len + 1` tokens.
fn fit(mut m: Masked, opts: SequenceOptions) -> Check<Fit> {
    let positions = m.len().saturating_sub(1);
    if positions <= opts.seq_len {
        return Ok(Fit::Whole(m));
    }
    match opts.policy {
        LengthPolicy::Refuse => Err(format!(
            "{} tokens make {positions} positions, more than the sequence length {}; \
             shorten the record, raise the sequence length, or truncate",
            m.len(),
            opts.seq_len
        )),
        LengthPolicy::Truncate => {
            m.truncate(opts.seq_len + 1);
            // counted[0] is never a target.
            if m.counted.iter().skip(1).any(|&c| c) {
                Ok(Fit::Cut(m))
            } else {
                Ok(Fit::Nothing)
            }
        }
    }
}
