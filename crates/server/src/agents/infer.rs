//! The agent loop's inference and shields on this server: [`EngineInference`] runs a
//! loop step as a chat completion on the engine (the same prompt building and tool-call
//! parsing as `/v1/chat/completions`), streaming text outside tool calls as it is
//! generated; [`EngineShields`] runs registered shields on the loop's messages.

use std::sync::Arc;

use ferrollama_agents::{
    InferReply, InferRequest, Inference, Message, Role as ARole, Shields, StopReason, ToolCall,
    ToolChoice as AChoice, TurnError, Violation,
};
use ferrollama_engine::constrain::Schema;
use ferrollama_engine::scheduler::Event;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::ApiError;
use crate::job::{self, Call, Role, ToolChoice, ToolSpec, Turn};
use crate::state::AppState;

/// Inference on the engine.
#[derive(Debug, Clone)]
pub struct EngineInference {
    pub app: Arc<AppState>,
    /// Constrains every reply that is not a forced tool call to this schema (the Responses
    /// API's `text.format`); None for free text.
    pub response_format: Option<Arc<Schema>>,
}

/// The loop's dialog as the chat layer's turns.
pub fn turns(messages: &[Message]) -> Vec<Turn> {
    messages
        .iter()
        .map(|m| Turn {
            role: match m.role {
                ARole::System => Role::System,
                ARole::User => Role::User,
                ARole::Assistant => Role::Assistant,
                ARole::Tool => Role::Tool,
            },
            text: m.content.clone(),
            tool_calls: m
                .tool_calls
                .iter()
                .map(|c| Call {
                    id: c.call_id.clone(),
                    name: c.tool_name.clone(),
                    arguments: c.arguments.clone(),
                })
                .collect(),
            tool_call_id: m.call_id.clone(),
            name: m.tool_name.clone(),
        })
        .collect()
}

fn api_error(e: ApiError) -> TurnError {
    TurnError::Inference(e.to_string())
}

impl EngineInference {
    fn prepare(&self, req: &InferRequest) -> Result<job::Job, ApiError> {
        let sp: Option<crate::llama_stack::SamplingParams> = match &req.sampling {
            Value::Null => None,
            v => Some(serde_json::from_value(v.clone()).map_err(|e| {
                ApiError::invalid_param("sampling_params", format!("sampling_params: {e}"))
            })?),
        };
        let mut settings = crate::llama_stack::settings(&sp, &None, &None)?;
        if req.max_tokens.is_some() {
            settings.max_tokens = req.max_tokens;
        }
        settings.response_format = self.response_format.clone();
        let tools: Vec<ToolSpec> = req
            .tools
            .iter()
            .map(|t| ToolSpec {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.parameters.clone(),
            })
            .collect();
        let choice = match &req.tool_choice {
            AChoice::Auto => ToolChoice::Auto,
            AChoice::None => ToolChoice::None,
            AChoice::Required => ToolChoice::Required,
            AChoice::Named(n) => ToolChoice::Named(n.clone()),
        };
        job::prepare(
            &self.app,
            &req.model,
            &turns(&req.messages),
            tools,
            choice,
            settings,
        )
    }
}

impl Inference for EngineInference {
    async fn infer(
        &self,
        req: InferRequest,
        deltas: UnboundedSender<String>,
    ) -> Result<InferReply, TurnError> {
        let job = self.prepare(&req).map_err(api_error)?;
        let mut rx = job::submit(&self.app, job.seq.clone()).map_err(api_error)?;
        let mut out = crate::openai::empty_output(&job);
        // Hermes/JSON-format calls are cut out of the text as they complete; a Llama 3.1
        // reply with tools is parsed at the end, so its text is sent then.
        let mut stream = job::CallStream::for_job(&job);
        let hold = stream.is_none() && !job.tools.is_empty();
        loop {
            match rx.recv().await {
                Some(Event::Token { id, text, .. }) => {
                    out.ids.push(id);
                    out.text.push_str(&text);
                    if let Some(cs) = &mut stream {
                        for r in cs.push(&text) {
                            if let job::Release::Text(t) = r {
                                let _ = deltas.send(t);
                            }
                        }
                    } else if !hold {
                        let _ = deltas.send(text);
                    }
                }
                Some(Event::Done(d)) => {
                    if let Some(mut cs) = stream.take() {
                        let rest = d.text.clone();
                        job::apply_done(&mut out, d);
                        let mut rel = cs.push(&rest);
                        rel.extend(cs.finish());
                        for r in rel {
                            if let job::Release::Text(t) = r {
                                let _ = deltas.send(t);
                            }
                        }
                        cs.into_output(&mut out);
                    } else {
                        let rest = d.text.clone();
                        job::finish_output(&self.app, &job, &mut out, d);
                        if hold {
                            let _ = deltas.send(out.content.clone());
                        } else if !rest.is_empty() {
                            let _ = deltas.send(rest);
                        }
                    }
                    break;
                }
                Some(Event::Error(e)) => return Err(api_error(job::engine_error(e))),
                None => {
                    return Err(TurnError::Inference(
                        "the engine dropped the sequence".into(),
                    ));
                }
            }
        }
        let stop_reason = match out.stop_reason() {
            "out_of_tokens" => StopReason::OutOfTokens,
            "end_of_message" => StopReason::EndOfMessage,
            _ => StopReason::EndOfTurn,
        };
        Ok(InferReply {
            content: out.content.trim().to_string(),
            tool_calls: out
                .calls
                .into_iter()
                .map(|c| ToolCall {
                    call_id: c.id,
                    tool_name: c.name,
                    arguments: c.arguments,
                })
                .collect(),
            stop_reason,
            usage: Some((out.prompt_tokens, out.completion_tokens)),
        })
    }
}

/// Registered shields run on the loop's messages.
#[derive(Debug, Clone)]
pub struct EngineShields {
    pub app: Arc<AppState>,
}

impl Shields for EngineShields {
    async fn check(
        &self,
        shields: &[String],
        messages: &[Message],
    ) -> Result<Option<Violation>, TurnError> {
        let gturns = crate::shields::exact_turns(&turns(messages));
        for id in shields {
            let s = self.app.safety.shields.get(id).ok_or_else(|| {
                TurnError::Shield(format!("no shield '{id}'; GET /v1/shields lists them"))
            })?;
            let v = s
                .check(&self.app.engine, &gturns)
                .await
                .map_err(|e| TurnError::Shield(format!("shield '{id}': {e}")))?;
            if v.flagged {
                let j = crate::shields::api::violation_json(&v);
                let mut metadata = j["violation"]["metadata"].clone();
                if let Some(o) = metadata.as_object_mut() {
                    o.insert("shield_id".into(), json!(id));
                }
                return Ok(Some(Violation {
                    violation_level: "error".into(),
                    user_message: ferrollama_safety::REFUSAL.to_string(),
                    metadata,
                }));
            }
        }
        Ok(None)
    }
}
