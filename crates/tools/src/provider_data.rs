//! The web tools' API keys as Llama Stack clients send them: a JSON object in the
//! `X-LlamaStack-Provider-Data` request header, e.g.
//! `{"brave_search_api_key": "...", "wolfram_alpha_api_key": "..."}`. The server reads the
//! header and passes the keys to [`crate::brave::BraveSearch::search`] and
//! [`crate::wolfram::WolframAlpha::query`] as per-request overrides.

/// The header's field with the Brave Search key.
pub const BRAVE_FIELD: &str = "brave_search_api_key";
/// The header's field with the Wolfram Alpha key.
pub const WOLFRAM_FIELD: &str = "wolfram_alpha_api_key";

/// The keys found in an `X-LlamaStack-Provider-Data` header (absent or empty: `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderKeys {
    pub brave: Option<String>,
    pub wolfram: Option<String>,
}

/// Parses an `X-LlamaStack-Provider-Data` header. A header that is not a JSON object,
/// or fields that are not non-empty strings, give no keys (never an error: the tools then
/// fall back to their environment variables and report a missing key themselves).
pub fn provider_keys(header: &str) -> ProviderKeys {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(header)
    else {
        tracing::debug!("X-LlamaStack-Provider-Data is not a JSON object; ignored");
        return ProviderKeys::default();
    };
    let field = |name: &str| {
        map.get(name)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    ProviderKeys {
        brave: field(BRAVE_FIELD),
        wolfram: field(WOLFRAM_FIELD),
    }
}
