//! The Files API through the router: multipart uploads, listing with paging, retrieve,
//! content, delete, the size cap (streamed, nothing left behind) and bad input, on both
//! path prefixes.

mod common;

use std::path::Path;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use common::{KEY, call, json_call, tiny_app_full};
use ferrollama_server::agents::AgentsState;
use ferrollama_server::files::FilesState;
use ferrollama_server::{AppState, router};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const BOUNDARY: &str = "ferrollama-test-boundary-7MA4YWxkTrZu0gW";
const PREFIXES: [&str; 2] = ["/v1", "/v1/openai/v1"];

/// One part of a multipart form.
enum Part<'a> {
    Field(&'a str, &'a str),
    File {
        name: &'a str,
        filename: Option<&'a str>,
        data: &'a [u8],
    },
}

fn file<'a>(filename: &'a str, data: &'a [u8]) -> Part<'a> {
    Part::File {
        name: "file",
        filename: Some(filename),
        data,
    }
}

fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut b = Vec::new();
    for p in parts {
        b.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match p {
            Part::Field(name, value) => {
                b.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                        .as_bytes(),
                );
            }
            Part::File {
                name,
                filename,
                data,
            } => {
                let fname = filename.map_or(String::new(), |f| format!("; filename=\"{f}\""));
                b.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"{fname}\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                );
                b.extend_from_slice(data);
                b.extend_from_slice(b"\r\n");
            }
        }
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

async fn send(app: &Arc<AppState>, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let resp = router(app.clone()).oneshot(req).await.expect("response");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, bytes)
}

fn upload_request(prefix: &str, body: Body, content_length: Option<usize>) -> Request<Body> {
    let mut b = Request::builder()
        .method("POST")
        .uri(format!("{prefix}/files"))
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        );
    if let Some(n) = content_length {
        b = b.header(header::CONTENT_LENGTH, n);
    }
    b.body(body).expect("request")
}

/// POSTs a form to `{prefix}/files`; the answer parsed as JSON.
async fn upload(app: &Arc<AppState>, prefix: &str, parts: &[Part<'_>]) -> (StatusCode, Value) {
    let body = form(parts);
    let (s, _, b) = send(app, upload_request(prefix, Body::from(body), None)).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn app() -> Arc<AppState> {
    app_with(FilesState::in_memory().expect("files"), 1 << 20)
}

fn app_with(files: FilesState, cap: u64) -> Arc<AppState> {
    tiny_app_full(AgentsState::in_memory().expect("agents"), files, cap, 256)
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|f| f["id"].as_str().expect("id").to_string())
        .collect()
}

/// Entries of a folder, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_error(v: &Value, status: StatusCode, s: StatusCode, needle: &str) {
    assert_eq!(s, status, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "'{needle}' not in '{msg}'");
    assert!(v["error"]["type"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_list_retrieve_content_delete_on_both_prefixes() {
    let app = app();
    for prefix in PREFIXES {
        // Larger than the server-wide body limit (64 KiB here): file uploads have their own.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (s, f) = upload(
            &app,
            prefix,
            &[
                Part::Field("purpose", "assistants"),
                file("notes.bin", &data),
            ],
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{f}");
        let id = f["id"].as_str().expect("id").to_string();
        assert!(id.starts_with("file-"), "{id}");
        assert_eq!(f["object"], "file");
        assert_eq!(f["bytes"], 200_000);
        assert_eq!(f["filename"], "notes.bin");
        assert_eq!(f["purpose"], "assistants");
        assert_eq!(f["status"], "processed");
        assert!(f["expires_at"].is_null());
        assert!(f["created_at"].as_i64().expect("created_at") > 1_700_000_000);

        let (s, got) = json_call(&app, "GET", &format!("{prefix}/files/{id}"), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(got, f);

        let (s, list) = json_call(&app, "GET", &format!("{prefix}/files"), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(list["object"], "list");
        assert_eq!(ids(&list)[0], id, "newest first");
        assert_eq!(list["first_id"], id.as_str());
        assert_eq!(list["has_more"], false);

        let req = Request::builder()
            .uri(format!("{prefix}/files/{id}/content"))
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
            .body(Body::empty())
            .expect("request");
        let (s, h, bytes) = send(&app, req).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h[header::CONTENT_TYPE], "application/octet-stream");
        assert_eq!(h[header::CONTENT_LENGTH], "200000");
        assert!(bytes[..] == data[..], "content differs from the upload");

        let (s, d) = json_call(&app, "DELETE", &format!("{prefix}/files/{id}"), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            d,
            serde_json::json!({"id": id, "object": "file", "deleted": true})
        );

        for (method, path) in [
            ("GET", format!("{prefix}/files/{id}")),
            ("GET", format!("{prefix}/files/{id}/content")),
            ("DELETE", format!("{prefix}/files/{id}")),
        ] {
            let (s, v) = json_call(&app, method, &path, None).await;
            assert_error(&v, StatusCode::NOT_FOUND, s, &id);
        }
        let (_, list) = json_call(&app, "GET", &format!("{prefix}/files"), None).await;
        assert!(!ids(&list).contains(&id));
    }
    // The two prefixes share one store.
    let (_, f) = upload(
        &app,
        "/v1",
        &[Part::Field("purpose", "batch"), file("x.jsonl", b"{}\n")],
    )
    .await;
    let id = f["id"].as_str().expect("id");
    let (s, got) = json_call(&app, "GET", &format!("/v1/openai/v1/files/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["purpose"], "batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_with_limit_order_after_and_purpose() {
    let app = app();
    let mut all = Vec::new();
    for i in 0..5 {
        let purpose = if i % 2 == 0 { "user_data" } else { "fine-tune" };
        let name = format!("f{i}.txt");
        let (s, f) = upload(
            &app,
            "/v1",
            &[
                file(&name, format!("{i}").as_bytes()),
                Part::Field("purpose", purpose),
            ],
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{f}");
        all.push(f["id"].as_str().expect("id").to_string());
    }
    let mut rev = all.clone();
    rev.reverse();

    // Default: newest first, everything.
    let (_, list) = json_call(&app, "GET", "/v1/files", None).await;
    assert_eq!(ids(&list), rev);

    for (order, expected) in [("asc", &all), ("desc", &rev)] {
        let mut seen = Vec::new();
        let mut url = format!("/v1/files?limit=2&order={order}");
        loop {
            let (s, page) = json_call(&app, "GET", &url, None).await;
            assert_eq!(s, StatusCode::OK, "{page}");
            let got = ids(&page);
            assert!(got.len() <= 2);
            assert_eq!(page["first_id"], got[0].as_str());
            assert_eq!(page["last_id"], got[got.len() - 1].as_str());
            seen.extend(got);
            if page["has_more"] == false {
                break;
            }
            url = format!(
                "/v1/files?limit=2&order={order}&after={}",
                page["last_id"].as_str().expect("last_id")
            );
        }
        assert_eq!(&seen, expected, "{order}");
    }

    let (_, ft) = json_call(&app, "GET", "/v1/files?purpose=fine-tune&order=asc", None).await;
    assert_eq!(ids(&ft), vec![all[1].clone(), all[3].clone()]);
    // A purpose only OpenAI's own outputs have: valid, and nothing has it.
    let (s, out) = json_call(&app, "GET", "/v1/files?purpose=batch_output", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(ids(&out).is_empty());
    assert!(out["first_id"].is_null());
    let (_, out) = json_call(
        &app,
        "GET",
        "/v1/openai/v1/files?purpose=batch_output",
        None,
    )
    .await;
    assert_eq!(out["first_id"], "", "Llama Stack types the ids as strings");

    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=many", "limit"),
        ("order=sideways", "order"),
        ("purpose=homework", "purpose"),
        ("after=file-000000000000000000000000", "after"),
    ] {
        let (s, v) = json_call(&app, "GET", &format!("/v1/files?{query}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert_eq!(v["error"]["param"], param, "{query}: {v}");
    }
    let (s, list) = json_call(&app, "GET", "/v1/files?limit=10000", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ids(&list).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_and_lose_nothing() {
    let app = app();
    let (s, kept) = upload(
        &app,
        "/v1",
        &[
            Part::Field("purpose", "vision"),
            file("kept.png", b"\x89PNG"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let kept_id = kept["id"].as_str().expect("id").to_string();

    let cases: Vec<(Vec<Part<'_>>, &str, &str)> = vec![
        (
            vec![Part::Field("purpose", "assistants")],
            "file",
            "no `file` field",
        ),
        (vec![file("a.txt", b"abc")], "purpose", "no `purpose` field"),
        (
            vec![Part::Field("purpose", "homework"), file("a.txt", b"abc")],
            "purpose",
            "must be one of assistants, batch, fine-tune, vision, user_data, evals",
        ),
        (
            vec![Part::Field("purpose", "assistants"), file("", b"abc")],
            "file",
            "filename is empty",
        ),
        (
            vec![
                Part::Field("purpose", "assistants"),
                Part::File {
                    name: "file",
                    filename: None,
                    data: b"abc",
                },
            ],
            "file",
            "not a plain field",
        ),
        (
            vec![
                Part::Field("purpose", "assistants"),
                file("a", b"1"),
                file("b", b"2"),
            ],
            "file",
            "more than one `file`",
        ),
        (
            vec![
                Part::Field("purpose", "assistants"),
                Part::Field("expires_after[anchor]", "created_at"),
                Part::Field("expires_after[seconds]", "10"),
                file("a.txt", b"abc"),
            ],
            "expires_after",
            "from 3600 to 2592000",
        ),
        (
            vec![
                Part::Field("purpose", "assistants"),
                Part::Field("expires_after[seconds]", "7200"),
                file("a.txt", b"abc"),
            ],
            "expires_after",
            "needs both",
        ),
    ];
    for (parts, param, needle) in cases {
        let (s, v) = upload(&app, "/v1", &parts).await;
        assert_error(&v, StatusCode::BAD_REQUEST, s, needle);
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    // Not multipart at all.
    let (s, v) = json_call(
        &app,
        "POST",
        "/v1/files",
        Some(serde_json::json!({"purpose": "assistants"})),
    )
    .await;
    assert_error(&v, StatusCode::BAD_REQUEST, s, "multipart/form-data");
    // A body that stops mid-part.
    let mut cut = form(&[
        Part::Field("purpose", "assistants"),
        file("a.txt", &[b'x'; 5000]),
    ]);
    cut.truncate(cut.len() - 100);
    let (s, _, b) = send(&app, upload_request("/v1", Body::from(cut), None)).await;
    assert!(s.is_client_error(), "{s}: {}", String::from_utf8_lossy(&b));

    // Only the first file exists, intact.
    let (_, list) = json_call(&app, "GET", "/v1/files", None).await;
    assert_eq!(ids(&list), vec![kept_id.clone()]);
    let (s, b) = call(&app, "GET", &format!("/v1/files/{kept_id}/content"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&b[..], b"\x89PNG");

    // expires_after in range: kept, with its expiry.
    let (s, f) = upload(
        &app,
        "/v1",
        &[
            Part::Field("purpose", "batch"),
            Part::Field("expires_after[anchor]", "created_at"),
            Part::Field("expires_after[seconds]", "3600"),
            file("b.jsonl", b"{}"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert_eq!(
        f["expires_at"].as_i64(),
        f["created_at"].as_i64().map(|t| t + 3600)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_cap_is_413_and_leaves_nothing_on_disk() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cap = 10_000u64;
    let app = app_with(FilesState::open(tmp.path()).expect("files"), cap);
    let files_dir = tmp.path().join(ferrollama_rag::sqlite::FILES_DIR);

    // Exactly the cap is accepted.
    let exact = vec![b'a'; cap as usize];
    let (s, f) = upload(
        &app,
        "/v1",
        &[
            Part::Field("purpose", "user_data"),
            file("exact.txt", &exact),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{f}");
    let id = f["id"].as_str().expect("id").to_string();
    assert_eq!(entries(&files_dir), vec![id.clone()]);

    // One byte more, found while streaming (no Content-Length).
    let over = vec![b'b'; cap as usize + 1];
    for prefix in PREFIXES {
        let (s, v) = upload(
            &app,
            prefix,
            &[Part::Field("purpose", "user_data"), file("over.txt", &over)],
        )
        .await;
        assert_error(
            &v,
            StatusCode::PAYLOAD_TOO_LARGE,
            s,
            "larger than this server's limit of 10000 bytes",
        );
        assert_eq!(v["error"]["code"], "file_too_large");
        assert_eq!(
            entries(&files_dir),
            vec![id.clone()],
            "nothing partial left"
        );
    }

    // A large body streamed in chunks, the cap crossed mid-stream after chunks were written.
    let big = form(&[
        Part::Field("purpose", "user_data"),
        file("big.bin", &vec![b'c'; 3 << 20]),
    ]);
    let chunks: Vec<Result<Bytes, std::io::Error>> = big
        .chunks(4096)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let (s, _, b) = send(&app, upload_request("/v1", body, None)).await;
    assert_eq!(
        s,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert_eq!(entries(&files_dir), vec![id.clone()]);

    // A declared length far over the cap is refused before reading.
    let n = big.len();
    let (s, _, b) = send(&app, upload_request("/v1", Body::from(big), Some(n))).await;
    assert_eq!(
        s,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert_eq!(entries(&files_dir), vec![id.clone()]);

    // The stored file is untouched.
    let (s, b) = call(&app, "GET", &format!("/v1/files/{id}/content"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b[..] == exact[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_survive_a_restart_on_disk() {
    let tmp = tempfile::tempdir().expect("tmp");
    let id = {
        let app = app_with(FilesState::open(tmp.path()).expect("files"), 1 << 20);
        let (s, f) = upload(
            &app,
            "/v1/openai/v1",
            &[
                Part::Field("purpose", "evals"),
                file("evals.jsonl", b"{\"q\": 1}\n"),
            ],
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{f}");
        f["id"].as_str().expect("id").to_string()
    };
    let app = app_with(FilesState::open(tmp.path()).expect("reopen"), 1 << 20);
    let (s, f) = json_call(&app, "GET", &format!("/v1/files/{id}"), None).await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert_eq!(f["filename"], "evals.jsonl");
    assert_eq!(f["purpose"], "evals");
    assert_eq!(
        app.files.read_bytes(&id).await.expect("read"),
        Some(b"{\"q\": 1}\n".to_vec()),
        "later stages read a file's bytes by id"
    );
    assert_eq!(
        app.files
            .read_bytes("file-000000000000000000000000")
            .await
            .expect("read"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_ids_are_404() {
    let app = app();
    for id in [
        "file-000000000000000000000000",
        "nope",
        "..%2F..%2Fetc%2Fpasswd",
        "file-..%2Frag.sqlite",
    ] {
        for (method, path) in [
            ("GET", format!("/v1/files/{id}")),
            ("GET", format!("/v1/files/{id}/content")),
            ("DELETE", format!("/v1/openai/v1/files/{id}")),
        ] {
            let (s, v) = json_call(&app, method, &path, None).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {v}");
            assert_eq!(v["error"]["code"], "not_found", "{v}");
        }
    }
    // Without the key, nothing.
    let req = Request::builder()
        .method("POST")
        .uri("/v1/files")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(form(&[
            Part::Field("purpose", "assistants"),
            file("a", b"a"),
        ])))
        .expect("request");
    let (s, _, _) = send(&app, req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, list) = json_call(&app, "GET", "/v1/files", None).await;
    assert!(ids(&list).is_empty());
}
