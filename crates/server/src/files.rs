//! The OpenAI Files API on `/v1/files` and the Llama Stack path `/v1/openai/v1/files`:
//! multipart upload, list, retrieve, content and delete, over the retrieval crate's
//! [`Store`] (SQLite and files under the data folder by default).
//!
//! Uploads are streamed: each chunk of the `file` part goes through a bounded channel to a
//! blocking writer into the store's temporary blob, so memory stays flat whatever the size,
//! and the size cap (`Limits::max_file_size`, `serve --max-file-size`) is enforced as bytes
//! arrive; an upload over it is answered 413 and its partial bytes are removed before the
//! answer goes out. These routes lift the server-wide body limit (`Limits::max_body`) for
//! themselves: the file cap replaces it, and the form's other fields get a small budget of
//! their own. Content is streamed back the same way.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Multipart, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrollama_rag::files::{DEFAULT_LIMIT, MAX_LIMIT};
use ferrollama_rag::{
    FileContent, FileObject, FileQuery, NewFile, Order, Purpose, SqliteStore, Store, StoreError,
    Upload,
};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// Upload chunks queued between the request body and the disk writer (backpressure: a
/// slow disk slows the upload instead of filling memory).
const WRITE_QUEUE: usize = 8;

/// Bytes per read when streaming content back.
const READ_CHUNK: usize = 256 * 1024;

/// What the form's fields other than `file` may hold together (`purpose`,
/// `expires_after[...]`, and any field we ignore).
const FIELDS_BUDGET: usize = 64 * 1024;

/// Most parts in one upload form.
const MAX_PARTS: usize = 32;

/// Longest filename kept, in bytes.
const MAX_FILENAME: usize = 1024;

/// A declared body this much larger than the file cap cannot hold an acceptable upload
/// (the form's other parts are far smaller); it is refused before any byte is read.
const FORM_SLACK: u64 = 1 << 20;

/// OpenAI's bounds on `expires_after[seconds]`: one hour to thirty days.
const EXPIRES_AFTER: std::ops::RangeInclusive<u64> = 3600..=2_592_000;

/// File purposes OpenAI reports on files it made itself: a list filter naming one is
/// valid and finds nothing here (no such files are ever uploaded).
const OUTPUT_PURPOSES: [&str; 3] = ["assistants_output", "batch_output", "fine-tune-results"];

/// The uploaded files every handler shares.
#[derive(Debug, Clone)]
pub struct FilesState {
    /// Where files live (SQLite + blobs, or PostgreSQL).
    pub store: Arc<dyn Store>,
    /// Vector stores, their files and chunks (the same database).
    pub vectors: Arc<dyn ferrollama_rag::VectorDb>,
    /// The ingestion worker, started on first use (see [`crate::vector_stores`]).
    pub ingest: Arc<std::sync::OnceLock<ferrollama_rag::ingest::Ingestor>>,
}

impl FilesState {
    /// Files kept in `dir` (`dir/rag.sqlite` and `dir/files/`), created if missing.
    pub fn open(dir: &Path) -> Result<FilesState, StoreError> {
        Ok(FilesState::with_sqlite(SqliteStore::open(dir)?))
    }

    /// Files that live as long as the process (`serve --data-dir :memory:`, tests):
    /// metadata in memory, bytes in a private temporary folder removed at exit, so uploads
    /// still stream to disk rather than into memory.
    pub fn in_memory() -> Result<FilesState, StoreError> {
        Ok(FilesState::with_sqlite(SqliteStore::open_in_memory()?))
    }

    /// Files and vector stores in one SQLite store.
    pub fn with_sqlite(store: SqliteStore) -> FilesState {
        let store = Arc::new(store);
        FilesState {
            store: store.clone(),
            vectors: store,
            ingest: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Files and vector stores in PostgreSQL (`serve --store postgres://...`): the replicas
    /// sharing the database share every file, store and chunk.
    pub fn with_postgres(store: ferrollama_rag::PgStore) -> FilesState {
        let store = Arc::new(store);
        FilesState {
            store: store.clone(),
            vectors: store,
            ingest: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Connects to PostgreSQL at `url` (see [`FilesState::with_postgres`]).
    pub fn connect_postgres(url: &str) -> Result<FilesState, StoreError> {
        Ok(FilesState::with_postgres(ferrollama_rag::PgStore::connect(
            url,
        )?))
    }

    /// A file's metadata (`None`: no such file), off the async workers.
    pub async fn get(&self, id: &str) -> Result<Option<FileObject>, StoreError> {
        let (store, id) = (self.store.clone(), id.to_string());
        join(tokio::task::spawn_blocking(move || store.get_file(&id)).await)
    }

    /// A file's whole content (`None`: no such file), for ingestion by later stages such
    /// as vector stores; off the async workers.
    pub async fn read_bytes(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (store, id) = (self.store.clone(), id.to_string());
        join(tokio::task::spawn_blocking(move || store.read_content(&id)).await)
    }
}

/// A blocking task's result; a panicked task becomes an I/O error (the store is intact:
/// every write is one statement or one rename).
fn join<T>(r: Result<Result<T, StoreError>, tokio::task::JoinError>) -> Result<T, StoreError> {
    r.unwrap_or_else(|e| {
        Err(StoreError::Io {
            path: "<files task>".into(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// Runs a blocking store call off the async workers; store failures become answers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    join(tokio::task::spawn_blocking(f).await).map_err(store_error)
}

/// A store failure: a disk that is full is 507; anything else is ours (500, detail logged).
fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
            disk_full()
        }
        e => ApiError::internal(format!("file store: {e}")),
    }
}

fn disk_full() -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "server_error",
        "not enough disk space to store the file",
    )
}

/// 404 in OpenAI's words.
fn not_found(id: &str) -> ApiError {
    ApiError {
        param: Some("file_id".into()),
        code: Some("not_found"),
        ..ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("No such File object: {id}"),
        )
    }
}

/// 413 for an upload over the cap.
fn too_large(cap: u64) -> ApiError {
    let unit = human_size(cap).map_or(String::new(), |h| format!(" ({h})"));
    ApiError {
        param: Some("file".into()),
        code: Some("file_too_large"),
        ..ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!(
                "the file is larger than this server's limit of {cap} bytes{unit}; \
                 the operator can raise it with `serve --max-file-size`"
            ),
        )
    }
}

/// `n` in whole GiB, MiB or KiB, where it is one.
fn human_size(n: u64) -> Option<String> {
    [(30, "GiB"), (20, "MiB"), (10, "KiB")]
        .into_iter()
        .find(|&(shift, _)| n >= 1 << shift && n.is_multiple_of(1 << shift))
        .map(|(shift, unit)| format!("{} {unit}", n >> shift))
}

/// A malformed multipart body (or one that stopped mid-way).
fn multipart_error(e: MultipartError) -> ApiError {
    ApiError::new(
        e.status(),
        "invalid_request_error",
        format!("malformed multipart/form-data body: {}", e.body_text()),
    )
}

/// The File object as OpenAI returns it (`status` is always `processed`: a file is usable
/// as soon as its upload returns).
pub fn file_json(f: &FileObject) -> Value {
    json!({
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": f.created_at,
        "expires_at": f.expires_at,
        "filename": f.filename,
        "purpose": f.purpose.as_str(),
        "status": "processed",
        "status_details": null,
    })
}

fn purposes() -> String {
    Purpose::ALL.map(Purpose::as_str).join(", ")
}

/// The file id in the path.
fn path_id(id: Result<UrlPath<String>, PathRejection>) -> Result<String, ApiError> {
    let UrlPath(id) =
        id.map_err(|_| ApiError::invalid("the file id in the path is not valid UTF-8"))?;
    Ok(id)
}

/// `POST /v1/files`: a multipart form with `file` (the bytes, with a filename) and
/// `purpose`; optionally `expires_after[anchor]=created_at` and `expires_after[seconds]`.
pub async fn upload(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let cap = app.limits.max_file_size;
    // A declared length that cannot fit is refused before anything is read or written.
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        && len > cap.saturating_add(FORM_SLACK)
    {
        return Err(too_large(cap));
    }
    let mut form = form.map_err(|e| {
        ApiError::invalid(format!(
            "expected a multipart/form-data body with the fields `file` and `purpose` ({})",
            e.body_text()
        ))
    })?;

    let mut purpose: Option<Purpose> = None;
    let mut anchor: Option<String> = None;
    let mut seconds: Option<String> = None;
    let mut file: Option<(Box<dyn Upload>, String)> = None;
    let mut budget = FIELDS_BUDGET;
    let mut parts = 0;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        parts += 1;
        if parts > MAX_PARTS {
            return Err(ApiError::invalid(format!(
                "the upload form has more than {MAX_PARTS} parts"
            )));
        }
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" => {
                if file.is_some() {
                    return Err(ApiError::invalid_param(
                        "file",
                        "the form has more than one `file`; upload one file per request",
                    ));
                }
                let filename = filename(&field)?;
                let up = receive(&app.files.store, field, cap).await?;
                file = Some((up, filename));
            }
            "purpose" => {
                let v = small_text(field, &mut budget, "purpose").await?;
                if purpose.is_some() {
                    return Err(ApiError::invalid_param(
                        "purpose",
                        "`purpose` is given twice",
                    ));
                }
                // Checked now, before a large `file` part that would be refused anyway.
                purpose = Some(Purpose::parse(v.trim()).ok_or_else(|| {
                    ApiError::invalid_param(
                        "purpose",
                        format!("`purpose` must be one of {}, not '{v}'", purposes()),
                    )
                })?);
            }
            "expires_after[anchor]" => anchor = Some(small_text(field, &mut budget, &name).await?),
            "expires_after[seconds]" => {
                seconds = Some(small_text(field, &mut budget, &name).await?)
            }
            // Fields OpenAI may add later are ignored, as OpenAI ignores unknown ones.
            _ => {
                small_text(field, &mut budget, &name).await?;
            }
        }
    }
    let Some(purpose) = purpose else {
        return Err(ApiError::invalid_param(
            "purpose",
            format!("the form has no `purpose` field (one of {})", purposes()),
        ));
    };
    let expires_after = expires_after(anchor, seconds)?;
    let Some((up, filename)) = file else {
        return Err(ApiError::invalid_param(
            "file",
            "the form has no `file` field: send the file's bytes as a multipart part named `file` with a filename",
        ));
    };
    let new = NewFile {
        filename,
        purpose,
        expires_after,
    };
    let f = blocking(move || up.commit(new)).await?;
    tracing::info!(id = %f.id, bytes = f.bytes, purpose = %f.purpose, "file uploaded");
    Ok(axum::Json(file_json(&f)).into_response())
}

/// The `file` part's filename: present, not blank, not absurdly long.
fn filename(field: &Field<'_>) -> Result<String, ApiError> {
    match field.file_name() {
        None => Err(ApiError::invalid_param(
            "file",
            "`file` must be a file part (Content-Disposition with a filename), not a plain field",
        )),
        Some(n) if n.trim().is_empty() => Err(ApiError::invalid_param(
            "file",
            "the file's filename is empty",
        )),
        Some(n) if n.len() > MAX_FILENAME => Err(ApiError::invalid_param(
            "file",
            format!("the file's filename is longer than {MAX_FILENAME} bytes"),
        )),
        Some(n) => Ok(n.to_string()),
    }
}

/// `expires_after[anchor]` and `[seconds]` → seconds after creation (both or neither).
fn expires_after(anchor: Option<String>, seconds: Option<String>) -> Result<Option<u64>, ApiError> {
    let param = "expires_after";
    match (anchor, seconds) {
        (None, None) => Ok(None),
        (Some(a), Some(s)) => {
            if a.trim() != "created_at" {
                return Err(ApiError::invalid_param(
                    param,
                    format!("`expires_after[anchor]` must be 'created_at', not '{a}'"),
                ));
            }
            match s.trim().parse::<u64>() {
                Ok(n) if EXPIRES_AFTER.contains(&n) => Ok(Some(n)),
                _ => Err(ApiError::invalid_param(
                    param,
                    format!(
                        "`expires_after[seconds]` must be an integer from {} to {}, not '{s}'",
                        EXPIRES_AFTER.start(),
                        EXPIRES_AFTER.end()
                    ),
                )),
            }
        }
        _ => Err(ApiError::invalid_param(
            param,
            "`expires_after` needs both `anchor` and `seconds`",
        )),
    }
}

/// A small text field, charged to the form's field budget.
async fn small_text(
    mut field: Field<'_>,
    budget: &mut usize,
    name: &str,
) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if chunk.len() > *budget {
            return Err(ApiError::invalid_param(
                name,
                format!(
                    "the form's fields other than `file` may hold at most {FIELDS_BUDGET} bytes together"
                ),
            ));
        }
        *budget -= chunk.len();
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf)
        .map_err(|_| ApiError::invalid_param(name, format!("`{name}` is not valid UTF-8")))
}

/// Streams the `file` part into a new upload, at most `cap` bytes. On any error the
/// upload is dropped here, which removes its partial bytes before the answer is sent.
async fn receive(
    store: &Arc<dyn Store>,
    mut field: Field<'_>,
    cap: u64,
) -> Result<Box<dyn Upload>, ApiError> {
    let s = store.clone();
    let up = blocking(move || s.begin_upload()).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer = tokio::task::spawn_blocking(move || {
        let mut up = up;
        while let Some(chunk) = rx.blocking_recv() {
            if let Err(e) = up.write_all(&chunk) {
                return (up, Err(e));
            }
        }
        (up, Ok(()))
    });
    let mut received: u64 = 0;
    let mut outcome = Ok(());
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                received += chunk.len() as u64;
                if received > cap {
                    outcome = Err(too_large(cap));
                    break;
                }
                if tx.send(chunk).await.is_err() {
                    // The writer stopped on an error, reported below.
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                outcome = Err(multipart_error(e));
                break;
            }
        }
    }
    drop(tx);
    let (up, written) = writer.await.map_err(ApiError::internal)?;
    outcome?;
    written.map_err(|e| {
        if e.kind() == std::io::ErrorKind::StorageFull {
            disk_full()
        } else {
            ApiError::internal(format!("writing an upload: {e}"))
        }
    })?;
    Ok(up)
}

/// The list query: `limit` (1..=10000, default 10000), `order` (`asc` | `desc`, default
/// `desc`), `after` (a file id), `purpose`. `None`: a purpose no uploaded file can have.
fn list_query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Option<FileQuery>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))?;
    let limit = crate::paging::limit(&q, DEFAULT_LIMIT, MAX_LIMIT)?;
    let order = if crate::paging::ascending(&q)? {
        Order::Asc
    } else {
        Order::Desc
    };
    let purpose = match q.get("purpose").map(String::as_str) {
        None | Some("") => None,
        Some(p) if OUTPUT_PURPOSES.contains(&p) => return Ok(None),
        Some(p) => Some(Purpose::parse(p).ok_or_else(|| {
            ApiError::invalid_param(
                "purpose",
                format!("`purpose` must be one of {}, not '{p}'", purposes()),
            )
        })?),
    };
    Ok(Some(FileQuery {
        after: q.get("after").filter(|s| !s.is_empty()).cloned(),
        limit,
        order,
        purpose,
    }))
}

/// `GET /v1/files`: uploaded files, newest first by default.
pub async fn list(
    State(app): State<Arc<AppState>>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    list_with(app, q, false).await
}

/// `GET /v1/openai/v1/files`: the same list; an empty list's `first_id` / `last_id` are ""
/// because llama-stack-client types them as strings.
pub async fn list_ls(
    State(app): State<Arc<AppState>>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    list_with(app, q, true).await
}

async fn list_with(
    app: Arc<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    ls: bool,
) -> Result<Response, ApiError> {
    let page = match list_query(q)? {
        None => ferrollama_rag::Page {
            data: Vec::new(),
            has_more: false,
            first_id: None,
            last_id: None,
        },
        Some(q) => {
            let store = app.files.store.clone();
            let after = q.after.clone();
            join(tokio::task::spawn_blocking(move || store.list_files(&q)).await).map_err(|e| {
                match e {
                    StoreError::NotFound { .. } => ApiError::invalid_param(
                        "after",
                        format!(
                            "`after` names no file: '{}'",
                            after.as_deref().unwrap_or_default()
                        ),
                    ),
                    e => store_error(e),
                }
            })?
        }
    };
    let edge = |id: Option<String>| match id {
        Some(id) => Value::String(id),
        None if ls => Value::String(String::new()),
        None => Value::Null,
    };
    Ok(axum::Json(json!({
        "object": "list",
        "data": page.data.iter().map(file_json).collect::<Vec<_>>(),
        "first_id": edge(page.first_id),
        "last_id": edge(page.last_id),
        "has_more": page.has_more,
    }))
    .into_response())
}

/// `GET /v1/files/{file_id}`: one file's metadata.
pub async fn get(
    State(app): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let f = app.files.get(&id).await.map_err(store_error)?;
    let f = f.ok_or_else(|| not_found(&id))?;
    Ok(axum::Json(file_json(&f)).into_response())
}

/// `GET /v1/files/{file_id}/content`: the file's bytes as uploaded, streamed.
pub async fn content(
    State(app): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let store = app.files.store.clone();
    let key = id.clone();
    let opened = blocking(move || store.open_content(&key)).await?;
    let FileContent { file: f, reader } = opened.ok_or_else(|| not_found(&id))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || pump(reader, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(f.bytes));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        ascii_filename(&f.filename)
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// Reads `r` to its end into `tx`, stopping early when the client has gone.
fn pump(mut r: Box<dyn Read + Send>, tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) {
    loop {
        let mut buf = vec![0u8; READ_CHUNK];
        match r.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::error!("reading a file's content: {e}");
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

/// The filename for a Content-Disposition header: printable ASCII without quotes or
/// backslashes (others become `_`).
fn ascii_filename(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `DELETE /v1/files/{file_id}`: removes the file's metadata, then its bytes.
pub async fn delete(
    State(app): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let store = app.files.store.clone();
    let key = id.clone();
    if !blocking(move || store.delete_file(&key)).await? {
        return Err(not_found(&id));
    }
    tracing::info!(id = %id, "file deleted");
    Ok(axum::Json(json!({"id": id, "object": "file", "deleted": true})).into_response())
}
