//! Which files of a repository make the model.
//!
//! In order of preference, without `:FILE`:
//! 1. a safetensors folder: top-level `config.json` and `*.safetensors`, with
//!    `model.safetensors.index.json`, `tokenizer.json`, `tokenizer_config.json`,
//!    `tokenizer.model` and `generation_config.json` when present;
//! 2. the one `*.gguf` file (several: the caller must pick one, and the error lists them);
//! 3. a Meta checkpoint folder: `params.json`, `consolidated.*.pth` and `tokenizer.model`,
//!    at the top level or under `original/` (where Meta's Hugging Face repositories keep
//!    it).
//!
//! With `:FILE`, that file, which must be a `.gguf`. Every listed path is checked before
//! anything is chosen: a hub that lists an unsafe path is refused as a whole.

use crate::error::{Result, StoreError};
use crate::hub::Sibling;
use crate::manifest::Format;
use crate::name::validate_rel_path;

/// The chosen files.
#[derive(Debug, Clone)]
pub struct Selection {
    pub format: Format,
    /// Indexes into the listing.
    pub files: Vec<usize>,
    /// What to load, relative to the entry (see `Manifest::model_path`).
    pub model_path: String,
}

const SAFETENSORS_EXTRAS: [&str; 5] = [
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "generation_config.json",
];

fn is_gguf(p: &str) -> bool {
    p.to_ascii_lowercase().ends_with(".gguf")
}

/// Chooses the files of `repo` to pull (see the module doc).
pub fn select(repo: &str, siblings: &[Sibling], file: Option<&str>) -> Result<Selection> {
    for s in siblings {
        validate_rel_path(&s.rfilename)?;
    }
    let names: Vec<&str> = siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let ggufs: Vec<usize> = (0..names.len()).filter(|&i| is_gguf(names[i])).collect();
    let gguf_names = || ggufs.iter().map(|&i| names[i].to_string()).collect();

    if let Some(want) = file {
        let Some(i) = names.iter().position(|n| *n == want) else {
            return Err(StoreError::NoSuchFile {
                repo: repo.to_string(),
                file: want.to_string(),
                choices: gguf_names(),
            });
        };
        if !is_gguf(want) {
            return Err(StoreError::BadRef {
                reference: format!("{repo}:{want}"),
                why: ":FILE must name a .gguf file (folders are pulled without :FILE)".into(),
            });
        }
        return Ok(gguf(names[i], i));
    }

    let top = |n: &str| names.iter().position(|x| *x == n);
    let top_safetensors: Vec<usize> = (0..names.len())
        .filter(|&i| !names[i].contains('/') && names[i].ends_with(".safetensors"))
        .collect();
    if let Some(config) = top("config.json")
        && !top_safetensors.is_empty()
    {
        let mut files = vec![config];
        files.extend(top_safetensors);
        files.extend(SAFETENSORS_EXTRAS.iter().filter_map(|n| top(n)));
        return Ok(Selection {
            format: Format::Safetensors,
            files,
            model_path: ".".into(),
        });
    }

    match ggufs.as_slice() {
        [i] => return Ok(gguf(names[*i], *i)),
        [] => {}
        _ => {
            return Err(StoreError::AmbiguousGguf {
                repo: repo.to_string(),
                choices: gguf_names(),
            });
        }
    }

    for prefix in ["", "original/"] {
        let at = |n: &str| top(&format!("{prefix}{n}"));
        let shards: Vec<usize> = (0..names.len())
            .filter(|&i| {
                names[i].strip_prefix(prefix).is_some_and(|n| {
                    n.starts_with("consolidated.") && n.ends_with(".pth") && !n.contains('/')
                })
            })
            .collect();
        if let (Some(params), Some(tok)) = (at("params.json"), at("tokenizer.model"))
            && !shards.is_empty()
        {
            let mut files = vec![params, tok];
            files.extend(shards);
            return Ok(Selection {
                format: Format::Meta,
                files,
                model_path: match prefix.trim_end_matches('/') {
                    "" => ".".into(),
                    dir => dir.into(),
                },
            });
        }
    }
    Err(StoreError::NoModelFiles {
        repo: repo.to_string(),
    })
}

fn gguf(name: &str, i: usize) -> Selection {
    Selection {
        format: Format::Gguf,
        files: vec![i],
        model_path: name.to_string(),
    }
}
