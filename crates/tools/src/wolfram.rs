//! The `wolfram_alpha` built-in tool: one GET to Wolfram|Alpha's Full Results API
//! (`/v2/query?input=..&appid=..&format=plaintext&output=json`) and the reply cleaned the
//! way Llama Stack's reference does (`_clean_wolfram_alpha_response`): the bookkeeping
//! fields of `queryresult` and of each pod dropped, `assumptions` dropped, and the pods
//! cut after the first one titled `Result`.
//!
//! A reply whose `queryresult.error` is an object (e.g. `{"code": "1", "msg": "Invalid
//! appid"}`, sent with HTTP 200) is a [`ToolError::Remote`] rather than a result.
//! The key comes from the request (`wolfram_alpha_api_key` of `X-LlamaStack-Provider-Data`)
//! or else from `WOLFRAM_ALPHA_API_KEY`; `FERROLLAMA_WOLFRAM_ALPHA_URL` moves the base URL.

use std::time::Duration;

use serde_json::Value;

use crate::ToolError;
use crate::http;

const TOOL: &str = "wolfram_alpha";
/// The environment variable with the API key (the "AppID").
pub const KEY_ENV: &str = "WOLFRAM_ALPHA_API_KEY";
/// The environment variable that overrides the API's base URL.
pub const URL_ENV: &str = "FERROLLAMA_WOLFRAM_ALPHA_URL";
/// The real API.
pub const DEFAULT_BASE_URL: &str = "https://api.wolframalpha.com";
/// The default end-to-end timeout of one query (Wolfram|Alpha can be slow).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `queryresult` fields that are dropped.
const DROP_TOP: &[&str] = &[
    "datatypes",
    "error",
    "timedout",
    "timedoutpods",
    "numpods",
    "timing",
    "parsetiming",
    "parsetimedout",
    "recalculate",
    "id",
    "host",
    "server",
    "related",
    "version",
    "assumptions",
];
/// Pod fields that are dropped.
const DROP_POD: &[&str] = &[
    "scanner",
    "id",
    "error",
    "expressiontypes",
    "states",
    "infos",
    "position",
    "numsubpods",
];

/// A Wolfram|Alpha client (cheap to build; holds no connection).
#[derive(Debug, Clone)]
pub struct WolframAlpha {
    base_url: String,
    env_key: Option<String>,
    timeout: Duration,
}

impl WolframAlpha {
    /// The real API (or `FERROLLAMA_WOLFRAM_ALPHA_URL`), the key from `WOLFRAM_ALPHA_API_KEY`.
    pub fn from_env() -> WolframAlpha {
        let base = http::env_nonempty(URL_ENV).unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        WolframAlpha::with_base_url(&base, http::env_nonempty(KEY_ENV), DEFAULT_TIMEOUT)
    }

    /// An explicit base URL (e.g. a test server), default key and timeout.
    pub fn with_base_url(base_url: &str, key: Option<String>, timeout: Duration) -> WolframAlpha {
        WolframAlpha {
            base_url: http::trim_base(base_url),
            env_key: key.filter(|k| !k.trim().is_empty()),
            timeout,
        }
    }

    /// Whether a query without a per-request key would find one.
    pub fn has_default_key(&self) -> bool {
        self.env_key.is_some()
    }

    /// Asks Wolfram|Alpha `input`. `key` (from the request) wins over the default key.
    pub fn query(&self, input: &str, key: Option<&str>) -> Result<Value, ToolError> {
        let key = http::resolve_key(
            key,
            self.env_key.as_deref(),
            TOOL,
            KEY_ENV,
            crate::provider_data::WOLFRAM_FIELD,
        )?;
        if input.trim().is_empty() {
            return Err(ToolError::InvalidArguments(
                "wolfram_alpha: empty query".to_string(),
            ));
        }
        let qs = form_urlencoded::Serializer::new(String::new())
            .append_pair("input", input)
            .append_pair("appid", key)
            .append_pair("format", "plaintext")
            .append_pair("output", "json")
            .finish();
        let url = format!("{}/v2/query?{qs}", self.base_url);
        // The key also appears URL-encoded in the URL; mask both spellings in errors.
        let encoded_key: String = form_urlencoded::byte_serialize(key.as_bytes()).collect();
        let reply =
            http::get_json(TOOL, &url, &[], self.timeout, Some(key)).map_err(|e| match e {
                ToolError::Remote { tool, message } => ToolError::Remote {
                    tool,
                    message: http::mask(message, Some(&encoded_key)),
                },
                other => other,
            })?;
        clean_response(reply)
    }
}

/// Cleans a Full Results API reply (see the module doc). The reply must be an object
/// with a `queryresult` object; anything else is [`ToolError::Malformed`].
pub fn clean_response(mut reply: Value) -> Result<Value, ToolError> {
    let malformed = |message: &str| ToolError::Malformed {
        tool: TOOL,
        message: message.to_string(),
    };
    let qr = reply
        .as_object_mut()
        .ok_or_else(|| malformed("the reply is not a JSON object"))?
        .get_mut("queryresult")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| malformed("the reply has no queryresult object"))?;
    if let Some(err) = qr.get("error").filter(|e| e.is_object()) {
        let msg = err
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        let code = err.get("code").map(|c| match c {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        return Err(ToolError::Remote {
            tool: TOOL,
            message: match code {
                Some(code) => format!("error {code}: {msg}"),
                None => msg.to_string(),
            },
        });
    }
    for k in DROP_TOP {
        qr.shift_remove(*k);
    }
    if let Some(pods) = qr.get_mut("pods").and_then(Value::as_array_mut) {
        let result_at = pods
            .iter()
            .position(|p| p.get("title").and_then(Value::as_str) == Some("Result"));
        if let Some(i) = result_at {
            pods.truncate(i + 1);
        }
        for pod in pods.iter_mut().filter_map(Value::as_object_mut) {
            for k in DROP_POD {
                pod.shift_remove(*k);
            }
        }
    }
    Ok(reply)
}
