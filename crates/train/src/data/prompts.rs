//! The prompts of a training file, for a teacher to answer: sequence-level distillation
//! (Kim & Rush 2016) trains the student, as plain SFT, on the teacher's own replies.
//!
//! A prompt/completion or preference record gives its prompt (its answers are dropped); a
//! chat gives its messages before the final assistant reply. Text records have no prompt.

use crate::data::record::{Chat, Completion, Numbered, Preference, Record};
use crate::error::{Result, TrainError};
use ferrollama_tokenizer::chat::Role;

/// What a teacher is asked to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Raw text, continued as text (`{"prompt": "...", "completion": "..."}`).
    Raw(String),
    /// A dialog ending where the assistant's reply begins.
    Chat(Chat),
}

/// Each record's prompt with its line, or the first record that has none.
pub fn prompts(source_name: &str, records: &[Numbered]) -> Result<Vec<(usize, Prompt)>> {
    let mut out = Vec::with_capacity(records.len());
    for n in records {
        let p = match &n.record {
            Record::Completion(Completion::Raw { prompt, .. })
            | Record::Preference(Preference::Raw { prompt, .. }) => Prompt::Raw(prompt.clone()),
            Record::Completion(Completion::Chat { prompt, .. })
            | Record::Preference(Preference::Chat { prompt, .. }) => Prompt::Chat(prompt.clone()),
            Record::Chat(c) => {
                let mut c = c.clone();
                while c
                    .messages
                    .last()
                    .is_some_and(|t| t.message.role == Role::Assistant)
                {
                    c.messages.pop();
                }
                if c.messages.is_empty() {
                    return Err(TrainError::Data(format!(
                        "{source_name}:{}: the dialog has no message before the assistant's \
                         reply to prompt the teacher with",
                        n.line
                    )));
                }
                Prompt::Chat(c)
            }
            Record::Text(_) => {
                return Err(TrainError::Data(format!(
                    "{source_name}: text records have no prompt for the teacher to answer; \
                     sequence-level distillation needs prompt/completion, chat or preference \
                     records (distill from logits, --distill-mode logits, trains on text)"
                )));
            }
        };
        out.push((n.line, p));
    }
    Ok(out)
}
