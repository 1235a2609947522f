//! Training chats in a model's own Jinja chat template (a GGUF's `tokenizer.chat_template`,
//! e.g. SmolLM2's or Qwen2.5's), so a model whose vocabulary is not Llama 3's is trained on
//! exactly the prompts `chat` and `serve` give it.
//!
//! A template renders a whole dialog to text; it does not say which characters the model
//! wrote. Each trained assistant message is located the way inference meets it: the dialog
//! before it, rendered with the generation prompt, is what the model is fed; the dialog
//! through it, rendered without, extends that text by exactly what the model produced. So
//! the prompt part is tokenized as a prompt and the reply part as the model's own tokens,
//! and the reply is counted through its end-of-turn token (`<|im_end|>`, the EOS, ...):
//! whatever the template writes after that (a newline) is layout the model never generates.
//!
//! A template that rewrites earlier turns once later ones exist (some drop the reasoning of
//! old replies) has no such prefixes; it is refused with that reason rather than trained on
//! text that inference would never show.

use ferrollama_model::ModelTokenizer;
use ferrollama_model::template::{ChatMessage, ChatTemplate, TemplateToolCall};
use ferrollama_tokenizer::chat::{Message, Role};
use serde_json::{Value, json};

use crate::data::openai::Check;
use crate::data::record::{Chat, ToolSpec};
use crate::data::render::{ChatRenderer, Masked};

/// A model's Jinja template and tokenizer as training data's [`ChatRenderer`].
#[derive(Debug)]
pub struct TemplateRenderer<'a> {
    tok: &'a ModelTokenizer,
    source: String,
    bos_token: String,
    eos_token: String,
    bos: u32,
    eos: u32,
}

impl<'a> TemplateRenderer<'a> {
    /// `None` when the model has no Jinja chat template or no end-of-text token.
    pub fn new(tok: &'a ModelTokenizer) -> Option<TemplateRenderer<'a>> {
        let eos = tok.eos?;
        // The engine's own choice of template: a Llama 3 template is handled natively.
        match tok.chat_format() {
            ChatTemplate::Jinja {
                source,
                bos_token,
                eos_token,
            } => Some(TemplateRenderer {
                tok,
                source,
                bos_token,
                eos_token,
                bos: tok.bos.unwrap_or(eos),
                eos,
            }),
            ChatTemplate::Llama31 => None,
        }
    }

    fn render(&self, msgs: &[ChatMessage], tools: &[Value], prompt: bool) -> Check<String> {
        ChatTemplate::render_jinja(
            &self.source,
            &self.bos_token,
            &self.eos_token,
            msgs,
            tools,
            prompt,
        )
        .map_err(|e| format!("the model's chat template: {e}"))
    }

    /// Text as inference tokenizes a rendered prompt (special-token text is parsed: the
    /// template writes `<|im_start|>` and the like as text).
    fn encode(&self, text: &str) -> Vec<u32> {
        self.tok.bpe.encode(text, true)
    }
}

/// A training message as templates see it (OpenAI's shape, as `serve` passes dialogs).
fn template_message(m: &Message) -> ChatMessage {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let text = m.content.joined();
    let mut out = ChatMessage::new(role, &text);
    if m.role == Role::Assistant && !m.tool_calls.is_empty() {
        if text.is_empty() {
            out.content = None;
        }
        out.tool_calls = m
            .tool_calls
            .iter()
            .map(|c| {
                TemplateToolCall::new(
                    (!c.call_id.is_empty()).then(|| c.call_id.clone()),
                    c.tool_name.as_str(),
                    Value::Object(c.arguments.clone()),
                )
            })
            .collect();
    }
    out
}

/// OpenAI's `{"type": "function", "function": {...}}` tool objects.
fn template_tools(tools: &[ToolSpec]) -> Vec<Value> {
    tools
        .iter()
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}})
        })
        .collect()
}

const NOT_PREFIX: &str = "the model's chat template does not render this dialog as a growing \
    prefix (it rewrites earlier turns once later ones exist), so the tokens the model wrote \
    cannot be located";

impl ChatRenderer for TemplateRenderer<'_> {
    fn render_chat(&self, chat: &Chat) -> Check<Masked> {
        let msgs: Vec<ChatMessage> = chat
            .messages
            .iter()
            .map(|t| template_message(&t.message))
            .collect();
        let tools = template_tools(&chat.tools);
        let mut out = Masked::default();
        // The text already turned into tokens.
        let mut done = String::new();
        for (i, turn) in chat.messages.iter().enumerate() {
            if turn.message.role != Role::Assistant {
                continue;
            }
            let prompt = self.render(&msgs[..i], &tools, true)?;
            let full = self.render(&msgs[..=i], &tools, false)?;
            let (Some(fed), Some(reply)) = (
                prompt.strip_prefix(done.as_str()),
                full.strip_prefix(prompt.as_str()),
            ) else {
                return Err(NOT_PREFIX.into());
            };
            out.push(&self.encode(fed), false);
            let ids = self.encode(reply);
            // Through the last end-of-turn token: what follows is the template's layout.
            let end = ids
                .iter()
                .rposition(|id| self.tok.stop_ids.contains(id))
                .map_or(ids.len(), |p| p + 1);
            out.push(&ids[..end], turn.trained);
            out.push(&ids[end..], false);
            done = full;
        }
        Ok(out)
    }

    fn encode_text(&self, text: &str) -> Vec<u32> {
        self.tok.bpe.encode(text, false)
    }

    fn begin_of_text(&self) -> u32 {
        self.bos
    }

    fn end_of_text(&self) -> u32 {
        self.eos
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ferrollama_model::gguf::GgufFile;
    use ferrollama_tokenizer::chat::Content;

    use crate::data::record::Turn;

    use super::*;

    /// SmolLM2-135M-Instruct's tokenizer and ChatML template (scripts/test fetches it).
    fn smollm2() -> ModelTokenizer {
        let path = std::env::var_os("FERROLLAMA_SMOLLM2")
            .expect("FERROLLAMA_SMOLLM2 is not set: run through scripts/test");
        ModelTokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap()
    }

    fn turn(role: Role, text: &str, trained: bool) -> Turn {
        Turn {
            message: Message::new(role, Content::Text(text.into())),
            trained,
        }
    }

    #[test]
    fn counted_tokens_are_the_reply_through_end_of_turn_and_the_rest_is_the_prompt() {
        let tok = smollm2();
        let r = TemplateRenderer::new(&tok).expect("SmolLM2 has a Jinja template");
        let chat = Chat {
            messages: vec![
                turn(Role::User, "Repeat apple.", false),
                turn(Role::Assistant, "Answer: APPLE (5 letters)", true),
                turn(Role::User, "And pear?", false),
                turn(Role::Assistant, "Answer: PEAR (4 letters)", false),
            ],
            tools: Vec::new(),
        };
        let m = r.render_chat(&chat).unwrap();
        let counted: Vec<u32> = m
            .tokens
            .iter()
            .zip(&m.counted)
            .filter_map(|(&t, &c)| c.then_some(t))
            .collect();
        // Only the first reply (the second has weight 0), with its end-of-turn token.
        assert_eq!(
            tok.bpe.decode(&counted, true).unwrap(),
            "Answer: APPLE (5 letters)<|im_end|>"
        );
        // What precedes the reply is exactly the prompt inference feeds the model: the
        // template with the generation prompt, tokenized as `chat`/`serve` do.
        let first = chat.messages[..1]
            .iter()
            .map(|t| template_message(&t.message))
            .collect::<Vec<_>>();
        let prompt = r.render(&first, &[], true).unwrap();
        let start = m.counted.iter().position(|&c| c).unwrap();
        assert_eq!(m.tokens[..start], r.encode(&prompt)[..]);
        assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
        // And the whole dialog is the template's full rendering.
        assert_eq!(
            tok.bpe.decode(&m.tokens, true).unwrap(),
            r.render(
                &chat
                    .messages
                    .iter()
                    .map(|t| template_message(&t.message))
                    .collect::<Vec<_>>(),
                &[],
                false
            )
            .unwrap()
        );
    }

    #[test]
    fn a_template_that_rewrites_earlier_turns_is_refused() {
        let mut tok = smollm2();
        // Drops every assistant message but the last, as reasoning-stripping templates do.
        tok.chat_template = Some(
            "{% for m in messages %}{% if m.role != 'assistant' or loop.last %}\
             <|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}\
             {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
                .into(),
        );
        let r = TemplateRenderer::new(&tok).unwrap();
        let chat = Chat {
            messages: vec![
                turn(Role::User, "a", false),
                turn(Role::Assistant, "b", true),
                turn(Role::User, "c", false),
                turn(Role::Assistant, "d", true),
            ],
            tools: Vec::new(),
        };
        let e = r.render_chat(&chat).unwrap_err();
        assert!(e.contains("growing prefix"), "{e}");
    }
}
