//! Training checkpoints: one safetensors file, `OUT/checkpoint.safetensors`, holding what
//! the run trains in f32 — the model's parameters under Meta's names (full fine-tuning) or
//! the adapter's `layers.N.attention.wq.lora_a` / `.lora_b` (LoRA, whose frozen base is
//! read again from the model on resume) — AdamW's moments as `optim.m.NAME` and
//! `optim.v.NAME`, and, in the header's `__metadata__`, the method, the trainer's progress,
//! AdamW's step and the training configuration as JSON (key [`META_KEY`]). A readable copy of that
//! JSON is written beside it as `checkpoint.json`, for people; resuming reads the
//! safetensors file only.
//!
//! One file because only a single rename is atomic: parameters, moments and progress from
//! different steps would resume into a run that never existed. The file is written to a
//! temporary name in the same directory, fsynced, renamed over the old one and the
//! directory fsynced ([`atomic_write`]), so a crash or a full disk at any moment leaves
//! either the previous checkpoint or the new one, never a torn file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::{Value, json};

use crate::error::{Result, TrainError};
use crate::lora::{Lora, LoraConfig};
use crate::model::Shape;
use crate::optim::AdamW;
use crate::params::{ParamSet, Params};

/// The checkpoint file inside the output directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The readable copy of the checkpoint's metadata.
pub const CHECKPOINT_JSON: &str = "checkpoint.json";
/// The `__metadata__` key holding the trainer's JSON.
pub const META_KEY: &str = "ferrollama.train";

/// Where a run is in its data and schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Optimizer steps completed.
    pub step: u64,
    /// Passes over the data started (0 during the first).
    pub epoch: u64,
    /// Sequences of the current epoch's order already used.
    pub position: usize,
    /// The RNG's state before it shuffled the current epoch: the order is drawn again from
    /// it on resume, and the RNG then continues exactly as in an uninterrupted run.
    pub rng_state: u64,
    /// Training sequences: a resume on other data would make `position` meaningless.
    pub n_sequences: usize,
}

impl Progress {
    /// The start of a run over `n_sequences` sequences shuffled from `seed`.
    pub fn start(seed: u64, n_sequences: usize) -> Progress {
        Progress {
            step: 0,
            epoch: 0,
            position: 0,
            rng_state: seed,
            n_sequences,
        }
    }

    fn to_json(self) -> Value {
        json!({
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "rng_state": self.rng_state,
            "n_sequences": self.n_sequences,
        })
    }

    fn from_json(v: &Value) -> Option<Progress> {
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        Some(Progress {
            step: u("step")?,
            epoch: u("epoch")?,
            position: usize::try_from(u("position")?).ok()?,
            rng_state: u("rng_state")?,
            n_sequences: usize::try_from(u("n_sequences")?).ok()?,
        })
    }
}

/// What a run trains, with its optimizer state.
#[derive(Debug, Clone)]
pub enum Tuned {
    /// Every weight of the model (the trainer's parameters).
    Full(AdamW<f32>),
    /// A LoRA adapter over the frozen parameters.
    Lora {
        lora: Lora<f32>,
        opt: AdamW<f32, Lora<f32>>,
    },
}

impl Tuned {
    /// The method's name, as checkpoints and `--json` output give it.
    pub fn method(&self) -> &'static str {
        match self {
            Tuned::Full(_) => "full",
            Tuned::Lora { .. } => "lora",
        }
    }
}

/// A checkpoint read back.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The model: trained (full fine-tuning) or the frozen base given to [`load`] (LoRA).
    pub params: Params<f32>,
    pub tuned: Tuned,
    pub progress: Progress,
    /// The training configuration as saved ([`crate::trainer::TrainConfig::to_json`]).
    pub config: Value,
    /// What the run said of its base model when it saved ([`save`]'s `base`).
    pub base: Option<String>,
}

/// Writes `path` atomically: `write` fills a temporary file beside it, which is flushed,
/// fsynced and renamed over `path`, then the directory is fsynced so the rename itself is
/// durable. On any error the temporary file is removed and `path` is untouched.
pub fn atomic_write(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    let io_err = |p: &Path| {
        let shown = p.display().to_string();
        move |source| TrainError::Io {
            path: shown,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| -> io::Result<()> {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // Best effort: the temporary may not exist (create failed) or be a directory.
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    // Durability of the rename; some filesystems cannot fsync a directory, which is not a
    // reason to fail a checkpoint that is already in place.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `(rows, cols)` of a parameter by its Meta name, or one dimension for the norms.
fn tensor_shape(name: &str, len: usize, sh: &Shape, rank: usize) -> Vec<usize> {
    if name.ends_with("norm.weight") {
        return vec![len];
    }
    let cols = if name.ends_with(".lora_b") {
        rank
    } else if name.ends_with(".lora_a") {
        // A is (rank, in): its rows are as long as the adapted projection's input.
        len / rank.max(1)
    } else if name.ends_with("attention.wo.weight") {
        sh.heads.n_heads * sh.heads.head_dim
    } else if name.ends_with("feed_forward.w2.weight") {
        sh.ffn_dim
    } else {
        sh.dim
    };
    vec![len / cols.max(1), cols]
}

/// Streams f32 tensors as a safetensors file (8-byte header length, JSON header padded
/// with spaces to 8 bytes as the safetensors crate does, then the data in header order).
pub fn write_safetensors(
    w: &mut dyn Write,
    tensors: &[(String, &[f32], Vec<usize>)],
    metadata: &BTreeMap<String, String>,
) -> io::Result<()> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!(metadata));
    let mut offset = 0usize;
    for (name, data, shape) in tensors {
        let end = offset + data.len() * 4;
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut text = Value::Object(header).to_string().into_bytes();
    text.resize(text.len().next_multiple_of(8), b' ');
    w.write_all(&(text.len() as u64).to_le_bytes())?;
    w.write_all(&text)?;
    let mut buf = Vec::with_capacity(1 << 16);
    for (_, data, _) in tensors {
        for chunk in data.chunks(1 << 14) {
            buf.clear();
            buf.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
            w.write_all(&buf)?;
        }
    }
    Ok(())
}

/// Saves a checkpoint into `dir` (created if missing). `base` describes the base model
/// (a resumed LoRA run checks that it is given the same one).
pub fn save(
    dir: &Path,
    sh: &Shape,
    params: &Params<f32>,
    tuned: &Tuned,
    progress: Progress,
    config: &Value,
    base: Option<&str>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let (adamw_step, lora) = match tuned {
        Tuned::Full(opt) => (opt.step, Value::Null),
        Tuned::Lora { lora, opt } => (opt.step, lora.config.to_json()),
    };
    let meta = json!({
        "format": 1,
        "method": tuned.method(),
        "lora": lora,
        "base": base,
        "progress": progress.to_json(),
        "adamw_step": adamw_step,
        "config": config,
    });
    let (sets, rank) = match tuned {
        Tuned::Full(opt) => ([params.tensors(), opt.m.tensors(), opt.v.tensors()], 0),
        Tuned::Lora { lora, opt } => (
            [lora.tensors(), opt.m.tensors(), opt.v.tensors()],
            lora.config.rank,
        ),
    };
    let mut tensors: Vec<(String, &[f32], Vec<usize>)> = Vec::new();
    for (prefix, named) in ["", "optim.m.", "optim.v."].into_iter().zip(sets) {
        for (name, t) in named {
            let shape = tensor_shape(&name, t.len(), sh, rank);
            tensors.push((format!("{prefix}{name}"), t.as_slice(), shape));
        }
    }
    let metadata = BTreeMap::from([(META_KEY.to_string(), meta.to_string())]);
    atomic_write(&dir.join(CHECKPOINT_FILE), |w| {
        write_safetensors(w, &tensors, &metadata)
    })?;
    let pretty = serde_json::to_string_pretty(&meta).unwrap_or_default();
    atomic_write(&dir.join(CHECKPOINT_JSON), |w| {
        w.write_all(pretty.as_bytes())
    })
}

/// The method (`full` or `lora`) of the checkpoint in `dir`, from its header alone (a
/// full checkpoint is three times the model: not read to learn this).
pub fn method(dir: &Path) -> Result<String> {
    use std::io::Read;
    let path = dir.join(CHECKPOINT_FILE);
    let shown = path.display().to_string();
    let io_err = |source| TrainError::Io {
        path: shown.clone(),
        source,
    };
    let bad = |what: &str| TrainError::Weights {
        path: shown.clone(),
        what: what.into(),
    };
    let mut f = File::open(&path).map_err(io_err)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io_err)?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(bad("not safetensors (a header over 100 MiB)"));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io_err)?;
    let v: Value = serde_json::from_slice(&header).map_err(|_| bad("not safetensors"))?;
    let meta: Value = v
        .get("__metadata__")
        .and_then(|m| m.get(META_KEY))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| bad("not a ferrollama checkpoint"))?;
    Ok(meta
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("full")
        .to_string())
}

/// Reads the checkpoint in `dir`. `params` is the base model as loaded (its shapes, tied
/// or not): a full fine-tuning checkpoint's weights are read into it, a LoRA checkpoint
/// keeps it as the frozen base. `adamw` gives AdamW's hyperparameters.
pub fn load(
    dir: &Path,
    sh: &Shape,
    mut params: Params<f32>,
    adamw: crate::AdamWConfig,
) -> Result<Checkpoint> {
    let path = dir.join(CHECKPOINT_FILE);
    let shown = path.display().to_string();
    let bytes = std::fs::read(&path).map_err(|source| TrainError::Io {
        path: shown.clone(),
        source,
    })?;
    let err = |what: String| TrainError::Weights {
        path: shown.clone(),
        what,
    };
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| err(format!("not safetensors: {e}")))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| err(format!("not safetensors: {e}")))?;
    let meta: Value = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| {
            err(format!(
                "no {META_KEY} metadata: not a ferrollama checkpoint"
            ))
        })?;
    let progress = meta
        .get("progress")
        .and_then(Progress::from_json)
        .ok_or_else(|| err("the trainer progress is missing or malformed".into()))?;
    let adamw_step = meta
        .get("adamw_step")
        .and_then(Value::as_u64)
        .ok_or_else(|| err("the optimizer step is missing".into()))?;
    let read = |prefix: &str, named: Vec<(String, &mut Vec<f32>)>| {
        for (name, dst) in named {
            let full = format!("{prefix}{name}");
            let t = st
                .tensor(&full)
                .map_err(|_| err(format!("tensor {full} is missing")))?;
            if t.dtype() != Dtype::F32 || t.data().len() != dst.len() * 4 {
                return Err(err(format!(
                    "tensor {full}: {:?} {:?}, expected F32 with {} values (a checkpoint of \
                     another model or adapter?)",
                    t.dtype(),
                    t.shape(),
                    dst.len()
                )));
            }
            for (d, b) in dst.iter_mut().zip(t.data().chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Ok(())
    };
    let method = meta.get("method").and_then(Value::as_str).unwrap_or("full");
    let tuned = match method {
        "full" => {
            let mut opt = AdamW::new(adamw, &params);
            opt.step = adamw_step;
            read("", params.tensors_mut())?;
            read("optim.m.", opt.m.tensors_mut())?;
            read("optim.v.", opt.v.tensors_mut())?;
            Tuned::Full(opt)
        }
        "lora" => {
            let config = meta
                .get("lora")
                .map(LoraConfig::from_json)
                .transpose()?
                .ok_or_else(|| err("the LoRA settings are missing".into()))?;
            let mut lora = Lora::zeros(sh, params.layers.len(), config)?;
            let mut opt = AdamW::new(adamw, &lora);
            opt.step = adamw_step;
            read("", lora.tensors_mut())?;
            read("optim.m.", opt.m.tensors_mut())?;
            read("optim.v.", opt.v.tensors_mut())?;
            Tuned::Lora { lora, opt }
        }
        other => {
            return Err(err(format!(
                "a checkpoint of method {other:?}, which this version cannot resume"
            )));
        }
    };
    Ok(Checkpoint {
        params,
        tuned,
        progress,
        config: meta.get("config").cloned().unwrap_or(Value::Null),
        base: meta.get("base").and_then(Value::as_str).map(str::to_string),
    })
}
