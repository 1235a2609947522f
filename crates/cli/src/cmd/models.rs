//! `ferrollama models list | show | rm`: the local model store.

use std::process::ExitCode;

use anyhow::Result;
use ferrollama_store::info::{GgufSummary, gguf_summary};
use ferrollama_store::{Entry, EntryState, Format, Store};
use indicatif::HumanBytes;

/// The local model store: list, inspect and remove models.
///
/// The store is $FERROLLAMA_MODELS, else <cache>/models (<cache>: $FERROLLAMA_CACHE, else
/// $XDG_CACHE_HOME/ferrollama, else ~/.cache/ferrollama). Each model is a folder
/// <store>/NAME/ with its files and a manifest.json (source, revision, sha256 of every
/// file); `ferrollama pull` adds them. A folder without a manifest is an unfinished pull
/// (state "incomplete"; pull the same reference again to resume it). A loose
/// <store>/NAME.gguf file, which is how the default model is cached, is listed with state
/// "legacy". Any NAME listed here can be passed as `-m NAME` to run, chat, bench and serve.
#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ModelsCommand {
    /// List the models in the store: name, size, format and source.
    List {
        /// Print {"root", "models": [{"name", "state", "path", "model_path", "format",
        /// "size", "source", "revision", "pulled_at"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Show one model: its manifest and, for GGUF files, the architecture, parameter
    /// count and quantization read from the file's header.
    Show {
        name: String,
        /// Print the entry, its manifest and the GGUF summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Remove a model from the store (its folder, or a legacy loose file).
    Rm {
        name: String,
        /// Print {"name", "path", "size"} of what was removed.
        #[arg(long)]
        json: bool,
    },
}

pub fn models(a: ModelsArgs) -> Result<ExitCode> {
    let store = Store::open_default();
    match a.command {
        ModelsCommand::List { json } => list(&store, json),
        ModelsCommand::Show { name, json } => show(&store, &name, json),
        ModelsCommand::Rm { name, json } => {
            let r = store.remove(&name)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                eprintln!(
                    "removed {} ({}, {})",
                    r.name,
                    HumanBytes(r.size),
                    r.path.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn format_of(e: &Entry) -> &'static str {
    e.format.map_or("-", Format::as_str)
}

fn source_of(e: &Entry) -> String {
    let src = e.source.as_deref().unwrap_or("-");
    match e.state {
        EntryState::Complete => src.to_string(),
        EntryState::Incomplete => format!("{src} (incomplete)"),
        EntryState::Legacy => "(loose file)".to_string(),
    }
}

fn list(store: &Store, json: bool) -> Result<ExitCode> {
    let entries = store.list()?;
    if json {
        let v = serde_json::json!({"root": store.root(), "models": entries});
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        eprintln!(
            "no models in {}; `ferrollama pull REF` adds one",
            store.root().display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let width = entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:width$}  {:>10}  {:11}  SOURCE", "NAME", "SIZE", "FORMAT");
    for e in &entries {
        println!(
            "{:width$}  {:>10}  {:11}  {}",
            e.name,
            HumanBytes(e.size).to_string(),
            format_of(e),
            source_of(e)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// 134_515_008 → "134.5M".
fn human_count(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}K", n / 1e3)
    } else {
        format!("{n}")
    }
}

fn show(store: &Store, name: &str, json: bool) -> Result<ExitCode> {
    let e = store.get(name)?;
    // The header is read for any entry whose model is one .gguf file; a header that does
    // not parse is reported, not fatal, so the manifest is still shown.
    let gguf: Option<Result<GgufSummary, String>> = match (&e.format, &e.model_path) {
        (Some(Format::Gguf), Some(p)) if p.is_file() => {
            Some(gguf_summary(p).map_err(|err| err.to_string()))
        }
        _ => None,
    };
    if json {
        let (summary, error) = match &gguf {
            Some(Ok(s)) => (Some(s), None),
            Some(Err(err)) => (None, Some(err)),
            None => (None, None),
        };
        let v = serde_json::json!({
            "name": e.name,
            "state": e.state,
            "path": e.path,
            "model_path": e.model_path,
            "format": e.format,
            "size": e.size,
            "source": e.source,
            "revision": e.revision,
            "pulled_at": e.pulled_at,
            "manifest": e.manifest,
            "gguf": summary,
            "gguf_error": error,
        });
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!("name:       {}", e.name);
    println!(
        "state:      {}",
        serde_json::to_string(&e.state)?.trim_matches('"')
    );
    println!("path:       {}", e.path.display());
    if let Some(p) = &e.model_path {
        println!("load:       {}", p.display());
    }
    println!("format:     {}", format_of(&e));
    println!("size:       {} ({} bytes)", HumanBytes(e.size), e.size);
    println!("source:     {}", source_of(&e));
    println!("revision:   {}", opt(&e.revision));
    println!("pulled at:  {}", opt(&e.pulled_at));
    if let Some(m) = &e.manifest {
        println!("origin:     {}", m.origin);
        println!("files:");
        for f in &m.files {
            let by = serde_json::to_string(&f.verified)?;
            println!(
                "  {}  {}  sha256 {} ({})",
                f.path,
                HumanBytes(f.size),
                f.sha256,
                by.trim_matches('"')
            );
        }
    }
    match gguf {
        Some(Ok(g)) => {
            println!("gguf:");
            println!("  version:       {}", g.gguf_version);
            println!("  architecture:  {}", opt(&g.architecture));
            if let Some(n) = &g.model_name {
                println!("  model name:    {n}");
            }
            println!(
                "  parameters:    {} ({})",
                human_count(g.parameters),
                g.parameters
            );
            println!("  file type:     {}", opt(&g.file_type));
            let types: Vec<String> = g
                .tensor_types
                .iter()
                .map(|(t, n)| format!("{t}×{n}"))
                .collect();
            println!(
                "  tensor types:  {} ({} tensors)",
                types.join(", "),
                g.tensors
            );
            if let Some(l) = &g.llama {
                println!(
                    "  llama:         dim {}, {} layers, {} heads ({} KV, head dim {}), ffn {}, vocab {}, context {}, rope theta {}",
                    l.dim,
                    l.n_layers,
                    l.n_heads,
                    l.n_kv_heads,
                    l.head_dim,
                    l.ffn_dim,
                    l.vocab_size,
                    l.context_length,
                    l.rope_theta
                );
            }
        }
        Some(Err(err)) => println!("gguf:       cannot read the header: {err}"),
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}
