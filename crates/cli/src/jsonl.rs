//! Line-by-line JSON processing for scripts: each input line gives exactly one output line,
//! in order. A bad line is reported on stderr with its number, answered on stdout with
//! `{"error": "..."}` so that the lines stay aligned, and makes the exit status non-zero;
//! the other lines are still processed, so nothing is lost.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Result;

/// Runs `f` on every non-empty line of stdin, writing its JSON answer to stdout.
pub fn each_line(mut f: impl FnMut(&str) -> Result<serde_json::Value>) -> Result<ExitCode> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut buf = Vec::new();
    let mut line_no = 0;
    let mut failed = 0;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        let answer = match std::str::from_utf8(&buf) {
            Err(e) => Err(anyhow::anyhow!("not valid UTF-8: {e}")),
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => f(line.trim_end_matches(['\n', '\r'])),
        };
        match answer {
            Ok(v) => serde_json::to_writer(&mut out, &v)?,
            Err(e) => {
                failed += 1;
                let msg = crate::one_line(&format!("{e:#}"));
                eprintln!("error: line {line_no}: {msg}");
                serde_json::to_writer(&mut out, &serde_json::json!({ "error": msg }))?;
            }
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
