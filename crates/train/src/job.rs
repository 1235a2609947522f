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
    self, ChatRenderer, Llama31Renderer, PreferencePair, RecordKind, SequenceOptions,
    TemplateRenderer, TrainingData,
};
use crate::distill::Teacher;
use crate::dpo::DpoData;
use crate::error::{Result, TrainError};
use crate::frozen_base::FrozenBase;
use crate::frozen_int::BaseCompute;
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

/// What the run's loss is.
#[derive(Debug, Clone, PartialEq)]
pub enum Loss {
    /// Cross-entropy of the trained tokens: supervised fine-tuning, continued pretraining
    /// (and sequence-level distillation, once the teacher's answers are the data).
    CrossEntropy,
    /// DPO over `{"prompt", "chosen", "rejected"}` pairs; the reference is the base model.
    Dpo { beta: f64 },
    /// Distillation from a teacher's logits.
    Distill(DistillSpec),
}

/// The teacher of a distillation from logits.
#[derive(Debug, Clone, PartialEq)]
pub struct DistillSpec {
    /// A .gguf file or a folder, with the student's tokenizer.
    pub teacher: PathBuf,
    /// The teacher's most probable ids kept per position.
    pub top_k: usize,
    pub temperature: f64,
    /// Keep the mass outside the top k as one more class (see [`crate::ops::soft_target`]).
    pub tail: bool,
}

impl Loss {
    /// The objective as checkpoints record it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Loss::CrossEntropy => serde_json::json!({"loss": "cross_entropy"}),
            Loss::Dpo { beta } => serde_json::json!({"loss": "dpo", "beta": beta}),
            Loss::Distill(d) => serde_json::json!({
                "loss": "distill",
                // Canonical, so `t.gguf` and `./t.gguf` are the same teacher.
                "teacher": std::fs::canonicalize(&d.teacher)
                    .unwrap_or_else(|_| d.teacher.clone())
                    .display()
                    .to_string(),
                "top_k": d.top_k,
                "temperature": d.temperature,
                "tail": d.tail,
            }),
        }
    }
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
    pub loss: Loss,
    /// Ignored when resuming: a run keeps the settings it started with.
    pub config: TrainConfig,
    pub sequences: SequenceOptions,
    /// Output folder: checkpoint and results.
    pub out: PathBuf,
    /// Continue the checkpoint in `out` (otherwise a checkpoint there is an error).
    pub resume: bool,
    pub out_type: OutType,
    /// How LoRA's frozen base multiplies (see [`BaseCompute`]); the other methods train
    /// over f32 parameters.
    pub base_compute: BaseCompute,
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
                "{shown}: preference pairs (prompt/chosen/rejected) are DPO data: train them \
                 with --method dpo"
            )));
        }
        // Raw prompt/completion text needs no chat format (a conversational prompt in such
        // a file is refused line by line by the renderer).
        RecordKind::Chat if matches!(r, Renderer::TextOnly(_)) => {
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

/// Reads a JSONL file of preference records into DPO pairs for `r`.
fn preference_pairs(
    path: &Path,
    r: &Renderer<'_>,
    opts: SequenceOptions,
    notes: &mut Vec<String>,
) -> Result<Vec<PreferencePair>> {
    let records = data::read_jsonl(path)?;
    let shown = path.display().to_string();
    if records.kind != RecordKind::Preference {
        return Err(TrainError::Data(format!(
            "{shown}: --method dpo trains on {{\"prompt\", \"chosen\", \"rejected\"}} \
             preference pairs, and this file has {} records",
            records.kind.describe()
        )));
    }
    match data::build(&shown, &records, r.get(), opts)? {
        TrainingData::Preference(b) => {
            if !b.truncated.is_empty() {
                notes.push(format!(
                    "{shown}: {} pairs cut to the sequence length, lines {:?}",
                    b.truncated.len(),
                    b.truncated
                ));
            }
            if !b.skipped.is_empty() {
                notes.push(format!(
                    "{shown}: {} pairs left out (nothing to train on after the cut), lines {:?}",
                    b.skipped.len(),
                    b.skipped
                ));
            }
            Ok(b.items)
        }
        _ => Err(TrainError::Data(format!("{shown}: not preference pairs"))),
    }
}

/// Loads a distillation teacher, refusing one whose tokenizer is not the student's
/// (distillation from logits compares distributions id by id).
fn load_teacher(d: &DistillSpec, student: &ModelTokenizer, max_len: usize) -> Result<Teacher> {
    let t = ferrollama_model::import::open(&d.teacher)?;
    let tv = ModelTokenizer::from_keys(&t.tokenizer)?;
    let (s, tb) = (&student.bpe, &tv.bpe);
    let same = s.n_tokens() == tb.n_tokens()
        && (0..s.n_tokens() as u32)
            .all(|i| s.token_bytes(i, true).ok() == tb.token_bytes(i, true).ok());
    if !same {
        return Err(TrainError::Config(format!(
            "the teacher's vocabulary ({} tokens) is not the student's ({} tokens): \
             distillation from logits needs the same tokenizer; --distill-mode sequences \
             distills through the teacher's generated text instead",
            tb.n_tokens(),
            s.n_tokens()
        )));
    }
    let mut weights = t.weights;
    weights.pack()?;
    let llama = ferrollama_model::Llama {
        config: t.config,
        weights,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut teacher = Teacher::new(llama, max_len, threads, d.top_k, d.temperature)?;
    teacher.tail = d.tail;
    Ok(teacher)
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
        let (mut train, mut eval) = (Vec::new(), Vec::new());
        let (mut dpo_train, mut dpo_eval) = (None, None);
        if let Loss::Dpo { beta } = spec.loss {
            crate::dpo::check_beta(beta)?;
            dpo_train = Some(preference_pairs(
                &spec.data,
                &renderer,
                spec.sequences,
                &mut notes,
            )?);
            if let Some(p) = &spec.eval {
                dpo_eval = Some(preference_pairs(p, &renderer, spec.sequences, &mut notes)?);
            }
        } else {
            train = sequences(&spec.data, &renderer, spec.sequences, &mut notes)?;
            if let Some(p) = &spec.eval {
                eval = sequences(p, &renderer, spec.sequences, &mut notes)?;
            }
        }
        let teacher = match &spec.loss {
            Loss::Distill(d) => Some(load_teacher(d, &vocab, spec.sequences.seq_len)?),
            _ => None,
        };
        if spec.sequences.seq_len > src.config.max_seq_len {
            notes.push(format!(
                "the sequence length {} is beyond the model's context of {} tokens",
                spec.sequences.seq_len, src.config.max_seq_len
            ));
        }
        // LoRA keeps the model in its stored type (F16, Q8_0, Q4_K...): no f32 copy, whatever
        // the loss (QLoRA-style DPO and distillation included).
        let lora = if spec.resume {
            checkpoint::method(&spec.out)? == "lora"
        } else {
            matches!(spec.method, Method::Lora(_))
        };
        let (params, stored, divisors) = if lora {
            let (mut b, d) = FrozenBase::from_weights(&src.weights, &src.config)?;
            if spec.base_compute != BaseCompute::F32 {
                let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                b.set_compute(spec.base_compute, &ThreadPool::new(n))?;
            }
            (Params::shell(b.layers.len()), Some(b), d)
        } else {
            let (p, d) = params_from_weights(&src.weights, &src.config)?;
            (p, None, d)
        };
        let mut shape = Shape::of(&src.config);
        shape.rope_divisors = divisors;
        // DPO's reference: the base model (without an adapter), log-probabilities computed
        // once here; a resumed run computes the same numbers again from the same base.
        let (mut dpo, mut dpo_eval_data) = (None, None);
        if let Loss::Dpo { beta } = spec.loss {
            let pool = ThreadPool::new(std::thread::available_parallelism().map_or(1, |n| n.get()));
            let reference = |pairs| match &stored {
                Some(b) => DpoData::new(&pool, &shape, b, pairs, beta),
                None => DpoData::new(&pool, &shape, &params, pairs, beta),
            };
            if let Some(pairs) = dpo_train {
                dpo = Some(reference(pairs)?);
            }
            if let Some(pairs) = dpo_eval {
                dpo_eval_data = Some(reference(pairs)?);
            }
        }
        let ck_path = spec.out.join(CHECKPOINT_FILE);
        let base = describe_base(&src, &spec.model);
        let objective = spec.loss.to_json();
        let mut trainer = if spec.resume {
            let ck = checkpoint::load(&spec.out, &shape, params, spec.config.adamw)?;
            // Checkpoints from before objectives were recorded are cross-entropy or DPO
            // runs with unknown settings: let them resume.
            if let Some(was) = ck.config.get("objective")
                && *was != objective
            {
                return Err(TrainError::Config(format!(
                    "{} was trained with the objective {was}, and this run asks for                      {objective}: resume with the same method and settings (--beta,                      --teacher, --top-k, --temperature, --tail)",
                    ck_path.display()
                )));
            }
            if let Some(was) = &ck.base
                && *was != base
            {
                return Err(TrainError::Config(format!(
                    "{} was trained on {was}, and the model given is {base}: resume with the \
                     same base model",
                    ck_path.display()
                )));
            }
            let t = match dpo {
                Some(d) => Trainer::resume(ck, shape, d)?,
                None => Trainer::resume(ck, shape, train)?,
            };
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
            let c = spec.config.clone();
            match (&spec.method, dpo, stored) {
                (Method::Lora(lc), None, Some(b)) => {
                    let lora = Lora::new(&src.config, lc.clone(), spec.config.seed)?;
                    Trainer::new_lora_stored(c, shape, b, lora, train)?
                }
                (Method::Lora(lc), Some(d), Some(b)) => {
                    let lora = Lora::new(&src.config, lc.clone(), spec.config.seed)?;
                    Trainer::new_lora_stored(c, shape, b, lora, d)?
                }
                (Method::Lora(lc), Some(d), None) => {
                    let lora = Lora::new(&src.config, lc.clone(), spec.config.seed)?;
                    Trainer::new_lora(c, shape, params, lora, d)?
                }
                (Method::Lora(lc), None, None) => {
                    let lora = Lora::new(&src.config, lc.clone(), spec.config.seed)?;
                    Trainer::new_lora(c, shape, params, lora, train)?
                }
                (Method::Full, Some(d), _) => Trainer::new(c, shape, params, d)?,
                (Method::Full, None, _) => Trainer::new(c, shape, params, train)?,
            }
        };
        if let Some(d) = dpo_eval_data {
            trainer = trainer.with_dpo_eval(d)?;
        }
        if let Some(t) = teacher {
            trainer = trainer.with_teacher(t)?;
        }
        trainer.base = Some(base);
        trainer.objective = Some(objective);
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
