//! The server-side tool runtimes behind the agent loop: Llama 3.1's built-ins
//! (`code_interpreter` in the sandbox, `brave_search`, `wolfram_alpha`) and MCP servers'
//! tools, with the tool groups that name them (`builtin::code_interpreter`,
//! `builtin::websearch`, `builtin::wolfram_alpha`, MCP groups).
//!
//! The runtimes block (processes, HTTP); [`Executor`] runs them on tokio's blocking pool
//! for the loop. Every failure becomes a tool result with `metadata.error`, so the model
//! reads what went wrong and the turn goes on.
//!
//! Code interpreter state is per agent session (the sandbox keeps variables and files
//! between calls); [`Runtime::close_session`] removes it with the session. MCP clients are
//! kept per endpoint and reconnected after a failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ferrollama_tools::mcp::{McpClient, McpEndpoint, McpTool};
use ferrollama_tools::sandbox::{CodeInterpreter, SandboxConfig};
use ferrollama_tools::{ProviderKeys, ToolError, brave::BraveSearch, wolfram::WolframAlpha};
use serde_json::{Value, json};

use crate::turn::ToolExecutor;
use crate::types::{ToolCall, ToolDef, ToolKind, ToolResponse};

/// Built-in tool groups and the tool each holds, as Llama Stack names them. The tool name
/// is the one Llama 3.1 calls it by (`web_search` is announced to the model as
/// `brave_search`, as Llama Stack's agents do).
pub const BUILTIN_GROUPS: [(&str, &str); 4] = [
    ("builtin::code_interpreter", "code_interpreter"),
    ("builtin::websearch", "brave_search"),
    ("builtin::wolfram_alpha", "wolfram_alpha"),
    ("builtin::rag", "knowledge_search"),
];

/// Searches vector stores for `knowledge_search` (the server provides it: the stores and
/// the embedding models live there). Blocking.
pub trait Retriever: Send + Sync {
    /// The context text for the model and metadata (`document_ids`, `chunks`, `scores`,
    /// `results`), or why the search failed.
    fn search(
        &self,
        query: &str,
        vector_store_ids: &[String],
        max_results: usize,
    ) -> Result<(String, Value), String>;
}

/// The definition of a built-in tool by its name (or Llama Stack's alias `web_search`).
pub fn builtin_tool(name: &str) -> Option<ToolDef> {
    let (name, kind, description, arg, arg_doc) = match name {
        "code_interpreter" => (
            "code_interpreter",
            ToolKind::CodeInterpreter,
            "Run Python code in a sandbox; variables and files persist within the session.",
            "code",
            "The Python code to run",
        ),
        "brave_search" | "web_search" => (
            "brave_search",
            ToolKind::BraveSearch,
            "Search the web with Brave Search",
            "query",
            "The query to search for",
        ),
        "wolfram_alpha" => (
            "wolfram_alpha",
            ToolKind::WolframAlpha,
            "Ask Wolfram Alpha: math, science, units, data",
            "query",
            "The query to compute",
        ),
        "knowledge_search" => (
            "knowledge_search",
            ToolKind::KnowledgeSearch {
                vector_store_ids: Vec::new(),
                max_results: 5,
            },
            "Search for information in a database.",
            "query",
            "The query to search for. Can be a natural language sentence or keywords.",
        ),
        _ => return None,
    };
    let group = BUILTIN_GROUPS
        .iter()
        .find(|(_, t)| *t == name)
        .map(|(g, _)| g.to_string());
    Some(ToolDef {
        name: name.to_string(),
        description: description.to_string(),
        parameters: json!({"type": "object", "properties": {arg: {"type": "string", "description": arg_doc}}, "required": [arg]}),
        kind,
        toolgroup: group,
    })
}

/// The runtimes, shared by every request.
pub struct Runtime {
    sandbox: OnceLock<Result<Arc<CodeInterpreter>, String>>,
    sandbox_config: Mutex<Option<SandboxConfig>>,
    brave: BraveSearch,
    wolfram: WolframAlpha,
    mcp: Mutex<HashMap<String, Arc<McpClient>>>,
    /// Per MCP request.
    pub mcp_timeout: Duration,
    /// `knowledge_search`'s vector store search, set by the server.
    retriever: OnceLock<Arc<dyn Retriever>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Keys and URLs from the environment; the sandbox found when first used.
    pub fn from_env() -> Runtime {
        Runtime::with(BraveSearch::from_env(), WolframAlpha::from_env(), None)
    }

    /// Explicit clients (tests point them at mock servers) and sandbox settings.
    pub fn with(
        brave: BraveSearch,
        wolfram: WolframAlpha,
        sandbox: Option<SandboxConfig>,
    ) -> Runtime {
        Runtime {
            sandbox: OnceLock::new(),
            sandbox_config: Mutex::new(sandbox),
            brave,
            wolfram,
            mcp: Mutex::new(HashMap::new()),
            mcp_timeout: Duration::from_secs(60),
            retriever: OnceLock::new(),
        }
    }

    /// Installs the vector store search behind `knowledge_search` (the first call wins).
    pub fn set_retriever(&self, r: Arc<dyn Retriever>) {
        let _ = self.retriever.set(r);
    }

    /// The code interpreter, set up on first use (bubblewrap and python3 found then).
    pub fn interpreter(&self) -> Result<Arc<CodeInterpreter>, ToolError> {
        self.sandbox
            .get_or_init(|| {
                let cfg = match self.sandbox_config.lock().map(|mut c| c.take()) {
                    Ok(Some(c)) => Ok(c),
                    _ => SandboxConfig::detect(),
                };
                cfg.map(|c| Arc::new(CodeInterpreter::new(c)))
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(ToolError::Unavailable)
    }

    /// Forgets a session's interpreter state.
    pub fn close_session(&self, session_id: &str) {
        if let Some(Ok(ci)) = self.sandbox.get() {
            ci.close(session_id);
        }
    }

    /// A connected client for `endpoint` (kept for later calls).
    pub fn mcp_client(&self, endpoint: &str) -> Result<Arc<McpClient>, ToolError> {
        if let Some(c) = self.mcp.lock().ok().and_then(|m| m.get(endpoint).cloned()) {
            return Ok(c);
        }
        let ep = McpEndpoint::parse(endpoint)?;
        let client = Arc::new(McpClient::connect(&ep, self.mcp_timeout)?);
        if let Ok(mut m) = self.mcp.lock() {
            m.insert(endpoint.to_string(), client.clone());
        }
        Ok(client)
    }

    fn forget_mcp(&self, endpoint: &str) {
        if let Ok(mut m) = self.mcp.lock() {
            m.remove(endpoint);
        }
    }

    /// The tools an MCP server offers.
    pub fn mcp_tools(&self, endpoint: &str) -> Result<Vec<McpTool>, ToolError> {
        let r = self.mcp_client(endpoint)?.list_tools();
        if r.is_err() {
            self.forget_mcp(endpoint);
        }
        r
    }

    /// Runs one call (blocking). `session` keys the interpreter's state; `None` runs it in a
    /// fresh sandbox removed afterwards.
    pub fn execute_blocking(
        &self,
        session: Option<&str>,
        tool: &ToolDef,
        call: &ToolCall,
        keys: &ProviderKeys,
    ) -> ToolResponse {
        match self.run(session, tool, call, keys) {
            Ok((content, metadata)) => ToolResponse {
                call_id: call.call_id.clone(),
                tool_name: call.tool_name.clone(),
                content,
                metadata,
            },
            Err(e) => {
                tracing::info!(tool = %call.tool_name, error = %e, "tool call failed");
                ToolResponse::error(call, format!("error: {e}"))
            }
        }
    }

    fn run(
        &self,
        session: Option<&str>,
        tool: &ToolDef,
        call: &ToolCall,
        keys: &ProviderKeys,
    ) -> Result<(String, Value), ToolError> {
        match &tool.kind {
            ToolKind::CodeInterpreter => {
                let code = string_arg(&call.arguments, "code")?;
                let ci = self.interpreter()?;
                let ex = match session {
                    Some(s) => ci.run(s, &code)?,
                    None => ci.run_once(&code)?,
                };
                let meta = json!({
                    "exit_code": ex.exit_code, "timed_out": ex.timed_out,
                    "stdout_truncated": ex.stdout_truncated, "stderr_truncated": ex.stderr_truncated,
                    "duration_ms": ex.duration_ms,
                });
                Ok((ex.to_tool_output(), meta))
            }
            ToolKind::BraveSearch => {
                let q = string_arg(&call.arguments, "query")?;
                let v = self.brave.search(&q, keys.brave.as_deref())?;
                Ok((v.to_string(), Value::Null))
            }
            ToolKind::WolframAlpha => {
                let q = string_arg(&call.arguments, "query")?;
                let v = self.wolfram.query(&q, keys.wolfram.as_deref())?;
                Ok((v.to_string(), Value::Null))
            }
            ToolKind::Mcp { endpoint } => {
                let args = match &call.arguments {
                    Value::Null => json!({}),
                    v => v.clone(),
                };
                let r = self
                    .mcp_client(endpoint)
                    .and_then(|c| c.call_tool(&call.tool_name, &args));
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        self.forget_mcp(endpoint);
                        return Err(e);
                    }
                };
                let meta = if r.is_error {
                    json!({"error": true})
                } else {
                    r.structured
                        .clone()
                        .map_or(Value::Null, |s| json!({"structured": s}))
                };
                Ok((r.text(), meta))
            }
            ToolKind::KnowledgeSearch {
                vector_store_ids,
                max_results,
            } => {
                let q = string_arg(&call.arguments, "query")?;
                let r = self.retriever.get().ok_or_else(|| {
                    ToolError::Unavailable("no vector store search is configured".into())
                })?;
                r.search(&q, vector_store_ids, *max_results)
                    .map_err(ToolError::InvalidArguments)
            }
            ToolKind::Client => Err(ToolError::InvalidArguments(format!(
                "'{}' is a client-side tool: the caller runs it",
                call.tool_name
            ))),
        }
    }
}

/// A string argument, as the model sent it (a JSON-encoded object is also accepted).
fn string_arg(args: &Value, key: &str) -> Result<String, ToolError> {
    let parsed;
    let args = match args {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
            &parsed
        }
        a => a,
    };
    match args.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) if !v.is_null() => Ok(v.to_string()),
        _ => Err(ToolError::InvalidArguments(format!(
            "the call needs a string argument '{key}'"
        ))),
    }
}

/// The loop's [`ToolExecutor`]: a request's provider keys over the shared runtimes.
#[derive(Debug, Clone)]
pub struct Executor {
    pub runtime: Arc<Runtime>,
    pub keys: ProviderKeys,
}

impl ToolExecutor for Executor {
    async fn execute(&self, session_id: &str, tool: &ToolDef, call: &ToolCall) -> ToolResponse {
        let (rt, keys, tool2, call2, session) = (
            self.runtime.clone(),
            self.keys.clone(),
            tool.clone(),
            call.clone(),
            session_id.to_string(),
        );
        let r = tokio::task::spawn_blocking(move || {
            rt.execute_blocking(Some(&session), &tool2, &call2, &keys)
        })
        .await;
        r.unwrap_or_else(|e| ToolResponse::error(call, format!("the tool runtime failed: {e}")))
    }
}
