//! Agents: the loop that runs inference, executes tool calls and passes shields until a
//! turn ends, and the SQLite database that keeps agents, sessions, turns, Responses and
//! stored chat completions across restarts.

pub mod db;
pub mod error;
pub mod runtime;
pub mod turn;
pub mod types;

pub use turn::{
    InferReply, InferRequest, Inference, NoShields, Shields, ToolExecutor, TurnContext, TurnEnd,
    TurnError, TurnOutcome, run_turn,
};
pub use types::*;
