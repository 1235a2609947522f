//! Brave Search and Wolfram Alpha against local mock servers: the exact request (path,
//! every decoded query parameter, the key header/parameter), the cleaned JSON, and every
//! failure mode (missing key, 401, 500, timeout, malformed body, API-level error).

mod web_http;

use std::io::Write;
use std::time::{Duration, Instant};

use ferrollama_tools::ToolError;
use ferrollama_tools::brave::BraveSearch;
use ferrollama_tools::provider_keys;
use ferrollama_tools::wolfram::WolframAlpha;
use serde_json::{Value, json};
use web_http::{Reply, serve};

const T: Duration = Duration::from_secs(10);

/// A reply shaped like Brave's `/res/v1/web/search` (trimmed, but with the real fields).
const BRAVE_REPLY: &str = r#"{
  "query": {"original": "llama 3.1 & friends", "show_strict_warning": false, "is_navigational": false,
            "local_decision": "drop", "is_news_breaking": false, "spellcheck_off": true, "country": "us"},
  "mixed": {"type": "mixed", "main": [
      {"type": "web", "index": 0, "all": false},
      {"type": "videos", "all": true},
      {"type": "web", "index": 1, "all": false},
      {"type": "web", "index": 2, "all": false}
    ], "top": [], "side": []},
  "type": "search",
  "videos": {"type": "videos", "results": [
      {"type": "video_result", "url": "https://video.example/v1", "title": "Llama 3.1 explained",
       "description": "A video", "age": "2 days ago", "video": {"duration": "12:01"},
       "thumbnail": {"src": "https://imgs.example/t.jpg"}}
    ], "mutated_by_goggles": false},
  "web": {"type": "search", "results": [
      {"title": "Meta Llama 3.1", "url": "https://ai.meta.com/llama/", "is_source_local": false,
       "is_source_both": false, "description": "The open source AI model you can fine-tune.",
       "page_age": "2024-07-23T00:00:00", "profile": {"name": "Meta"}, "language": "en",
       "family_friendly": true, "type": "search_result", "subtype": "generic",
       "meta_url": {"scheme": "https", "hostname": "ai.meta.com"}, "age": "July 23, 2024",
       "extra_snippets": ["405B parameters", "128K context"]},
      {"title": "Llama 3.1 - Wikipedia", "url": "https://en.wikipedia.org/wiki/Llama_(language_model)",
       "description": "Llama is a family of LLMs.", "type": "search_result", "date": "2024-07-24",
       "language": "en"},
      {"title": "Third", "url": "https://third.example/", "description": "third result",
       "type": "search_result"}
    ], "family_friendly": true}
}"#;

fn brave_expected() -> Value {
    json!({
        "query": "llama 3.1 & friends",
        "top_k": [
            {"title": "Meta Llama 3.1", "url": "https://ai.meta.com/llama/",
             "description": "The open source AI model you can fine-tune.", "type": "search_result",
             "extra_snippets": ["405B parameters", "128K context"]},
            [{"type": "video_result", "url": "https://video.example/v1",
              "title": "Llama 3.1 explained", "description": "A video"}],
            {"title": "Llama 3.1 - Wikipedia", "url": "https://en.wikipedia.org/wiki/Llama_(language_model)",
             "description": "Llama is a family of LLMs.", "type": "search_result", "date": "2024-07-24"}
        ]
    })
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn brave_success_exact_request_and_cleaned_json() {
    let srv = serve(|_| Reply::json(200, BRAVE_REPLY));
    let brave = BraveSearch::with_base_url(&format!("{}/", srv.base), Some("env-key".into()), T);
    let out = brave.search("llama 3.1 & friends", Some("k-123")).unwrap();
    assert_eq!(out, brave_expected());
    // Key order is the reply's (what the model sees is stable).
    assert_eq!(
        serde_json::to_string(&out["top_k"][0]).unwrap(),
        r#"{"title":"Meta Llama 3.1","url":"https://ai.meta.com/llama/","description":"The open source AI model you can fine-tune.","type":"search_result","extra_snippets":["405B parameters","128K context"]}"#
    );
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/res/v1/web/search");
    assert_eq!(r.query, pairs(&[("q", "llama 3.1 & friends")]));
    // The per-request key wins over the default key.
    assert_eq!(r.header("x-subscription-token"), Some("k-123"));
    assert_eq!(r.header("accept"), Some("application/json"));
    assert_eq!(r.header("accept-encoding"), Some("gzip"));
}

#[test]
fn brave_default_key_and_gzip_reply() {
    let srv = serve(|_| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(BRAVE_REPLY.as_bytes()).unwrap();
        let mut r = Reply::json(200, "").with_header("Content-Encoding", "gzip");
        r.body = enc.finish().unwrap();
        r
    });
    let brave = BraveSearch::with_base_url(&srv.base, Some("env-key".into()), T);
    let out = brave.search("llama 3.1 & friends", None).unwrap();
    assert_eq!(out, brave_expected());
    assert_eq!(
        srv.requests()[0].header("x-subscription-token"),
        Some("env-key")
    );
}

#[test]
fn brave_top_k_and_reply_without_mixed() {
    let srv = serve(|_| Reply::json(200, BRAVE_REPLY));
    let brave = BraveSearch::with_base_url(&srv.base, Some("k".into()), T).with_top_k(1);
    let out = brave.search("q", None).unwrap();
    assert_eq!(out["top_k"].as_array().unwrap().len(), 1);

    let mut reply: Value = serde_json::from_str(BRAVE_REPLY).unwrap();
    reply.as_object_mut().unwrap().remove("mixed");
    reply.as_object_mut().unwrap().remove("query");
    let out = ferrollama_tools::brave::clean_response(&reply, "my query", 2).unwrap();
    assert_eq!(out["query"], "my query");
    assert_eq!(out["top_k"].as_array().unwrap().len(), 2);
    assert_eq!(out["top_k"][1]["title"], "Llama 3.1 - Wikipedia");
    // Dangling indexes and unknown types never panic.
    let odd = json!({"mixed": {"main": [{"type": "web", "index": 99}, {"type": "web"},
        {"type": "discussions", "all": true}, {"type": "faq"}, 7]}, "web": {"results": []}});
    let out = ferrollama_tools::brave::clean_response(&odd, "q", 10).unwrap();
    assert_eq!(out["top_k"], json!([[]]));
}

#[test]
fn brave_missing_key_sends_nothing() {
    let srv = serve(|_| Reply::json(200, BRAVE_REPLY));
    let brave = BraveSearch::with_base_url(&srv.base, None, T);
    let err = brave.search("x", Some("  ")).unwrap_err();
    assert!(
        matches!(
            err,
            ToolError::MissingKey {
                env: "BRAVE_SEARCH_API_KEY",
                field: "brave_search_api_key",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("BRAVE_SEARCH_API_KEY"));
    assert!(srv.requests().is_empty());
}

#[test]
fn brave_http_errors_carry_status_and_excerpt() {
    let srv = serve(|r| {
        if r.header("x-subscription-token") == Some("bad") {
            Reply::json(
                401,
                r#"{"type":"ErrorResponse","error":{"code":"SUBSCRIPTION_TOKEN_INVALID","detail":"The provided subscription token is invalid.","status":401}}"#,
            )
        } else {
            Reply::json(500, "internal\n  error")
        }
    });
    let brave = BraveSearch::with_base_url(&srv.base, None, T);
    let err = brave.search("x", Some("bad")).unwrap_err();
    let ToolError::Remote { tool, message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*tool, "brave_search");
    assert!(message.starts_with("HTTP 401: "), "{message}");
    assert!(message.contains("SUBSCRIPTION_TOKEN_INVALID"), "{message}");
    let err = brave.search("x", Some("good")).unwrap_err();
    assert!(
        matches!(&err, ToolError::Remote { message, .. } if message == "HTTP 500: internal error"),
        "{err:?}"
    );
}

#[test]
fn brave_timeout_and_malformed() {
    let slow = serve(|_| Reply::json(200, BRAVE_REPLY).delayed(Duration::from_secs(3)));
    let brave =
        BraveSearch::with_base_url(&slow.base, Some("k".into()), Duration::from_millis(300));
    let t0 = Instant::now();
    let err = brave.search("x", None).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(
        matches!(&err, ToolError::Remote { message, .. } if message.contains("timed out")),
        "{err:?}"
    );

    let bad = serve(|_| Reply::json(200, "<html>not json</html>"));
    let brave = BraveSearch::with_base_url(&bad.base, Some("k".into()), T);
    let err = brave.search("x", None).unwrap_err();
    assert!(
        matches!(&err, ToolError::Malformed { tool: "brave_search", message } if message.contains("<html>")),
        "{err:?}"
    );
    let arr = serve(|_| Reply::json(200, "[1,2]"));
    let brave = BraveSearch::with_base_url(&arr.base, Some("k".into()), T);
    assert!(matches!(
        brave.search("x", None),
        Err(ToolError::Malformed { .. })
    ));
    // Nothing listens here: a connection error, not a panic.
    let brave = BraveSearch::with_base_url("http://127.0.0.1:9", Some("k".into()), T);
    assert!(matches!(
        brave.search("x", None),
        Err(ToolError::Remote { .. })
    ));
}

#[test]
fn brave_unicode_and_special_chars_round_trip() {
    let srv = serve(|_| Reply::json(200, "{}"));
    let brave = BraveSearch::with_base_url(&srv.base, Some("k".into()), T);
    let q = "Zürich café & co = 100% ?#+/ 日本語 \"quoted\" a+b";
    let out = brave.search(q, None).unwrap();
    assert_eq!(out, json!({"query": q, "top_k": []}));
    let r = &srv.requests()[0];
    assert_eq!(r.query, pairs(&[("q", q)]));
    assert!(!r.raw_query.contains(' ') && !r.raw_query.contains('#'));
}

/// A reply shaped like the Full Results API's `output=json` for "integrate x^2".
const WOLFRAM_REPLY: &str = r#"{"queryresult": {
  "success": true, "error": false, "numpods": 3, "datatypes": "", "timedout": "",
  "timedoutpods": "", "timing": 1.2, "parsetiming": 0.2, "parsetimedout": false,
  "recalculate": "", "id": "MSP1", "host": "https://www6b3.wolframalpha.com", "server": "6",
  "related": "https://www6b3.wolframalpha.com/api/v1/relatedQueries.jsp?id=MSPa2",
  "version": "2.6", "inputstring": "integrate x^2",
  "pods": [
    {"title": "Indefinite integral", "scanner": "Integral", "id": "IndefiniteIntegral",
     "position": 100, "error": false, "numsubpods": 1, "primary": true,
     "subpods": [{"title": "", "plaintext": "integral x^2 dx = x^3/3 + constant"}],
     "expressiontypes": {"name": "Default"},
     "states": [{"name": "Step-by-step solution", "input": "IndefiniteIntegral__Step-by-step solution"}]},
    {"title": "Result", "scanner": "Simplification", "id": "Result", "position": 200,
     "error": false, "numsubpods": 1, "subpods": [{"title": "", "plaintext": "x^3/3"}],
     "infos": {"text": "info"}},
    {"title": "Plot", "scanner": "Plotter", "id": "Plot", "position": 300, "error": false,
     "numsubpods": 1, "subpods": [{"title": "", "plaintext": ""}]}
  ],
  "assumptions": {"type": "Clash", "word": "x"}
}}"#;

#[test]
fn wolfram_success_exact_request_and_cleaned_json() {
    let srv = serve(|_| Reply::json(200, WOLFRAM_REPLY));
    let wa = WolframAlpha::with_base_url(&srv.base, None, T);
    let q = "integrate x^2 & solve x+1=2 für π";
    let out = wa.query(q, Some("APP-ID&x=1")).unwrap();
    assert_eq!(
        out,
        json!({"queryresult": {
            "success": true, "inputstring": "integrate x^2",
            "pods": [
                {"title": "Indefinite integral", "primary": true,
                 "subpods": [{"title": "", "plaintext": "integral x^2 dx = x^3/3 + constant"}]},
                {"title": "Result", "subpods": [{"title": "", "plaintext": "x^3/3"}]}
            ]
        }})
    );
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/v2/query");
    assert_eq!(
        r.query,
        pairs(&[
            ("input", q),
            ("appid", "APP-ID&x=1"),
            ("format", "plaintext"),
            ("output", "json")
        ])
    );
}

#[test]
fn wolfram_api_error_missing_key_and_http_errors() {
    let srv = serve(|r| {
        let appid = r
            .query
            .iter()
            .find(|(k, _)| k == "appid")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        match appid.as_str() {
            "bad" => Reply::json(
                200,
                r#"{"queryresult": {"success": false, "error": {"code": "1", "msg": "Invalid appid"}, "numpods": 0}}"#,
            ),
            "unauth" => Reply::json(401, "Unauthorized"),
            _ => Reply::json(500, &format!("boom for appid={appid}")),
        }
    });
    let wa = WolframAlpha::with_base_url(&srv.base, None, T);
    let err = wa.query("2+2", None).unwrap_err();
    assert!(
        matches!(
            err,
            ToolError::MissingKey {
                env: "WOLFRAM_ALPHA_API_KEY",
                field: "wolfram_alpha_api_key",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(srv.requests().is_empty());

    let err = wa.query("2+2", Some("bad")).unwrap_err();
    assert!(
        matches!(&err, ToolError::Remote { tool: "wolfram_alpha", message } if message == "error 1: Invalid appid"),
        "{err:?}"
    );
    let err = wa.query("2+2", Some("unauth")).unwrap_err();
    assert!(
        matches!(&err, ToolError::Remote { message, .. } if message == "HTTP 401: Unauthorized"),
        "{err:?}"
    );
    // The key never shows in an error, even when the server echoes it.
    let err = wa.query("2+2", Some("s3cret-key")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("HTTP 500") && !msg.contains("s3cret"), "{msg}");
}

#[test]
fn wolfram_timeout_and_malformed() {
    let slow = serve(|_| Reply::json(200, WOLFRAM_REPLY).delayed(Duration::from_secs(3)));
    let wa = WolframAlpha::with_base_url(&slow.base, Some("k".into()), Duration::from_millis(300));
    let t0 = Instant::now();
    let err = wa.query("x", None).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(&err, ToolError::Remote { message, .. } if message.contains("timed out")),
        "{err:?}"
    );
    for body in [
        "{not json",
        "[]",
        r#"{"other": 1}"#,
        r#"{"queryresult": 3}"#,
    ] {
        let bad = serve(move |_| Reply::json(200, body));
        let wa = WolframAlpha::with_base_url(&bad.base, Some("k".into()), T);
        let err = wa.query("x", None).unwrap_err();
        assert!(
            matches!(
                err,
                ToolError::Malformed {
                    tool: "wolfram_alpha",
                    ..
                }
            ),
            "{body}: {err:?}"
        );
    }
    // Pods of odd shapes are passed through without a panic.
    let odd = json!({"queryresult": {"success": true, "pods": [1, {"title": "Result"}, {"x": 2}]}});
    let out = ferrollama_tools::wolfram::clean_response(odd).unwrap();
    assert_eq!(out["queryresult"]["pods"], json!([1, {"title": "Result"}]));
}

#[test]
fn provider_data_header() {
    let k = provider_keys(
        r#"{"brave_search_api_key": "b-1", "wolfram_alpha_api_key": " w-2 ", "other": 3}"#,
    );
    assert_eq!(k.brave.as_deref(), Some("b-1"));
    assert_eq!(k.wolfram.as_deref(), Some("w-2"));
    let k = provider_keys(r#"{"brave_search_api_key": "", "wolfram_alpha_api_key": 5}"#);
    assert_eq!(k, Default::default());
    assert_eq!(provider_keys("not json"), Default::default());
    assert_eq!(provider_keys("[1]"), Default::default());
}
