//! A fine-tuning job from files to files, shared by `ferrollama finetune` and the server's
//! fine-tuning APIs: open the base model, read the data in the model's prompt format,
//! train (fresh or resumed from the output folder's checkpoint), and write the result —
//! `OUT/model.gguf` for full fine-tuning, `OUT/adapter/` (PEFT) and `OUT/adapter.gguf`
//! (llama.cpp, `--lora`) for LoRA.
//!
//! [`Job::prepare`] does everything that can fail on bad input before any training, so a
//! caller reports a bad line or a missing model at once and writes nothing.

use std::path::{Path, PathBuf};

use ferrollama_model::ModelTokenizer;
use ferrollama_model::export::{ModelParts, Target as OutTarget, write_gguf};
use ferrollama_model::import::Imported;
use ferrollama_tensor::ThreadPool;

use crate::adapter::{save_gguf, save_peft};
use crate::checkpoint::{self, CHECKPOINT_FILE};
use crate::data::{
    self, ChatRenderer, Llama31Renderer, RecordKind, SequenceOptions, TemplateRenderer,
    TrainingData,
};
use crate::error::{Result, TrainError};
use crate::frozen_base::FrozenBase;
use crate::lora::{Lora, LoraConfig};
use crate::model::{Sequence, Shape};
use crate::params::Params;
use crate::trainer::{Event, TrainConfig, Trainer};
use crate::vocab::{TextOnlyRenderer, llama3_tokenizer};
use crate::weights::params_from_weights;

/// What is trained.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Every weight, f32 master weights.
    Full,
    /// A LoRA adapter over the frozen model.
    Lora(LoraConfig),
}

/// Tensor type of a fully fine-tuned model's GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    Bf16,
}

/// Everything a job needs.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The base model (a .gguf file, or a Hugging Face or Meta folder).
    pub model: PathBuf,
    /// Training data (JSONL).
    pub data: PathBuf,
    /// Held-out data whose loss is reported.
    pub eval: Option<PathBuf>,
    pub method: Method,
    /// Ignored when resuming: a run keeps the settings it started with.
    pub config: TrainConfig,
    pub sequences: SequenceOptions,
    /// Output folder: checkpoint and results.
    pub out: PathBuf,
    /// Continue the checkpoint in `out` (otherwise a checkpoint there is an error).
    pub resume: bool,
    pub out_type: OutType,
}

/// What a finished job wrote.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Full fine-tuning: the whole model.
    Model(PathBuf),
    /// LoRA: the adapter in PEFT's folder layout and as a llama.cpp GGUF.
    Adapter { peft: PathBuf, gguf: PathBuf },
}

/// Asked between steps: whether to go on. A caller that must let interactive work run
/// (the server) may also block here until the machine is free.
pub trait Control {
    /// `false` stops the run after a checkpoint ([`TrainError::Cancelled`]).
    fn proceed(&self) -> bool;
}

/// Runs to the end.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoControl;

impl Control for NoControl {
    fn proceed(&self) -> bool {
        true
    }
}

/// A job with its model opened and its data read, ready to train.
#[derive(Debug)]
pub struct Job {
    pub spec: JobSpec,
    pub trainer: Trainer,
    pub eval: Vec<Sequence>,
    /// What the data reading left out or cut, for the user (line numbers).
    pub notes: Vec<String>,
    src: Imported,
}

/// The model's prompt format for chats: Llama 3.1's for a Llama 3 vocabulary, else the
/// model's own Jinja template, else none (text records only).
enum Renderer<'a> {
    Llama31(Llama31Renderer<'a>),
    Template(TemplateRenderer<'a>),
    TextOnly(TextOnlyRenderer<'a>),
}

impl Renderer<'_> {
    fn get(&self) -> &dyn ChatRenderer {
        match self {
            Renderer::Llama31(r) => r,
            Renderer::Template(r) => r,
            Renderer::TextOnly(r) => r,
        }
    }
}

/// Reads a JSONL file into training sequences for `r`; what was cut or left out goes to
/// `notes`.
fn sequences(
    path: &Path,
    r: &Renderer<'_>,
    opts: SequenceOptions,
    notes: &mut Vec<String>,
) -> Result<Vec<Sequence>> {
    let records = data::read_jsonl(path)?;
    let shown = path.display().to_string();
    match records.kind {
        RecordKind::Preference => {
            return Err(TrainError::Data(format!(
                "{shown}: preference pairs are DPO data, and --method dpo is not implemented \
                 yet"
            )));
        }
        RecordKind::Chat | RecordKind::Completion if matches!(r, Renderer::TextOnly(_)) => {
            return Err(TrainError::Data(format!(
                "{shown}: {} records are trained in the model's chat format, and this model \
                 has neither Llama 3's vocabulary nor a chat template (tokenizer.chat_template); \
                 only {{\"text\": ...}} records can be trained on it",
                records.kind.describe()
            )));
        }
        _ => {}
    }
    Ok(match data::build(&shown, &records, r.get(), opts)? {
        TrainingData::Sft(b) => {
            if !b.truncated.is_empty() {
                notes.push(format!(
                    "{shown}: {} records cut to the sequence length, lines {:?}",
                    b.truncated.len(),
                    b.truncated
                ));
            }
            if !b.skipped.is_empty() {
                notes.push(format!(
                    "{shown}: {} records left out (nothing to train on after the cut), lines {:?}",
                    b.skipped.len(),
                    b.skipped
                ));
            }
            b.items
        }
        TrainingData::Pretraining(p) => p.sequences,
        TrainingData::Preference(_) => {
            return Err(TrainError::Data(format!(
                "{shown}: preference pairs need --method dpo"
            )));
        }
    })
}

/// How a checkpoint names its base model: a LoRA checkpoint holds only the adapter, so a
/// resume must be given the same base.
fn describe_base(src: &Imported, path: &Path) -> String {
    format!(
        "{} ({} bytes)",
        src.name.as_deref().unwrap_or("model"),
        std::fs::metadata(path).map_or(0, |m| m.len())
    )
}

impl Job {
    /// Opens the model, reads the data, and builds the trainer (fresh, or from the
    /// checkpoint in `spec.out` when resuming). Writes nothing.
    pub fn prepare(spec: JobSpec) -> Result<Job> {
        let mut src = ferrollama_model::import::open(&spec.model)?;
        if src.name.is_none() {
            src.name = spec
                .model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned());
        }
        let vocab = ModelTokenizer::from_keys(&src.tokenizer)?;
        let llama3 = llama3_tokenizer(&vocab);
        let renderer = match &llama3 {
            Some(t) => Renderer::Llama31(Llama31Renderer::new(t)),
            None => match TemplateRenderer::new(&vocab) {
                Some(r) => Renderer::Template(r),
                None => Renderer::TextOnly(TextOnlyRenderer::new(&vocab).ok_or_else(|| {
                    TrainError::Data(
                        "the model's vocabulary has no end-of-text token to separate documents"
                            .into(),
                    )
                })?),
            },
        };
        let mut notes = Vec::new();
        let train = sequences(&spec.data, &renderer, spec.sequences, &mut notes)?;
        let eval = match &spec.eval {
            Some(p) => sequences(p, &renderer, spec.sequences, &mut notes)?,
            None => Vec::new(),
        };
        if spec.sequences.seq_len > src.config.max_seq_len {
            notes.push(format!(
                "the sequence length {} is beyond the model's context of {} tokens",
                spec.sequences.seq_len, src.config.max_seq_len
            ));
        }
        // LoRA keeps the model in its stored type (F16, Q8_0, Q4_K...): no f32 copy.
        let lora = if spec.resume {
            checkpoint::method(&spec.out)? == "lora"
        } else {
            matches!(spec.method, Method::Lora(_))
        };
        let (params, stored, divisors) = if lora {
            let (b, d) = FrozenBase::from_weights(&src.weights, &src.config)?;
            (Params::shell(b.layers.len()), Some(b), d)
        } else {
            let (p, d) = params_from_weights(&src.weights, &src.config)?;
            (p, None, d)
        };
        let mut shape = Shape::of(&src.config);
        shape.rope_divisors = divisors;
        let ck_path = spec.out.join(CHECKPOINT_FILE);
        let base = describe_base(&src, &spec.model);
        let mut trainer = if spec.resume {
            let ck = checkpoint::load(&spec.out, &shape, params, spec.config.adamw)?;
            if let Some(was) = &ck.base
                && *was != base
            {
                return Err(TrainError::Config(format!(
                    "{} was trained on {was}, and the model given is {base}: resume with the \
                     same base model",
                    ck_path.display()
                )));
            }
            let t = Trainer::resume(ck, shape, train)?;
            match stored {
                Some(b) => t.with_stored_base(b)?,
                None => t,
            }
        } else {
            if ck_path.exists() {
                return Err(TrainError::Config(format!(
                    "{} holds a checkpoint already: resume it (--resume), or choose another output \
                     folder (--out)",
                    spec.out.display()
                )));
            }
            match (&spec.method, stored) {
                (Method::Lora(lc), Some(b)) => {
                    let lora = Lora::new(&src.config, lc.clone(), spec.config.seed)?;
                    Trainer::new_lora_stored(spec.config.clone(), shape, b, lora, train)?
                }
                _ => Trainer::new(spec.config.clone(), shape, params, train)?,
            }
        };
        trainer.base = Some(base);
        Ok(Job {
            spec,
            trainer,
            eval,
            notes,
            src,
        })
    }

    /// Trains to the end (checkpoints into `spec.out` as configured, and at the end), then
    /// writes the result. `control` is asked before every step.
    pub fn run(
        &mut self,
        pool: &ThreadPool,
        control: &dyn Control,
        on: &mut dyn FnMut(&Event),
    ) -> Result<Output> {
        let out = self.spec.out.clone();
        std::fs::create_dir_all(&out).map_err(|source| TrainError::Io {
            path: out.display().to_string(),
            source,
        })?;
        self.trainer
            .run_controlled(pool, &self.eval, Some(&out), control, on)?;
        self.write_output(pool.n_threads())
    }

    /// Writes the trained model or adapter into `spec.out`.
    pub fn write_output(&self, threads: usize) -> Result<Output> {
        let out = &self.spec.out;
        let cfg = &self.src.config;
        if let Some(lora) = self.trainer.lora() {
            let peft = out.join("adapter");
            let base_name = self.src.name.as_deref().unwrap_or("model");
            save_peft(&peft, lora, cfg, base_name)?;
            let gguf = out.join("adapter.gguf");
            save_gguf(&gguf, lora, cfg, "llama")?;
            return Ok(Output::Adapter { peft, gguf });
        }
        let path = out.join("model.gguf");
        let weights = crate::export::to_weights(
            &self.trainer.params,
            cfg,
            self.src.weights.rope_freqs.clone(),
        )?;
        let target = match self.spec.out_type {
            OutType::F32 => OutTarget::F32,
            OutType::F16 => OutTarget::F16,
            OutType::Bf16 => OutTarget::BF16,
        };
        let name = self
            .src
            .name
            .as_deref()
            .map(|n| format!("{n} (fine-tuned)"));
        let parts = ModelParts {
            config: cfg,
            weights: &weights,
            tokenizer: &self.src.tokenizer,
            name: name.as_deref(),
        };
        write_gguf(&parts, target, &path, threads, &|_, _| {})?;
        Ok(Output::Model(path))
    }
}
