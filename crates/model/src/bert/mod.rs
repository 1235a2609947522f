//! BERT-family sentence encoders (BERT, RoBERTa, XLM-RoBERTa; all-MiniLM-L6-v2 is the
//! default embedding model), run on the tensor crate's kernels.
//!
//! - [`config`]: `config.json` (`model_type` `bert`, `roberta`, `xlm-roberta`);
//! - [`weights`]: `model.safetensors` under transformers' names (with or without the
//!   `bert.`/`roberta.` prefix), Q, K and V fused into one matrix;
//! - [`model`]: the encoder over a batch of unpadded sequences;
//! - [`sentence`]: a sentence-transformers folder (`modules.json`, `1_Pooling`,
//!   `Normalize`, `sentence_bert_config.json`) around it: ids in, one vector per text out.
//!
//! The numerics follow transformers' `modeling_bert.py` and sentence-transformers'
//! `Pooling`/`Normalize`; `testdata/minilm` holds a numpy port and golden embeddings.

mod attention;
pub mod config;
pub mod model;
pub mod sentence;
pub mod weights;

pub use config::BertConfig;
pub use model::Bert;
pub use sentence::{Pooling, SentenceEncoder};
pub use weights::BertWeights;
