//! OpenAI Responses and stored chat completions (OpenAI `store`, Llama Stack's inference
//! store): the object as returned to the client, plus the list of input items / messages
//! that `GET .../input_items` and `GET .../messages` page through.
//!
//! Both kinds share one shape: a parent table ordered by (creation time, seq) and a child
//! table of items keyed by position, so they share [`Family`] and the code below. Items are
//! addressed by their `"id"` field, which is what the API's `after` / `before` cursors name;
//! an item without a string id gets `"{parent_id}-{position}"` as its cursor id (the stored
//! JSON is returned unchanged). Inserting applies the retention limit of its kind in the
//! same transaction, oldest first.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::Value;

use super::page::{self, ListQuery, Listing, Page};
use super::{Db, collect, json_col, to_json};
use crate::error::DbError;

/// A stored OpenAI Response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseRow {
    pub id: String,
    /// Unix seconds, as in the response's `created_at`.
    pub created_at: i64,
    pub model: String,
    pub previous_response_id: Option<String>,
    /// The Response object as returned to the client.
    pub response: Value,
    /// The input items, as `GET /v1/responses/{id}/input_items` lists them (oldest first).
    pub input_items: Vec<Value>,
    /// The whole conversation a response chained with `previous_response_id` continues from.
    pub messages: Value,
}

/// A stored chat completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletionRow {
    pub id: String,
    /// Unix seconds, as in the completion's `created`.
    pub created: i64,
    pub model: String,
    /// The ChatCompletion object as returned to the client.
    pub completion: Value,
    /// The request's messages, in order.
    pub input_messages: Vec<Value>,
}

/// The tables and columns of one kind of stored object with items. Every name here is a
/// constant of this module, so formatting them into SQL is safe.
struct Family {
    kind: &'static str,
    item_kind: &'static str,
    table: &'static str,
    time_col: &'static str,
    items: &'static str,
    parent_col: &'static str,
    item_id_col: &'static str,
    item_col: &'static str,
}

const RESPONSES: Family = Family {
    kind: "response",
    item_kind: "input item",
    table: "responses",
    time_col: "created_at",
    items: "response_input_items",
    parent_col: "response_id",
    item_id_col: "item_id",
    item_col: "item",
};

const CHAT_COMPLETIONS: Family = Family {
    kind: "chat completion",
    item_kind: "message",
    table: "chat_completions",
    time_col: "created",
    items: "chat_completion_messages",
    parent_col: "completion_id",
    item_id_col: "message_id",
    item_col: "message",
};

/// The cursor id of the item at `idx` of `parent`.
fn item_id(parent: &str, idx: usize, item: &Value) -> String {
    match item.get("id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => format!("{parent}-{idx}"),
    }
}

impl Family {
    /// Replaces the items of `parent` (inside the caller's transaction).
    fn put_items(&self, conn: &Connection, parent: &str, items: &[Value]) -> Result<(), DbError> {
        conn.prepare_cached(&format!(
            "DELETE FROM {} WHERE {} = ?1",
            self.items, self.parent_col
        ))?
        .execute([parent])?;
        let mut insert = conn.prepare_cached(&format!(
            "INSERT INTO {} ({}, idx, {}, {}) VALUES (?1, ?2, ?3, ?4)",
            self.items, self.parent_col, self.item_id_col, self.item_col
        ))?;
        for (idx, item) in items.iter().enumerate() {
            let pos = i64::try_from(idx).map_err(|_| DbError::Invalid("too many items".into()))?;
            insert.execute(params![
                parent,
                pos,
                item_id(parent, idx, item),
                to_json(item)?
            ])?;
        }
        Ok(())
    }

    /// All items of `parent`, in order.
    fn items(&self, conn: &Connection, parent: &str) -> Result<Vec<Value>, DbError> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {} FROM {} WHERE {} = ?1 ORDER BY idx",
            self.item_col, self.items, self.parent_col
        ))?;
        collect(&mut stmt, [parent], |row| json_col(row, 0))
    }

    /// Keeps the newest `max` objects (0 = all); their items go by cascade.
    fn retain(&self, conn: &Connection, max: usize) -> Result<(), DbError> {
        if max == 0 {
            return Ok(());
        }
        let keep = i64::try_from(max).unwrap_or(i64::MAX);
        let removed = conn
            .prepare_cached(&format!(
                "DELETE FROM {t} WHERE seq IN (
                     SELECT seq FROM {t} ORDER BY {c} DESC, seq DESC LIMIT -1 OFFSET ?1)",
                t = self.table,
                c = self.time_col
            ))?
            .execute([keep])?;
        if removed > 0 {
            tracing::debug!(kind = self.kind, removed, keep = max, "retention");
        }
        Ok(())
    }

    fn delete(&self, conn: &Connection, id: &str) -> Result<bool, DbError> {
        let n = conn
            .prepare_cached(&format!("DELETE FROM {} WHERE id = ?1", self.table))?
            .execute([id])?;
        Ok(n > 0)
    }

    fn exists(&self, conn: &Connection, id: &str) -> Result<bool, DbError> {
        Ok(conn
            .prepare_cached(&format!("SELECT 1 FROM {} WHERE id = ?1", self.table))?
            .query_row([id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// One page of the objects (their columns `columns`, mapped by `map`), filtered by model.
    fn list<T>(
        &self,
        conn: &Connection,
        q: &ListQuery,
        columns: &str,
        map: impl FnMut(&rusqlite::Row<'_>) -> Result<T, DbError>,
        id_of: impl Fn(&T) -> Option<String>,
    ) -> Result<Page<T>, DbError> {
        let cursor_sql = format!(
            "SELECT {}, seq FROM {} WHERE id = ?1",
            self.time_col, self.table
        );
        let resolve = |id: &Option<String>| {
            id.as_deref()
                .map(|id| page::cursor(conn, &cursor_sql, [id], self.kind, id))
                .transpose()
        };
        let after = resolve(&q.after)?;
        let before = resolve(&q.before)?;
        let select = format!("SELECT {columns} FROM {}", self.table);
        let key = [self.time_col, "seq"];
        let listing = Listing {
            select: &select,
            filters: q
                .model
                .iter()
                .map(|m| ("model", SqlValue::Text(m.clone())))
                .collect(),
            key: &key,
            order: q.order,
            limit: q.limit,
        };
        page::page(
            conn,
            &listing,
            after.as_deref(),
            before.as_deref(),
            map,
            id_of,
        )
    }

    /// One page of the items of `parent`; None if there is no such object.
    fn list_items(
        &self,
        conn: &Connection,
        parent: &str,
        q: &ListQuery,
    ) -> Result<Option<Page<Value>>, DbError> {
        if !self.exists(conn, parent)? {
            return Ok(None);
        }
        // Ids are meant to be unique within a parent; if not, the first occurrence wins.
        let cursor_sql = format!(
            "SELECT idx FROM {} WHERE {} = ?1 AND {} = ?2 ORDER BY idx LIMIT 1",
            self.items, self.parent_col, self.item_id_col
        );
        let resolve = |id: &Option<String>| {
            id.as_deref()
                .map(|id| page::cursor(conn, &cursor_sql, [parent, id], self.item_kind, id))
                .transpose()
        };
        let after = resolve(&q.after)?;
        let before = resolve(&q.before)?;
        let select = format!(
            "SELECT {}, {} FROM {}",
            self.item_id_col, self.item_col, self.items
        );
        let listing = Listing {
            select: &select,
            filters: vec![(self.parent_col, SqlValue::Text(parent.to_owned()))],
            key: &["idx"],
            order: q.order,
            limit: q.limit,
        };
        let page = page::page(
            conn,
            &listing,
            after.as_deref(),
            before.as_deref(),
            |row| Ok((row.get::<_, String>(0)?, json_col::<Value>(row, 1)?)),
            |(id, _)| Some(id.clone()),
        )?;
        Ok(Some(Page {
            data: page.data.into_iter().map(|(_, v)| v).collect(),
            has_more: page.has_more,
            first_id: page.first_id,
            last_id: page.last_id,
        }))
    }
}

const RESPONSE_COLUMNS: &str = "id, created_at, model, previous_response_id, response, messages";

fn response_row(row: &rusqlite::Row<'_>) -> Result<ResponseRow, DbError> {
    Ok(ResponseRow {
        id: row.get(0)?,
        created_at: row.get(1)?,
        model: row.get(2)?,
        previous_response_id: row.get(3)?,
        response: json_col(row, 4)?,
        input_items: Vec::new(), // filled by the caller from the items table
        messages: json_col(row, 5)?,
    })
}

const COMPLETION_COLUMNS: &str = "id, created, model, completion";

fn completion_row(row: &rusqlite::Row<'_>) -> Result<ChatCompletionRow, DbError> {
    Ok(ChatCompletionRow {
        id: row.get(0)?,
        created: row.get(1)?,
        model: row.get(2)?,
        completion: json_col(row, 3)?,
        input_messages: Vec::new(), // filled by the caller from the items table
    })
}

impl Db {
    /// Stores (or replaces, keeping its place among equal timestamps) a response with its
    /// input items, then drops the oldest responses beyond the retention limit.
    pub fn put_response(&self, r: &ResponseRow) -> Result<(), DbError> {
        let response = to_json(&r.response)?;
        let messages = to_json(&r.messages)?;
        let max = self
            .max_responses
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT INTO responses (id, created_at, model, previous_response_id, response, messages)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET
                 created_at = excluded.created_at, model = excluded.model,
                 previous_response_id = excluded.previous_response_id,
                 response = excluded.response, messages = excluded.messages",
        )?
        .execute(params![
            r.id,
            r.created_at,
            r.model,
            r.previous_response_id,
            response,
            messages
        ])?;
        RESPONSES.put_items(&tx, &r.id, &r.input_items)?;
        RESPONSES.retain(&tx, max)?;
        tx.commit()?;
        Ok(())
    }

    pub fn get_response(&self, id: &str) -> Result<Option<ResponseRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RESPONSE_COLUMNS} FROM responses WHERE id = ?1"
        ))?;
        let Some(mut row) = collect(&mut stmt, [id], response_row)?.pop() else {
            return Ok(None);
        };
        row.input_items = RESPONSES.items(&conn, id)?;
        Ok(Some(row))
    }

    /// One page of responses (with their input items), filtered by `q.model`.
    /// [`DbError::NotFound`] if a cursor names no stored response.
    pub fn list_responses(&self, q: &ListQuery) -> Result<Page<ResponseRow>, DbError> {
        let conn = self.lock();
        let mut page = RESPONSES.list(&conn, q, RESPONSE_COLUMNS, response_row, |r| {
            Some(r.id.clone())
        })?;
        for r in &mut page.data {
            r.input_items = RESPONSES.items(&conn, &r.id)?;
        }
        Ok(page)
    }

    /// Deletes a response and its input items; false if there was none.
    pub fn delete_response(&self, id: &str) -> Result<bool, DbError> {
        RESPONSES.delete(&self.lock(), id)
    }

    /// One page of a response's input items (cursors are item ids); None if there is no
    /// such response, [`DbError::NotFound`] if a cursor names no item of it.
    pub fn response_input_items(
        &self,
        id: &str,
        q: &ListQuery,
    ) -> Result<Option<Page<Value>>, DbError> {
        RESPONSES.list_items(&self.lock(), id, q)
    }

    /// Stores (or replaces) a chat completion with its input messages, then drops the
    /// oldest completions beyond the retention limit.
    pub fn put_chat_completion(
        &self,
        id: &str,
        created: i64,
        model: &str,
        completion: &Value,
        input_messages: &[Value],
    ) -> Result<(), DbError> {
        let completion = to_json(completion)?;
        let max = self
            .max_chat_completions
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT INTO chat_completions (id, created, model, completion) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET
                 created = excluded.created, model = excluded.model,
                 completion = excluded.completion",
        )?
        .execute(params![id, created, model, completion])?;
        CHAT_COMPLETIONS.put_items(&tx, id, input_messages)?;
        CHAT_COMPLETIONS.retain(&tx, max)?;
        tx.commit()?;
        Ok(())
    }

    pub fn get_chat_completion(&self, id: &str) -> Result<Option<ChatCompletionRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COMPLETION_COLUMNS} FROM chat_completions WHERE id = ?1"
        ))?;
        let Some(mut row) = collect(&mut stmt, [id], completion_row)?.pop() else {
            return Ok(None);
        };
        row.input_messages = CHAT_COMPLETIONS.items(&conn, id)?;
        Ok(Some(row))
    }

    /// One page of chat completions (with their input messages), filtered by `q.model`.
    /// [`DbError::NotFound`] if a cursor names no stored completion.
    pub fn list_chat_completions(&self, q: &ListQuery) -> Result<Page<ChatCompletionRow>, DbError> {
        let conn = self.lock();
        let mut page =
            CHAT_COMPLETIONS.list(&conn, q, COMPLETION_COLUMNS, completion_row, |r| {
                Some(r.id.clone())
            })?;
        for r in &mut page.data {
            r.input_messages = CHAT_COMPLETIONS.items(&conn, &r.id)?;
        }
        Ok(page)
    }

    /// Deletes a chat completion and its messages; false if there was none.
    pub fn delete_chat_completion(&self, id: &str) -> Result<bool, DbError> {
        CHAT_COMPLETIONS.delete(&self.lock(), id)
    }

    /// One page of a chat completion's input messages (cursors are message ids); None if
    /// there is no such completion, [`DbError::NotFound`] if a cursor names no message of it.
    pub fn chat_completion_messages(
        &self,
        id: &str,
        q: &ListQuery,
    ) -> Result<Option<Page<Value>>, DbError> {
        CHAT_COMPLETIONS.list_items(&self.lock(), id, q)
    }
}
