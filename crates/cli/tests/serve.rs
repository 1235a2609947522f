//! `ferrollama serve` as a process: it says where it serves only once the port is bound,
//! takes host names, drains on the first SIGTERM (new requests refused, running streams
//! ended with a final event after the grace period) and exits at once on a second.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-q8_0.gguf")
}

/// SmolLM2 (set by scripts/test): slow enough that a long stream is still running when
/// the signal comes. The tiny model writes thousands of tokens a second.
fn smollm2() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("FERROLLAMA_SMOLLM2")?);
    p.exists().then_some(p)
}

struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = common::bin()
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferrollama serve");
        let err = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_line(&mut self, needle: &str, within: Duration) -> Option<String> {
        let end = Instant::now() + within;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// The port from the "serving ... on http://ADDR:PORT" line.
    fn port(&mut self) -> u16 {
        let l = self
            .wait_line("serving ", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("no 'serving' line; stderr: {:?}", self.seen));
        let after = l
            .split("http://")
            .nth(1)
            .expect("address in the serving line");
        let addr = after.split_whitespace().next().expect("address");
        addr.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code().or(Some(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(s)
}

fn status_of(port: u16, method: &str, path: &str, body: &str) -> Option<u16> {
    let mut s = http(port, method, path, body).ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

const LONG_STREAM: &str = r#"{"model": "SmolLM2-135M-Instruct.Q4_1", "prompt": "Once upon a time",
    "max_tokens": 3000, "temperature": 0, "ignore_eos": true, "stream": true}"#;

/// Opens the long stream and reads until its first token arrives.
fn running_stream(port: u16) -> (TcpStream, Vec<u8>) {
    let mut s = http(port, "POST", "/v1/completions", LONG_STREAM).expect("connect");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"text\"") {
        let n = s.read(&mut buf).expect("read stream");
        assert!(
            n > 0,
            "stream closed early: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    (s, got)
}

#[test]
fn first_sigterm_drains_and_ends_streams_with_a_final_event() {
    let Some(model) = smollm2() else {
        eprintln!("FERROLLAMA_SMOLLM2 not set (scripts/test sets it): skipped");
        return;
    };
    let m = model.to_string_lossy().into_owned();
    let mut srv = Server::start(&[
        "-m",
        &m,
        "--port",
        "0",
        "--threads",
        "1",
        "--shutdown-grace",
        "1.5",
    ]);
    let port = srv.port();
    let (mut stream, mut got) = running_stream(port);
    srv.signal("-TERM");
    let l = srv
        .wait_line("shutting down", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no drain message; stderr: {:?}", srv.seen));
    assert!(
        l.contains("draining") && l.contains("1 stream(s) running"),
        "{l}"
    );
    assert!(l.contains("up to 2 s") || l.contains("up to 1.5 s"), "{l}");
    // New requests are refused while the stream drains (503, or no connection at all).
    if let Some(code) = status_of(port, "POST", "/v1/completions", LONG_STREAM) {
        assert_eq!(code, 503);
    }
    // The running stream ends after the grace period with a proper final event.
    stream.read_to_end(&mut got).expect("read to the end");
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("\"finish_reason\":\"length\""), "{text}");
    assert!(text.contains("data: [DONE]"), "{text}");
    assert_eq!(srv.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn second_signal_exits_at_once() {
    let Some(model) = smollm2() else {
        eprintln!("FERROLLAMA_SMOLLM2 not set (scripts/test sets it): skipped");
        return;
    };
    let m = model.to_string_lossy().into_owned();
    let mut srv = Server::start(&[
        "-m",
        &m,
        "--port",
        "0",
        "--threads",
        "1",
        "--shutdown-grace",
        "60",
    ]);
    let port = srv.port();
    let (_stream, _) = running_stream(port);
    srv.signal("-INT");
    assert!(
        srv.wait_line("shutting down", Duration::from_secs(10))
            .is_some()
    );
    srv.signal("-INT");
    // Far sooner than the 60 s grace period.
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(130));
}

#[test]
fn busy_port_is_an_error_and_nothing_claims_to_serve() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let t = tiny();
    let mut srv = Server::start(&["-m", &t.to_string_lossy(), "--port", &port]);
    let code = srv.wait_exit(Duration::from_secs(60));
    while let Ok(l) = srv.lines.recv_timeout(Duration::from_millis(200)) {
        srv.seen.push(l);
    }
    let all = srv.seen.join("\n");
    assert_eq!(code, Some(1), "{all}");
    assert!(all.contains("cannot listen on 127.0.0.1:"), "{all}");
    assert!(all.contains("pick another --port"), "{all}");
    assert!(!all.contains("serving"), "{all}");
}

#[test]
fn host_names_are_resolved() {
    let t = tiny();
    let mut srv = Server::start(&[
        "-m",
        &t.to_string_lossy(),
        "--host",
        "localhost",
        "--port",
        "0",
    ]);
    let port = srv.port();
    assert_eq!(status_of(port, "GET", "/health", ""), Some(200));
    srv.signal("-TERM");
    assert_eq!(srv.wait_exit(Duration::from_secs(15)), Some(0));

    let out = common::run(
        common::bin().args([
            "serve",
            "-m",
            &t.to_string_lossy(),
            "--host",
            "no-such-host.invalid",
        ]),
        b"",
    );
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot resolve --host no-such-host.invalid"),
        "{err}"
    );
}
