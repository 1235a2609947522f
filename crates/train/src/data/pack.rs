//! Continued pretraining on raw text, with sequence packing (as GPT-2, llm.c and TRL's
//! `packing=True`): every document is written as Meta's `encode(bos=True, eos=True)` does,
//! `<|begin_of_text|>` document `<|end_of_text|>`, the documents are laid end to end in file
//! order, and the stream is cut into windows of `seq_len + 1` tokens that overlap by one, so
//! that each window is `seq_len` full positions and every token after the first is a
//! target exactly once. Every target is counted: no padding is ever needed, and the model
//! learns where documents end and begin.
//!
//! Attention is not masked at document boundaries (as in those references): a window may
//! read the end of one document before the start of the next, and `<|begin_of_text|>`
//! tells the model that what came before is unrelated.
//!
//! The stream's tail that does not fill a last window (fewer than `seq_len` targets) is
//! dropped and counted in [`Packed::dropped`].

use crate::data::record::{Numbered, Record};
use crate::data::render::ChatRenderer;
use crate::error::{Result, TrainError};
use crate::model::Sequence;

/// Packed sequences, each exactly `seq_len` positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub sequences: Vec<Sequence>,
    /// Tokens at the end of the stream that no sequence predicts.
    pub dropped: usize,
}

/// Packs text records.
pub fn pack_text(
    source_name: &str,
    records: &[Numbered],
    r: &dyn ChatRenderer,
    seq_len: usize,
) -> Result<Packed> {
    let mut texts = Vec::with_capacity(records.len());
    for n in records {
        let Record::Text(t) = &n.record else {
            return Err(TrainError::Data(format!(
                "{source_name}: {} records are not text to pack",
                n.record.kind().describe()
            )));
        };
        texts.push(t.as_str());
    }
    pack(source_name, &texts, r, seq_len)
}

/// Packs documents into sequences of `seq_len` positions.
pub fn pack(
    source_name: &str,
    documents: &[&str],
    r: &dyn ChatRenderer,
    seq_len: usize,
) -> Result<Packed> {
    if seq_len == 0 {
        return Err(TrainError::Data(
            "the sequence length must be at least 1".into(),
        ));
    }
    let (bos, eos) = (r.begin_of_text(), r.end_of_text());
    let mut sequences = Vec::new();
    // The stream not yet cut: at most one window plus one document, so memory follows the
    // longest document, not the dataset.
    let mut stream: Vec<u32> = Vec::new();
    let mut total = 0usize;
    for doc in documents {
        let start = stream.len();
        stream.push(bos);
        stream.extend(r.encode_text(doc));
        stream.push(eos);
        total += stream.len() - start;
        while stream.len() > seq_len {
            sequences.push(Sequence::causal(&stream[..=seq_len]));
            // The last token of this window is the first input of the next.
            stream.drain(..seq_len);
        }
    }
    if sequences.is_empty() {
        return Err(TrainError::Data(format!(
            "{source_name}: the text is {total} tokens, too short for one sequence of {seq_len} \
             positions ({} tokens)",
            seq_len + 1
        )));
    }
    Ok(Packed {
        sequences,
        dropped: stream.len().saturating_sub(1),
    })
}
