//! Training data: JSONL files in the shapes people already have, checked line by line, and
//! turned into [`Sequence`]s whose loss masks count exactly what the model should learn.
//!
//! One record a line, one shape a file:
//! - `{"messages": [...], "tools": [...]}`, OpenAI's chat fine-tuning format (tool calls
//!   with JSON-text arguments, tool results with `tool_call_id`, `"weight": 0` to leave an
//!   assistant message out of the loss);
//! - `{"prompt": ..., "completion": ...}`, raw text, or conversational when the prompt is
//!   a list of messages;
//! - `{"text": ...}` for continued pretraining, packed into full sequences;
//! - `{"prompt": ..., "chosen": ..., "rejected": ...}`, preference pairs for DPO, or the same
//!   in OpenAI's DPO shape: `{"input": {"messages": [...], "tools": [...]},
//!   "preferred_output": [...], "non_preferred_output": [...]}`.
//!
//! The pipeline is [`jsonl`] (text to typed [`record`]s, every bad line reported with its
//! number, see [`problems`]) then [`sequences`] or [`mod@pack`] (records to tokens through a
//! [`ChatRenderer`], the seam where a model's prompt format plugs in; [`llama31`] is
//! Meta's). Chats are rendered by the same code that builds inference prompts, so the model
//! is trained on the tokens it will be served.

pub mod jsonl;
pub mod llama31;
pub mod openai;
pub mod pack;
pub mod problems;
pub mod prompts;
pub mod record;
pub mod render;
pub mod sequences;
pub mod template;

pub use jsonl::{Records, parse_jsonl, read_jsonl};
pub use llama31::Llama31Renderer;
pub use pack::{Packed, pack, pack_text};
pub use problems::{BadRecords, RecordError};
pub use prompts::{Prompt, prompts};
pub use record::{Chat, Completion, Numbered, Preference, Record, RecordKind, ToolSpec, Turn};
pub use render::{ChatRenderer, Masked};
pub use sequences::{
    Built, LengthPolicy, PreferencePair, SequenceOptions, preference_pairs, sft_sequences,
};
pub use template::TemplateRenderer;

use crate::error::Result;
use crate::model::Sequence;

/// A file's records ready to train on, by what they train.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrainingData {
    /// Chat or prompt/completion records: supervised fine-tuning.
    Sft(Built<Sequence>),
    /// Text records, packed: continued pretraining.
    Pretraining(Packed),
    /// Preference records: DPO.
    Preference(Built<PreferencePair>),
}

/// Turns checked records into training data for their shape.
pub fn build(
    source_name: &str,
    records: &Records,
    r: &dyn ChatRenderer,
    opts: SequenceOptions,
) -> Result<TrainingData> {
    let rs = &records.records;
    Ok(match records.kind {
        RecordKind::Chat | RecordKind::Completion => {
            TrainingData::Sft(sft_sequences(source_name, rs, r, opts)?)
        }
        RecordKind::Text => TrainingData::Pretraining(pack_text(source_name, rs, r, opts.seq_len)?),
        RecordKind::Preference => {
            TrainingData::Preference(preference_pairs(source_name, rs, r, opts)?)
        }
    })
}
