//! A runnable model: weights, tokenizer and chat template together.

use std::path::Path;

use ferrollama_model::gguf::GgufFile;
use ferrollama_model::{Llama, ModelTokenizer};
use ferrollama_tokenizer::TokenKind;

use crate::error::{EngineError, Result};
use crate::template::{ChatMessage, ChatTemplate};

/// A loaded model ready to generate.
#[derive(Debug)]
pub struct Model {
    pub name: String,
    pub llama: Llama,
    pub tokenizer: ModelTokenizer,
    pub template: ChatTemplate,
}

impl Model {
    /// Loads a `.gguf` file, a Hugging Face folder (config.json, safetensors,
    /// tokenizer.json or tokenizer.model) or a Meta checkpoint folder (params.json,
    /// consolidated.NN.pth, tokenizer.model).
    pub fn load(path: &Path) -> Result<Model> {
        let (llama, tokenizer) = if path.is_dir() {
            let m = ferrollama_model::import::open(path)?;
            let tokenizer = ModelTokenizer::from_keys(&m.tokenizer)?;
            let mut weights = m.weights;
            weights.pack()?;
            (
                Llama {
                    config: m.config,
                    weights,
                },
                tokenizer,
            )
        } else {
            let f = GgufFile::open(path)?;
            (Llama::from_gguf(&f)?, ModelTokenizer::from_gguf(&f)?)
        };
        if tokenizer.bpe.n_tokens() != llama.config.vocab_size {
            return Err(EngineError::Invalid(format!(
                "the tokenizer has {} tokens but the model {}",
                tokenizer.bpe.n_tokens(),
                llama.config.vocab_size
            )));
        }
        let template = tokenizer.chat_format();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        Ok(Model {
            name,
            llama,
            tokenizer,
            template,
        })
    }

    /// Tokens of `text`, with BOS first when the model wants it and `bos` is set.
    pub fn encode(&self, text: &str, bos: bool, parse_special: bool) -> Vec<u32> {
        let mut ids = Vec::new();
        if bos
            && self.tokenizer.add_bos
            && let Some(b) = self.tokenizer.bos
        {
            ids.push(b);
        }
        ids.extend(self.tokenizer.bpe.encode(text, parse_special));
        ids
    }

    /// Bytes a token contributes to visible output (control tokens contribute nothing).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.tokenizer.bpe.token_bytes(id, false).unwrap_or(&[])
    }

    /// The tokens that end generation.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.tokenizer.stop_ids
    }

    /// Whether `id` ends generation.
    pub fn is_stop(&self, id: u32) -> bool {
        self.tokenizer.stop_ids.contains(&id)
    }

    /// Prompt ids for a dialog, ending where the assistant's reply begins.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.chat_prompt_with_tools(messages, &[])
    }

    /// [`Model::chat_prompt`] with tools (OpenAI's `{"type": "function", "function":
    /// {...}}` objects) for a Jinja template that lays them out itself
    /// ([`ChatTemplate::knows_tools`]); the Llama 3.1 format takes its tools in messages.
    pub fn chat_prompt_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
    ) -> Result<Vec<u32>> {
        match &self.template {
            ChatTemplate::Jinja {
                source,
                bos_token,
                eos_token,
            } => {
                let text = ChatTemplate::render_jinja(
                    source, bos_token, eos_token, messages, tools, true,
                )?;
                // The template writes BOS itself when it wants one.
                Ok(self.encode(&text, false, true))
            }
            ChatTemplate::Llama31 => self.llama31_prompt(messages),
        }
    }

    /// Meta's layout, with structural tokens by id and content encoded as plain text so that
    /// user text can never inject a header or end-of-turn token.
    fn llama31_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let bpe = &self.tokenizer.bpe;
        let special = |t: &str| {
            bpe.token_id(t)
                .filter(|&i| bpe.kind(i) == Some(TokenKind::Control))
                .ok_or_else(|| {
                    EngineError::Template(format!(
                        "the vocabulary has no {t} token for the Llama 3.1 format"
                    ))
                })
        };
        let (start, end, eot) = (
            special("<|start_header_id|>")?,
            special("<|end_header_id|>")?,
            special("<|eot_id|>")?,
        );
        let mut ids = vec![special("<|begin_of_text|>")?];
        let header = |ids: &mut Vec<u32>, role: &str| {
            ids.push(start);
            ids.extend(bpe.encode(role, false));
            ids.push(end);
            ids.extend(bpe.encode("\n\n", false));
        };
        for m in messages {
            let role = if m.role == "tool" {
                "ipython"
            } else {
                m.role.as_str()
            };
            header(&mut ids, role);
            if m.role == "assistant" && !m.tool_calls.is_empty() {
                self.llama31_calls(m, &mut ids)?;
                continue;
            }
            ids.extend(bpe.encode(m.text(), false));
            ids.push(eot);
        }
        header(&mut ids, "assistant");
        Ok(ids)
    }

    /// An assistant message that called tools, as Meta's `encode_message` writes it and the
    /// model produced it: `<|python_tag|>` before a code_interpreter call, each call as
    /// `ToolUtils.encode_tool_call` writes it (the code itself, `brave_search.call(query=
    /// "...")`, or the JSON function call), then `<|eom_id|>` — the model stopped to wait
    /// for the results, which follow as `ipython` messages (spec §2.3).
    fn llama31_calls(&self, m: &ChatMessage, ids: &mut Vec<u32>) -> Result<()> {
        use ferrollama_tokenizer::chat::{BuiltinTool, ToolCall, ToolName, ToolPromptFormat};
        let bpe = &self.tokenizer.bpe;
        let special = |t: &str| {
            bpe.token_id(t)
                .filter(|&i| bpe.kind(i) == Some(TokenKind::Control))
        };
        let calls: Vec<ToolCall> = m
            .tool_calls
            .iter()
            .map(|c| ToolCall {
                call_id: c.id.clone().unwrap_or_default(),
                tool_name: match BuiltinTool::parse(&c.function.name) {
                    Some(b) => ToolName::Builtin(b),
                    None => ToolName::Custom(c.function.name.clone()),
                },
                arguments: match &c.function.arguments {
                    serde_json::Value::Object(o) => o.clone(),
                    _ => serde_json::Map::new(),
                },
            })
            .collect();
        if calls.first().map(|c| &c.tool_name)
            == Some(&ToolName::Builtin(BuiltinTool::CodeInterpreter))
            && let Some(tag) = special("<|python_tag|>")
        {
            ids.push(tag);
        }
        ids.extend(bpe.encode(m.text(), false));
        for c in &calls {
            // A built-in call without its argument (a client's message, not the model's
            // output) cannot take Meta's form; it is written as the JSON call instead.
            let text = ferrollama_tokenizer::chat::encode_tool_call(c, ToolPromptFormat::Json)
                .unwrap_or_else(|_| {
                    serde_json::json!({"type": "function", "name": c.tool_name.to_string(), "parameters": c.arguments})
                        .to_string()
                });
            ids.extend(bpe.encode(&text, false));
        }
        let end = special("<|eom_id|>")
            .or_else(|| special("<|eot_id|>"))
            .ok_or_else(|| {
                EngineError::Template("the vocabulary has no <|eom_id|> or <|eot_id|> token".into())
            })?;
        ids.push(end);
        Ok(())
    }
}
