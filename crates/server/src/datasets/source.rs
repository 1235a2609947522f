//! A dataset's `source` → its rows: `{"type": "rows", "rows": [...]}`, or `{"type":
//! "uri", "uri": ...}` naming an absolute local path or `file://` URI (JSONL, JSON or CSV
//! by extension), a `data:` URL (CSV or JSON Lines by media type), or an uploaded file's
//! id (`file-...`, by its filename's extension).
//!
//! This server never reaches the network, so `huggingface://` and `http(s)://` sources
//! are refused with what to do instead. Local paths are read with the server's rights:
//! only files with a dataset extension are read, and the API key guards the route.

use std::path::PathBuf;

use ferrollama_eval::scoring::Row;
use serde_json::Value;

use super::parse::{self, Format, ParseError};
use crate::error::ApiError;
use crate::state::AppState;

const OFFLINE_HINT: &str = "register the rows themselves (source {\"type\": \"rows\", \"rows\": [...]}), \
     an absolute path or file:// URI of a .jsonl / .json / .csv file on the server, a data: URL \
     (data:text/csv;base64,... or data:application/jsonl;base64,...), or the id of a file uploaded \
     with POST /v1/files";

/// The rows `source` holds.
pub async fn load(app: &AppState, source: &Value) -> Result<Vec<Row>, ApiError> {
    let kind = source.get("type").and_then(Value::as_str);
    match kind {
        Some("rows") => {
            let rows = source
                .get("rows")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "source",
                        "a rows source needs `rows`, a list of objects",
                    )
                })?;
            rows.iter()
                .enumerate()
                .map(|(i, r)| {
                    r.as_object().cloned().ok_or_else(|| {
                        ApiError::invalid_param(
                            "source",
                            format!("source.rows[{i}] is not a JSON object"),
                        )
                    })
                })
                .collect()
        }
        Some("uri") => {
            let uri = source.get("uri").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid_param("source", "a uri source needs `uri`, a string")
            })?;
            load_uri(app, uri).await
        }
        _ => Err(ApiError::invalid_param(
            "source",
            "source.type must be \"rows\" or \"uri\"",
        )),
    }
}

fn rows_error(what: &str, e: ParseError) -> ApiError {
    ApiError::invalid_param("source", format!("{what}: {e}"))
}

async fn load_uri(app: &AppState, uri: &str) -> Result<Vec<Row>, ApiError> {
    let lower = uri.to_ascii_lowercase();
    if lower.starts_with("data:") {
        let (media, bytes) = parse::data_url(uri).map_err(|e| rows_error("the data: URL", e))?;
        let format = Format::of_media_type(&media).ok_or_else(|| {
            ApiError::invalid_param(
                "source",
                format!(
                    "the data: URL's media type '{media}' is neither CSV nor JSON Lines; use \
                     data:text/csv;... or data:application/jsonl;..."
                ),
            )
        })?;
        return parse::parse_rows(&bytes, format).map_err(|e| rows_error("the data: URL", e));
    }
    for scheme in ["huggingface://", "hf://", "http://", "https://"] {
        if lower.starts_with(scheme) {
            return Err(ApiError::invalid_param(
                "source",
                format!(
                    "{scheme} sources are not supported: this server works offline and does not \
                     download datasets; {OFFLINE_HINT}"
                ),
            ));
        }
    }
    if let Some(rest) = uri.strip_prefix("file://") {
        // file:///abs/path or file://localhost/abs/path
        let path = rest.strip_prefix("localhost").unwrap_or(rest);
        let path = String::from_utf8(parse::percent_decode(path))
            .map_err(|_| ApiError::invalid_param("source", "the file:// path is not UTF-8"))?;
        return load_path(app, PathBuf::from(path)).await;
    }
    if uri.starts_with('/') {
        return load_path(app, PathBuf::from(uri)).await;
    }
    if uri.starts_with("file-") && !uri.contains('/') {
        return load_file_id(app, uri).await;
    }
    Err(ApiError::invalid_param(
        "source",
        format!("the uri '{uri}' is not one this server reads; {OFFLINE_HINT}"),
    ))
}

async fn load_path(app: &AppState, path: PathBuf) -> Result<Vec<Row>, ApiError> {
    let shown = path.display().to_string();
    if !path.is_absolute() {
        return Err(ApiError::invalid_param(
            "source",
            format!("'{shown}' is not an absolute path"),
        ));
    }
    let format = Format::of_name(&shown).ok_or_else(|| {
        ApiError::invalid_param(
            "source",
            format!("'{shown}': the file must end in .jsonl, .ndjson, .json or .csv"),
        )
    })?;
    let cap = app.limits.max_file_size;
    let read = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let meta = std::fs::metadata(&path).map_err(|e| e.to_string())?;
        if meta.len() > cap {
            return Err(format!(
                "it is larger than this server's file limit ({cap} bytes)"
            ));
        }
        std::fs::read(&path).map_err(|e| e.to_string())
    })
    .await
    .map_err(ApiError::internal)?;
    let bytes =
        read.map_err(|e| ApiError::invalid_param("source", format!("cannot read '{shown}': {e}")))?;
    parse::parse_rows(&bytes, format).map_err(|e| rows_error(&shown, e))
}

async fn load_file_id(app: &AppState, id: &str) -> Result<Vec<Row>, ApiError> {
    let f = app
        .files
        .get(id)
        .await
        .map_err(|e| ApiError::internal(format!("file store: {e}")))?
        .ok_or_else(|| {
            ApiError::invalid_param("source", format!("no uploaded file has the id '{id}'"))
        })?;
    let format = Format::of_name(&f.filename).ok_or_else(|| {
        ApiError::invalid_param(
            "source",
            format!(
                "the file '{id}' ({}) must be named .jsonl, .ndjson, .json or .csv",
                f.filename
            ),
        )
    })?;
    let bytes = app
        .files
        .read_bytes(id)
        .await
        .map_err(|e| ApiError::internal(format!("file store: {e}")))?
        .ok_or_else(|| {
            ApiError::invalid_param("source", format!("no uploaded file has the id '{id}'"))
        })?;
    parse::parse_rows(&bytes, format).map_err(|e| rows_error(&f.filename, e))
}
