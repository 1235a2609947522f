//! Agents on the server: the Llama Stack agents API (agents, sessions, turns streamed as
//! step events, resume with client tool results), the tool runtime API (tool groups, tools,
//! invoke), and the state they share: the SQLite database in the data directory (which
//! also keeps Responses and stored chat completions) and the tool runtimes.

use std::path::Path;
use std::sync::Arc;

use ferrollama_agents::db::{Db, DbError};

/// What the agent, tool-runtime, Responses and stored-completion routes share.
#[derive(Debug)]
pub struct AgentsState {
    /// Agents, sessions, turns, Responses and stored chat completions.
    pub db: Arc<Db>,
}

impl AgentsState {
    /// State kept in `dir/agents.sqlite` (created if missing).
    pub fn open(dir: &Path) -> Result<AgentsState, DbError> {
        Ok(AgentsState::with_db(Db::open(&dir.join("agents.sqlite"))?))
    }

    /// State that lives as long as the process (tests, `serve --data-dir ''`).
    pub fn in_memory() -> Result<AgentsState, DbError> {
        Ok(AgentsState::with_db(Db::open_in_memory()?))
    }

    fn with_db(db: Db) -> AgentsState {
        AgentsState { db: Arc::new(db) }
    }
}
