//! The Jinja templates of a task file (`doc_to_text`, `doc_to_target`, `doc_to_choice`,
//! `description`), rendered over a document as lm-eval's `utils.apply_template` does:
//! undefined names are errors (jinja2's `StrictUndefined`), a trailing newline is kept,
//! and Python string methods (`text.split(' ')`, `.strip()`) work through minijinja's
//! Python-compatibility callback.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};

use crate::error::{EvalError, Result};

/// Compiled templates, each under the name of the task-file field it came from.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        Templates { env }
    }

    /// Compiles `source` as the template of `field` (a syntax error names the field).
    pub fn add(&mut self, field: &str, source: &str) -> Result<()> {
        self.env
            .add_template_owned(field.to_string(), source.to_string())
            .map_err(|e| EvalError::Task(format!("{field}: not a valid Jinja template: {e}")))?;
        if let Some(expr) = single_expression(source) {
            self.env
                .compile_expression_owned(expr.to_string())
                .map_err(|e| {
                    EvalError::Task(format!("{field}: not a valid Jinja expression: {e}"))
                })?;
        }
        Ok(())
    }

    /// Renders the template of `field` over `doc`.
    pub fn render(&self, field: &str, doc: &Map<String, Value>) -> Result<String> {
        let t = self
            .env
            .get_template(field)
            .map_err(|e| EvalError::Task(format!("{field}: {e}")))?;
        t.render(doc)
            .map_err(|e| EvalError::Task(format!("{field}: cannot render: {e}")))
    }

    /// The value of a template that is one `{{ expression }}` (a list of choices, say),
    /// as JSON; `None` for any other template.
    pub fn eval_single(
        &self,
        field: &str,
        source: &str,
        doc: &Map<String, Value>,
    ) -> Result<Option<Value>> {
        let Some(expr) = single_expression(source) else {
            return Ok(None);
        };
        let e = self
            .env
            .compile_expression_owned(expr.to_string())
            .map_err(|e| EvalError::Task(format!("{field}: {e}")))?;
        let v = e
            .eval(doc)
            .map_err(|e| EvalError::Task(format!("{field}: cannot evaluate: {e}")))?;
        if v.is_undefined() {
            return Err(EvalError::Task(format!("{field}: `{expr}` is undefined")));
        }
        let json = serde_json::to_value(&v)
            .map_err(|e| EvalError::Task(format!("{field}: value not representable: {e}")))?;
        Ok(Some(json))
    }
}

/// `expr` when `source` is exactly `{{ expr }}` (surrounding whitespace allowed).
fn single_expression(source: &str) -> Option<&str> {
    let s = source.trim();
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_methods_and_strict_undefined() {
        let mut t = Templates::new();
        t.add("doc_to_text", "{{ text.split(' ')[:-1]|join(' ') }}")
            .unwrap();
        t.add("doc_to_choice", "{{ choices }}").unwrap();
        t.add("bad", "{{ missing }}").unwrap();
        let doc: Map<String, Value> =
            serde_json::from_str(r#"{"text": "the cat sat", "choices": ["a", "b"]}"#).unwrap();
        assert_eq!(t.render("doc_to_text", &doc).unwrap(), "the cat");
        assert_eq!(
            t.eval_single("doc_to_choice", "{{ choices }}", &doc)
                .unwrap(),
            Some(serde_json::json!(["a", "b"]))
        );
        assert!(t.render("bad", &doc).is_err());
        assert!(t.add("broken", "{{ x ").is_err());
    }
}
