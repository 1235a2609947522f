//! Ollama's `options`, `format` and `keep_alive` as the job layer's settings.
//!
//! Mapped: temperature, top_k, top_p, min_p, seed, num_predict, stop, repeat_penalty,
//! repeat_last_n, presence_penalty, frequency_penalty, and num_ctx (bounds the prompt plus
//! reply, within the server's `--ctx-size`). Ollama's defaults apply when not given
//! (temperature 0.8, top_k 40, top_p 0.9, repeat_penalty 1.1 over the last 64 tokens, a
//! random seed). Every other documented option (num_thread, num_gpu, mirostat, numa,
//! use_mmap, ...) is accepted and ignored: threads and memory are the server's settings.

use std::sync::Arc;
use std::time::Duration;

use ferrollama_engine::SamplerConfig;
use ferrollama_engine::constrain::Schema;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::OllamaError;
use crate::job::Settings;
use crate::openai::StopSpec;
use crate::state::AppState;

/// `options` of `/api/chat` and `/api/generate`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct Options {
    pub temperature: Option<f32>,
    pub top_k: Option<i64>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    /// Most tokens to generate; -1 (and -2): as many as the context holds.
    pub num_predict: Option<i64>,
    pub stop: Option<StopSpec>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Context window of this request (prompt plus reply), at most the server's.
    pub num_ctx: Option<i64>,
    /// Ollama's other options: accepted, ignored.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Options {
    /// Sampling settings, Ollama's defaults filled in.
    pub fn settings(&self, app: &AppState) -> Result<Settings, OllamaError> {
        let d = SamplerConfig::default();
        let top_k = self.top_k.unwrap_or(40);
        if top_k < 0 {
            return Err(OllamaError::invalid("top_k must be at least 0"));
        }
        let penalty_last_n = match self.repeat_last_n {
            None => 64,
            Some(-1) => app.engine.config().ctx,
            Some(n) if n >= 0 => n as usize,
            Some(_) => return Err(OllamaError::invalid("repeat_last_n must be -1 or more")),
        };
        let temperature = self.temperature.unwrap_or(0.8);
        if temperature < 0.0 {
            return Err(OllamaError::invalid("temperature must be at least 0"));
        }
        let sampler = SamplerConfig {
            temperature,
            top_k: top_k as usize,
            top_p: self.top_p.unwrap_or(0.9),
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self.repeat_penalty.unwrap_or(1.1),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            penalty_last_n,
            seed: self
                .seed
                .map_or_else(crate::openai::rand_seed, |s| s as u64),
        };
        sampler.validate().map_err(OllamaError::invalid)?;
        let max_tokens = match self.num_predict {
            None => None,
            Some(-1 | -2) => Some(app.limits.max_tokens),
            Some(n) if n >= 1 => Some(n as usize),
            Some(_) => {
                return Err(OllamaError::invalid(
                    "num_predict must be at least 1, or -1 for as many as fit",
                ));
            }
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopSpec::One(s)) => vec![s.clone()],
            Some(StopSpec::Many(v)) => v.clone(),
        };
        Ok(Settings {
            max_tokens,
            sampler,
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Settings::default()
        })
    }

    /// The reply's room under `num_ctx` for a prompt of `prompt` tokens.
    pub fn room(&self, prompt: usize) -> Result<Option<usize>, OllamaError> {
        match self.num_ctx {
            None => Ok(None),
            Some(n) if n < 1 => Err(OllamaError::invalid("num_ctx must be at least 1")),
            Some(n) => {
                let n = n as usize;
                if prompt >= n {
                    return Err(OllamaError::invalid(format!(
                        "the prompt has {prompt} tokens but num_ctx is {n}; raise num_ctx or \
                         shorten the prompt"
                    )));
                }
                Ok(Some(n - prompt))
            }
        }
    }
}

/// `format`: `"json"` (any JSON object) or a JSON Schema; absent, null or `""`: free text.
pub fn format_schema(v: &Option<Value>) -> Result<Option<Arc<Schema>>, OllamaError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(Arc::new(Schema::any_object()))),
        Some(Value::String(s)) => Err(OllamaError::invalid(format!(
            "invalid format \"{s}\": use \"json\" or a JSON schema object"
        ))),
        Some(schema @ Value::Object(_)) => Schema::compile(schema)
            .map(|s| Some(Arc::new(s)))
            .map_err(|e| OllamaError::invalid(format!("invalid format schema: {e}"))),
        Some(_) => Err(OllamaError::invalid(
            "format must be \"json\" or a JSON schema object",
        )),
    }
}

/// `keep_alive`: seconds as a number, or a Go duration string (`"5m"`, `"1h30m"`, `"-1"`).
/// `Ok(None)`: forever (negative). Models are never unloaded by this server; the value is
/// only reported by `/api/ps`.
pub fn keep_alive(v: &Value) -> Result<Option<Duration>, OllamaError> {
    let bad = || {
        OllamaError::invalid(format!(
            "invalid keep_alive {v}: use seconds or a duration like \"5m\""
        ))
    };
    let secs = match v {
        Value::Number(n) => n.as_f64().ok_or_else(bad)?,
        Value::String(s) => parse_duration(s.trim()).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if !secs.is_finite() {
        return Err(bad());
    }
    if secs < 0.0 {
        return Ok(None);
    }
    Ok(Some(Duration::from_secs_f64(secs.min(1e10))))
}

/// A Go duration (`300ms`, `1.5h`, `2h45m`, `-1s`) or plain seconds, in seconds.
fn parse_duration(s: &str) -> Option<f64> {
    if let Ok(n) = s.parse::<f64>() {
        return Some(n);
    }
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Some(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keep_alive_reads_numbers_and_go_durations() {
        let secs = |v: Value| keep_alive(&v).map(|d| d.map(|d| d.as_secs_f64()));
        assert_eq!(secs(json!(30)).ok(), Some(Some(30.0)));
        assert_eq!(secs(json!("5m")).ok(), Some(Some(300.0)));
        assert_eq!(secs(json!("1h30m")).ok(), Some(Some(5400.0)));
        assert_eq!(secs(json!("1.5s")).ok(), Some(Some(1.5)));
        assert_eq!(secs(json!("-1")).ok(), Some(None));
        assert_eq!(secs(json!(-1)).ok(), Some(None));
        assert_eq!(secs(json!("0")).ok(), Some(Some(0.0)));
        assert!(secs(json!("5 minutes")).is_err());
        assert!(secs(json!("m")).is_err());
        assert!(secs(json!(true)).is_err());
    }
}
