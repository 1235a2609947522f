//! The `brave_search` built-in tool: one GET to Brave's web search API and the reply
//! trimmed to what the model needs, the way Llama Stack's reference `BraveSearch` does
//! (`_clean_brave_response`): the first [`DEFAULT_TOP_K`] entries of the reply's `mixed.main`
//! ranking, each resolved into its result list (`web`, `faq`, `infobox`, `videos`,
//! `locations`, `news`) and cut to a few keys, as `{"query": ..., "top_k": [...]}`.
//!
//! The key comes from the request (Llama Stack's `X-LlamaStack-Provider-Data` field
//! `brave_search_api_key`, see [`crate::provider_data`]) or else from `BRAVE_SEARCH_API_KEY`.
//! The API's base URL can be moved with `FERROLLAMA_BRAVE_SEARCH_URL` (tests, proxies).

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::ToolError;
use crate::http;

const TOOL: &str = "brave_search";
/// The environment variable with the API key.
pub const KEY_ENV: &str = "BRAVE_SEARCH_API_KEY";
/// The environment variable that overrides the API's base URL.
pub const URL_ENV: &str = "FERROLLAMA_BRAVE_SEARCH_URL";
/// The real API.
pub const DEFAULT_BASE_URL: &str = "https://api.search.brave.com";
/// How many ranked results are kept (Llama Stack's default).
pub const DEFAULT_TOP_K: usize = 3;
/// The default end-to-end timeout of one search.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A Brave Search client (cheap to build; holds no connection).
#[derive(Debug, Clone)]
pub struct BraveSearch {
    base_url: String,
    env_key: Option<String>,
    timeout: Duration,
    top_k: usize,
}

impl BraveSearch {
    /// The real API (or `FERROLLAMA_BRAVE_SEARCH_URL`), the key from `BRAVE_SEARCH_API_KEY`.
    pub fn from_env() -> BraveSearch {
        let base = http::env_nonempty(URL_ENV).unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        BraveSearch::with_base_url(&base, http::env_nonempty(KEY_ENV), DEFAULT_TIMEOUT)
    }

    /// An explicit base URL (e.g. a test server), default key and timeout.
    pub fn with_base_url(base_url: &str, key: Option<String>, timeout: Duration) -> BraveSearch {
        BraveSearch {
            base_url: http::trim_base(base_url),
            env_key: key.filter(|k| !k.trim().is_empty()),
            timeout,
            top_k: DEFAULT_TOP_K,
        }
    }

    /// Keeps the first `top_k` ranked results instead of [`DEFAULT_TOP_K`].
    pub fn with_top_k(mut self, top_k: usize) -> BraveSearch {
        self.top_k = top_k;
        self
    }

    /// Whether a search without a per-request key would find one.
    pub fn has_default_key(&self) -> bool {
        self.env_key.is_some()
    }

    /// Searches the web for `query`. `key` (from the request) wins over the default key.
    pub fn search(&self, query: &str, key: Option<&str>) -> Result<Value, ToolError> {
        let key = http::resolve_key(
            key,
            self.env_key.as_deref(),
            TOOL,
            KEY_ENV,
            crate::provider_data::BRAVE_FIELD,
        )?;
        if query.trim().is_empty() {
            return Err(ToolError::InvalidArguments(
                "brave_search: empty query".to_string(),
            ));
        }
        let qs = form_urlencoded::Serializer::new(String::new())
            .append_pair("q", query)
            .finish();
        let url = format!("{}/res/v1/web/search?{qs}", self.base_url);
        let reply = http::get_json(
            TOOL,
            &url,
            &[
                ("X-Subscription-Token", key),
                ("Accept-Encoding", "gzip"),
                ("Accept", "application/json"),
            ],
            self.timeout,
            Some(key),
        )?;
        clean_response(&reply, query, self.top_k)
    }
}

/// The keys kept per result type (as Llama Stack keeps them), and whether the ranking
/// entry points at one result (`index`) or the type's whole list.
fn kept_keys(kind: &str) -> Option<(&'static [&'static str], bool)> {
    Some(match kind {
        "web" => (
            &[
                "type",
                "title",
                "url",
                "description",
                "date",
                "extra_snippets",
            ],
            true,
        ),
        "infobox" => (&["type", "title", "url", "description", "long_desc"], true),
        "faq" => (&["type", "question", "answer", "title", "url"], false),
        "videos" => (&["type", "url", "title", "description", "date"], false),
        "locations" => (
            &[
                "type",
                "title",
                "url",
                "description",
                "coordinates",
                "postal_address",
                "contact",
                "rating",
                "distance",
                "zoom_level",
            ],
            false,
        ),
        "news" => (&["type", "title", "url", "description"], false),
        _ => return None,
    })
}

/// `item`'s `keys`, in the reply's order (non-objects are dropped).
fn pick(item: &Value, keys: &[&str]) -> Option<Value> {
    let obj = item.as_object()?;
    let kept: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| keys.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some(Value::Object(kept))
}

/// Trims a Brave reply to `{"query": <the query Brave saw>, "top_k": [...]}`.
///
/// Each of the first `top_k` entries of `mixed.main` becomes one element: an object for
/// `web`/`infobox` (the entry's `index` into that type's results) or a list of objects
/// for `faq`/`videos`/`locations`/`news`; unknown types give `[]` as in the reference.
/// Entries that point at nothing are skipped. A reply without `mixed` falls back to the
/// first `top_k` web results. Only a reply that is not a JSON object is malformed.
pub fn clean_response(reply: &Value, query: &str, top_k: usize) -> Result<Value, ToolError> {
    let obj = reply.as_object().ok_or_else(|| ToolError::Malformed {
        tool: TOOL,
        message: "the reply is not a JSON object".to_string(),
    })?;
    let seen_query = obj
        .get("query")
        .and_then(|q| q.get("original"))
        .and_then(Value::as_str)
        .unwrap_or(query);
    let results_of =
        |kind: &str| -> Option<&Vec<Value>> { obj.get(kind)?.get("results")?.as_array() };
    let mut out = Vec::new();
    match obj
        .get("mixed")
        .and_then(|m| m.get("main"))
        .and_then(Value::as_array)
    {
        Some(main) => {
            for entry in main.iter().take(top_k) {
                let Some(kind) = entry.get("type").and_then(Value::as_str) else {
                    continue;
                };
                let Some((keys, indexed)) = kept_keys(kind) else {
                    out.push(json!([]));
                    continue;
                };
                let Some(results) = results_of(kind) else {
                    continue;
                };
                if indexed {
                    let picked = entry
                        .get("index")
                        .and_then(Value::as_u64)
                        .and_then(|i| usize::try_from(i).ok())
                        .and_then(|i| results.get(i))
                        .and_then(|r| pick(r, keys));
                    if let Some(p) = picked {
                        out.push(p);
                    }
                } else {
                    out.push(Value::Array(
                        results.iter().filter_map(|r| pick(r, keys)).collect(),
                    ));
                }
            }
        }
        None => {
            if let Some((keys, _)) = kept_keys("web")
                && let Some(results) = results_of("web")
            {
                out.extend(results.iter().take(top_k).filter_map(|r| pick(r, keys)));
            }
        }
    }
    Ok(json!({ "query": seen_query, "top_k": out }))
}
