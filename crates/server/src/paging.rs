//! The query parameters every cursor-paged list takes: `limit` and `order`, parsed with
//! one wording of their errors.

use std::collections::HashMap;

use crate::error::ApiError;

/// `limit`: `default` when absent, else a whole number from 1 to `max` (400 otherwise).
pub fn limit(q: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(s) => match s.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid_param(
                "limit",
                format!("`limit` must be an integer from 1 to {max}, not '{s}'"),
            )),
        },
    }
}

/// `order`: true for `asc`; `desc` (the default, newest first) is false.
pub fn ascending(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    match q.get("order").map(String::as_str) {
        None | Some("desc") => Ok(false),
        Some("asc") => Ok(true),
        Some(o) => Err(ApiError::invalid_param(
            "order",
            format!("`order` must be 'asc' or 'desc', not '{o}'"),
        )),
    }
}
