//! The one blocking HTTP GET the web tools (Brave Search, Wolfram Alpha) share: a ureq
//! agent with an end-to-end timeout, gzip decoding (the tools ask for it as Llama Stack
//! does, while the workspace's ureq is built without it), a size cap, and every failure
//! (timeout, transport error, 4xx/5xx, non-JSON body) mapped to a [`ToolError`] that
//! names the tool and never echoes a secret.

use std::io::Read;
use std::time::Duration;

use crate::ToolError;

/// Largest reply body read (and largest gzip-decoded size).
const MAX_BODY: u64 = 8 << 20;
/// How many characters of an error reply's body go into the error message.
const EXCERPT_CHARS: usize = 200;

/// A ureq agent that reports 4xx/5xx as responses (so their bodies can be read) and
/// gives up after `timeout`, end to end.
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// A short, single-line excerpt of a reply body for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = flat.chars().take(EXCERPT_CHARS).collect();
    if flat.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// Describes a ureq error, with `secret` (an API key in the URL) masked.
pub(crate) fn describe(err: &ureq::Error, timeout: Duration, secret: Option<&str>) -> String {
    let msg = match err {
        ureq::Error::Timeout(_) => format!("timed out after {timeout:?}"),
        other => format!("request failed: {other}"),
    };
    mask(msg, secret)
}

/// Replaces every occurrence of `secret` in `msg` with `***`.
pub(crate) fn mask(msg: String, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => msg.replace(s, "***"),
        _ => msg,
    }
}

/// GETs `url` with `headers` and parses the reply as JSON. `secret` is masked in errors.
pub(crate) fn get_json(
    tool: &'static str,
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
    secret: Option<&str>,
) -> Result<serde_json::Value, ToolError> {
    let remote = |message: String| ToolError::Remote { tool, message };
    let mut req = agent(timeout).get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req
        .call()
        .map_err(|e| remote(describe(&e, timeout, secret)))?;
    let status = resp.status().as_u16();
    let gzip = resp
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let raw = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| remote(describe(&e, timeout, secret)))?;
    let body = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_BODY)
            .read_to_end(&mut out)
            .map_err(|e| ToolError::Malformed {
                tool,
                message: format!("bad gzip body: {e}"),
            })?;
        out
    } else {
        raw
    };
    if status >= 400 {
        return Err(remote(mask(
            format!("HTTP {status}: {}", excerpt(&body)),
            secret,
        )));
    }
    serde_json::from_slice(&body).map_err(|e| ToolError::Malformed {
        tool,
        message: mask(format!("{e}; body: {}", excerpt(&body)), secret),
    })
}

/// `base` without trailing slashes.
pub(crate) fn trim_base(base: &str) -> String {
    base.trim_end_matches('/').to_string()
}

/// Reads a non-empty environment variable.
pub(crate) fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The API key of a web tool call: the request's own (non-blank) key wins over the
/// server's default; neither is [`ToolError::MissingKey`] naming where to put one.
pub(crate) fn resolve_key<'a>(
    request: Option<&'a str>,
    default: Option<&'a str>,
    tool: &'static str,
    env: &'static str,
    field: &'static str,
) -> Result<&'a str, ToolError> {
    request
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .or(default)
        .ok_or(ToolError::MissingKey { tool, env, field })
}
