//! Errors of the tool runtimes.

/// Why a tool call did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The tool cannot run on this machine (e.g. bubblewrap is not installed).
    #[error("{0}")]
    Unavailable(String),
    /// The call's arguments are wrong (missing `code`, `query`, ...).
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// No API key was configured for a web tool.
    #[error("{tool}: no API key; set {env} or send it in X-LlamaStack-Provider-Data as {field}")]
    MissingKey {
        tool: &'static str,
        env: &'static str,
        field: &'static str,
    },
    /// The remote service answered with an error status, timed out, or could not be reached.
    #[error("{tool}: {message}")]
    Remote { tool: &'static str, message: String },
    /// The remote service answered something we cannot read.
    #[error("{tool}: malformed reply: {message}")]
    Malformed { tool: &'static str, message: String },
    /// An MCP server misbehaved or returned an error.
    #[error("mcp: {0}")]
    Mcp(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
