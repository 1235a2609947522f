//! `ferrollama`: the Llama 3.1 system in one native binary.
//!
//! This crate is only the command line: argument parsing, progress bars, logging, and
//! turning library errors into one-line messages. All behaviour lives in the library crates.

mod cache;
mod cmd;
mod jsonl;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ferrollama: run, serve and build on Llama 3.1, from one native binary.
#[derive(Debug, Parser)]
#[command(name = "ferrollama", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log filter, e.g. `info` or `ferrollama=debug` (also RUST_LOG). Logs go to stderr.
    /// [default: warnings, plus one line per HTTP request from `serve`
    /// (`warn,ferrollama::request=info`)]
    #[arg(long, global = true, env = "RUST_LOG", value_name = "FILTER")]
    log: Option<String>,
    /// Log line format: `text` for people, `json` (one object per line) for log collectors.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Warnings, and the request log of `serve`.
const DEFAULT_LOG: &str = "warn,ferrollama::request=info";

#[derive(Debug, Subcommand)]
enum Command {
    Serve(Box<cmd::serve::ServeArgs>),
    Run(cmd::run::RunArgs),
    Batch(cmd::batch::BatchArgs),
    Chat(cmd::chat::ChatArgs),
    Bench(cmd::bench::BenchArgs),
    Tokenize(cmd::tokenize::TokenizeArgs),
    Detokenize(cmd::tokenize::DetokenizeArgs),
    Prompt(cmd::prompt::PromptArgs),
    ParseReply(cmd::prompt::ParseReplyArgs),
    GuardPrompt(cmd::guard::GuardPromptArgs),
    Guard(cmd::guard::GuardArgs),
    PromptGuard(cmd::prompt_guard::PromptGuardArgs),
    Embed(cmd::embed::EmbedArgs),
    Fetch(cmd::fetch::FetchArgs),
    Pull(cmd::pull::PullArgs),
    Models(cmd::models::ModelsArgs),
    Import(cmd::import::ImportArgs),
    Quantize(cmd::quantize::QuantizeArgs),
    Merge(cmd::merge::MergeArgs),
    Perplexity(cmd::perplexity::PerplexityArgs),
    Eval(cmd::eval::EvalArgs),
    Sdg(Box<cmd::sdg::SdgArgs>),
    Tool(cmd::tool::ToolArgs),
    Finetune(Box<cmd::finetune::FinetuneArgs>),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return clap_exit(&e),
    };
    // A batch answers thousands of requests: the request log would drown its summary.
    let default_log = match cli.command {
        Command::Batch(_) => "warn",
        _ => DEFAULT_LOG,
    };
    let spec = cli.log.as_deref().unwrap_or(default_log);
    let filter = match tracing_subscriber::EnvFilter::try_new(spec) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "error: invalid --log / RUST_LOG filter {spec:?}: {e}; examples: info, warn, ferrollama=debug"
            );
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }

    let result = match cli.command {
        Command::Serve(a) => cmd::serve::serve(*a),
        Command::Run(a) => cmd::run::run(a),
        Command::Batch(a) => cmd::batch::batch(a),
        Command::Chat(a) => cmd::chat::chat(a),
        Command::Bench(a) => cmd::bench::bench(a),
        Command::Tokenize(a) => cmd::tokenize::tokenize(a),
        Command::Detokenize(a) => cmd::tokenize::detokenize(a),
        Command::Prompt(a) => cmd::prompt::prompt(a),
        Command::ParseReply(a) => cmd::prompt::parse_reply(a),
        Command::GuardPrompt(a) => cmd::guard::guard_prompt(a),
        Command::Guard(a) => cmd::guard::guard(a),
        Command::PromptGuard(a) => cmd::prompt_guard::prompt_guard(a),
        Command::Embed(a) => cmd::embed::embed(a),
        Command::Fetch(a) => cmd::fetch::fetch(a),
        Command::Pull(a) => cmd::pull::pull(a),
        Command::Models(a) => cmd::models::models(a),
        Command::Import(a) => cmd::import::import(a),
        Command::Quantize(a) => cmd::quantize::quantize(a),
        Command::Merge(a) => cmd::merge::merge(a),
        Command::Perplexity(a) => cmd::perplexity::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Sdg(a) => cmd::sdg::run(*a),
        Command::Tool(a) => cmd::tool::tool(a),
        Command::Finetune(a) => cmd::finetune::finetune(*a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Lets clap report its own errors in full (the argument concerned, the valid values, the
/// `-- -5` tip, the usage line), with its exit status (2 for a usage error, 0 for
/// `--help` and `--version`). The only change: "try '--help'" names the subcommand's own
/// help, e.g. "try 'ferrollama run --help'".
fn clap_exit(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = subcommand_path(&args);
    let text = e.render().to_string();
    eprint!(
        "{}",
        text.replace("try '--help'", &format!("try '{path} --help'"))
    );
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

/// The subcommands named on the command line, e.g. `ferrollama models rm` for
/// `models rm --json x`: each argument that names a subcommand of the one before.
fn subcommand_path(args: &[String]) -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut path = vec![cmd.get_name().to_string()];
    for a in args {
        if a == "--" {
            break;
        }
        let Some(sub) = cmd.find_subcommand(a).cloned() else {
            continue;
        };
        path.push(sub.get_name().to_string());
        cmd = sub;
    }
    path.join(" ")
}

/// Errors are printed on one line: newlines inside causes become spaces.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
