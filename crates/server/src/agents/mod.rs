//! Agents on the server: the Llama Stack agents API (agents, sessions, turns streamed as
//! step events, resume with client tool results; `api.rs`), the tool runtime API (tool
//! groups, tools, invoke; `tools.rs`), the loop's inference and shields on the engine
//! (`infer.rs`), and the state they share: the SQLite database in the data directory (which
//! also keeps Responses and stored chat completions), the tool runtimes and the registered
//! tool groups.

pub mod api;
pub mod infer;
pub mod tools;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use ferrollama_agents::db::{Db, DbError};
use ferrollama_agents::runtime::Runtime;

use tools::ToolGroup;

/// The settings key the registered (non-built-in) tool groups are kept under.
const TOOLGROUPS_KEY: &str = "toolgroups";

/// What the agent, tool-runtime, Responses and stored-completion routes share.
#[derive(Debug)]
pub struct AgentsState {
    /// Agents, sessions, turns, Responses and stored chat completions.
    pub db: Arc<Db>,
    /// The built-in tools and MCP clients.
    pub runtime: Arc<Runtime>,
    /// Tool groups registered besides the built-ins (kept in the database too).
    groups: RwLock<Vec<ToolGroup>>,
    /// Groups the operator configured (`serve --mcp`): not stored, not removable.
    fixed: RwLock<Vec<ToolGroup>>,
    /// One turn at a time per session: a turn reads and extends the session's history.
    session_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl AgentsState {
    /// State kept in `dir/agents.sqlite` (created if missing).
    pub fn open(dir: &Path) -> Result<AgentsState, DbError> {
        AgentsState::with_db(Db::open(&dir.join("agents.sqlite"))?)
    }

    /// State that lives as long as the process (tests, `serve --data-dir ''`).
    pub fn in_memory() -> Result<AgentsState, DbError> {
        AgentsState::with_db(Db::open_in_memory()?)
    }

    fn with_db(db: Db) -> Result<AgentsState, DbError> {
        let groups = match db.get_setting(TOOLGROUPS_KEY)? {
            Some(v) => serde_json::from_value(v)?,
            None => Vec::new(),
        };
        Ok(AgentsState {
            db: Arc::new(db),
            runtime: Arc::new(Runtime::from_env()),
            groups: RwLock::new(groups),
            fixed: RwLock::new(Vec::new()),
            session_locks: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces the tool runtimes (tests point web tools at mock servers).
    pub fn with_runtime(mut self, runtime: Runtime) -> AgentsState {
        self.runtime = Arc::new(runtime);
        self
    }

    /// Adds an operator-configured MCP group (`serve --mcp ID=ENDPOINT`, stdio allowed).
    pub fn add_fixed_group(&self, id: &str, endpoint: &str) {
        if let Ok(mut f) = self.fixed.write() {
            f.push(ToolGroup {
                identifier: id.to_string(),
                provider_id: "model-context-protocol".into(),
                mcp_endpoint: Some(endpoint.to_string()),
                args: None,
            });
        }
    }

    /// Every tool group: built-ins, the operator's, then registered ones.
    pub fn toolgroups(&self) -> Vec<ToolGroup> {
        let mut out = tools::builtin_groups();
        if let Ok(f) = self.fixed.read() {
            out.extend(f.iter().cloned());
        }
        if let Ok(g) = self.groups.read() {
            out.extend(g.iter().cloned());
        }
        out
    }

    /// Registers (or replaces) a group and stores the list.
    pub fn add_toolgroup(&self, g: ToolGroup) -> Result<(), DbError> {
        let mut groups = self.groups.write().unwrap_or_else(|e| e.into_inner());
        let mut next = groups.clone();
        next.retain(|x| x.identifier != g.identifier);
        next.push(g);
        self.db
            .put_setting(TOOLGROUPS_KEY, &serde_json::to_value(&next)?)?;
        *groups = next;
        Ok(())
    }

    /// Removes a registered group; false if there was none.
    pub fn remove_toolgroup(&self, id: &str) -> Result<bool, DbError> {
        let mut groups = self.groups.write().unwrap_or_else(|e| e.into_inner());
        let mut next = groups.clone();
        next.retain(|x| x.identifier != id);
        if next.len() == groups.len() {
            return Ok(false);
        }
        self.db
            .put_setting(TOOLGROUPS_KEY, &serde_json::to_value(&next)?)?;
        *groups = next;
        Ok(true)
    }

    /// The lock that serializes a session's turns.
    pub fn session_lock(&self, session_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.session_locks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(session_id.to_string()).or_default().clone()
    }

    /// Forgets a deleted session's lock and interpreter state.
    pub fn forget_session(&self, session_id: &str) {
        if let Ok(mut m) = self.session_locks.lock() {
            m.remove(session_id);
        }
        self.runtime.close_session(session_id);
    }
}
