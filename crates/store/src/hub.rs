//! A Hugging Face-compatible hub over HTTP: the repository listing and file content.
//!
//! Two endpoints, as the Hugging Face hub serves them:
//! - `GET {hub}/api/models/{repo}/revision/{rev}?blobs=true` → `{"sha", "siblings":
//!   [{"rfilename", "size", "lfs": {"sha256", "size"}}]}`;
//! - `GET {hub}/{repo}/resolve/{rev}/{path}` → the content, usually through a redirect to
//!   a CDN; the first answer carries `X-Linked-Etag` (the LFS sha256) and `X-Linked-Size`.
//!
//! Redirects are followed here rather than by the HTTP client, for two reasons: the linked
//! ETag is only on the first answer, and the token must only ever go to the hub's own
//! origin (scheme, host and port), never to the CDN a redirect names. A redirect from
//! https to http is refused. The token is kept in [`Token`], whose `Debug` hides it, and is
//! never put in a message or a log line.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Result, StoreError};
use crate::hash::is_sha256_hex;

/// The default hub.
pub const DEFAULT_HUB: &str = "https://huggingface.co";

const MAX_REDIRECTS: usize = 10;
/// Largest repository listing read (a listing of tens of thousands of files is a few MB).
const MAX_LISTING: u64 = 64 << 20;

/// A hub access token, sent as `Authorization: Bearer` to the hub's origin only.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// `None` for an empty or blank token.
    pub fn new(s: impl Into<String>) -> Option<Token> {
        let s = s.into();
        let t = s.trim();
        (!t.is_empty()).then(|| Token(t.to_string()))
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

/// Where to pull from and how.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Base URL, e.g. `https://huggingface.co`.
    pub url: String,
    pub token: Option<Token>,
    /// Further attempts per file after a dropped connection or a 5xx, each resuming where
    /// the last one stopped.
    pub retries: u32,
    /// Pause before attempt n+1 is n times this.
    pub retry_delay: Duration,
    /// Longest wait for a connection, and for each read.
    pub timeout: Duration,
}

impl HubConfig {
    /// `url` without a token, three retries.
    pub fn new(url: impl Into<String>) -> HubConfig {
        HubConfig {
            url: url.into(),
            token: None,
            retries: 3,
            retry_delay: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
        }
    }

    /// The URL given, else `$FERROLLAMA_HUB_URL`, else `$HF_ENDPOINT`, else the Hugging
    /// Face hub; the token from `$HF_TOKEN` (or the older `$HUGGING_FACE_HUB_TOKEN`).
    pub fn from_env(url: Option<String>) -> HubConfig {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let url = url
            .or_else(|| env("FERROLLAMA_HUB_URL"))
            .or_else(|| env("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_HUB.to_string());
        let mut c = HubConfig::new(url);
        c.token = env("HF_TOKEN")
            .or_else(|| env("HUGGING_FACE_HUB_TOKEN"))
            .and_then(Token::new);
        c
    }
}

/// The repository listing.
#[derive(Debug, Clone, Deserialize)]
pub struct RepoInfo {
    /// The commit the revision resolved to.
    #[serde(default)]
    pub sha: Option<String>,
    #[serde(default)]
    pub siblings: Option<Vec<Sibling>>,
}

/// One file of the listing.
#[derive(Debug, Clone, Deserialize)]
pub struct Sibling {
    pub rfilename: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub lfs: Option<Lfs>,
}

/// LFS metadata of a large file.
#[derive(Debug, Clone, Deserialize)]
pub struct Lfs {
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
}

impl Sibling {
    /// The size the hub announces, LFS first.
    pub fn announced_size(&self) -> Option<u64> {
        self.lfs.as_ref().and_then(|l| l.size).or(self.size)
    }

    /// The sha256 the hub announces (LFS files only), lowercase.
    pub fn announced_sha256(&self) -> Option<String> {
        self.lfs
            .as_ref()
            .and_then(|l| l.sha256.as_deref())
            .filter(|s| is_sha256_hex(s))
            .map(str::to_ascii_lowercase)
    }
}

/// A parsed absolute http(s) URL, as far as we need one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    scheme: &'static str,
    /// `host[:port]`, never with user info.
    authority: String,
    /// Path and query, starting with `/` (may be empty for the base).
    path: String,
}

impl Url {
    fn parse(s: &str) -> std::result::Result<Url, &'static str> {
        let (scheme, rest) = if let Some(r) = s.strip_prefix("https://") {
            ("https", r)
        } else if let Some(r) = s.strip_prefix("http://") {
            ("http", r)
        } else {
            return Err("only http:// and https:// URLs are supported");
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() {
            return Err("no host");
        }
        if authority.contains('@') {
            return Err("credentials in the URL are not accepted; set HF_TOKEN instead");
        }
        if authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("bad host");
        }
        let path = path.split('#').next().unwrap_or_default();
        Ok(Url {
            scheme,
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }

    pub(crate) fn host(&self) -> &str {
        &self.authority
    }

    /// `scheme://host[:port]`, for errors that say what could not be reached.
    pub(crate) fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    fn same_origin(&self, other: &Url) -> bool {
        self.scheme == other.scheme && self.authority.eq_ignore_ascii_case(&other.authority)
    }

    /// `self` with `suffix` (starting with `/`) appended to its path.
    fn join_path(&self, suffix: &str) -> Url {
        Url {
            scheme: self.scheme,
            authority: self.authority.clone(),
            path: format!("{}{suffix}", self.path.trim_end_matches('/')),
        }
    }

    /// Resolves a `Location` header against `self`.
    fn resolve(&self, location: &str) -> std::result::Result<Url, &'static str> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Url::parse(location)
        } else if let Some(rest) = location.strip_prefix("//") {
            Url::parse(&format!("{}://{rest}", self.scheme))
        } else if location.starts_with('/') {
            Ok(Url {
                scheme: self.scheme,
                authority: self.authority.clone(),
                path: location.to_string(),
            })
        } else {
            let path = self.path.split('?').next().unwrap_or_default();
            let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
            Ok(Url {
                scheme: self.scheme,
                authority: self.authority.clone(),
                path: format!("{dir}/{location}"),
            })
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.path)
    }
}

/// Percent-encodes one URL path segment (RFC 3986 unreserved characters stay).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn encode_path(p: &str) -> String {
    p.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// What the hub's first answer to a file request said about the file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Linked {
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

/// An open file response: status 200, 206 or 416, headers checked by the caller.
pub(crate) struct Opened {
    pub status: u16,
    pub content_length: Option<u64>,
    pub content_range: Option<String>,
    pub linked: Linked,
    /// Host of the final URL (the CDN after a redirect), for messages.
    pub host: String,
    pub body: ureq::Body,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("status", &self.status)
            .field("content_length", &self.content_length)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// A client for one hub.
pub struct HubClient {
    agent: ureq::Agent,
    base: Url,
    token: Option<Token>,
}

impl fmt::Debug for HubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubClient")
            .field("base", &self.base.to_string())
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

fn header<'a>(resp: &'a ureq::http::Response<ureq::Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// An ETag value as a sha256, if it is one (`"abc…"`, `W/"abc…"`).
fn etag_sha256(v: &str) -> Option<String> {
    let v = v.trim().trim_start_matches("W/").trim_matches('"');
    is_sha256_hex(v).then(|| v.to_ascii_lowercase())
}

impl HubClient {
    pub fn new(cfg: &HubConfig) -> Result<HubClient> {
        let base = Url::parse(cfg.url.trim()).map_err(|why| StoreError::BadHubUrl {
            url: cfg.url.clone(),
            why,
        })?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(Some(cfg.timeout))
            .timeout_recv_response(Some(cfg.timeout))
            .timeout_per_read(Some(cfg.timeout))
            .user_agent(format!("ferrollama/{}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(HubClient {
            agent: ureq::Agent::new_with_config(config),
            base,
            token: cfg.token.clone(),
        })
    }

    /// The hub's `host[:port]`.
    pub fn host(&self) -> &str {
        self.base.host()
    }

    /// The hub's base URL (never with credentials), for the manifest.
    pub fn origin(&self) -> String {
        self.base.to_string()
    }

    /// Lists `repo` at `revision`.
    pub fn repo_info(&self, repo: &str, revision: &str) -> Result<RepoInfo> {
        let what = format!("model {repo}@{revision}");
        let url = self.base.join_path(&format!(
            "/api/models/{}/revision/{}?blobs=true",
            encode_path(repo),
            encode_segment(revision)
        ));
        let (resp, final_url, _) = self.get(url, 0)?;
        let host = final_url.host().to_string();
        self.check_status(&resp, &host, &what)?;
        let bytes = resp
            .into_body()
            .into_with_config()
            .limit(MAX_LISTING)
            .read_to_vec()
            .map_err(|e| StoreError::Network {
                host: final_url.origin(),
                detail: format!("the listing of {what} broke off: {e}"),
            })?;
        let info: RepoInfo =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::BadResponse {
                host: host.clone(),
                what: what.clone(),
                why: format!("not a model listing ({e})"),
            })?;
        if info.siblings.is_none() {
            return Err(StoreError::BadResponse {
                host,
                what,
                why: "the listing has no `siblings`".into(),
            });
        }
        Ok(info)
    }

    /// Requests `path` of `repo` at `revision`, from byte `offset` on (a `Range` request
    /// when above zero). Statuses other than 200, 206 and 416 become errors.
    pub(crate) fn open_file(
        &self,
        repo: &str,
        revision: &str,
        path: &str,
        offset: u64,
    ) -> Result<Opened> {
        let what = format!("{path} in {repo}@{revision}");
        let url = self.base.join_path(&format!(
            "/{}/resolve/{}/{}",
            encode_path(repo),
            encode_segment(revision),
            encode_path(path)
        ));
        let (resp, final_url, linked) = self.get(url, offset)?;
        let host = final_url.host().to_string();
        let status = resp.status().as_u16();
        if status != 416 {
            self.check_status(&resp, &host, &what)?;
        }
        Ok(Opened {
            status,
            content_length: header(&resp, "content-length").and_then(|v| v.trim().parse().ok()),
            content_range: header(&resp, "content-range").map(str::to_string),
            linked,
            host,
            body: resp.into_body(),
        })
    }

    /// GET with redirects followed by hand (see the module doc).
    fn get(
        &self,
        start: Url,
        offset: u64,
    ) -> Result<(ureq::http::Response<ureq::Body>, Url, Linked)> {
        let mut url = start;
        let mut linked = Linked::default();
        for hop in 0..=MAX_REDIRECTS {
            let mut req = self.agent.get(url.to_string());
            if url.same_origin(&self.base)
                && let Some(t) = &self.token
            {
                req = req.header("Authorization", t.bearer());
            }
            if offset > 0 {
                req = req.header("Range", format!("bytes={offset}-"));
            }
            tracing::debug!(url = %url, offset, "GET");
            let resp = req.call().map_err(|e| StoreError::Network {
                host: url.origin(),
                detail: e.to_string(),
            })?;
            if hop == 0 {
                linked.sha256 = header(&resp, "x-linked-etag").and_then(etag_sha256);
                linked.size = header(&resp, "x-linked-size").and_then(|v| v.trim().parse().ok());
            }
            let status = resp.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                if hop == 0 && linked.sha256.is_none() {
                    // Served directly by the hub: its ETag is the LFS sha256 for large
                    // files (a 40-digit git hash for small ones, which is ignored).
                    linked.sha256 = header(&resp, "etag").and_then(etag_sha256);
                }
                return Ok((resp, url, linked));
            }
            let bad = |why: &str| StoreError::BadResponse {
                host: url.host().to_string(),
                what: "a redirect".into(),
                why: why.to_string(),
            };
            let location = header(&resp, "location").ok_or_else(|| bad("no Location"))?;
            let next = url.resolve(location).map_err(bad)?;
            if url.scheme == "https" && next.scheme == "http" {
                return Err(bad("a redirect from https to http was refused"));
            }
            tracing::debug!(from = %url.host(), to = %next.host(), "redirect");
            url = next;
        }
        Err(StoreError::BadResponse {
            host: url.host().to_string(),
            what: "a request".into(),
            why: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Turns a non-success status into the error that says what to do.
    fn check_status(
        &self,
        resp: &ureq::http::Response<ureq::Body>,
        host: &str,
        what: &str,
    ) -> Result<()> {
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let code = header(resp, "x-error-code").unwrap_or_default();
        let host = host.to_string();
        let what = what.to_string();
        Err(match status {
            401 | 403 if code == "RepoNotFound" => StoreError::NotFound { host, what },
            401 | 403 => StoreError::Unauthorized {
                host,
                what,
                status,
                hint: if code == "GatedRepo" {
                    "the model is gated: accept its license on the hub, then set HF_TOKEN to a token of that account"
                } else if self.token.is_some() {
                    "HF_TOKEN was sent and refused: check that the token is valid and can read this repository"
                } else {
                    "set HF_TOKEN to an access token that can read this repository"
                },
            },
            404 => StoreError::NotFound { host, what },
            _ => StoreError::HttpStatus { host, what, status },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("https://hub.example:8443/mirror/").ok();
        let u = u.as_ref();
        assert_eq!(u.map(|u| u.host()), Some("hub.example:8443"));
        let api = u.map(|u| u.join_path("/api/x").to_string());
        assert_eq!(
            api.as_deref(),
            Some("https://hub.example:8443/mirror/api/x")
        );
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("https://user:secret@hub").is_err());
        assert!(Url::parse("https://").is_err());
        let base = Url::parse("https://hub/a/b/c?x=1").ok();
        let r = |loc: &str| {
            base.as_ref()
                .and_then(|b| b.resolve(loc).ok())
                .map(|u| u.to_string())
        };
        assert_eq!(r("/new/path").as_deref(), Some("https://hub/new/path"));
        assert_eq!(r("d").as_deref(), Some("https://hub/a/b/d"));
        assert_eq!(r("//cdn/x").as_deref(), Some("https://cdn/x"));
        assert_eq!(r("http://cdn/x").as_deref(), Some("http://cdn/x"));
    }

    #[test]
    fn encoding_and_etags() {
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode_path("sub dir/m.gguf"), "sub%20dir/m.gguf");
        let sha = "a".repeat(64);
        assert_eq!(etag_sha256(&format!("\"{sha}\"")), Some(sha.clone()));
        assert_eq!(
            etag_sha256(&format!("W/\"{}\"", sha.to_uppercase())),
            Some(sha)
        );
        assert_eq!(
            etag_sha256("\"0123456789abcdef0123456789abcdef01234567\""),
            None
        );
        assert_eq!(
            format!("{:?}", Token::new("hf_secret")),
            "Some(Token(<hidden>))"
        );
        assert!(Token::new("  ").is_none());
    }
}
