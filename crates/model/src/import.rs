//! One entry point for every model source we read: a GGUF file, a Hugging Face safetensors
//! folder, or a Meta checkpoint folder, each turned into the same [`Imported`]: the
//! configuration, weights under reference names, and the tokenizer as GGUF key/values.
//!
//! This is the input side of conversion (e.g. writing a GGUF): weights are not repacked for
//! the kernels, and stay views into the mapped files wherever no merge or permutation is
//! needed.

use std::io::Read;
use std::path::Path;

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, MetadataExt, Value};
use crate::meta::{MetaCheckpoint, is_meta_dir};
use crate::safetensors::SafetensorsFolder;
use crate::vocab_keys;
use crate::weights::Weights;

/// What kind of source a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Gguf,
    HfFolder,
    MetaCheckpoint,
}

/// A model read from any supported source.
#[derive(Debug)]
pub struct Imported {
    pub kind: SourceKind,
    pub config: LlamaConfig,
    pub weights: Weights,
    /// GGUF `tokenizer.*` key/values, ready to write with [`crate::gguf::GgufWriter`].
    pub tokenizer: Vec<(String, Value)>,
    /// `general.name` of a GGUF file, else the folder's name.
    pub name: Option<String>,
}

/// Opens `path`: a `.gguf` file, or a folder holding `params.json` +
/// `consolidated.NN.pth` (Meta) or `config.json` + safetensors (Hugging Face).
pub fn open(path: &Path) -> Result<Imported> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let folder_name = || {
        path.file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
    };
    if meta.is_file() {
        let mut magic = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map_err(io)?;
        if &magic != b"GGUF" {
            return Err(ModelError::Unsupported(format!(
                "{} is not a GGUF file; Meta checkpoints and Hugging Face models are read as \
                 folders",
                path.display()
            )));
        }
        return open_gguf(path);
    }
    if is_meta_dir(path) {
        let ck = MetaCheckpoint::open(path)?;
        let weights = ck.weights()?;
        let tok = vocab_keys::tiktoken_path(path).ok_or_else(|| {
            ModelError::Vocab(format!(
                "{} has no tokenizer.model (Meta ships one beside the checkpoint)",
                path.display()
            ))
        })?;
        let tokenizer = vocab_keys::from_tiktoken_file(&tok)?;
        warn_vocab(&ck.config, &tokenizer);
        return Ok(Imported {
            kind: SourceKind::MetaCheckpoint,
            config: ck.config,
            weights,
            tokenizer,
            name: folder_name(),
        });
    }
    if path.join("config.json").is_file() {
        let folder = SafetensorsFolder::open(path)?;
        let weights = folder.weights()?;
        let tokenizer = vocab_keys::from_hf_dir(path)?;
        warn_vocab(&folder.config, &tokenizer);
        return Ok(Imported {
            kind: SourceKind::HfFolder,
            config: folder.config,
            weights,
            tokenizer,
            name: folder_name(),
        });
    }
    Err(ModelError::Unsupported(format!(
        "{} is neither a Meta checkpoint (params.json + consolidated.00.pth) nor a Hugging \
         Face folder (config.json + *.safetensors)",
        path.display()
    )))
}

fn open_gguf(path: &Path) -> Result<Imported> {
    let f = GgufFile::open(path)?;
    let config = LlamaConfig::from_gguf(&f)?;
    let weights = Weights::from_gguf(&f, &config)?;
    let tokenizer = f
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .cloned()
        .collect();
    let name = f.get_str("general.name")?.map(str::to_string);
    Ok(Imported {
        kind: SourceKind::Gguf,
        config,
        weights,
        tokenizer,
        name,
    })
}

/// A vocabulary larger than the embedding table would index past it; say so early (the
/// embedding may be padded larger, which is fine).
fn warn_vocab(cfg: &LlamaConfig, keys: &[(String, Value)]) {
    let n = keys
        .iter()
        .find(|(k, _)| k == "tokenizer.ggml.tokens")
        .and_then(|(_, v)| v.as_array())
        .map_or(0, <[Value]>::len);
    if n > cfg.vocab_size {
        tracing::warn!(
            "the tokenizer has {n} tokens but the model only {} embedding rows",
            cfg.vocab_size
        );
    }
}
