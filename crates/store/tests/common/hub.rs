//! A mock Hugging Face hub on a local socket, for tests: the two endpoints `pull` uses,
//! `Range` support, and fault modes (a connection dropped mid-file, a wrong announced
//! sha256, more bytes than announced, a token requirement, a redirect to another host).
//! Every request is recorded so tests can assert on what the client sent.
//!
//! Shared with the CLI tests (`crates/cli/tests/store.rs` includes this file by path), so it
//! uses only std, sha2 and serde_json.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// sha256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A file in a mock repository.
#[derive(Debug, Clone, Default)]
pub struct MockFile {
    pub path: String,
    pub data: Vec<u8>,
    /// Listed with LFS metadata (sha256 and size), as large files are.
    pub lfs: bool,
    /// Announce this sha256 instead of the real one (listing and ETag agree on it).
    pub listed_sha256: Option<String>,
    /// On the first content request, close the connection after this many bytes.
    pub drop_after: Option<usize>,
    /// Serve this many bytes more than the listing announces.
    pub extra_bytes: usize,
    /// Answer range requests with the whole file (200), as some servers do.
    pub ignore_range: bool,
}

impl MockFile {
    /// A large (LFS) file.
    pub fn lfs(path: &str, data: Vec<u8>) -> MockFile {
        MockFile {
            path: path.into(),
            data,
            lfs: true,
            ..MockFile::default()
        }
    }

    /// A small file stored in git: listed with its size only.
    pub fn small(path: &str, data: &[u8]) -> MockFile {
        MockFile {
            path: path.into(),
            data: data.to_vec(),
            ..MockFile::default()
        }
    }

    fn announced_sha256(&self) -> String {
        self.listed_sha256
            .clone()
            .unwrap_or_else(|| sha256_hex(&self.data))
    }

    fn body(&self) -> Vec<u8> {
        let mut b = self.data.clone();
        b.extend(std::iter::repeat_n(0xAAu8, self.extra_bytes));
        b
    }
}

/// A mock repository.
#[derive(Debug, Clone, Default)]
pub struct MockRepo {
    pub commit: String,
    pub files: Vec<MockFile>,
    /// Require `Authorization: Bearer <token>` on the hub's endpoints.
    pub token: Option<String>,
    /// Answer `resolve` with a 302 to `http://localhost:<port>/cdn/...` (another host as
    /// far as the client can tell), with `X-Linked-Etag`/`X-Linked-Size`, like the real hub.
    pub redirect: bool,
}

impl MockRepo {
    pub fn new(files: Vec<MockFile>) -> MockRepo {
        MockRepo {
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            files,
            ..MockRepo::default()
        }
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub host: String,
    pub target: String,
    /// Lowercased names.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    repos: HashMap<String, MockRepo>,
    seen: Vec<Seen>,
    dropped: HashSet<String>,
}

/// The running server; it lives until the test process ends.
pub struct MockHub {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl MockHub {
    pub fn start() -> MockHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &st, port);
                });
            }
        });
        MockHub {
            url: format!("http://127.0.0.1:{port}"),
            port,
            state,
        }
    }

    pub fn add(&self, name: &str, repo: MockRepo) {
        self.state
            .lock()
            .unwrap()
            .repos
            .insert(name.to_string(), repo);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Requests for the content of `path` (resolve or CDN), in order.
    pub fn content_requests(&self, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| {
                (s.target.contains("/resolve/") || s.target.starts_with("/cdn/"))
                    && s.target.ends_with(&format!("/{path}"))
            })
            .collect()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
    let _ = conn.flush();
}

fn handle(mut conn: TcpStream, st: &Mutex<State>, port: u16) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let seen = Seen {
        host: headers
            .iter()
            .find(|(k, _)| k == "host")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        target: target.clone(),
        headers,
    };
    let mut state = st.lock().unwrap();
    state.seen.push(seen.clone());
    let path = target.split('?').next().unwrap_or("/").to_string();

    let not_found = |conn: &mut TcpStream, code: &str| {
        respond(
            conn,
            "404 Not Found",
            &[("X-Error-Code", code.to_string())],
            b"{\"error\":\"not found\"}",
        );
    };
    let authorized = |repo: &MockRepo| match &repo.token {
        None => true,
        Some(t) => seen.header("authorization") == Some(&format!("Bearer {t}")),
    };

    // GET /api/models/{repo}/revision/{rev}
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo_name, _rev)) = rest.split_once("/revision/") else {
            not_found(&mut conn, "RepoNotFound");
            return Ok(());
        };
        let Some(repo) = state.repos.get(repo_name).cloned() else {
            not_found(&mut conn, "RepoNotFound");
            return Ok(());
        };
        if !authorized(&repo) {
            respond(
                &mut conn,
                "401 Unauthorized",
                &[],
                b"{\"error\":\"unauthorized\"}",
            );
            return Ok(());
        }
        let siblings: Vec<serde_json::Value> = repo
            .files
            .iter()
            .map(|f| {
                let size = f.data.len();
                if f.lfs {
                    serde_json::json!({"rfilename": f.path, "size": size,
                        "lfs": {"sha256": f.announced_sha256(), "size": size, "pointerSize": 134}})
                } else {
                    serde_json::json!({"rfilename": f.path, "size": size})
                }
            })
            .collect();
        let body = serde_json::json!({"id": repo_name, "sha": repo.commit, "siblings": siblings});
        respond(
            &mut conn,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body.to_string().as_bytes(),
        );
        return Ok(());
    }

    // GET /{repo}/resolve/{rev}/{path} or /cdn/{repo}/{path}
    let (repo_name, file_path, via_cdn) = if let Some(rest) = path.strip_prefix("/cdn/") {
        let mut parts = rest.splitn(3, '/');
        let (org, name, file) = (parts.next(), parts.next(), parts.next());
        match (org, name, file) {
            (Some(o), Some(n), Some(f)) => (format!("{o}/{n}"), percent_decode(f), true),
            _ => {
                not_found(&mut conn, "EntryNotFound");
                return Ok(());
            }
        }
    } else if let Some((repo, rest)) = path.split_once("/resolve/") {
        let file = rest.split_once('/').map(|(_, f)| f).unwrap_or_default();
        (
            repo.trim_start_matches('/').to_string(),
            percent_decode(file),
            false,
        )
    } else {
        not_found(&mut conn, "RepoNotFound");
        return Ok(());
    };
    let Some(repo) = state.repos.get(&repo_name).cloned() else {
        not_found(&mut conn, "RepoNotFound");
        return Ok(());
    };
    if !via_cdn && !authorized(&repo) {
        respond(&mut conn, "401 Unauthorized", &[], b"");
        return Ok(());
    }
    let Some(file) = repo.files.iter().find(|f| f.path == file_path).cloned() else {
        not_found(&mut conn, "EntryNotFound");
        return Ok(());
    };
    let etag = if file.lfs {
        format!("\"{}\"", file.announced_sha256())
    } else {
        "\"0123456789abcdef0123456789abcdef01234567\"".to_string()
    };
    if repo.redirect && !via_cdn {
        respond(
            &mut conn,
            "302 Found",
            &[
                (
                    "Location",
                    format!("http://localhost:{port}/cdn/{repo_name}/{}", file.path),
                ),
                ("X-Linked-Etag", etag),
                ("X-Linked-Size", file.data.len().to_string()),
            ],
            b"",
        );
        return Ok(());
    }
    let body = file.body();
    let from = seen
        .header("range")
        .filter(|_| !file.ignore_range)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let drop_now = file.drop_after.is_some() && state.dropped.insert(file.path.clone());
    drop(state);
    let mut extra = vec![];
    if !via_cdn {
        extra.push(("ETag", etag));
    }
    match from {
        Some(n) if n >= body.len() => {
            extra.push(("Content-Range", format!("bytes */{}", body.len())));
            respond(&mut conn, "416 Range Not Satisfiable", &extra, b"");
        }
        Some(n) => {
            extra.push((
                "Content-Range",
                format!("bytes {n}-{}/{}", body.len() - 1, body.len()),
            ));
            respond(&mut conn, "206 Partial Content", &extra, &body[n..]);
        }
        None if drop_now => {
            // Announce everything, send a part, hang up.
            let n = file.drop_after.unwrap_or(0).min(body.len());
            let head = format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes())?;
            conn.write_all(&body[..n])?;
            conn.flush()?;
            conn.shutdown(Shutdown::Both)?;
        }
        None => respond(&mut conn, "200 OK", &extra, &body),
    }
    Ok(())
}
