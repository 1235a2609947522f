//! Chat templates: the Llama 3.1 native format, or the Jinja `tokenizer.chat_template`
//! stored in a GGUF file, rendered by a sandboxed engine (minijinja: no file or network
//! access, and a fuel limit so a hostile template cannot run forever).

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value, context};
use serde::Serialize;

use crate::error::{EngineError, Result};

/// A chat message as templates see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// How a model wants dialogs laid out.
#[derive(Debug, Clone)]
pub enum ChatTemplate {
    /// Meta's Llama 3.1 format (header/eot special tokens by id; content never parsed for
    /// special tokens).
    Llama31,
    /// A Hugging Face-style Jinja template.
    Jinja {
        source: String,
        bos_token: String,
        eos_token: String,
    },
}

/// Upper bound on template work (minijinja "fuel" instructions).
const FUEL: u64 = 5_000_000;

impl ChatTemplate {
    /// Chooses the template: Llama 3.1 when the template is Llama 3's (recognised by its
    /// header tokens), the Jinja source otherwise, and Llama 3.1 when there is none.
    pub fn detect(source: Option<&str>, bos_token: &str, eos_token: &str) -> ChatTemplate {
        match source {
            Some(s) if !s.contains("<|start_header_id|>") => ChatTemplate::Jinja {
                source: s.to_string(),
                bos_token: bos_token.into(),
                eos_token: eos_token.into(),
            },
            _ => ChatTemplate::Llama31,
        }
    }

    /// Renders a Jinja template to text.
    pub fn render_jinja(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |_fmt: String| -> String {
            // Templates ask for today's date; a fixed-format UTC date keeps output honest
            // without a time-zone database.
            ferrollama_tokenizer::chat::Date::today().long_format()
        });
        env.add_template("chat", source)
            .map_err(|e| EngineError::Template(format!("the chat template does not parse: {e}")))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| EngineError::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
        })
        .map_err(|e| EngineError::Template(format!("rendering the chat template failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_smollm2_chatml() {
        let out =
            ChatTemplate::render_jinja(CHATML, "", "", &[ChatMessage::new("user", "Hi")], true)
                .expect("render");
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_and_raise_exception_work() {
        let t = "{{ messages[0].content.strip().upper() }}{% if messages|length > 1 %}{{ raise_exception('only one') }}{% endif %}";
        let out =
            ChatTemplate::render_jinja(t, "", "", &[ChatMessage::new("user", "  hi ")], false)
                .expect("render");
        assert_eq!(out, "HI");
        let two = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
        let e = ChatTemplate::render_jinja(t, "", "", &two, false).expect_err("raises");
        assert!(e.to_string().contains("only one"), "{e}");
    }

    #[test]
    fn hostile_templates_fail_cleanly() {
        let e = ChatTemplate::render_jinja(
            "{% for i in range(100000000) %}x{% endfor %}",
            "",
            "",
            &[],
            false,
        );
        assert!(e.is_err(), "fuel limit");
        assert!(ChatTemplate::render_jinja("{% include 'x' %}", "", "", &[], false).is_err());
        assert!(ChatTemplate::render_jinja("{{ unclosed", "", "", &[], false).is_err());
    }
}
