//! Documents from local files: JSONL (one JSON object a line), CSV (a header row; a column
//! whose every cell is an integer or a number becomes numbers, as the `datasets` library's
//! pandas-based CSV loader infers, and an empty cell is null). Parquet is refused with a
//! clear error: reading it would need the Arrow stack, too heavy for this binary.
//!
//! Each document keeps the line it came from so that a bad row can be named.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{EvalError, Result};

/// One row of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// 1-based line in the file (for CSV, the line the record starts on).
    pub line: usize,
    pub fields: Map<String, Value>,
}

/// The rows of one file.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub path: PathBuf,
    pub docs: Vec<Doc>,
}

impl Dataset {
    /// Reads a `.jsonl` / `.json` (JSON Lines) or `.csv` file.
    pub fn load(path: &Path) -> Result<Dataset> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let read = || {
            std::fs::read_to_string(path)
                .map_err(|e| EvalError::Dataset(format!("cannot read {}: {e}", path.display())))
        };
        let docs = match ext.as_str() {
            "jsonl" | "json" | "ndjson" => parse_jsonl(path, &read()?)?,
            "csv" => parse_csv(path, &read()?)?,
            "parquet" => {
                return Err(EvalError::Dataset(format!(
                    "{}: Parquet is not supported (it would need the Arrow libraries); convert \
                     it to JSONL or CSV first, e.g. with pandas: \
                     pd.read_parquet(p).to_json(out, orient='records', lines=True)",
                    path.display()
                )));
            }
            _ => {
                return Err(EvalError::Dataset(format!(
                    "{}: unknown dataset format (expected .jsonl, .json or .csv)",
                    path.display()
                )));
            }
        };
        if docs.is_empty() {
            return Err(EvalError::Dataset(format!(
                "{}: the dataset has no rows",
                path.display()
            )));
        }
        Ok(Dataset {
            path: path.to_path_buf(),
            docs,
        })
    }
}

fn parse_jsonl(path: &Path, text: &str) -> Result<Vec<Doc>> {
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| {
            EvalError::Dataset(format!("{}:{}: not valid JSON: {e}", path.display(), i + 1))
        })?;
        match v {
            Value::Object(fields) => docs.push(Doc {
                line: i + 1,
                fields,
            }),
            other => {
                return Err(EvalError::Dataset(format!(
                    "{}:{}: each line must be a JSON object, found {}",
                    path.display(),
                    i + 1,
                    kind(&other)
                )));
            }
        }
    }
    Ok(docs)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_csv(path: &Path, text: &str) -> Result<Vec<Doc>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| EvalError::Dataset(format!("{}:1: bad CSV header: {e}", path.display())))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows: Vec<(usize, Vec<String>)> = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            EvalError::Dataset(format!("{}:{line}: bad CSV record: {e}", path.display()))
        })?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        if rec.len() != headers.len() {
            return Err(EvalError::Dataset(format!(
                "{}:{line}: {} fields where the header has {}",
                path.display(),
                rec.len(),
                headers.len()
            )));
        }
        rows.push((line, rec.iter().map(str::to_string).collect()));
    }
    // Column types as pandas infers them: all integers, else all numbers, else text.
    let col_type = |c: usize| {
        let cells = rows
            .iter()
            .map(|(_, r)| r[c].as_str())
            .filter(|s| !s.is_empty());
        if cells.clone().all(|s| s.parse::<i64>().is_ok()) {
            1
        } else if cells.clone().all(|s| s.parse::<f64>().is_ok()) {
            2
        } else {
            0
        }
    };
    let types: Vec<u8> = (0..headers.len()).map(col_type).collect();
    Ok(rows
        .into_iter()
        .map(|(line, r)| {
            let fields = headers
                .iter()
                .zip(r)
                .zip(&types)
                .map(|((h, cell), &t)| {
                    let v = if cell.is_empty() {
                        Value::Null
                    } else if t == 1 {
                        cell.parse::<i64>()
                            .map_or(Value::String(cell.clone()), Value::from)
                    } else if t == 2 {
                        cell.parse::<f64>()
                            .ok()
                            .and_then(serde_json::Number::from_f64)
                            .map_or(Value::String(cell.clone()), Value::Number)
                    } else {
                        Value::String(cell)
                    };
                    (h.clone(), v)
                })
                .collect();
            Doc { line, fields }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_infers_integer_columns_and_keeps_text() {
        let docs = parse_csv(Path::new("t.csv"), "q,label,x\n\"a, b\",2,1.5\nc,0,x\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].fields["q"], "a, b");
        assert_eq!(docs[0].fields["label"], 2);
        assert_eq!(docs[1].fields["x"], "x");
        assert_eq!(docs[1].line, 3);
    }

    #[test]
    fn jsonl_row_errors_name_the_line() {
        let e = parse_jsonl(Path::new("d.jsonl"), "{\"a\":1}\n\n[1]\n").unwrap_err();
        assert!(e.to_string().contains("d.jsonl:3:"), "{e}");
        let e = parse_jsonl(Path::new("d.jsonl"), "{\"a\":1}\n{oops\n").unwrap_err();
        assert!(e.to_string().contains("d.jsonl:2:"), "{e}");
    }
}
