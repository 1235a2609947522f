//! A task file: lm-evaluation-harness's YAML task format, the subset that needs no Python.
//!
//! ```yaml
//! task: my_mc
//! dataset_path: questions.jsonl      # .jsonl / .csv, relative to this file
//! fewshot_path: train.jsonl          # optional; else few-shot examples come from the same rows
//! output_type: multiple_choice       # | generate_until | loglikelihood | loglikelihood_rolling
//! doc_to_text: "Question: {{question}}\nAnswer:"
//! doc_to_target: "{{label}}"         # or a column name, or an integer
//! doc_to_choice: "{{choices}}"       # or a column name, or a YAML list
//! target_delimiter: " "
//! fewshot_delimiter: "\n\n"
//! num_fewshot: 0
//! fewshot_config: {sampler: first_n} # default: random, seed 1234
//! generation_kwargs: {until: ["\n\n"], max_gen_toks: 256}
//! filter_list:
//!   - name: strict-match
//!     filter:
//!       - {function: regex, regex_pattern: "#### (\\-?[0-9\\.\\,]+)", group_select: 0}
//!       - {function: take_first}
//! metric_list:
//!   - {metric: exact_match, ignore_case: true, regexes_to_ignore: [","]}
//! ```
//!
//! lm-eval's own local-file form is accepted too: `dataset_path: json` (or `csv`) with
//! `dataset_kwargs: {data_files: {test: a.jsonl, train: b.jsonl}}` and `test_split` /
//! `validation_split` / `training_split` / `fewshot_split` naming the splits. Fields lm-eval
//! has that change nothing here (`tag`, `metadata`, ...) are accepted and ignored; any other
//! unknown field is an error, as is Python code (`!function`, `process_docs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::dataset::{Dataset, Doc};
use crate::error::{EvalError, Result};
use crate::filters::{Filter, FilterStep};
use crate::metrics::{ExactMatchOptions, Metric};
use crate::templates::Templates;

/// How a task asks the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    MultipleChoice,
    GenerateUntil,
    Loglikelihood,
    LoglikelihoodRolling,
    /// Ours, not lm-eval's: a question with tools, the first call checked BFCL-style.
    ToolCall,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    task: Option<String>,
    dataset_path: String,
    dataset_kwargs: Option<RawDatasetKwargs>,
    test_split: Option<String>,
    validation_split: Option<String>,
    training_split: Option<String>,
    fewshot_split: Option<String>,
    fewshot_path: Option<String>,
    output_type: OutputType,
    doc_to_text: Option<RawTemplate>,
    doc_to_target: Option<RawTemplate>,
    doc_to_choice: Option<RawChoices>,
    doc_to_tools: Option<String>,
    description: Option<String>,
    target_delimiter: Option<String>,
    fewshot_delimiter: Option<String>,
    num_fewshot: Option<usize>,
    fewshot_config: Option<RawFewshotConfig>,
    generation_kwargs: Option<RawGenerationKwargs>,
    filter_list: Option<Vec<RawFilter>>,
    metric_list: Option<Vec<RawMetric>>,
    // lm-eval fields with no effect on a local run.
    #[allow(dead_code)]
    tag: Option<serde_norway::Value>,
    #[allow(dead_code)]
    group: Option<serde_norway::Value>,
    #[allow(dead_code)]
    metadata: Option<serde_norway::Value>,
    #[allow(dead_code)]
    dataset_name: Option<serde_norway::Value>,
    #[allow(dead_code)]
    should_decontaminate: Option<serde_norway::Value>,
    #[allow(dead_code)]
    doc_to_decontamination_query: Option<serde_norway::Value>,
    #[allow(dead_code)]
    output_path: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatasetKwargs {
    data_files: BTreeMap<String, OneOrMany>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawTemplate {
    Int(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawChoices {
    Text(String),
    List(Vec<String>),
    Map(BTreeMap<String, String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFewshotConfig {
    sampler: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawGenerationKwargs {
    until: Option<OneOrMany>,
    max_gen_toks: Option<usize>,
    do_sample: Option<bool>,
    temperature: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    name: String,
    filter: Vec<RawFilterStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilterStep {
    function: String,
    regex_pattern: Option<String>,
    group_select: Option<i64>,
    fallback: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    metric: String,
    aggregation: Option<String>,
    higher_is_better: Option<bool>,
    ignore_case: Option<bool>,
    ignore_punctuation: Option<bool>,
    ignore_numbers: Option<bool>,
    regexes_to_ignore: Option<Vec<String>>,
    judge_template: Option<String>,
    score_regex: Option<String>,
    judge_max_gen_toks: Option<usize>,
    judge_until: Option<OneOrMany>,
    judge_apply_chat_template: Option<bool>,
}

/// How few-shot examples are drawn (lm-eval's `fewshot_config.sampler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    /// `random.Random(seed).sample(docs, n)`, one generator across documents in order.
    Random,
    /// The first n documents.
    FirstN,
}

/// A task's field: a column of the document, a Jinja template, or a fixed integer.
#[derive(Debug, Clone)]
enum FieldSpec {
    Template(String),
    Int(i64),
}

#[derive(Debug, Clone)]
enum ChoiceSpec {
    Template(String),
    List(Vec<String>),
}

/// A metric of the task with its options.
#[derive(Debug, Clone)]
pub struct MetricSpec {
    pub metric: Metric,
    pub exact_match: ExactMatchOptions,
    /// `llm_judge`'s settings.
    pub judge: Option<JudgeSpec>,
}

/// How a judge model scores a generation (`metric: llm_judge`).
#[derive(Debug, Clone)]
pub struct JudgeSpec {
    /// The name `judge_template` is compiled under in the task's templates.
    pub template: String,
    /// The score is the first capture group (or the whole match) of the first match.
    pub score_regex: regex::Regex,
    pub max_gen_toks: usize,
    pub until: Vec<String>,
    /// Ask the judge through its chat template (one user turn); else as plain text.
    pub chat: bool,
}

/// A loaded, checked task.
#[derive(Debug)]
pub struct Task {
    pub name: String,
    pub output_type: OutputType,
    pub docs: Dataset,
    /// Few-shot source; `None`: the evaluated rows themselves.
    pub fewshot_docs: Option<Dataset>,
    /// Whether the document being asked is left out of its own examples: lm-eval 0.4
    /// (`ConfigurableTask.fewshot_context`) does so when `fewshot_split` equals
    /// `test_split` as written (both absent included), so a task with a `test_split` and
    /// no `fewshot_split` draws its examples from the test rows without leaving the
    /// question out.
    pub fewshot_skips_doc: bool,
    pub num_fewshot: usize,
    pub sampler: Sampler,
    pub target_delimiter: String,
    pub fewshot_delimiter: String,
    pub until: Vec<String>,
    pub max_gen_toks: usize,
    pub filters: Vec<Filter>,
    pub metrics: Vec<MetricSpec>,
    templates: Templates,
    doc_to_text: Option<FieldSpec>,
    doc_to_target: Option<FieldSpec>,
    doc_to_choice: Option<ChoiceSpec>,
    doc_to_tools: Option<String>,
    has_description: bool,
}

/// The gold answer of a document, as lm-eval's `doc_to_target` yields it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Target {
    Index(i64),
    Indices(Vec<i64>),
    Text(String),
    Texts(Vec<String>),
}

fn err(path: &Path, msg: impl std::fmt::Display) -> EvalError {
    EvalError::Task(format!("{}: {msg}", path.display()))
}

impl Task {
    /// Reads and checks a task file; dataset paths are relative to its folder.
    pub fn load(path: &Path) -> Result<Task> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(path, format_args!("cannot read: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "task".into());
        Task::parse(&text, base, &stem).map_err(|e| match e {
            EvalError::Task(m) => err(path, m),
            other => other,
        })
    }

    /// Parses task YAML; `base` resolves relative dataset paths.
    pub fn parse(text: &str, base: &Path, default_name: &str) -> Result<Task> {
        if text.contains("!function") {
            return Err(EvalError::Task(
                "`!function` (Python code) is not supported; write the field as a Jinja \
                 template"
                    .into(),
            ));
        }
        let raw: RawTask =
            serde_norway::from_str(text).map_err(|e| EvalError::Task(e.to_string()))?;
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let (docs_path, fewshot_path) = dataset_files(&raw, &resolve)?;
        let docs = Dataset::load(&docs_path)?;
        let fewshot_docs = fewshot_path.map(|p| Dataset::load(&p)).transpose()?;
        let fewshot_skips_doc = fewshot_docs.is_none() && raw.fewshot_split == raw.test_split;

        let mut templates = Templates::new();
        let mut field = |name: &str, v: Option<RawTemplate>| -> Result<Option<FieldSpec>> {
            Ok(match v {
                None => None,
                Some(RawTemplate::Int(i)) => Some(FieldSpec::Int(i)),
                Some(RawTemplate::Text(s)) => {
                    templates.add(name, &s)?;
                    Some(FieldSpec::Template(s))
                }
            })
        };
        let doc_to_text = field("doc_to_text", raw.doc_to_text)?;
        let doc_to_target = field("doc_to_target", raw.doc_to_target)?;
        let doc_to_choice = match raw.doc_to_choice {
            None => None,
            Some(RawChoices::Text(s)) => {
                templates.add("doc_to_choice", &s)?;
                Some(ChoiceSpec::Template(s))
            }
            Some(RawChoices::List(l)) => {
                for (i, c) in l.iter().enumerate() {
                    templates.add(&format!("doc_to_choice[{i}]"), c)?;
                }
                Some(ChoiceSpec::List(l))
            }
            Some(RawChoices::Map(m)) => {
                let l: Vec<String> = m.into_values().collect();
                for (i, c) in l.iter().enumerate() {
                    templates.add(&format!("doc_to_choice[{i}]"), c)?;
                }
                Some(ChoiceSpec::List(l))
            }
        };
        let has_description = match &raw.description {
            Some(d) if !d.is_empty() => {
                templates.add("description", d)?;
                true
            }
            _ => false,
        };
        let ot = raw.output_type;
        match ot {
            OutputType::MultipleChoice if doc_to_choice.is_none() => {
                return Err(EvalError::Task(
                    "output_type multiple_choice needs doc_to_choice".into(),
                ));
            }
            OutputType::LoglikelihoodRolling if doc_to_target.is_none() => {
                return Err(EvalError::Task(
                    "output_type loglikelihood_rolling needs doc_to_target (the text to score)"
                        .into(),
                ));
            }
            OutputType::ToolCall if raw.doc_to_tools.is_none() => {
                return Err(EvalError::Task(
                    "output_type tool_call needs doc_to_tools (a column or `{{ expression }}` \
                     giving the tools)"
                        .into(),
                ));
            }
            OutputType::MultipleChoice
            | OutputType::GenerateUntil
            | OutputType::Loglikelihood
            | OutputType::ToolCall
                if doc_to_text.is_none() || doc_to_target.is_none() =>
            {
                return Err(EvalError::Task(
                    "doc_to_text and doc_to_target are required for this output_type".into(),
                ));
            }
            _ => {}
        }
        let fewshot_delimiter = raw.fewshot_delimiter.unwrap_or_else(|| "\n\n".into());
        let sampler = match raw.fewshot_config.and_then(|c| c.sampler).as_deref() {
            None | Some("default") => Sampler::Random,
            Some("first_n") => Sampler::FirstN,
            Some(other) => {
                return Err(EvalError::Task(format!(
                    "fewshot_config.sampler: unknown sampler `{other}` (default or first_n)"
                )));
            }
        };
        let gk = raw.generation_kwargs;
        if let Some(g) = &gk
            && (g.do_sample == Some(true) || g.temperature.is_some_and(|t| t > 0.0))
        {
            return Err(EvalError::Task(
                "generation_kwargs: only greedy decoding is supported (do_sample: false, \
                 temperature: 0)"
                    .into(),
            ));
        }
        let until = match gk.as_ref().and_then(|g| g.until.as_ref()) {
            Some(OneOrMany::One(s)) => vec![s.clone()],
            Some(OneOrMany::Many(v)) => v.clone(),
            // lm-eval's TaskConfig default: stop at the few-shot delimiter.
            None => vec![fewshot_delimiter.clone()],
        };
        let max_gen_toks = gk.as_ref().and_then(|g| g.max_gen_toks).unwrap_or(256);
        if max_gen_toks == 0 {
            return Err(EvalError::Task(
                "generation_kwargs.max_gen_toks must be at least 1".into(),
            ));
        }
        let filters = match raw.filter_list {
            None => vec![Filter::none()],
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, f)| compile_filter(i, f))
                .collect::<Result<Vec<_>>>()?,
        };
        let metrics = match raw.metric_list {
            None => default_metrics(ot)
                .iter()
                .map(|&m| MetricSpec {
                    metric: m,
                    exact_match: ExactMatchOptions::default(),
                    judge: None,
                })
                .collect(),
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, m)| compile_metric(i, m, ot, &mut templates))
                .collect::<Result<Vec<_>>>()?,
        };
        if metrics.is_empty() {
            return Err(EvalError::Task("metric_list: no metrics".into()));
        }
        Ok(Task {
            name: raw.task.unwrap_or_else(|| default_name.to_string()),
            output_type: ot,
            docs,
            fewshot_docs,
            fewshot_skips_doc,
            num_fewshot: raw.num_fewshot.unwrap_or(0),
            sampler,
            target_delimiter: raw.target_delimiter.unwrap_or_else(|| " ".into()),
            fewshot_delimiter,
            until,
            max_gen_toks,
            filters,
            metrics,
            templates,
            doc_to_text,
            doc_to_target,
            doc_to_choice,
            doc_to_tools: raw.doc_to_tools,
            has_description,
        })
    }

    /// Renders a template compiled under `name` (a judge's prompt) over `fields`.
    pub fn render(&self, name: &str, fields: &serde_json::Map<String, Value>) -> Result<String> {
        self.templates.render(name, fields)
    }

    /// Rendered `description` (empty when the task has none).
    pub fn description(&self, doc: &Doc) -> Result<String> {
        if !self.has_description {
            return Ok(String::new());
        }
        self.row(doc, self.templates.render("description", &doc.fields))
    }

    /// Wraps an error about a row with the file and line it came from.
    pub fn row<T>(&self, doc: &Doc, r: Result<T>) -> Result<T> {
        r.map_err(|e| {
            EvalError::Dataset(format!(
                "{}:{}: {}",
                self.docs.path.display(),
                doc.line,
                match e {
                    EvalError::Task(m) | EvalError::Dataset(m) | EvalError::Invalid(m) => m,
                    other => other.to_string(),
                }
            ))
        })
    }

    /// lm-eval's `doc_to_text`: a column's value, or the rendered template.
    pub fn doc_to_text(&self, doc: &Doc) -> Result<String> {
        let r = match &self.doc_to_text {
            None => Ok(String::new()),
            Some(FieldSpec::Int(i)) => Ok(i.to_string()),
            Some(FieldSpec::Template(s)) => match doc.fields.get(s) {
                Some(v) => Ok(py_str(v)),
                None => self.templates.render("doc_to_text", &doc.fields),
            },
        };
        self.row(doc, r)
    }

    /// lm-eval's `doc_to_target`: a column's value as it is; a rendered template becomes
    /// an integer when it is all digits and the task has choices, a list when it looks like
    /// one, else text.
    pub fn doc_to_target(&self, doc: &Doc) -> Result<Target> {
        let r = match &self.doc_to_target {
            None => Ok(Target::Text(String::new())),
            Some(FieldSpec::Int(i)) => Ok(Target::Index(*i)),
            Some(FieldSpec::Template(s)) => match doc.fields.get(s) {
                Some(v) => value_target(v),
                None => self
                    .templates
                    .render("doc_to_target", &doc.fields)
                    .and_then(|t| self.text_target(t)),
            },
        };
        self.row(doc, r)
    }

    fn text_target(&self, t: String) -> Result<Target> {
        if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) && self.doc_to_choice.is_some() {
            return t
                .parse::<i64>()
                .map(Target::Index)
                .map_err(|e| EvalError::Invalid(format!("doc_to_target `{t}`: {e}")));
        }
        if t.starts_with('[') && t.ends_with(']') {
            let v: Value = serde_json::from_str(&t)
                .or_else(|_| serde_json::from_str(&t.replace('\'', "\"")))
                .map_err(|e| {
                    EvalError::Invalid(format!("doc_to_target `{t}` is not a list: {e}"))
                })?;
            return value_target(&v);
        }
        Ok(Target::Text(t))
    }

    /// lm-eval's `doc_to_choice`; `None` when the task has no choices.
    pub fn doc_to_choice(&self, doc: &Doc) -> Result<Option<Vec<String>>> {
        let r = match &self.doc_to_choice {
            None => Ok(None),
            Some(ChoiceSpec::List(l)) => (0..l.len())
                .map(|i| {
                    self.templates
                        .render(&format!("doc_to_choice[{i}]"), &doc.fields)
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(ChoiceSpec::Template(s)) => {
                let v = match doc.fields.get(s) {
                    Some(v) => Ok(v.clone()),
                    None => match self.templates.eval_single("doc_to_choice", s, &doc.fields) {
                        Ok(Some(v)) => Ok(v),
                        Ok(None) => self
                            .templates
                            .render("doc_to_choice", &doc.fields)
                            .and_then(|t| {
                                serde_json::from_str(&t).map_err(|e| {
                                    EvalError::Invalid(format!(
                                        "doc_to_choice rendered `{t}`, not a list: {e}"
                                    ))
                                })
                            }),
                        Err(e) => Err(e),
                    },
                };
                v.and_then(|v| match v {
                    Value::Array(items) => Ok(Some(items.iter().map(py_str).collect())),
                    Value::Object(m) => Ok(Some(m.values().map(py_str).collect())),
                    other => Err(EvalError::Invalid(format!(
                        "doc_to_choice must give a list, got `{}`",
                        py_str(&other)
                    ))),
                })
            }
        };
        let r = r.and_then(|c| match c {
            Some(c) if c.is_empty() => Err(EvalError::Invalid("doc_to_choice is empty".into())),
            c => Ok(c),
        });
        self.row(doc, r)
    }

    /// A JSON value from a column or a one-`{{ expression }}` template of the row.
    fn value_of(&self, field: &str, source: &str, doc: &Doc) -> Result<Value> {
        if let Some(v) = doc.fields.get(source) {
            return Ok(v.clone());
        }
        let mut t = Templates::new();
        t.add(field, source)?;
        match t.eval_single(field, source, &doc.fields)? {
            Some(v) => Ok(v),
            None => {
                let text = t.render(field, &doc.fields)?;
                serde_json::from_str(&text).map_err(|e| {
                    EvalError::Invalid(format!("{field} rendered `{text}`, not JSON: {e}"))
                })
            }
        }
    }

    /// The tools of a `tool_call` row (`doc_to_tools`).
    pub fn doc_to_tools(&self, doc: &Doc) -> Result<Value> {
        let r = match &self.doc_to_tools {
            Some(s) => self.value_of("doc_to_tools", s, doc),
            None => Err(EvalError::Invalid("the task has no doc_to_tools".into())),
        };
        self.row(doc, r)
    }

    /// `doc_to_target` as JSON (a `tool_call` row's ground truth).
    pub fn target_value(&self, doc: &Doc) -> Result<Value> {
        let r = match &self.doc_to_target {
            Some(FieldSpec::Template(s)) => self.value_of("doc_to_target", s, doc),
            Some(FieldSpec::Int(i)) => Ok(Value::from(*i)),
            None => Err(EvalError::Invalid("the task has no doc_to_target".into())),
        };
        self.row(doc, r)
    }

    /// The text a few-shot example shows as its answer (lm-eval's `get_context`): the
    /// first of several targets, the chosen choice for an index, else the text.
    pub fn fewshot_target(&self, doc: &Doc) -> Result<String> {
        let target = self.doc_to_target(doc)?;
        let choices = self.doc_to_choice(doc)?;
        let r = match (target, choices) {
            (Target::Text(t), _) => Ok(t),
            (Target::Texts(v), _) => Ok(v.into_iter().next().unwrap_or_default()),
            (Target::Indices(v), _) => Ok(v.first().map(i64::to_string).unwrap_or_default()),
            (Target::Index(i), None) => Ok(i.to_string()),
            (Target::Index(i), Some(c)) => usize::try_from(i)
                .ok()
                .and_then(|i| c.get(i).cloned())
                .ok_or_else(|| {
                    EvalError::Invalid(format!(
                        "doc_to_target {i} is not an index into {} choices",
                        c.len()
                    ))
                }),
        };
        self.row(doc, r)
    }
}

/// A JSON value as Python's `str()` would print it for the simple cases.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

fn value_target(v: &Value) -> Result<Target> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(Target::Index)
            .ok_or_else(|| EvalError::Invalid(format!("doc_to_target {n} is not an integer"))),
        Value::String(s) => Ok(Target::Text(s.clone())),
        Value::Array(items) if items.iter().all(Value::is_i64) => Ok(Target::Indices(
            items.iter().filter_map(Value::as_i64).collect(),
        )),
        Value::Array(items) => Ok(Target::Texts(items.iter().map(py_str).collect())),
        other => Err(EvalError::Invalid(format!(
            "doc_to_target must be text, an integer or a list, got {other}"
        ))),
    }
}

fn dataset_files(
    raw: &RawTask,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<(PathBuf, Option<PathBuf>)> {
    let builder = matches!(raw.dataset_path.as_str(), "json" | "csv" | "parquet");
    if !builder {
        if raw.dataset_kwargs.is_some() {
            return Err(EvalError::Task(
                "dataset_kwargs goes with dataset_path: json or csv (lm-eval's local form); \
                 with a file in dataset_path leave it out"
                    .into(),
            ));
        }
        return Ok((
            resolve(&raw.dataset_path),
            raw.fewshot_path.as_deref().map(resolve),
        ));
    }
    let Some(kw) = &raw.dataset_kwargs else {
        return Err(EvalError::Task(format!(
            "dataset_path: {} needs dataset_kwargs.data_files naming the files",
            raw.dataset_path
        )));
    };
    let file = |split: &str| -> Result<PathBuf> {
        match kw.data_files.get(split) {
            Some(OneOrMany::One(f)) => Ok(resolve(f)),
            Some(OneOrMany::Many(v)) if v.len() == 1 => Ok(resolve(&v[0])),
            Some(OneOrMany::Many(_)) => Err(EvalError::Task(format!(
                "dataset_kwargs.data_files.{split}: give one file per split"
            ))),
            None => Err(EvalError::Task(format!(
                "dataset_kwargs.data_files has no split `{split}`"
            ))),
        }
    };
    let eval_split = raw
        .test_split
        .clone()
        .or_else(|| raw.validation_split.clone())
        .ok_or_else(|| EvalError::Task("test_split or validation_split is required".into()))?;
    let fewshot_split = raw
        .fewshot_split
        .clone()
        .or_else(|| raw.training_split.clone())
        .or_else(|| raw.validation_split.clone());
    let fewshot = match (&raw.fewshot_path, fewshot_split) {
        (Some(p), _) => Some(resolve(p)),
        (None, Some(s)) if s != eval_split => Some(file(&s)?),
        _ => None,
    };
    Ok((file(&eval_split)?, fewshot))
}

fn compile_filter(i: usize, f: RawFilter) -> Result<Filter> {
    let steps = f
        .filter
        .into_iter()
        .enumerate()
        .map(|(j, s)| {
            let at = format!("filter_list[{i}].filter[{j}]");
            Ok(match s.function.as_str() {
                "regex" => {
                    let pat = s
                        .regex_pattern
                        .unwrap_or_else(|| r"#### (\-?[0-9\.\,]+)".to_string());
                    let re = regex::Regex::new(&pat)
                        .map_err(|e| EvalError::Task(format!("{at}.regex_pattern: {e}")))?;
                    FilterStep::Regex {
                        re,
                        group_select: s.group_select.unwrap_or(0),
                        fallback: s.fallback.unwrap_or_else(|| "[invalid]".into()),
                    }
                }
                "take_first" => FilterStep::TakeFirst,
                "lowercase" => FilterStep::Lowercase,
                "uppercase" => FilterStep::Uppercase,
                "remove_whitespace" => FilterStep::RemoveWhitespace,
                other => {
                    return Err(EvalError::Task(format!(
                        "{at}.function: unknown filter `{other}` (regex, take_first, \
                         lowercase, uppercase, remove_whitespace)"
                    )));
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Filter {
        name: f.name,
        steps,
    })
}

fn default_metrics(ot: OutputType) -> &'static [Metric] {
    match ot {
        OutputType::MultipleChoice => &[Metric::Acc, Metric::AccNorm],
        OutputType::GenerateUntil => &[Metric::ExactMatch],
        OutputType::Loglikelihood => &[Metric::Perplexity, Metric::Acc],
        OutputType::LoglikelihoodRolling => &[
            Metric::WordPerplexity,
            Metric::BytePerplexity,
            Metric::BitsPerByte,
        ],
        OutputType::ToolCall => &[Metric::ToolCallAccuracy, Metric::ToolNameAccuracy],
    }
}

fn compile_metric(
    i: usize,
    m: RawMetric,
    ot: OutputType,
    templates: &mut Templates,
) -> Result<MetricSpec> {
    let at = format!("metric_list[{i}]");
    let metric = Metric::parse(&m.metric)
        .ok_or_else(|| EvalError::Task(format!("{at}.metric: unknown metric `{}`", m.metric)))?;
    let allowed = match ot {
        OutputType::MultipleChoice => {
            matches!(metric, Metric::Acc | Metric::AccNorm | Metric::ExactMatch)
        }
        OutputType::GenerateUntil => matches!(metric, Metric::ExactMatch | Metric::LlmJudge),
        OutputType::Loglikelihood => matches!(metric, Metric::Acc | Metric::Perplexity),
        OutputType::LoglikelihoodRolling => matches!(
            metric,
            Metric::WordPerplexity | Metric::BytePerplexity | Metric::BitsPerByte
        ),
        OutputType::ToolCall => {
            matches!(metric, Metric::ToolCallAccuracy | Metric::ToolNameAccuracy)
        }
    };
    if !allowed {
        return Err(EvalError::Task(format!(
            "{at}.metric: `{}` does not apply to output_type {ot:?}",
            m.metric
        )));
    }
    if let Some(a) = &m.aggregation {
        let expected = match metric.aggregation() {
            crate::metrics::Aggregation::Mean => "mean",
            crate::metrics::Aggregation::Perplexity => "perplexity",
            crate::metrics::Aggregation::WeightedPerplexity => "weighted_perplexity",
            crate::metrics::Aggregation::BitsPerByte => "bits_per_byte",
        };
        if a != expected {
            return Err(EvalError::Task(format!(
                "{at}.aggregation: `{a}` for {} (only `{expected}` is supported)",
                m.metric
            )));
        }
    }
    let _ = m.higher_is_better;
    let regexes = m
        .regexes_to_ignore
        .unwrap_or_default()
        .iter()
        .map(|r| {
            regex::Regex::new(r)
                .map_err(|e| EvalError::Task(format!("{at}.regexes_to_ignore `{r}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let judge = if metric == Metric::LlmJudge {
        let Some(t) = &m.judge_template else {
            return Err(EvalError::Task(format!(
                "{at}.judge_template: llm_judge needs the judge's prompt template (Jinja over \
                 the row's fields, `response` and `target`)"
            )));
        };
        let name = format!("{at}.judge_template");
        templates.add(&name, t)?;
        let pat = m
            .score_regex
            .clone()
            .unwrap_or_else(|| r"(-?\d+(?:\.\d+)?)".to_string());
        let score_regex = regex::Regex::new(&pat)
            .map_err(|e| EvalError::Task(format!("{at}.score_regex: {e}")))?;
        Some(JudgeSpec {
            template: name,
            score_regex,
            max_gen_toks: m.judge_max_gen_toks.unwrap_or(32).max(1),
            until: m.judge_until.map(OneOrMany::into_vec).unwrap_or_default(),
            chat: m.judge_apply_chat_template.unwrap_or(true),
        })
    } else {
        if m.judge_template.is_some() || m.score_regex.is_some() {
            return Err(EvalError::Task(format!(
                "{at}: judge_template and score_regex go with metric: llm_judge"
            )));
        }
        None
    };
    Ok(MetricSpec {
        metric,
        judge,
        exact_match: ExactMatchOptions {
            regexes_to_ignore: regexes,
            ignore_case: m.ignore_case.unwrap_or(false),
            ignore_punctuation: m.ignore_punctuation.unwrap_or(false),
            ignore_numbers: m.ignore_numbers.unwrap_or(false),
        },
    })
}
