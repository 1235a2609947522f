//! Shared by the CLI integration tests: running the real binary with piped stdin, and
//! `serve` as a child process ([`server`]).
#![allow(dead_code)] // each test binary uses a different subset

pub mod format_data;
pub mod server;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrollama"))
}

/// Runs `cmd` with `stdin` piped in, capturing stdout and stderr.
pub fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferrollama");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    // Write from another thread so a large input cannot deadlock against full output pipes.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// SmolLM2-135M-Instruct Q4_1: `$FERROLLAMA_SMOLLM2`, else fetched into the cache.
pub fn smollm2() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROLLAMA_SMOLLM2") {
        return PathBuf::from(p);
    }
    let out = run(bin().args(["fetch", "smollm2"]), b"");
    assert!(out.status.success(), "{}", stderr(&out));
    PathBuf::from(
        String::from_utf8(out.stdout)
            .expect("UTF-8 path")
            .trim()
            .lines()
            .last()
            .expect("a path"),
    )
}
