//! The MCP stdio transport: the server is a child process; each JSON-RPC message is one
//! line on its stdin (ours) or stdout (its). A reader thread turns stdout into a channel
//! so every request can time out; another drains stderr (kept as a short tail for error
//! messages) so a chatty server never blocks on a full pipe. Lines that are not JSON are
//! logged and skipped; notifications are skipped; server requests get an answer
//! ([`super::answer_server_request`]). The child is killed when the transport drops.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio as Pipe};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Incoming, Transport, answer_server_request, classify, method_of};
use crate::ToolError;

/// Longest stdout line accepted (a longer one ends the session).
const MAX_LINE: u64 = 64 << 20;
/// How many stderr lines are kept for error messages.
const STDERR_TAIL: usize = 20;

enum Line {
    Text(Vec<u8>),
    Eof,
    Failed(String),
}

pub(crate) struct Stdio {
    program: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    timeout: Duration,
    closed: bool,
}

impl Stdio {
    pub(crate) fn spawn(
        program: &str,
        args: &[String],
        env: &[(String, String)],
        timeout: Duration,
    ) -> Result<Stdio, ToolError> {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Pipe::piped())
            .stdout(Pipe::piped())
            .stderr(Pipe::piped())
            .spawn()
            .map_err(|e| ToolError::Mcp(format!("cannot start MCP server {program:?}: {e}")))?;
        let stdin = child.stdin.take();
        let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
            (Some(o), Some(e)) => (o, e),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ToolError::Mcp(format!("{program}: no stdio pipes")));
            }
        };
        let (tx, lines) = channel();
        thread::Builder::new()
            .name("mcp-stdout".into())
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                loop {
                    let mut buf = Vec::new();
                    match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buf) {
                        Ok(0) => {
                            let _ = tx.send(Line::Eof);
                            return;
                        }
                        Ok(_) if !buf.ends_with(b"\n") && buf.len() as u64 >= MAX_LINE => {
                            let _ = tx
                                .send(Line::Failed(format!("a line longer than {MAX_LINE} bytes")));
                            return;
                        }
                        Ok(_) => {
                            if tx.send(Line::Text(buf)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Line::Failed(format!("reading stdout: {e}")));
                            return;
                        }
                    }
                }
            })?;
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr_tail.clone();
        let name = program.to_string();
        thread::Builder::new()
            .name("mcp-stderr".into())
            .spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                            tracing::debug!(server = %name, "mcp stderr: {line}");
                            let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                            if t.len() == STDERR_TAIL {
                                t.pop_front();
                            }
                            t.push_back(line);
                        }
                    }
                }
            })?;
        Ok(Stdio {
            program: program.to_string(),
            child,
            stdin,
            lines,
            stderr_tail,
            timeout,
            closed: false,
        })
    }

    fn send(&mut self, msg: &Value) -> Result<(), ToolError> {
        let mut line = serde_json::to_vec(msg).map_err(|e| ToolError::Mcp(e.to_string()))?;
        line.push(b'\n');
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| ToolError::Mcp(format!("{}: stdin is closed", self.program)))?;
        if let Err(e) = stdin.write_all(&line).and_then(|()| stdin.flush()) {
            return Err(self.exited(&format!("writing to it failed ({e})")));
        }
        Ok(())
    }

    /// The error for a server that went away: its exit status and last stderr lines.
    fn exited(&mut self, what: &str) -> ToolError {
        self.closed = true;
        let deadline = Instant::now() + Duration::from_secs(1);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => break None,
            }
        };
        let status = status.map_or_else(|| "still running".to_string(), |s| s.to_string());
        let tail = self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
        let stderr = if tail.is_empty() {
            String::new()
        } else {
            format!(
                "; stderr: {}",
                tail.iter().cloned().collect::<Vec<_>>().join(" | ")
            )
        };
        ToolError::Mcp(format!(
            "server {:?} {what} ({status}){stderr}",
            self.program
        ))
    }
}

impl Transport for Stdio {
    fn request(&mut self, msg: &Value, id: u64) -> Result<Value, ToolError> {
        if self.closed {
            return Err(ToolError::Mcp(format!(
                "server {:?} has exited",
                self.program
            )));
        }
        self.send(msg)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(ToolError::Mcp(format!(
                        "{}: no reply from {:?} within {:?}",
                        method_of(msg),
                        self.program,
                        self.timeout
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => Line::Eof,
            };
            let bytes = match line {
                Line::Text(b) => b,
                Line::Eof => {
                    return Err(self.exited(&format!("exited before answering {}", method_of(msg))));
                }
                Line::Failed(why) => return Err(self.exited(&why)),
            };
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let value: Value = match serde_json::from_str(text) {
                Ok(v) => v,
                Err(_) => {
                    let short: String = text.chars().take(200).collect();
                    tracing::warn!(server = %self.program, "mcp: skipping a non-JSON line: {short}");
                    continue;
                }
            };
            match classify(value, id) {
                Incoming::Ours(reply) => return Ok(reply),
                Incoming::ServerRequest(req) => self.send(&answer_server_request(&req))?,
                Incoming::Other => {}
            }
        }
    }

    fn notify(&mut self, msg: &Value) -> Result<(), ToolError> {
        self.send(msg)
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        // Closing stdin asks the server to exit; it is killed regardless (a server that
        // ignores EOF must not outlive its client).
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
