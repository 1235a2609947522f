//! Cursor pagination as OpenAI's list endpoints do it, shared by the Responses and chat
//! completion lists and by their item/message sub-lists.
//!
//! Rows are ordered by a numeric key (creation time then insertion `seq` for top-level
//! objects, the position for items), so a cursor is the key of the row its id names and
//! "after" / "before" are row-value comparisons against it: pages stay stable while rows
//! are added or removed elsewhere in the list. `after` = the last id of the previous page
//! (rows that follow it in the requested order); `before` alone = the rows just preceding
//! it (the previous page), still returned in the requested order.

use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;
use serde::{Deserialize, Serialize};

use super::collect;
use crate::error::DbError;

/// Largest page a list call returns; larger limits are clamped to it (as OpenAI does).
pub const MAX_LIMIT: usize = 100;

/// Page size when the request gives none.
pub const DEFAULT_LIMIT: usize = 20;

/// Listing order by creation time. OpenAI's lists default to newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// One list request's paging and filtering (`?after=&before=&limit=&order=&model=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// The id of the last item of the previous page, in this order.
    pub after: Option<String>,
    /// The id of the first item of the next page: lists the page preceding it.
    pub before: Option<String>,
    /// Page size, clamped to `1..=MAX_LIMIT`.
    pub limit: usize,
    pub order: Order,
    /// Only objects of this model (ignored by the item/message sub-lists).
    pub model: Option<String>,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            after: None,
            before: None,
            limit: DEFAULT_LIMIT,
            order: Order::Desc,
            model: None,
        }
    }
}

/// One page of a list, with what OpenAI's list object reports about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// More rows follow this page in the direction it was read.
    pub has_more: bool,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}

/// What to page over: `select` is `SELECT <columns> FROM <table>`; `filters` are equality
/// conditions (`column`, value); `key` the ordering columns (unique together).
pub(super) struct Listing<'a> {
    pub select: &'a str,
    pub filters: Vec<(&'a str, SqlValue)>,
    pub key: &'a [&'a str],
    pub order: Order,
    pub limit: usize,
}

/// Resolves a cursor id to its row's key with `sql` (which selects the key columns of the
/// row named by its parameters); an unknown id is [`DbError::NotFound`].
pub(super) fn cursor(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    kind: &'static str,
    id: &str,
) -> Result<Vec<i64>, DbError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let width = stmt.column_count();
    let mut rows = collect(&mut stmt, params, |row| {
        (0..width)
            .map(|i| row.get::<_, i64>(i).map_err(DbError::from))
            .collect::<Result<Vec<i64>, DbError>>()
    })?;
    if rows.is_empty() {
        return Err(DbError::NotFound {
            kind,
            id: id.to_owned(),
        });
    }
    Ok(rows.swap_remove(0))
}

/// Reads one page of `listing` between the cursors (keys already resolved by [`cursor`]).
pub(super) fn page<T>(
    conn: &Connection,
    listing: &Listing<'_>,
    after: Option<&[i64]>,
    before: Option<&[i64]>,
    mut map: impl FnMut(&rusqlite::Row<'_>) -> Result<T, DbError>,
    id_of: impl Fn(&T) -> Option<String>,
) -> Result<Page<T>, DbError> {
    let limit = listing.limit.clamp(1, MAX_LIMIT);
    let order = listing.order;
    // `before` alone reads backwards from its cursor (the page just before it) and the
    // result is reversed into the requested order; otherwise read forwards.
    let backwards = before.is_some() && after.is_none();
    let (follows, precedes) = match order {
        Order::Asc => (">", "<"),
        Order::Desc => ("<", ">"),
    };
    let scan_desc = (order == Order::Desc) != backwards;

    let key = listing.key.join(", ");
    let mut conds: Vec<String> = Vec::new();
    let mut params: Vec<SqlValue> = Vec::new();
    for (col, v) in &listing.filters {
        conds.push(format!("{col} = ?"));
        params.push(v.clone());
    }
    for (bound, op) in [(after, follows), (before, precedes)] {
        if let Some(k) = bound {
            if k.len() != listing.key.len() {
                return Err(DbError::Invalid(format!(
                    "cursor has {} key columns, listing has {}",
                    k.len(),
                    listing.key.len()
                )));
            }
            let marks = vec!["?"; k.len()].join(", ");
            conds.push(format!("({key}) {op} ({marks})"));
            params.extend(k.iter().map(|&x| SqlValue::Integer(x)));
        }
    }
    let dir = if scan_desc { "DESC" } else { "ASC" };
    let order_by = listing
        .key
        .iter()
        .map(|c| format!("{c} {dir}"))
        .collect::<Vec<_>>()
        .join(", ");
    let where_ = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    // One extra row tells whether another page follows.
    let sql = format!(
        "{}{where_} ORDER BY {order_by} LIMIT {}",
        listing.select,
        limit + 1
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut data = collect(&mut stmt, rusqlite::params_from_iter(params), &mut map)?;
    let has_more = data.len() > limit;
    data.truncate(limit);
    if backwards {
        data.reverse();
    }
    Ok(Page {
        first_id: data.first().and_then(&id_of),
        last_id: data.last().and_then(&id_of),
        data,
        has_more,
    })
}
