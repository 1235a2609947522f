//! The Llama Stack tool runtime API: tool groups (`GET/POST /v1/toolgroups`,
//! `GET/DELETE /v1/toolgroups/{id}`), tools (`GET /v1/tools`, `/v1/tools/{name}`), and
//! the runtime itself (`GET /v1/tool-runtime/list-tools`, `POST /v1/tool-runtime/invoke`).
//!
//! The three built-in groups are always there (`builtin::code_interpreter`,
//! `builtin::websearch`, `builtin::wolfram_alpha`); MCP groups are registered with an
//! `mcp_endpoint`. Over HTTP only `http(s)://` MCP endpoints are accepted: a `stdio:`
//! endpoint runs a command on this machine, which only the operator may do (`serve --mcp`).
//! Registered groups are kept in the database and come back after a restart.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferrollama_agents::runtime::{BUILTIN_GROUPS, builtin_tool};
use ferrollama_agents::{ToolCall, ToolDef, ToolKind};
use ferrollama_tools::{ProviderKeys, provider_keys};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// A registered tool group.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct ToolGroup {
    pub identifier: String,
    pub provider_id: String,
    #[serde(default)]
    pub mcp_endpoint: Option<String>,
    #[serde(default)]
    pub args: Option<Value>,
}

impl ToolGroup {
    fn resource(&self) -> Value {
        let mut v = json!({
            "identifier": self.identifier,
            "provider_resource_id": self.identifier,
            "provider_id": self.provider_id,
            "type": "tool_group",
        });
        if let Some(u) = &self.mcp_endpoint {
            v["mcp_endpoint"] = json!({ "uri": u });
        }
        if let Some(a) = &self.args {
            v["args"] = a.clone();
        }
        v
    }
}

/// The built-in groups.
pub fn builtin_groups() -> Vec<ToolGroup> {
    BUILTIN_GROUPS
        .iter()
        .map(|(g, t)| ToolGroup {
            identifier: g.to_string(),
            provider_id: match *t {
                "code_interpreter" => "code-interpreter",
                "brave_search" => "brave-search",
                _ => "wolfram-alpha",
            }
            .to_string(),
            mcp_endpoint: None,
            args: None,
        })
        .collect()
}

/// `X-LlamaStack-Provider-Data`'s API keys.
pub fn keys(headers: &HeaderMap) -> ProviderKeys {
    headers
        .get("x-llamastack-provider-data")
        .and_then(|v| v.to_str().ok())
        .map(provider_keys)
        .unwrap_or_default()
}

fn not_found(what: &str, id: &str, list: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no {what} '{id}'; GET {list} lists them"),
    )
}

/// The group by id.
pub fn group(app: &AppState, id: &str) -> Option<ToolGroup> {
    app.agents
        .toolgroups()
        .into_iter()
        .find(|g| g.identifier == id)
}

/// The tools of a group (an MCP group asks its server).
pub async fn group_tools(app: &AppState, g: &ToolGroup) -> Result<Vec<ToolDef>, ApiError> {
    if let Some(ep) = &g.mcp_endpoint {
        return mcp_tools(app, ep, Some(&g.identifier)).await;
    }
    Ok(BUILTIN_GROUPS
        .iter()
        .filter(|(id, _)| *id == g.identifier)
        .filter_map(|(_, t)| builtin_tool(t))
        .collect())
}

async fn mcp_tools(
    app: &AppState,
    endpoint: &str,
    group: Option<&str>,
) -> Result<Vec<ToolDef>, ApiError> {
    let rt = app.agents.runtime.clone();
    let ep = endpoint.to_string();
    let tools = tokio::task::spawn_blocking(move || rt.mcp_tools(&ep))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "api_error",
                format!("MCP server {endpoint}: {e}"),
            )
        })?;
    Ok(tools
        .into_iter()
        .map(|t| ToolDef {
            name: t.name,
            description: t.description,
            parameters: t.input_schema,
            kind: ToolKind::Mcp {
                endpoint: endpoint.to_string(),
            },
            toolgroup: group.map(str::to_string),
        })
        .collect())
}

/// Llama Stack's flat parameter list of a JSON Schema object.
pub fn parameters(schema: &Value) -> Vec<Value> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .map(|(name, s)| {
                    json!({
                        "name": name,
                        "parameter_type": s.get("type").and_then(Value::as_str).unwrap_or("string"),
                        "description": s.get("description").and_then(Value::as_str).unwrap_or(""),
                        "required": required.contains(&name.as_str()),
                        "default": s.get("default").cloned().unwrap_or(Value::Null),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A Llama Stack flat parameter list as a JSON Schema object.
pub fn schema_of(params: &[Value]) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for p in params {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            continue;
        };
        let ty = match p
            .get("parameter_type")
            .and_then(Value::as_str)
            .unwrap_or("string")
        {
            "str" | "string" => "string",
            "int" | "integer" => "integer",
            "float" | "number" => "number",
            "bool" | "boolean" => "boolean",
            "list" | "array" => "array",
            "dict" | "object" => "object",
            _ => "string",
        };
        let mut s = json!({"type": ty});
        if let Some(d) = p.get("description").and_then(Value::as_str) {
            s["description"] = json!(d);
        }
        props.insert(name.to_string(), s);
        if p.get("required").and_then(Value::as_bool).unwrap_or(true) {
            required.push(name.to_string());
        }
    }
    json!({"type": "object", "properties": props, "required": required})
}

fn tool_resource(t: &ToolDef, provider: &str) -> Value {
    json!({
        "identifier": t.name,
        "provider_resource_id": t.name,
        "provider_id": provider,
        "toolgroup_id": t.toolgroup,
        "type": "tool",
        "description": t.description,
        "parameters": parameters(&t.parameters),
        "metadata": {},
    })
}

fn tool_def(t: &ToolDef) -> Value {
    json!({
        "name": t.name,
        "description": t.description,
        "parameters": parameters(&t.parameters),
        "metadata": {},
    })
}

/// `GET /v1/toolgroups`.
pub async fn list_groups(State(app): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = app
        .agents
        .toolgroups()
        .iter()
        .map(ToolGroup::resource)
        .collect();
    axum::Json(json!({ "data": data })).into_response()
}

/// `GET /v1/toolgroups/{id}`.
pub async fn get_group(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let g = group(&app, &id).ok_or_else(|| not_found("tool group", &id, "/v1/toolgroups"))?;
    Ok(axum::Json(g.resource()).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RegisterGroup {
    pub toolgroup_id: String,
    #[serde(default)]
    pub provider_id: Option<String>,
    #[serde(default)]
    pub mcp_endpoint: Option<McpEndpointParam>,
    #[serde(default)]
    pub args: Option<Value>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct McpEndpointParam {
    pub uri: String,
}

/// `POST /v1/toolgroups`: registers an MCP server's tools as a group (its tools are
/// listed right away, so a wrong endpoint fails here, not in a turn).
pub async fn register_group(
    State(app): State<Arc<AppState>>,
    JsonBody(req): JsonBody<RegisterGroup>,
) -> Result<Response, ApiError> {
    let id = req.toolgroup_id.trim();
    if id.is_empty() || id.len() > 256 {
        return Err(ApiError::invalid_param(
            "toolgroup_id",
            "toolgroup_id must be 1 to 256 characters",
        ));
    }
    if BUILTIN_GROUPS.iter().any(|(g, _)| *g == id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            format!("'{id}' is a built-in tool group; it is always registered"),
        ));
    }
    if id.starts_with("builtin::") {
        return Err(ApiError::invalid_param(
            "toolgroup_id",
            format!(
                "no built-in tool group '{id}' here (built-ins: {}); retrieval (builtin::rag) is not available yet",
                BUILTIN_GROUPS.map(|(g, _)| g).join(", ")
            ),
        ));
    }
    let Some(ep) = req.mcp_endpoint else {
        return Err(ApiError::invalid_param(
            "mcp_endpoint",
            "only MCP tool groups can be registered: send mcp_endpoint {\"uri\": \"http://host:port/mcp\"}",
        ));
    };
    let uri = ep.uri.trim().to_string();
    if !(uri.starts_with("http://") || uri.starts_with("https://")) {
        return Err(ApiError::invalid_param(
            "mcp_endpoint",
            "mcp_endpoint.uri must be an http:// or https:// URL (stdio MCP servers are configured by the operator with `serve --mcp`)",
        ));
    }
    let tools = mcp_tools(&app, &uri, Some(id)).await?;
    let g = ToolGroup {
        identifier: id.to_string(),
        provider_id: req
            .provider_id
            .unwrap_or_else(|| "model-context-protocol".to_string()),
        mcp_endpoint: Some(uri),
        args: req.args,
    };
    app.agents
        .add_toolgroup(g.clone())
        .map_err(ApiError::internal)?;
    tracing::info!(group = %g.identifier, tools = tools.len(), "tool group registered");
    Ok(axum::Json(Value::Null).into_response())
}

/// `DELETE /v1/toolgroups/{id}`.
pub async fn unregister_group(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if BUILTIN_GROUPS.iter().any(|(g, _)| *g == id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            format!("'{id}' is a built-in tool group and cannot be removed"),
        ));
    }
    if !app
        .agents
        .remove_toolgroup(&id)
        .map_err(ApiError::internal)?
    {
        return Err(not_found("tool group", &id, "/v1/toolgroups"));
    }
    Ok(axum::Json(Value::Null).into_response())
}

/// Every tool of every group (MCP servers that cannot be reached are skipped and logged),
/// or of one group.
async fn all_tools(app: &AppState, only: Option<&str>) -> Result<Vec<ToolDef>, ApiError> {
    let mut out = Vec::new();
    for g in app.agents.toolgroups() {
        if only.is_some_and(|o| o != g.identifier) {
            continue;
        }
        match group_tools(app, &g).await {
            Ok(t) => out.extend(t),
            Err(e) if only.is_some() => return Err(e),
            Err(e) => tracing::warn!(group = %g.identifier, error = %e, "tool group unavailable"),
        }
    }
    Ok(out)
}

fn provider_of(app: &AppState, t: &ToolDef) -> String {
    t.toolgroup
        .as_deref()
        .and_then(|g| group(app, g))
        .map_or_else(|| "model-context-protocol".into(), |g| g.provider_id)
}

/// `GET /v1/tools?toolgroup_id=`.
pub async fn list_tools(
    State(app): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let only = q.get("toolgroup_id").map(String::as_str);
    if let Some(o) = only
        && group(&app, o).is_none()
    {
        return Err(not_found("tool group", o, "/v1/toolgroups"));
    }
    let data: Vec<Value> = all_tools(&app, only)
        .await?
        .iter()
        .map(|t| tool_resource(t, &provider_of(&app, t)))
        .collect();
    Ok(axum::Json(json!({ "data": data })).into_response())
}

/// `GET /v1/tools/{name}`.
pub async fn get_tool(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = find_tool(&app, &name).await?;
    Ok(axum::Json(tool_resource(&t, &provider_of(&app, &t))).into_response())
}

/// A tool by name: a built-in (also by Llama Stack's `web_search`) or an MCP group's.
pub async fn find_tool(app: &AppState, name: &str) -> Result<ToolDef, ApiError> {
    if let Some(t) = builtin_tool(name) {
        return Ok(t);
    }
    all_tools(app, None)
        .await?
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| not_found("tool", name, "/v1/tools"))
}

/// `GET /v1/tool-runtime/list-tools?tool_group_id=&mcp_endpoint[uri]=`.
pub async fn runtime_list_tools(
    State(app): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let endpoint = q
        .get("mcp_endpoint[uri]")
        .or_else(|| q.get("mcp_endpoint.uri"))
        .or_else(|| q.get("mcp_endpoint"));
    let tools = match (endpoint, q.get("tool_group_id")) {
        (Some(ep), _) => {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(ApiError::invalid_param(
                    "mcp_endpoint",
                    "mcp_endpoint.uri must be an http:// or https:// URL",
                ));
            }
            mcp_tools(&app, ep, None).await?
        }
        (None, Some(g)) => {
            let g = group(&app, g).ok_or_else(|| not_found("tool group", g, "/v1/toolgroups"))?;
            group_tools(&app, &g).await?
        }
        (None, None) => all_tools(&app, None).await?,
    };
    let data: Vec<Value> = tools.iter().map(tool_def).collect();
    Ok(axum::Json(json!({ "data": data })).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct InvokeRequest {
    pub tool_name: String,
    #[serde(default)]
    pub kwargs: Value,
}

/// `POST /v1/tool-runtime/invoke`: one call, outside any session (a code interpreter call
/// runs in a fresh sandbox). A failing tool is a 200 with `error_message`, as Llama Stack
/// answers; an unknown tool is a 404.
pub async fn invoke(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<InvokeRequest>,
) -> Result<Response, ApiError> {
    let mut tool = find_tool(&app, &req.tool_name).await?;
    if let ToolKind::KnowledgeSearch { max_results, .. } = tool.kind {
        // Llama Stack's `knowledge_search` takes the stores in its kwargs.
        let ids: Vec<String> = req
            .kwargs
            .get("vector_db_ids")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        tool.kind = ToolKind::KnowledgeSearch {
            vector_store_ids: ids,
            max_results,
        };
    }
    let call = ToolCall {
        call_id: "invoke".into(),
        tool_name: tool.name.clone(),
        arguments: req.kwargs,
    };
    let keys = keys(&headers);
    let rt = app.agents.runtime.clone();
    let r = tokio::task::spawn_blocking(move || rt.execute_blocking(None, &tool, &call, &keys))
        .await
        .map_err(ApiError::internal)?;
    let body = if r.is_error() {
        json!({"content": r.content, "error_code": 1, "error_message": r.content, "metadata": r.metadata})
    } else {
        json!({"content": r.content, "metadata": r.metadata})
    };
    Ok(axum::Json(body).into_response())
}
