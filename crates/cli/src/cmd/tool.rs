//! `ferrollama tool ...`: runs one built-in tool call from the command line, outside any
//! agent, and prints its result as JSON. One subcommand per tool (`code_interpreter`
//! here; web search, Wolfram Alpha and MCP join as further variants of [`ToolCommand`]).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferrollama_tools::sandbox::{CodeInterpreter, SandboxConfig};
use serde_json::json;

/// Runs one tool call and prints its result as JSON on stdout.
#[derive(Debug, clap::Args)]
pub struct ToolArgs {
    #[command(subcommand)]
    command: ToolCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ToolCommand {
    #[command(name = "code_interpreter")]
    CodeInterpreter(CodeInterpreterArgs),
}

/// Runs Python in the code interpreter's bubblewrap sandbox (no network, no view of the
/// host's files, rlimits, a wall-clock timeout) and prints {"stdout", "stderr",
/// "exit_code", "timed_out", ...}. Exits 0 whenever the sandbox ran, even if the code
/// failed; non-zero when the sandbox cannot start (e.g. bubblewrap is not installed).
///
/// With --bench N: measures N cold calls (a fresh interpreter each) and N warm calls (one
/// interpreter) of a trivial statement and prints their p50/p99 in milliseconds.
#[derive(Debug, clap::Args)]
struct CodeInterpreterArgs {
    /// The Python code; `-` reads it from stdin.
    #[arg(long, value_name = "CODE", conflicts_with = "file", required_unless_present_any = ["file", "bench"])]
    code: Option<String>,
    /// Read the Python code from a file.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Wall-clock limit of the call in seconds; beyond it the sandbox is killed.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    timeout: f64,
    /// Measure N cold and N warm calls instead of running code.
    #[arg(long, value_name = "N", value_parser = super::at_least_one)]
    bench: Option<usize>,
}

pub fn tool(args: ToolArgs) -> Result<ExitCode> {
    match args.command {
        ToolCommand::CodeInterpreter(a) => code_interpreter(a),
    }
}

fn code_interpreter(a: CodeInterpreterArgs) -> Result<ExitCode> {
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let mut cfg = SandboxConfig::detect()?;
    cfg.limits.wall_timeout = Duration::from_secs_f64(a.timeout);
    let ci = CodeInterpreter::new(cfg);
    if let Some(n) = a.bench {
        return bench(&ci, n);
    }
    let code = match (&a.code, &a.file) {
        (Some(c), _) if c == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the code from stdin")?;
            s
        }
        (Some(c), _) => c.clone(),
        (None, Some(p)) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        (None, None) => bail!("give the code with --code CODE, --code - (stdin) or --file PATH"),
    };
    let exec = ci.run_once(&code)?;
    println!("{}", serde_json::to_string(&exec)?);
    Ok(ExitCode::SUCCESS)
}

fn bench(ci: &CodeInterpreter, n: usize) -> Result<ExitCode> {
    let mut cold = Vec::with_capacity(n);
    for i in 0..n {
        let session = format!("cold-{i}");
        let e = ci.run(&session, "x = 1")?;
        if e.exit_code != Some(0) {
            bail!("the benchmark statement failed: {}", e.to_tool_output());
        }
        cold.push(e.duration_ms);
        ci.close(&session);
    }
    let mut warm = Vec::with_capacity(n);
    ci.run("warm", "x = 1")?;
    for _ in 0..n {
        warm.push(ci.run("warm", "x = 1")?.duration_ms);
    }
    ci.close("warm");
    let out = json!({
        "n": n,
        "cold_ms": {"p50": pct(&mut cold, 0.50), "p99": pct(&mut cold, 0.99)},
        "warm_ms": {"p50": pct(&mut warm, 0.50), "p99": pct(&mut warm, 0.99)},
    });
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Nearest-rank percentile.
fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
