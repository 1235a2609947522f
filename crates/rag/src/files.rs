//! Uploaded files as the OpenAI Files API describes them, independent of any backend: the
//! metadata kept per file, its purpose, and cursor-paged listing.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

/// Largest page a file list returns (OpenAI's limit for `GET /v1/files`).
pub const MAX_LIMIT: usize = 10_000;

/// Page size when the request gives none (OpenAI's default for files: everything up to the
/// maximum).
pub const DEFAULT_LIMIT: usize = 10_000;

/// What a file was uploaded for; the purposes OpenAI accepts on upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Assistants,
    Batch,
    FineTune,
    Vision,
    UserData,
    Evals,
}

impl Purpose {
    /// Every purpose, in OpenAI's documentation order.
    pub const ALL: [Purpose; 6] = [
        Purpose::Assistants,
        Purpose::Batch,
        Purpose::FineTune,
        Purpose::Vision,
        Purpose::UserData,
        Purpose::Evals,
    ];

    /// The wire name (`fine-tune` with a hyphen, `user_data` with an underscore, as OpenAI).
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Assistants => "assistants",
            Purpose::Batch => "batch",
            Purpose::FineTune => "fine-tune",
            Purpose::Vision => "vision",
            Purpose::UserData => "user_data",
            Purpose::Evals => "evals",
        }
    }

    /// The purpose of a wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored file's metadata (its bytes are read with [`crate::Store::open_content`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileObject {
    /// `file-` and 24 lowercase hex digits.
    pub id: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which the file is gone; `None`: kept until deleted.
    pub expires_at: Option<i64>,
    /// As the client named it (never used as a path).
    pub filename: String,
    pub purpose: Purpose,
}

/// What the caller says about a file being committed (the store fills in the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    pub filename: String,
    pub purpose: Purpose,
    /// Seconds after creation at which the file expires (OpenAI's `expires_after` with
    /// anchor `created_at`); `None` keeps it until deleted. Callers validate the range.
    pub expires_after: Option<u64>,
}

/// Listing order by creation time (ties broken by upload order). OpenAI's lists default to
/// newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// One list request: `?after=&limit=&order=&purpose=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileQuery {
    /// The id of the last file of the previous page, in this order; an id naming no file
    /// is [`crate::StoreError::NotFound`].
    pub after: Option<String>,
    /// Page size, clamped to `1..=MAX_LIMIT`.
    pub limit: usize,
    pub order: Order,
    /// Only files of this purpose.
    pub purpose: Option<Purpose>,
}

impl Default for FileQuery {
    fn default() -> Self {
        FileQuery {
            after: None,
            limit: DEFAULT_LIMIT,
            order: Order::Desc,
            purpose: None,
        }
    }
}

/// One page of a list, with what OpenAI's list object reports about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// More items follow this page in the requested order.
    pub has_more: bool,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}

/// A fresh file id: `file-` and 24 hex digits (96 bits) from the process's random hasher
/// keys, the clock and a counter, so ids never repeat within a process and collide across
/// processes with negligible probability (the store's UNIQUE constraint is the backstop).
pub fn new_file_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, AtomicOrdering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let word = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(nanos);
        h.write_u64(n);
        h.write_u64(salt);
        h.finish()
    };
    let (a, b) = (word(1), word(2));
    format!("file-{a:016x}{:08x}", b >> 32)
}

/// Whether `id` has the shape [`new_file_id`] makes (checked before an id names a path).
pub fn is_file_id(id: &str) -> bool {
    id.strip_prefix("file-").is_some_and(|hex| {
        hex.len() == 24 && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Now, Unix seconds.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_well_formed() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_file_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| is_file_id(id)), "{ids:?}");
        assert!(!is_file_id("file-../../etc/passwd"));
        assert!(!is_file_id("file-ABCDEF0123456789abcdef01"));
    }

    #[test]
    fn purposes_round_trip() {
        for p in Purpose::ALL {
            assert_eq!(Purpose::parse(p.as_str()), Some(p));
        }
        assert_eq!(Purpose::parse("fine_tune"), None);
        assert_eq!(Purpose::parse("assistants_output"), None);
    }
}
