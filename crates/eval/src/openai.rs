//! The HTTP backend: any OpenAI-compatible server (`ferrollama serve`, llama.cpp's
//! llama-server, vLLM), driven as lm-eval's `local-completions` model drives it.
//!
//! Log-likelihood: `POST /v1/completions` with `prompt` = context + continuation (after
//! lm-eval's move of the context's trailing whitespace), `echo: true`, `logprobs: 1`,
//! `max_tokens: 0` (1 when the server refuses 0; the generated token lies past the prompt
//! and is not counted). The continuation's tokens are those whose `text_offset` falls in
//! the continuation's characters; their `token_logprobs` are summed, and the continuation is
//! greedy when each token's log-probability is the largest of its `top_logprobs`.
//! Generation: `/v1/completions` (`/v1/chat/completions` with the chat template) at
//! temperature 0 with the stop strings, then cut at them as lm-eval does.

use std::time::Duration;

use serde_json::{Value, json};

use crate::backend::{Backend, Context, LogLikelihood, cut_at_stops};
use crate::error::{EvalError, Result};

/// A model behind an OpenAI-compatible server.
#[derive(Debug)]
pub struct OpenAiBackend {
    agent: ureq::Agent,
    /// `http://host:port/v1`.
    root: String,
    model: String,
    api_key: Option<String>,
    /// Whether the server took `max_tokens: 0` (None: not asked yet).
    zero_ok: Option<bool>,
}

/// Largest reply read.
const MAX_BODY: u64 = 256 << 20;

impl OpenAiBackend {
    /// `base_url` is the server (`http://host:8080`), its `/v1`, or an endpoint under it
    /// (`.../v1/completions`, as lm-eval's `base_url` names it).
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> OpenAiBackend {
        let mut root = base_url.trim_end_matches('/').to_string();
        for suffix in ["/chat/completions", "/completions"] {
            if let Some(r) = root.strip_suffix(suffix) {
                root = r.to_string();
                break;
            }
        }
        if !root.ends_with("/v1") {
            root.push_str("/v1");
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        OpenAiBackend {
            agent,
            root,
            model: model.to_string(),
            api_key,
            zero_ok: None,
        }
    }

    /// POSTs JSON; `Err((status, body))` for an HTTP error status.
    fn post(&self, path: &str, body: &Value) -> Result<std::result::Result<Value, (u16, String)>> {
        let url = format!("{}{path}", self.root);
        let mut req = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(k) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let mut resp = req
            .send(body.to_string().as_bytes())
            .map_err(|e| EvalError::Http(format!("POST {url}: {e}")))?;
        let status = resp.status().as_u16();
        let raw = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| EvalError::Http(format!("POST {url}: {e}")))?;
        if status >= 400 {
            let text = String::from_utf8_lossy(&raw);
            let excerpt: String = text.chars().take(500).collect();
            return Ok(Err((status, excerpt)));
        }
        serde_json::from_slice(&raw)
            .map(Ok)
            .map_err(|e| EvalError::Http(format!("POST {url}: the reply is not JSON: {e}")))
    }

    fn post_ok(&self, path: &str, body: &Value) -> Result<Value> {
        self.post(path, body)?
            .map_err(|(s, b)| EvalError::Http(format!("POST {}{path}: HTTP {s}: {b}", self.root)))
    }

    /// The echoed prompt's log-probabilities, asking with `max_tokens` 0 first and 1 once a
    /// server refused 0.
    fn echo(&mut self, prompt: &str) -> Result<Value> {
        let body = |max_tokens: u32| {
            json!({"model": self.model, "prompt": prompt, "echo": true, "logprobs": 1,
                   "max_tokens": max_tokens, "temperature": 0.0})
        };
        if self.zero_ok != Some(false) {
            match self.post("/completions", &body(0))? {
                Ok(v) => {
                    self.zero_ok = Some(true);
                    return Ok(v);
                }
                Err((400 | 422, _)) if self.zero_ok.is_none() => self.zero_ok = Some(false),
                Err((s, b)) => {
                    return Err(EvalError::Http(format!(
                        "POST {}/completions: HTTP {s}: {b}",
                        self.root
                    )));
                }
            }
        }
        self.post_ok("/completions", &body(1))
    }
}

/// One echoed token: its character offset in the prompt, its log-probability, and the
/// largest of its `top_logprobs`.
type Echoed = (usize, Option<f64>, Option<f64>);

/// The echoed tokens of a `/v1/completions` reply.
fn echoed(reply: &Value) -> Result<Vec<Echoed>> {
    let lp = reply
        .pointer("/choices/0/logprobs")
        .filter(|v| v.is_object())
        .ok_or_else(|| {
            EvalError::Http(
                "the reply has no choices[0].logprobs (does the server support \
                             echo with logprobs on /v1/completions?)"
                    .into(),
            )
        })?;
    let arr = |k: &str| {
        lp.get(k)
            .and_then(Value::as_array)
            .ok_or_else(|| EvalError::Http(format!("choices[0].logprobs.{k} is missing")))
    };
    let offsets = arr("text_offset")?;
    let lps = arr("token_logprobs")?;
    let tops = lp.get("top_logprobs").and_then(Value::as_array);
    if offsets.len() != lps.len() {
        return Err(EvalError::Http(format!(
            "{} text offsets for {} token log-probabilities",
            offsets.len(),
            lps.len()
        )));
    }
    offsets
        .iter()
        .zip(lps)
        .enumerate()
        .map(|(i, (o, l))| {
            let off = o
                .as_u64()
                .ok_or_else(|| EvalError::Http(format!("text_offset[{i}] is not a number")))?
                as usize;
            let top = tops
                .and_then(|t| t.get(i))
                .and_then(Value::as_object)
                .and_then(|m| m.values().filter_map(Value::as_f64).reduce(f64::max));
            Ok((off, l.as_f64(), top))
        })
        .collect()
}

/// Sums the log-probabilities of the tokens starting in characters `from..to` of the
/// prompt; `None` when a counted token has no log-probability.
pub fn sum_span(reply: &Value, from: usize, to: usize) -> Result<LogLikelihood> {
    let toks = echoed(reply)?;
    let mut ll = 0.0;
    let mut greedy = true;
    let mut n = 0;
    for (i, &(off, lp, top)) in toks.iter().enumerate() {
        if off < from || off >= to {
            continue;
        }
        // A zero-width token (BOS echoed at offset 0) has no log-probability; skip it.
        let zero_width = toks.get(i + 1).is_some_and(|t| t.0 == off);
        let Some(lp) = lp else {
            if zero_width {
                continue;
            }
            return Err(EvalError::Http(format!(
                "the server gave no log-probability for the token at character {off}; the \
                 first token of a prompt has none unless the server puts BOS before it"
            )));
        };
        ll += lp;
        if top.is_some_and(|t| lp < t) {
            greedy = false;
        }
        n += 1;
    }
    if n == 0 {
        return Err(EvalError::Http(format!(
            "no echoed token starts in characters {from}..{to} of the prompt"
        )));
    }
    Ok(LogLikelihood {
        ll,
        is_greedy: greedy,
    })
}

impl Backend for OpenAiBackend {
    fn loglikelihood(
        &mut self,
        context: &Context,
        continuations: &[String],
    ) -> Result<Vec<LogLikelihood>> {
        let Context::Text(text) = context else {
            return Err(EvalError::Invalid(
                "--apply-chat-template with --base-url works for generate_until tasks only: \
                 scoring needs the server's chat template laid out as text"
                    .into(),
            ));
        };
        let kept = text.trim_end();
        let moved = &text[kept.len()..];
        let from = kept.chars().count();
        continuations
            .iter()
            .map(|c| {
                let prompt = format!("{kept}{moved}{c}");
                let reply = self.echo(&prompt)?;
                sum_span(&reply, from, prompt.chars().count())
            })
            .collect()
    }

    fn loglikelihood_rolling(&mut self, text: &str) -> Result<f64> {
        let reply = self.echo(text)?;
        Ok(sum_span(&reply, 0, text.chars().count())?.ll)
    }

    fn generate(
        &mut self,
        context: &Context,
        until: &[String],
        max_gen_toks: usize,
    ) -> Result<String> {
        // OpenAI takes at most four stop strings; the rest are cut afterwards.
        let stop: Vec<&String> = until.iter().filter(|u| !u.is_empty()).take(4).collect();
        let text = match context {
            Context::Text(prompt) => {
                let body = json!({"model": self.model, "prompt": prompt, "max_tokens": max_gen_toks,
                                  "temperature": 0.0, "stop": stop});
                let r = self.post_ok("/completions", &body)?;
                r.pointer("/choices/0/text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| EvalError::Http("the reply has no choices[0].text".into()))?
                    .to_string()
            }
            Context::Chat(msgs) => {
                let body = json!({"model": self.model, "messages": msgs, "max_tokens": max_gen_toks,
                                  "temperature": 0.0, "stop": stop});
                let r = self.post_ok("/chat/completions", &body)?;
                r.pointer("/choices/0/message/content")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            }
        };
        Ok(cut_at_stops(&text, until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_found_by_text_offset() {
        // Prompt "The sky is blue" (context "The sky is", continuation " blue"), echoed with
        // BOS at offset 0 and one generated token past the prompt (max_tokens: 1).
        let reply = json!({"choices": [{"index": 0, "text": "The sky is blue.", "logprobs": {
            "tokens": ["<s>", "The", " sky", " is", " blue", "."],
            "text_offset": [0, 0, 3, 7, 10, 15],
            "token_logprobs": [null, -5.0, -2.0, -1.0, -0.5, -0.25],
            "top_logprobs": [null, {"A": -1.0}, {" sky": -2.0}, {" is": -1.0}, {" blue": -0.5}, {".": -0.25}]
        }}]});
        let ll = sum_span(&reply, 10, 15).unwrap();
        assert_eq!(ll.ll, -0.5);
        assert!(ll.is_greedy);
        // The whole prompt: BOS is skipped, "The" was not the top token.
        let all = sum_span(&reply, 0, 15).unwrap();
        assert_eq!(all.ll, -8.5);
        assert!(!all.is_greedy);
        assert!(sum_span(&reply, 16, 20).is_err());
    }

    #[test]
    fn base_url_forms() {
        let t = Duration::from_secs(1);
        for u in [
            "http://h:1",
            "http://h:1/",
            "http://h:1/v1",
            "http://h:1/v1/completions",
        ] {
            assert_eq!(
                OpenAiBackend::new(u, "m", None, t).root,
                "http://h:1/v1",
                "{u}"
            );
        }
    }
}
