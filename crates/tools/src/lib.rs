//! Tool runtimes the agent loop executes: Llama 3.1's built-in tools (`code_interpreter`
//! in a bubblewrap sandbox, `brave_search`, `wolfram_alpha`) and MCP servers' tools.
//!
//! Every runtime is blocking (callers in async code use `spawn_blocking`) and every
//! failure is a [`ToolError`] the agent loop turns into a tool result the model can read.

pub mod brave;
pub mod error;
mod http;
pub mod mcp;
pub mod provider_data;
pub mod sandbox;
pub mod wolfram;

pub use error::ToolError;
pub use provider_data::{ProviderKeys, provider_keys};
