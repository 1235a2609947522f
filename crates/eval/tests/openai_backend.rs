#![allow(clippy::unwrap_used)]
//! The HTTP backend against a stand-in OpenAI-compatible server: it asks as lm-eval's
//! local-completions does (echo, logprobs 1, max_tokens 0, then 1 once refused), finds the
//! continuation's tokens by text offset, and cuts generations at the stop strings.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrollama_eval::{Backend, Context, OpenAiBackend};
use serde_json::{Value, json};

/// Splits a prompt into word tokens (each but the first starting with its space), with
/// log-probability −len/2, the first token's null, and " x" not the top token.
fn echo_reply(prompt: &str) -> Value {
    let mut tokens: Vec<(usize, String)> = Vec::new();
    for (i, c) in prompt.char_indices() {
        if i == 0 || c == ' ' {
            tokens.push((prompt[..i].chars().count(), String::new()));
        }
        tokens.last_mut().unwrap().1.push(c);
    }
    // max_tokens 1: one generated token past the prompt, which must not be counted.
    tokens.push((prompt.chars().count(), ".".into()));
    let lps: Vec<Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, (_, t))| {
            if i == 0 {
                Value::Null
            } else {
                json!(-(t.chars().count() as f64) / 2.0)
            }
        })
        .collect();
    let tops: Vec<Value> = tokens
        .iter()
        .zip(&lps)
        .map(|((_, t), lp)| match lp.as_f64() {
            None => Value::Null,
            Some(_) if t == " x" => json!({" y": -0.1}),
            Some(l) => json!({ t.clone(): l }),
        })
        .collect();
    json!({"choices": [{"index": 0, "text": format!("{prompt}."), "logprobs": {
        "tokens": tokens.iter().map(|t| t.1.clone()).collect::<Vec<_>>(),
        "text_offset": tokens.iter().map(|t| t.0).collect::<Vec<_>>(),
        "token_logprobs": lps,
        "top_logprobs": tops,
    }}]})
}

/// Each request's path and JSON body, in order.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// Serves on a free port; every request body is recorded.
fn serve() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let req: Value = serde_json::from_slice(&body).unwrap();
            log.lock().unwrap().push((path.clone(), req.clone()));
            let (status, reply) = if req["max_tokens"] == 0 {
                (
                    400,
                    json!({"error": {"message": "max_tokens must be at least 1"}}),
                )
            } else if req["echo"] == true {
                (200, echo_reply(req["prompt"].as_str().unwrap()))
            } else {
                (
                    200,
                    json!({"choices": [{"index": 0, "text": " 5\n\nQuestion: and more"}]}),
                )
            };
            let text = reply.to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, seen)
}

#[test]
fn scores_by_echoed_logprobs_and_generates() {
    let (url, seen) = serve();
    let mut b = OpenAiBackend::new(&url, "tiny", None, Duration::from_secs(10));
    // The context's trailing space moves into the continuation: prompts "The sky is blue"
    // and "The sky is green x"; the continuations are the tokens from character 10.
    let lls = b
        .loglikelihood(
            &Context::Text("The sky is ".into()),
            &["blue".into(), "green x".into()],
        )
        .unwrap();
    assert_eq!(lls[0].ll, -2.5); // " blue"
    assert!(lls[0].is_greedy);
    assert_eq!(lls[1].ll, -4.0); // " green" −3, " x" −1
    assert!(!lls[1].is_greedy);
    {
        let seen = seen.lock().unwrap();
        // max_tokens 0 refused once, then 1 for every request.
        let max: Vec<i64> = seen
            .iter()
            .map(|(_, r)| r["max_tokens"].as_i64().unwrap())
            .collect();
        assert_eq!(max, [0, 1, 1]);
        let (path, r) = &seen[1];
        assert_eq!(path, "/v1/completions");
        assert_eq!(r["prompt"], "The sky is blue");
        assert_eq!(r["echo"], true);
        assert_eq!(r["logprobs"], 1);
        assert_eq!(r["model"], "tiny");
    }
    // Rolling: a first token without a log-probability (no BOS before it) is an error,
    // not silently dropped.
    let e = b.loglikelihood_rolling("a bb ccc").unwrap_err();
    assert!(e.to_string().contains("no log-probability"), "{e}");
    // Generation is cut at the stop strings, which are also sent.
    let until = vec!["Question:".to_string(), "\n\n".to_string()];
    let g = b
        .generate(&Context::Text("Q: 2+3?\nA:".into()), &until, 8)
        .unwrap();
    assert_eq!(g, " 5");
    let seen = seen.lock().unwrap();
    let (_, r) = seen.last().unwrap();
    assert_eq!(r["stop"], json!(["Question:", "\n\n"]));
    assert_eq!(r["max_tokens"], 8);
    assert_eq!(r["temperature"], 0.0);
}
