//! Llama Stack agents, their sessions and the sessions' turns, plus a per-session state
//! document the agent loop keeps for itself (e.g. the message history to continue from).
//!
//! Deleting an agent removes its sessions and their turns through `ON DELETE CASCADE`; a
//! session or turn whose parent is missing is refused by the foreign keys and reported as
//! [`DbError::NotFound`] for the parent. Turns are upserted as they progress (steps are
//! inside the turn JSON) and keep their first insertion's place and `created_at`.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use super::{Db, collect, is_unique_violation, json_col, to_json};
use crate::error::DbError;

/// A stored agent: the AgentConfig JSON as the client sent it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentRow {
    pub agent_id: String,
    pub config: Value,
    pub created_at: String,
}

/// A stored session of an agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRow {
    pub session_id: String,
    pub agent_id: String,
    pub name: String,
    pub created_at: String,
}

/// A stored turn: the whole Turn JSON (with its steps) and its status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TurnRow {
    pub turn_id: String,
    pub session_id: String,
    pub status: String,
    pub turn: Value,
    pub created_at: String,
}

/// Whether `e` is a FOREIGN KEY violation (the parent row is missing).
fn is_fk_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    )
}

/// Maps an insert's constraint failures to the caller's terms.
fn insert_error(
    e: rusqlite::Error,
    kind: &'static str,
    id: &str,
    parent_kind: &'static str,
    parent_id: &str,
) -> DbError {
    if is_unique_violation(&e) {
        DbError::AlreadyExists {
            kind,
            id: id.to_owned(),
        }
    } else if is_fk_violation(&e) {
        DbError::NotFound {
            kind: parent_kind,
            id: parent_id.to_owned(),
        }
    } else {
        DbError::Sqlite(e)
    }
}

fn agent_row(row: &rusqlite::Row<'_>) -> Result<AgentRow, DbError> {
    Ok(AgentRow {
        agent_id: row.get(0)?,
        config: json_col(row, 1)?,
        created_at: row.get(2)?,
    })
}

fn session_row(row: &rusqlite::Row<'_>) -> Result<SessionRow, DbError> {
    Ok(SessionRow {
        session_id: row.get(0)?,
        agent_id: row.get(1)?,
        name: row.get(2)?,
        created_at: row.get(3)?,
    })
}

fn turn_row(row: &rusqlite::Row<'_>) -> Result<TurnRow, DbError> {
    Ok(TurnRow {
        turn_id: row.get(0)?,
        session_id: row.get(1)?,
        status: row.get(2)?,
        turn: json_col(row, 3)?,
        created_at: row.get(4)?,
    })
}

impl Db {
    /// Stores a new agent; [`DbError::AlreadyExists`] if the id is taken.
    pub fn create_agent(
        &self,
        agent_id: &str,
        config: &Value,
        created_at: &str,
    ) -> Result<(), DbError> {
        let config = to_json(config)?;
        self.lock()
            .prepare_cached(
                "INSERT INTO agents (agent_id, config, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![agent_id, config, created_at])
            .map_err(|e| insert_error(e, "agent", agent_id, "agent", agent_id))?;
        Ok(())
    }

    pub fn get_agent(&self, agent_id: &str) -> Result<Option<AgentRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT agent_id, config, created_at FROM agents WHERE agent_id = ?1",
        )?;
        Ok(collect(&mut stmt, [agent_id], agent_row)?.pop())
    }

    /// All agents, oldest first.
    pub fn list_agents(&self) -> Result<Vec<AgentRow>, DbError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT agent_id, config, created_at FROM agents ORDER BY seq")?;
        collect(&mut stmt, [], agent_row)
    }

    /// Deletes an agent with its sessions and turns; false if there was none.
    pub fn delete_agent(&self, agent_id: &str) -> Result<bool, DbError> {
        let n = self
            .lock()
            .prepare_cached("DELETE FROM agents WHERE agent_id = ?1")?
            .execute([agent_id])?;
        Ok(n > 0)
    }

    /// Stores a new session of `agent_id`: [`DbError::NotFound`] if the agent is missing,
    /// [`DbError::AlreadyExists`] if the session id is taken.
    pub fn create_session(
        &self,
        agent_id: &str,
        session_id: &str,
        name: &str,
        created_at: &str,
    ) -> Result<(), DbError> {
        self.lock()
            .prepare_cached(
                "INSERT INTO sessions (session_id, agent_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![session_id, agent_id, name, created_at])
            .map_err(|e| insert_error(e, "session", session_id, "agent", agent_id))?;
        Ok(())
    }

    /// The session, if it exists and belongs to `agent_id`.
    pub fn get_session(
        &self,
        agent_id: &str,
        session_id: &str,
    ) -> Result<Option<SessionRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT session_id, agent_id, name, created_at FROM sessions
             WHERE agent_id = ?1 AND session_id = ?2",
        )?;
        Ok(collect(&mut stmt, [agent_id, session_id], session_row)?.pop())
    }

    /// The agent's sessions, oldest first (empty if the agent does not exist).
    pub fn list_sessions(&self, agent_id: &str) -> Result<Vec<SessionRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT session_id, agent_id, name, created_at FROM sessions
             WHERE agent_id = ?1 ORDER BY seq",
        )?;
        collect(&mut stmt, [agent_id], session_row)
    }

    /// Deletes the session (with its turns and state) if it belongs to `agent_id`.
    pub fn delete_session(&self, agent_id: &str, session_id: &str) -> Result<bool, DbError> {
        let n = self
            .lock()
            .prepare_cached("DELETE FROM sessions WHERE agent_id = ?1 AND session_id = ?2")?
            .execute([agent_id, session_id])?;
        Ok(n > 0)
    }

    /// Inserts or updates a turn. An update replaces `status` and `turn` and keeps the
    /// turn's place in [`Db::list_turns`] and its first `created_at`.
    /// [`DbError::NotFound`] if the session is missing.
    pub fn put_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        status: &str,
        turn: &Value,
        created_at: &str,
    ) -> Result<(), DbError> {
        let turn = to_json(turn)?;
        self.lock()
            .prepare_cached(
                "INSERT INTO turns (session_id, turn_id, status, turn, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (session_id, turn_id)
                 DO UPDATE SET status = excluded.status, turn = excluded.turn",
            )?
            .execute(params![session_id, turn_id, status, turn, created_at])
            .map_err(|e| insert_error(e, "turn", turn_id, "session", session_id))?;
        Ok(())
    }

    pub fn get_turn(&self, session_id: &str, turn_id: &str) -> Result<Option<TurnRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT turn_id, session_id, status, turn, created_at FROM turns
             WHERE session_id = ?1 AND turn_id = ?2",
        )?;
        Ok(collect(&mut stmt, [session_id, turn_id], turn_row)?.pop())
    }

    /// The session's turns in creation order (empty if the session does not exist).
    pub fn list_turns(&self, session_id: &str) -> Result<Vec<TurnRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT turn_id, session_id, status, turn, created_at FROM turns
             WHERE session_id = ?1 ORDER BY seq",
        )?;
        collect(&mut stmt, [session_id], turn_row)
    }

    /// Replaces the agent loop's state document for the session ([`DbError::NotFound`] if
    /// the session is missing). It is deleted with the session.
    pub fn put_session_state(&self, session_id: &str, state: &Value) -> Result<(), DbError> {
        let state = to_json(state)?;
        let n = self
            .lock()
            .prepare_cached("UPDATE sessions SET state = ?2 WHERE session_id = ?1")?
            .execute([session_id, state.as_str()])?;
        if n == 0 {
            return Err(DbError::NotFound {
                kind: "session",
                id: session_id.to_owned(),
            });
        }
        Ok(())
    }

    /// The session's state document; None if none was stored or the session is missing.
    pub fn get_session_state(&self, session_id: &str) -> Result<Option<Value>, DbError> {
        let conn = self.lock();
        let text: Option<Option<String>> = conn
            .prepare_cached("SELECT state FROM sessions WHERE session_id = ?1")?
            .query_row([session_id], |r| r.get(0))
            .optional()?;
        match text.flatten() {
            Some(t) => Ok(Some(serde_json::from_str(&t)?)),
            None => Ok(None),
        }
    }

    /// Replaces a server-wide setting (a JSON document under `key`, e.g. the registered
    /// tool groups).
    pub fn put_setting(&self, key: &str, value: &Value) -> Result<(), DbError> {
        let value = to_json(value)?;
        self.lock()
            .prepare_cached(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?
            .execute([key, value.as_str()])?;
        Ok(())
    }

    /// A server-wide setting, if stored.
    pub fn get_setting(&self, key: &str) -> Result<Option<Value>, DbError> {
        let conn = self.lock();
        let text: Option<String> = conn
            .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        match text {
            Some(t) => Ok(Some(serde_json::from_str(&t)?)),
            None => Ok(None),
        }
    }
}
