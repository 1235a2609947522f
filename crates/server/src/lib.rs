//! `ferrollama serve`: the OpenAI, Llama Stack and Ollama HTTP APIs on one server.
//!
//! Handlers translate requests into engine sequences (`job.rs`) and the engine's events back
//! into each API's shapes (`openai/`, `llama_stack.rs`, `ollama/`). The engine itself runs in its own
//! actor thread; handlers only hold channels to it. Everything a handler shares is
//! read-only, atomic or behind a short lock (`state.rs`; the model registry, see
//! `registry.rs`).
//!
//! Key choices: every error is a 4xx/5xx in OpenAI's JSON envelope (`error.rs`; the Ollama
//! routes `/` and `/api/*` answer Ollama's `{"error": "..."}` instead), bodies are
//! parsed by our own extractor so malformed input never reaches a handler (`body.rs`), and
//! the route table below is the single source for routing, `/v1/inspect/routes` and
//! `/openapi.json`.

pub mod agents;
pub mod batch;
pub mod body;
pub mod calls;
pub mod datasets;
pub mod embeddings;
pub mod error;
pub mod files;
pub mod fine_tuning;
pub mod job;
pub mod llama_stack;
pub mod lora;
pub mod ollama;
pub mod openai;
pub mod ops;
pub mod paging;
pub mod registry;
pub mod reqlog;
pub mod sdg;
pub mod shields;
pub mod state;
pub mod vector_stores;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, post};

pub use error::ApiError;
pub use state::{AppState, Limits, ModelRegistry, Registered, RequestCounters};

/// One route: method, path, handler, and the request body's schema for `/openapi.json`.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub api: &'static str,
    pub body: Option<fn() -> serde_json::Value>,
    pub handler: fn() -> MethodRouter<Arc<AppState>>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

fn schema<T: schemars::JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default()
}

/// Every route the server answers.
pub fn routes() -> Vec<Route> {
    use llama_stack as ls;
    vec![
        Route {
            method: "GET",
            path: "/health",
            summary: "Liveness (no API key needed)",
            api: "ops",
            body: None,
            handler: || get(ops::health),
        },
        Route {
            method: "GET",
            path: "/metrics",
            summary: "Prometheus metrics",
            api: "ops",
            body: None,
            handler: || get(ops::metrics),
        },
        Route {
            method: "GET",
            path: "/openapi.json",
            summary: "This document",
            api: "ops",
            body: None,
            handler: || get(ops::openapi),
        },
        Route {
            method: "POST",
            path: "/v1/chat/completions",
            summary: "OpenAI chat completion",
            api: "openai",
            body: Some(schema::<openai::ChatRequest>),
            handler: || post(openai::chat),
        },
        Route {
            method: "POST",
            path: "/v1/completions",
            summary: "OpenAI text completion",
            api: "openai",
            body: Some(schema::<openai::CompletionRequest>),
            handler: || post(openai::completions),
        },
        Route {
            method: "POST",
            path: "/v1/embeddings",
            summary: "OpenAI embeddings (float or base64)",
            api: "openai",
            body: Some(schema::<embeddings::EmbeddingRequest>),
            handler: || post(embeddings::openai),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/embeddings",
            summary: "OpenAI embeddings (Llama Stack path)",
            api: "openai",
            body: Some(schema::<embeddings::EmbeddingRequest>),
            handler: || post(embeddings::openai),
        },
        Route {
            method: "POST",
            path: "/v1/inference/embeddings",
            summary: "Llama Stack embeddings",
            api: "llama-stack",
            body: Some(schema::<embeddings::LlamaStackRequest>),
            handler: || post(embeddings::llama_stack),
        },
        Route {
            method: "GET",
            path: "/v1/models",
            summary: "Models (OpenAI and Llama Stack shapes in one body)",
            api: "models",
            body: None,
            handler: || get(openai::models),
        },
        Route {
            method: "GET",
            path: "/v1/models/{model_id}",
            summary: "One model",
            api: "models",
            body: None,
            handler: || get(openai::model),
        },
        Route {
            method: "POST",
            path: "/v1/models",
            summary: "Register a model id: an alias of a served model, or a store entry or file loaded now (Llama Stack register-model)",
            api: "models",
            body: Some(schema::<registry::RegisterRequest>),
            handler: || post(registry::register),
        },
        Route {
            method: "DELETE",
            path: "/v1/models/{model_id}",
            summary: "Unregister a model id (running requests finish; the model stays loaded)",
            api: "models",
            body: None,
            handler: || delete(registry::unregister),
        },
        Route {
            method: "POST",
            path: "/v1/load_lora_adapter",
            summary: "Load a LoRA adapter (PEFT folder or GGUF) and serve it as a model id (vLLM's shape)",
            api: "models",
            body: Some(schema::<lora::LoadLoraRequest>),
            handler: || post(lora::load),
        },
        Route {
            method: "POST",
            path: "/v1/unload_lora_adapter",
            summary: "Stop serving a LoRA adapter (running requests finish with it; vLLM's shape)",
            api: "models",
            body: Some(schema::<lora::UnloadLoraRequest>),
            handler: || post(lora::unload),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/chat/completions",
            summary: "OpenAI chat completion (Llama Stack path)",
            api: "openai",
            body: Some(schema::<openai::ChatRequest>),
            handler: || post(openai::chat_ls),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/completions",
            summary: "OpenAI text completion (Llama Stack path)",
            api: "openai",
            body: Some(schema::<openai::CompletionRequest>),
            handler: || post(openai::completions_ls),
        },
        Route {
            method: "POST",
            path: "/v1/responses",
            summary: "OpenAI Responses: create (the agent loop with function, web_search, code_interpreter and mcp tools; streamed or not)",
            api: "openai",
            body: Some(schema::<openai::responses::CreateResponse>),
            handler: || post(openai::responses::create),
        },
        Route {
            method: "GET",
            path: "/v1/responses",
            summary: "Stored Responses (newest first; limit, order, after, before, model)",
            api: "openai",
            body: None,
            handler: || get(openai::responses::list),
        },
        Route {
            method: "GET",
            path: "/v1/responses/{response_id}",
            summary: "One stored Response",
            api: "openai",
            body: None,
            handler: || get(openai::responses::get),
        },
        Route {
            method: "DELETE",
            path: "/v1/responses/{response_id}",
            summary: "Delete a stored Response",
            api: "openai",
            body: None,
            handler: || delete(openai::responses::delete),
        },
        Route {
            method: "GET",
            path: "/v1/responses/{response_id}/input_items",
            summary: "A stored Response's input items (limit, order, after, before)",
            api: "openai",
            body: None,
            handler: || get(openai::responses::input_items),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/responses",
            summary: "OpenAI Responses: create (the agent loop with function, web_search, code_interpreter and mcp tools; streamed or not) (Llama Stack path)",
            api: "openai",
            body: Some(schema::<openai::responses::CreateResponse>),
            handler: || post(openai::responses::create),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/responses",
            summary: "Stored Responses (newest first; limit, order, after, before, model) (Llama Stack path)",
            api: "openai",
            body: None,
            handler: || get(openai::responses::list),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/responses/{response_id}",
            summary: "One stored Response (Llama Stack path)",
            api: "openai",
            body: None,
            handler: || get(openai::responses::get),
        },
        Route {
            method: "DELETE",
            path: "/v1/openai/v1/responses/{response_id}",
            summary: "Delete a stored Response (Llama Stack path)",
            api: "openai",
            body: None,
            handler: || delete(openai::responses::delete),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/responses/{response_id}/input_items",
            summary: "A stored Response's input items (limit, order, after, before) (Llama Stack path)",
            api: "openai",
            body: None,
            handler: || get(openai::responses::input_items),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/models",
            summary: "Models (Llama Stack path)",
            api: "models",
            body: None,
            handler: || get(openai::models),
        },
        // Stored chat completions (openai/stored.rs): OpenAI `store` and Llama Stack's
        // inference store, on both path prefixes.
        Route {
            method: "GET",
            path: "/v1/chat/completions",
            summary: "Stored chat completions (OpenAI; ?limit=&order=&after=&model=)",
            api: "openai",
            body: None,
            handler: || get(openai::stored::list),
        },
        Route {
            method: "GET",
            path: "/v1/chat/completions/{completion_id}",
            summary: "One stored chat completion with its input messages (OpenAI)",
            api: "openai",
            body: None,
            handler: || get(openai::stored::get),
        },
        Route {
            method: "POST",
            path: "/v1/chat/completions/{completion_id}",
            summary: "Update a stored chat completion's metadata (OpenAI)",
            api: "openai",
            body: Some(schema::<openai::stored::UpdateRequest>),
            handler: || post(openai::stored::update),
        },
        Route {
            method: "DELETE",
            path: "/v1/chat/completions/{completion_id}",
            summary: "Delete a stored chat completion (OpenAI)",
            api: "openai",
            body: None,
            handler: || delete(openai::stored::delete),
        },
        Route {
            method: "GET",
            path: "/v1/chat/completions/{completion_id}/messages",
            summary: "A stored chat completion's input messages (OpenAI; ?limit=&order=&after=)",
            api: "openai",
            body: None,
            handler: || get(openai::stored::messages),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/chat/completions",
            summary: "Stored chat completions (Llama Stack path; ?limit=&order=&after=&model=)",
            api: "openai",
            body: None,
            handler: || get(openai::stored::list_ls),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/chat/completions/{completion_id}",
            summary: "One stored chat completion with its input messages (Llama Stack path)",
            api: "openai",
            body: None,
            handler: || get(openai::stored::get),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/chat/completions/{completion_id}",
            summary: "Update a stored chat completion's metadata (Llama Stack path)",
            api: "openai",
            body: Some(schema::<openai::stored::UpdateRequest>),
            handler: || post(openai::stored::update),
        },
        Route {
            method: "DELETE",
            path: "/v1/openai/v1/chat/completions/{completion_id}",
            summary: "Delete a stored chat completion (Llama Stack path)",
            api: "openai",
            body: None,
            handler: || delete(openai::stored::delete),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/chat/completions/{completion_id}/messages",
            summary: "A stored chat completion's input messages (Llama Stack path; ?limit=&order=&after=)",
            api: "openai",
            body: None,
            handler: || get(openai::stored::messages),
        },
        // Uploaded files (files.rs): the OpenAI Files API on both path prefixes. Uploads lift
        // the server-wide body limit: the file cap (Limits::max_file_size) replaces it.
        Route {
            method: "POST",
            path: "/v1/files",
            summary: "OpenAI Files: upload (multipart `file` + `purpose`; size-capped by serve --max-file-size)",
            api: "files",
            body: None,
            handler: || post(files::upload).layer(DefaultBodyLimit::disable()),
        },
        Route {
            method: "GET",
            path: "/v1/files",
            summary: "OpenAI Files: list (limit, order, after, purpose)",
            api: "files",
            body: None,
            handler: || get(files::list),
        },
        Route {
            method: "GET",
            path: "/v1/files/{file_id}",
            summary: "OpenAI Files: one file's metadata",
            api: "files",
            body: None,
            handler: || get(files::get),
        },
        Route {
            method: "GET",
            path: "/v1/files/{file_id}/content",
            summary: "OpenAI Files: a file's bytes",
            api: "files",
            body: None,
            handler: || get(files::content),
        },
        Route {
            method: "DELETE",
            path: "/v1/files/{file_id}",
            summary: "OpenAI Files: delete a file",
            api: "files",
            body: None,
            handler: || delete(files::delete),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/files",
            summary: "OpenAI Files: upload (multipart `file` + `purpose`; size-capped by serve --max-file-size) (Llama Stack path)",
            api: "files",
            body: None,
            handler: || post(files::upload).layer(DefaultBodyLimit::disable()),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/files",
            summary: "OpenAI Files: list (limit, order, after, purpose) (Llama Stack path)",
            api: "files",
            body: None,
            handler: || get(files::list_ls),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/files/{file_id}",
            summary: "OpenAI Files: one file's metadata (Llama Stack path)",
            api: "files",
            body: None,
            handler: || get(files::get),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/files/{file_id}/content",
            summary: "OpenAI Files: a file's bytes (Llama Stack path)",
            api: "files",
            body: None,
            handler: || get(files::content),
        },
        Route {
            method: "DELETE",
            path: "/v1/openai/v1/files/{file_id}",
            summary: "OpenAI Files: delete a file (Llama Stack path)",
            api: "files",
            body: None,
            handler: || delete(files::delete),
        },
        Route {
            method: "POST",
            path: "/v1/inference/chat-completion",
            summary: "Llama Stack chat completion",
            api: "inference",
            body: Some(schema::<ls::ChatCompletionRequest>),
            handler: || post(ls::chat_completion),
        },
        Route {
            method: "POST",
            path: "/v1/inference/completion",
            summary: "Llama Stack completion",
            api: "inference",
            body: Some(schema::<ls::CompletionRequest>),
            handler: || post(ls::completion),
        },
        Route {
            method: "POST",
            path: "/v1/inference/batch-chat-completion",
            summary: "Llama Stack batch chat completion",
            api: "inference",
            body: Some(schema::<ls::BatchChatRequest>),
            handler: || post(ls::batch_chat_completion),
        },
        Route {
            method: "POST",
            path: "/v1/inference/batch-completion",
            summary: "Llama Stack batch completion",
            api: "inference",
            body: Some(schema::<ls::BatchCompletionRequest>),
            handler: || post(ls::batch_completion),
        },
        Route {
            method: "GET",
            path: "/v1/shields",
            summary: "Shields (Llama Guard, Prompt Guard, regex rules)",
            api: "shields",
            body: None,
            handler: || get(shields::api::list),
        },
        Route {
            method: "POST",
            path: "/v1/shields",
            summary: "Register a shield: Llama Guard on a model, Prompt Guard from a folder, or a regex rule",
            api: "shields",
            body: Some(schema::<shields::api::RegisterShield>),
            handler: || post(shields::api::register),
        },
        Route {
            method: "GET",
            path: "/v1/shields/{shield_id}",
            summary: "One shield",
            api: "shields",
            body: None,
            handler: || get(shields::api::get),
        },
        Route {
            method: "DELETE",
            path: "/v1/shields/{shield_id}",
            summary: "Delete a shield",
            api: "shields",
            body: None,
            handler: || delete(shields::api::delete),
        },
        Route {
            method: "POST",
            path: "/v1/safety/run-shield",
            summary: "Run a shield on messages (Llama Stack)",
            api: "safety",
            body: Some(schema::<shields::api::RunShieldRequest>),
            handler: || post(shields::api::run_shield),
        },
        Route {
            method: "POST",
            path: "/v1/moderations",
            summary: "OpenAI moderation, answered by a shield (`model` = shield id)",
            api: "safety",
            body: Some(schema::<shields::api::ModerationRequest>),
            handler: || post(shields::api::moderations),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/moderations",
            summary: "OpenAI moderation (Llama Stack path)",
            api: "safety",
            body: Some(schema::<shields::api::ModerationRequest>),
            handler: || post(shields::api::moderations),
        },
        Route {
            method: "POST",
            path: "/v1/agents",
            summary: "Create an agent (Llama Stack agent config)",
            api: "agents",
            body: Some(schema::<agents::api::CreateAgent>),
            handler: || post(agents::api::create),
        },
        Route {
            method: "GET",
            path: "/v1/agents",
            summary: "Agents",
            api: "agents",
            body: None,
            handler: || get(agents::api::list),
        },
        Route {
            method: "GET",
            path: "/v1/agents/{agent_id}",
            summary: "One agent",
            api: "agents",
            body: None,
            handler: || get(agents::api::get),
        },
        Route {
            method: "DELETE",
            path: "/v1/agents/{agent_id}",
            summary: "Delete an agent with its sessions",
            api: "agents",
            body: None,
            handler: || delete(agents::api::delete),
        },
        Route {
            method: "POST",
            path: "/v1/agents/{agent_id}/session",
            summary: "Create a session",
            api: "agents",
            body: Some(schema::<agents::api::CreateSession>),
            handler: || post(agents::api::create_session),
        },
        Route {
            method: "GET",
            path: "/v1/agents/{agent_id}/sessions",
            summary: "An agent's sessions",
            api: "agents",
            body: None,
            handler: || get(agents::api::list_sessions),
        },
        Route {
            method: "GET",
            path: "/v1/agents/{agent_id}/session/{session_id}",
            summary: "One session with its turns",
            api: "agents",
            body: None,
            handler: || get(agents::api::get_session),
        },
        Route {
            method: "DELETE",
            path: "/v1/agents/{agent_id}/session/{session_id}",
            summary: "Delete a session",
            api: "agents",
            body: None,
            handler: || delete(agents::api::delete_session),
        },
        Route {
            method: "POST",
            path: "/v1/agents/{agent_id}/session/{session_id}/turn",
            summary: "Run a turn: inference, tools, shields (streamed as step events)",
            api: "agents",
            body: Some(schema::<agents::api::CreateTurn>),
            handler: || post(agents::api::create_turn),
        },
        Route {
            method: "GET",
            path: "/v1/agents/{agent_id}/session/{session_id}/turn/{turn_id}",
            summary: "One turn",
            api: "agents",
            body: None,
            handler: || get(agents::api::get_turn),
        },
        Route {
            method: "POST",
            path: "/v1/agents/{agent_id}/session/{session_id}/turn/{turn_id}/resume",
            summary: "Resume a turn with client tool results",
            api: "agents",
            body: Some(schema::<agents::api::ResumeTurn>),
            handler: || post(agents::api::resume),
        },
        Route {
            method: "GET",
            path: "/v1/agents/{agent_id}/session/{session_id}/turn/{turn_id}/step/{step_id}",
            summary: "One step of a turn",
            api: "agents",
            body: None,
            handler: || get(agents::api::get_step),
        },
        Route {
            method: "GET",
            path: "/v1/toolgroups",
            summary: "Tool groups (built-ins and MCP servers)",
            api: "tools",
            body: None,
            handler: || get(agents::tools::list_groups),
        },
        Route {
            method: "POST",
            path: "/v1/toolgroups",
            summary: "Register an MCP server's tools as a group",
            api: "tools",
            body: Some(schema::<agents::tools::RegisterGroup>),
            handler: || post(agents::tools::register_group),
        },
        Route {
            method: "GET",
            path: "/v1/toolgroups/{toolgroup_id}",
            summary: "One tool group",
            api: "tools",
            body: None,
            handler: || get(agents::tools::get_group),
        },
        Route {
            method: "DELETE",
            path: "/v1/toolgroups/{toolgroup_id}",
            summary: "Unregister a tool group",
            api: "tools",
            body: None,
            handler: || delete(agents::tools::unregister_group),
        },
        Route {
            method: "GET",
            path: "/v1/tools",
            summary: "Tools, of every group or one (toolgroup_id)",
            api: "tools",
            body: None,
            handler: || get(agents::tools::list_tools),
        },
        Route {
            method: "GET",
            path: "/v1/tools/{tool_name}",
            summary: "One tool",
            api: "tools",
            body: None,
            handler: || get(agents::tools::get_tool),
        },
        Route {
            method: "GET",
            path: "/v1/tool-runtime/list-tools",
            summary: "Tool definitions of a group or an MCP endpoint",
            api: "tools",
            body: None,
            handler: || get(agents::tools::runtime_list_tools),
        },
        Route {
            method: "POST",
            path: "/v1/tool-runtime/invoke",
            summary: "Run one tool call (code interpreter, web search, Wolfram Alpha, MCP)",
            api: "tools",
            body: Some(schema::<agents::tools::InvokeRequest>),
            handler: || post(agents::tools::invoke),
        },
        Route {
            method: "GET",
            path: "/v1/health",
            summary: "Llama Stack health",
            api: "inspect",
            body: None,
            handler: || get(ops::ls_health),
        },
        Route {
            method: "GET",
            path: "/v1/version",
            summary: "Server version",
            api: "inspect",
            body: None,
            handler: || get(ops::version),
        },
        Route {
            method: "GET",
            path: "/v1/inspect/routes",
            summary: "Routes",
            api: "inspect",
            body: None,
            handler: || get(ops::inspect_routes),
        },
        Route {
            method: "GET",
            path: "/v1/providers",
            summary: "Providers",
            api: "inspect",
            body: None,
            handler: || get(ops::providers),
        },
        Route {
            method: "GET",
            path: "/v1/providers/{provider_id}",
            summary: "One provider",
            api: "inspect",
            body: None,
            handler: || get(ops::provider),
        },
        Route {
            method: "GET",
            path: "/",
            summary: "Ollama: \"Ollama is running\" (HEAD too)",
            api: "ollama",
            body: None,
            handler: || get(ollama::root),
        },
        Route {
            method: "GET",
            path: "/api/version",
            summary: "Ollama: server version",
            api: "ollama",
            body: None,
            handler: || get(ollama::version),
        },
        Route {
            method: "GET",
            path: "/api/tags",
            summary: "Ollama: served and stored models",
            api: "ollama",
            body: None,
            handler: || get(ollama::tags),
        },
        Route {
            method: "GET",
            path: "/api/ps",
            summary: "Ollama: loaded models",
            api: "ollama",
            body: None,
            handler: || get(ollama::ps),
        },
        Route {
            method: "POST",
            path: "/api/show",
            summary: "Ollama: model details",
            api: "ollama",
            body: Some(schema::<ollama::ShowRequest>),
            handler: || post(ollama::show),
        },
        Route {
            method: "POST",
            path: "/api/chat",
            summary: "Ollama: chat (NDJSON stream by default)",
            api: "ollama",
            body: Some(schema::<ollama::ChatRequest>),
            handler: || post(ollama::chat),
        },
        Route {
            method: "POST",
            path: "/api/generate",
            summary: "Ollama: completion (NDJSON stream by default)",
            api: "ollama",
            body: Some(schema::<ollama::GenerateRequest>),
            handler: || post(ollama::generate),
        },
        Route {
            method: "POST",
            path: "/api/pull",
            summary: "Ollama: pull a model into the store (NDJSON progress)",
            api: "ollama",
            body: Some(schema::<ollama::PullRequest>),
            handler: || post(ollama::pull),
        },
        Route {
            method: "DELETE",
            path: "/api/delete",
            summary: "Ollama: remove a model from the store",
            api: "ollama",
            body: Some(schema::<ollama::DeleteRequest>),
            handler: || delete(ollama::delete),
        },
        Route {
            method: "POST",
            path: "/api/embed",
            summary: "Ollama: embeddings",
            api: "ollama",
            body: Some(schema::<embeddings::OllamaEmbedRequest>),
            handler: || post(embeddings::ollama_embed),
        },
        Route {
            method: "POST",
            path: "/api/embeddings",
            summary: "Ollama: embeddings, older route",
            api: "ollama",
            body: Some(schema::<embeddings::OllamaEmbeddingsRequest>),
            handler: || post(embeddings::ollama_embeddings),
        },
        // Vector stores (vector_stores/), on both path prefixes.
        Route {
            method: "POST",
            path: "/v1/vector_stores",
            summary: "Create a vector store (name, file_ids, metadata, expires_after, chunking_strategy)",
            api: "vector-stores",
            body: None,
            handler: || post(vector_stores::stores::create),
        },
        Route {
            method: "GET",
            path: "/v1/vector_stores",
            summary: "Vector stores (limit, order, after, before)",
            api: "vector-stores",
            body: None,
            handler: || get(vector_stores::stores::list),
        },
        Route {
            method: "GET",
            path: "/v1/vector_stores/{vector_store_id}",
            summary: "A vector store",
            api: "vector-stores",
            body: None,
            handler: || get(vector_stores::stores::get),
        },
        Route {
            method: "POST",
            path: "/v1/vector_stores/{vector_store_id}",
            summary: "Update a vector store (name, metadata, expires_after)",
            api: "vector-stores",
            body: None,
            handler: || post(vector_stores::stores::update),
        },
        Route {
            method: "DELETE",
            path: "/v1/vector_stores/{vector_store_id}",
            summary: "Delete a vector store and its chunks",
            api: "vector-stores",
            body: None,
            handler: || delete(vector_stores::stores::delete),
        },
        Route {
            method: "POST",
            path: "/v1/batches",
            summary: "Create a batch (OpenAI; input_file_id from /v1/files, endpoint, completion_window 24h)",
            api: "batches",
            body: None,
            handler: || post(batch::api::create),
        },
        Route {
            method: "GET",
            path: "/v1/batches",
            summary: "Batches, newest first (after, limit)",
            api: "batches",
            body: None,
            handler: || get(batch::api::list),
        },
        Route {
            method: "GET",
            path: "/v1/batches/{batch_id}",
            summary: "A batch",
            api: "batches",
            body: None,
            handler: || get(batch::api::get),
        },
        Route {
            method: "POST",
            path: "/v1/batches/{batch_id}/cancel",
            summary: "Cancel a batch (finished lines are kept in its output file)",
            api: "batches",
            body: None,
            handler: || post(batch::api::cancel),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/batches",
            summary: "Create a batch (OpenAI; input_file_id from /v1/files, endpoint, completion_window 24h)",
            api: "batches",
            body: None,
            handler: || post(batch::api::create),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/batches",
            summary: "Batches, newest first (after, limit)",
            api: "batches",
            body: None,
            handler: || get(batch::api::list),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/batches/{batch_id}",
            summary: "A batch",
            api: "batches",
            body: None,
            handler: || get(batch::api::get),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/batches/{batch_id}/cancel",
            summary: "Cancel a batch (finished lines are kept in its output file)",
            api: "batches",
            body: None,
            handler: || post(batch::api::cancel),
        },
        Route {
            method: "POST",
            path: "/v1/fine_tuning/jobs",
            summary: "Create a fine-tuning job (LoRA by default; training_file from /v1/files)",
            api: "fine-tuning",
            body: None,
            handler: || post(fine_tuning::openai::create),
        },
        Route {
            method: "GET",
            path: "/v1/fine_tuning/jobs",
            summary: "Fine-tuning jobs, newest first (after, limit)",
            api: "fine-tuning",
            body: None,
            handler: || get(fine_tuning::openai::list),
        },
        Route {
            method: "GET",
            path: "/v1/fine_tuning/jobs/{job_id}",
            summary: "A fine-tuning job",
            api: "fine-tuning",
            body: None,
            handler: || get(fine_tuning::openai::get),
        },
        Route {
            method: "POST",
            path: "/v1/fine_tuning/jobs/{job_id}/cancel",
            summary: "Cancel a fine-tuning job (a running one stops after its step, with a checkpoint)",
            api: "fine-tuning",
            body: None,
            handler: || post(fine_tuning::openai::cancel),
        },
        Route {
            method: "GET",
            path: "/v1/fine_tuning/jobs/{job_id}/events",
            summary: "A fine-tuning job's events, newest first (after, limit)",
            api: "fine-tuning",
            body: None,
            handler: || get(fine_tuning::openai::events),
        },
        Route {
            method: "GET",
            path: "/v1/fine_tuning/jobs/{job_id}/checkpoints",
            summary: "A fine-tuning job's checkpoints",
            api: "fine-tuning",
            body: None,
            handler: || get(fine_tuning::openai::checkpoints),
        },
        Route {
            method: "POST",
            path: "/v1/post-training/supervised-fine-tune",
            summary: "Start supervised fine-tuning (LoRA with algorithm_config, else full)",
            api: "post-training",
            body: None,
            handler: || post(fine_tuning::llama_stack::supervised_fine_tune),
        },
        Route {
            method: "POST",
            path: "/v1/post-training/preference-optimize",
            summary: "Preference optimization (DPO): not available yet (501)",
            api: "post-training",
            body: None,
            handler: || post(fine_tuning::llama_stack::preference_optimize),
        },
        Route {
            method: "GET",
            path: "/v1/post-training/jobs",
            summary: "Post-training jobs",
            api: "post-training",
            body: None,
            handler: || get(fine_tuning::llama_stack::jobs),
        },
        Route {
            method: "GET",
            path: "/v1/post-training/job/status",
            summary: "A post-training job's status (job_uuid)",
            api: "post-training",
            body: None,
            handler: || get(fine_tuning::llama_stack::status),
        },
        Route {
            method: "GET",
            path: "/v1/post-training/job/artifacts",
            summary: "A post-training job's checkpoints (job_uuid)",
            api: "post-training",
            body: None,
            handler: || get(fine_tuning::llama_stack::artifacts),
        },
        Route {
            method: "POST",
            path: "/v1/post-training/job/cancel",
            summary: "Cancel a post-training job",
            api: "post-training",
            body: None,
            handler: || post(fine_tuning::llama_stack::cancel),
        },
        // Llama Stack datasets and scoring (datasets/).
        Route {
            method: "POST",
            path: "/v1/datasets",
            summary: "Llama Stack: register a dataset (purpose; source rows, or a uri: local path, file://, data: URL of CSV / JSON Lines, uploaded file id)",
            api: "datasets",
            body: None,
            handler: || post(datasets::api::register),
        },
        Route {
            method: "GET",
            path: "/v1/datasets",
            summary: "Llama Stack: datasets",
            api: "datasets",
            body: None,
            handler: || get(datasets::api::list),
        },
        Route {
            method: "GET",
            path: "/v1/datasets/{dataset_id}",
            summary: "Llama Stack: a dataset",
            api: "datasets",
            body: None,
            handler: || get(datasets::api::get),
        },
        Route {
            method: "DELETE",
            path: "/v1/datasets/{dataset_id}",
            summary: "Llama Stack: unregister a dataset",
            api: "datasets",
            body: None,
            handler: || delete(datasets::api::unregister),
        },
        Route {
            method: "GET",
            path: "/v1/datasetio/iterrows/{dataset_id}",
            summary: "Llama Stack: a page of a dataset's rows (start_index, limit; -1 for all)",
            api: "datasets",
            body: None,
            handler: || get(datasets::api::iterrows),
        },
        Route {
            method: "POST",
            path: "/v1/datasetio/append-rows/{dataset_id}",
            summary: "Llama Stack: append rows to a dataset",
            api: "datasets",
            body: None,
            handler: || post(datasets::api::append_rows),
        },
        Route {
            method: "GET",
            path: "/v1/scoring-functions",
            summary: "Llama Stack: scoring functions (built-in and registered)",
            api: "scoring",
            body: None,
            handler: || get(datasets::scoring::list),
        },
        Route {
            method: "GET",
            path: "/v1/scoring-functions/{scoring_fn_id}",
            summary: "Llama Stack: a scoring function",
            api: "scoring",
            body: None,
            handler: || get(datasets::scoring::get),
        },
        Route {
            method: "POST",
            path: "/v1/scoring-functions",
            summary: "Llama Stack: register a scoring function (regex_parser or llm_as_judge params, or a basic scorer)",
            api: "scoring",
            body: None,
            handler: || post(datasets::scoring::register),
        },
        Route {
            method: "POST",
            path: "/v1/scoring/score",
            summary: "Llama Stack: score rows (score_rows and aggregated_results per function)",
            api: "scoring",
            body: None,
            handler: || post(datasets::scoring::score),
        },
        Route {
            method: "POST",
            path: "/v1/scoring/score-batch",
            summary: "Llama Stack: score a registered dataset (save_results_dataset registers the scored rows)",
            api: "scoring",
            body: None,
            handler: || post(datasets::scoring::score_batch),
        },
        // Llama Stack eval (datasets/benchmarks.rs).
        Route {
            method: "POST",
            path: "/v1/eval/benchmarks",
            summary: "Llama Stack: register a benchmark (a dataset and scoring functions)",
            api: "eval",
            body: None,
            handler: || post(datasets::benchmarks::register),
        },
        Route {
            method: "GET",
            path: "/v1/eval/benchmarks",
            summary: "Llama Stack: benchmarks",
            api: "eval",
            body: None,
            handler: || get(datasets::benchmarks::list),
        },
        Route {
            method: "GET",
            path: "/v1/eval/benchmarks/{benchmark_id}",
            summary: "Llama Stack: a benchmark",
            api: "eval",
            body: None,
            handler: || get(datasets::benchmarks::get),
        },
        Route {
            method: "DELETE",
            path: "/v1/eval/benchmarks/{benchmark_id}",
            summary: "Llama Stack: unregister a benchmark",
            api: "eval",
            body: None,
            handler: || delete(datasets::benchmarks::unregister),
        },
        Route {
            method: "POST",
            path: "/v1/eval/benchmarks/{benchmark_id}/evaluations",
            summary: "Llama Stack: evaluate rows (generate with the candidate model, then score): generations and scores",
            api: "eval",
            body: None,
            handler: || post(datasets::benchmarks::evaluate_rows),
        },
        Route {
            method: "POST",
            path: "/v1/eval/benchmarks/{benchmark_id}/jobs",
            summary: "Llama Stack: run an eval job over the benchmark's dataset (num_examples rows) in the background",
            api: "eval",
            body: None,
            handler: || post(datasets::benchmarks::run_eval),
        },
        Route {
            method: "GET",
            path: "/v1/eval/benchmarks/{benchmark_id}/jobs/{job_id}",
            summary: "Llama Stack: an eval job's status",
            api: "eval",
            body: None,
            handler: || get(datasets::benchmarks::job_status),
        },
        Route {
            method: "DELETE",
            path: "/v1/eval/benchmarks/{benchmark_id}/jobs/{job_id}",
            summary: "Llama Stack: cancel an eval job",
            api: "eval",
            body: None,
            handler: || delete(datasets::benchmarks::job_cancel),
        },
        Route {
            method: "GET",
            path: "/v1/eval/benchmarks/{benchmark_id}/jobs/{job_id}/result",
            summary: "Llama Stack: an eval job's result (generations and scores)",
            api: "eval",
            body: None,
            handler: || get(datasets::benchmarks::job_result),
        },
        Route {
            method: "POST",
            path: "/v1/synthetic-data-generation/generate",
            summary: "Llama Stack: synthetic data generation (each user message a seed; N replies, shield, score, filter)",
            api: "synthetic-data-generation",
            body: Some(schema::<sdg::SdgRequest>),
            handler: || post(sdg::generate),
        },
        Route {
            method: "POST",
            path: "/v1/vector_stores/{vector_store_id}/files",
            summary: "Attach a file (ingested in the background)",
            api: "vector-stores",
            body: None,
            handler: || post(vector_stores::files::attach),
        },
        Route {
            method: "GET",
            path: "/v1/vector_stores/{vector_store_id}/files",
            summary: "A vector store's files (filter by status, limit, order, after, before)",
            api: "vector-stores",
            body: None,
            handler: || get(vector_stores::files::list),
        },
        Route {
            method: "GET",
            path: "/v1/vector_stores/{vector_store_id}/files/{file_id}",
            summary: "A vector store file",
            api: "vector-stores",
            body: None,
            handler: || get(vector_stores::files::get),
        },
        Route {
            method: "GET",
            path: "/v1/vector_stores/{vector_store_id}/files/{file_id}/content",
            summary: "A vector store file's chunks",
            api: "vector-stores",
            body: None,
            handler: || get(vector_stores::files::content),
        },
        Route {
            method: "POST",
            path: "/v1/vector_stores/{vector_store_id}/files/{file_id}",
            summary: "Update a vector store file's attributes",
            api: "vector-stores",
            body: None,
            handler: || post(vector_stores::files::update),
        },
        Route {
            method: "DELETE",
            path: "/v1/vector_stores/{vector_store_id}/files/{file_id}",
            summary: "Detach a file and drop its chunks",
            api: "vector-stores",
            body: None,
            handler: || delete(vector_stores::files::delete),
        },
        Route {
            method: "POST",
            path: "/v1/vector_stores/{vector_store_id}/search",
            summary: "Search a vector store (vector, keyword or hybrid; filters; score threshold)",
            api: "vector-stores",
            body: None,
            handler: || post(vector_stores::search::search),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/vector_stores",
            summary: "Create a vector store (name, file_ids, metadata, expires_after, chunking_strategy) (Llama Stack path)",
            api: "vector-stores",
            body: None,
            handler: || post(vector_stores::stores::create),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/vector_stores",
            summary: "Vector stores (limit, order, after, before) (Llama Stack path)",
            api: "vector-stores",
            body: None,
            handler: || get(vector_stores::stores::list),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/vector_stores/{vector_store_id}",
            summary: "A vector store (Llama Stack path)",
            api: "vector-stores",
            body: None,
            handler: || get(vector_stores::stores::get),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/vector_stores/{vector_store_id}",
            summary: "Update a vector store (name, metadata, expires_after) (Llama Stack path)",
            api: "vector-stores",
            body: None,
            handler: || post(vector_stores::stores::update),
        },
        Route {
            method: "DELETE",
            path: "/v1/openai/v1/vector_stores/{vector_store_id}",
            summary: "Delete a vector store and its chunks (Llama Stack path)",
            api: "vector-stores",
            body: None,
            handler: || delete(vector_stores::stores::delete),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/vector_stores/{vector_store_id}/files",
            summary: "Attach a file (ingested in the background) (Llama Stack path)",
            api: "vector-stores",
            body: None,
            handler: || post(vector_stores::files::attach),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/vector_stores/{vector_store_id}/files",
            summary: "A vector store's files (filter by status, limit, order, after, before) (Llama Stack path)",
            api: "vector-stores",
            body: None,
            handler: || get(vector_stores::files::list),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/vector_stores/{vector_store_id}/files/{file_id}",
            summary: "A vector store file (Llama Stack path)",
            api: "vector-stores",
            body: None,
            handler: || get(vector_stores::files::get),
        },
        Route {
            method: "GET",
            path: "/v1/openai/v1/vector_stores/{vector_store_id}/files/{file_id}/content",
            summary: "A vector store file's chunks (Llama Stack path)",
            api: "vector-stores",
            body: None,
            handler: || get(vector_stores::files::content),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/vector_stores/{vector_store_id}/files/{file_id}",
            summary: "Update a vector store file's attributes (Llama Stack path)",
            api: "vector-stores",
            body: None,
            handler: || post(vector_stores::files::update),
        },
        Route {
            method: "DELETE",
            path: "/v1/openai/v1/vector_stores/{vector_store_id}/files/{file_id}",
            summary: "Detach a file and drop its chunks (Llama Stack path)",
            api: "vector-stores",
            body: None,
            handler: || delete(vector_stores::files::delete),
        },
        Route {
            method: "POST",
            path: "/v1/openai/v1/vector_stores/{vector_store_id}/search",
            summary: "Search a vector store (vector, keyword or hybrid; filters; score threshold) (Llama Stack path)",
            api: "vector-stores",
            body: None,
            handler: || post(vector_stores::search::search),
        },
        // Llama Stack retrieval (vector_stores/llama_stack.rs).
        Route {
            method: "POST",
            path: "/v1/vector-dbs",
            summary: "Llama Stack: register a vector db (vector_db_id, embedding_model)",
            api: "vector-io",
            body: None,
            handler: || post(vector_stores::llama_stack::register),
        },
        Route {
            method: "GET",
            path: "/v1/vector-dbs",
            summary: "Llama Stack: vector dbs",
            api: "vector-io",
            body: None,
            handler: || get(vector_stores::llama_stack::list),
        },
        Route {
            method: "GET",
            path: "/v1/vector-dbs/{vector_db_id}",
            summary: "Llama Stack: a vector db",
            api: "vector-io",
            body: None,
            handler: || get(vector_stores::llama_stack::get),
        },
        Route {
            method: "DELETE",
            path: "/v1/vector-dbs/{vector_db_id}",
            summary: "Llama Stack: unregister a vector db",
            api: "vector-io",
            body: None,
            handler: || delete(vector_stores::llama_stack::unregister),
        },
        Route {
            method: "POST",
            path: "/v1/vector-io/insert",
            summary: "Llama Stack: insert chunks (precomputed embeddings accepted)",
            api: "vector-io",
            body: None,
            handler: || post(vector_stores::llama_stack::insert),
        },
        Route {
            method: "POST",
            path: "/v1/vector-io/query",
            summary: "Llama Stack: query chunks (max_chunks, score_threshold, mode)",
            api: "vector-io",
            body: None,
            handler: || post(vector_stores::llama_stack::query),
        },
        Route {
            method: "POST",
            path: "/v1/tool-runtime/rag-tool/insert",
            summary: "Llama Stack RAG tool: chunk, embed and store documents",
            api: "vector-io",
            body: None,
            handler: || post(vector_stores::rag_tool::rag_insert),
        },
        Route {
            method: "POST",
            path: "/v1/tool-runtime/rag-tool/query",
            summary: "Llama Stack RAG tool: retrieved context for a query",
            api: "vector-io",
            body: None,
            handler: || post(vector_stores::rag_tool::rag_query),
        },
    ]
}

/// The application: routes, auth, counters, body cap, fallbacks.
pub fn router(app: Arc<AppState>) -> Router {
    vector_stores::install(&app);
    let mut r: Router<Arc<AppState>> = Router::new();
    for route in routes() {
        r = r.route(route.path, (route.handler)());
    }
    r.fallback(ops::fallback)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            ops::guard,
        ))
        .layer(axum::middleware::from_fn(reqlog::log_requests))
        .layer(DefaultBodyLimit::max(app.limits.max_body))
        .with_state(app)
}

/// Server settings.
#[derive(Clone)]
pub struct ServeConfig {
    /// How long running streams may go on after the first Ctrl-C / SIGTERM before they
    /// are ended (each with a proper final event).
    pub shutdown_grace: Duration,
    /// Where shutdown messages for the operator go (the CLI prints them on stderr).
    pub notify: Arc<dyn Fn(&str) + Send + Sync>,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("shutdown_grace", &self.shutdown_grace)
            .finish()
    }
}

/// Extra time past the grace period for responses to reach slow clients, after which the
/// server stops waiting for connections.
const FLUSH_TIME: Duration = Duration::from_secs(5);

/// Serves on `listener` until Ctrl-C / SIGTERM. The first signal refuses new requests
/// (503), says how many streams still run, lets them go on for the grace period and then
/// ends them with a proper final event; a second signal exits the process at once (status
/// 130).
pub async fn serve(
    app: Arc<AppState>,
    listener: tokio::net::TcpListener,
    cfg: ServeConfig,
) -> std::io::Result<()> {
    tracing::info!("listening on http://{}", listener.local_addr()?);
    let engine = app.engine.clone();
    let draining = Arc::new(tokio::sync::Notify::new());
    let signal = {
        let (engine, draining, cfg) = (engine.clone(), draining.clone(), cfg.clone());
        async move {
            shutdown_signal().await;
            let st = engine.stats();
            let running = st.running.load(std::sync::atomic::Ordering::Relaxed);
            let queued = st.queue_depth.load(std::sync::atomic::Ordering::Relaxed);
            (cfg.notify)(&format!(
                "shutting down (draining): refusing new requests; {running} stream(s) running and {queued} queued \
                 request(s) get up to {:.0} s to finish (Ctrl-C again to exit now)",
                cfg.shutdown_grace.as_secs_f64()
            ));
            engine.begin_shutdown(cfg.shutdown_grace);
            draining.notify_one();
            let notify = cfg.notify.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                notify("second signal: exiting now");
                std::process::exit(130);
            });
        }
    };
    let server = axum::serve(listener, router(app)).with_graceful_shutdown(signal);
    let give_up = async {
        draining.notified().await;
        tokio::time::sleep(cfg.shutdown_grace + FLUSH_TIME).await;
    };
    tokio::select! {
        r = server => r?,
        _ = give_up => (cfg.notify)("some clients did not read their last response; stopping anyway"),
    }
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .map_err(std::io::Error::other)?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
