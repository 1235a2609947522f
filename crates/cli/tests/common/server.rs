//! `ferrollama serve` as a child process on a free port, with JSON over HTTP.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL: no shutdown code runs
        let _ = self.child.wait();
    }
}

impl Server {
    /// `ferrollama serve ARGS --port 0`, once it says where it serves (within two minutes);
    /// its stderr is drained from then on so it never blocks on a full pipe.
    pub fn start<S: AsRef<OsStr>>(args: &[S]) -> Server {
        let mut child = super::bin()
            .arg("serve")
            .args(args)
            .args(["--port", "0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let end = Instant::now() + Duration::from_secs(120);
        let mut seen = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Ok(l) = rx.recv_timeout(left) else { break };
            let port = l
                .strip_prefix("serving ")
                .and_then(|r| r.split("http://").nth(1))
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok());
            if let Some(port) = port {
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return Server { child, port };
            }
            seen.push(l);
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("serve did not start: {seen:?}");
    }

    /// The server's process id (to send it a signal).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into()
    }

    /// GET `path`, which must answer 200 with JSON.
    pub fn get(&self, path: &str) -> Value {
        let mut r = Self::agent().get(&self.url(path)).call().expect("GET");
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_vec().expect("body");
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).expect("JSON")
    }

    /// POST JSON to `path`: (status, JSON answer).
    pub fn post_status(&self, path: &str, body: &Value) -> (u16, Value) {
        let mut r = Self::agent()
            .post(&self.url(path))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .expect("POST");
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_vec().expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// POST JSON to `path`, which must answer 200.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        let (status, v) = self.post_status(path, body);
        assert_eq!(status, 200, "POST {path}: {v}");
        v
    }

    /// Uploads `data` through `/v1/files`; the file's id.
    pub fn upload(&self, name: &str, purpose: &str, data: &[u8]) -> String {
        const B: &str = "ferrollama-test-boundary-Zx81";
        let mut body = format!(
            "--{B}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n\
             --{B}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{B}--\r\n").as_bytes());
        let mut r = Self::agent()
            .post(&self.url("/v1/files"))
            .header(
                "Content-Type",
                &format!("multipart/form-data; boundary={B}"),
            )
            .send(&body[..])
            .expect("upload");
        let v: Value =
            serde_json::from_slice(&r.body_mut().read_to_vec().expect("body")).expect("JSON");
        v["id"]
            .as_str()
            .unwrap_or_else(|| panic!("upload: {v}"))
            .to_string()
    }
}
