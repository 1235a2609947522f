//! Meta's Llama Guard 3 prompt (spec §5.1), byte for byte as llama-stack's `llama_guard.py`
//! (0.2.12) and Hugging Face's template write it.
//!
//! The whole text below is the content of ONE user message, which is then put in the
//! Llama 3.1 chat format (see [`super::LlamaGuard::prompt_ids`]).
//!
//! What llama-stack does and we do too:
//! - a conversation whose first message is not the user's (a system prompt, a tool result)
//!   has that message turned into a user message, and when the first two messages are then
//!   both the user's, the first is dropped (`validate_messages`);
//! - excluded categories are left out of the list, the other codes unchanged;
//! - turns are `Role: text`, joined by a blank line, not stripped.
//!
//! Where we differ, and why:
//! - the assistant is `Agent` (in the conversation and in `$ROLE`), as Meta's model card and
//!   Hugging Face's template write it; llama-stack's code would write `Assistant`;
//! - tool results (`tool`, `ipython`) are `Tool: ...` turns, and may not be the last message
//!   (Llama Guard classifies the last user or agent message; scan tool output with Prompt
//!   Guard instead);
//! - two user (or two assistant) messages in a row are an error rather than a prompt the
//!   model was not trained on, and so is excluding every category (llama-stack would then
//!   list all of them and call every answer safe).

use crate::categories::{CATEGORIES, Category};
use crate::error::{Result, SafetyError};

/// Who wrote a message of the conversation to classify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    System,
    User,
    Assistant,
    Tool,
}

impl Speaker {
    /// OpenAI / Llama Stack role names (`ipython` is Llama Stack's tool role).
    pub fn parse(role: &str) -> Option<Speaker> {
        Some(match role {
            "system" | "developer" => Speaker::System,
            "user" => Speaker::User,
            "assistant" => Speaker::Assistant,
            "tool" | "ipython" => Speaker::Tool,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Speaker::System => "System",
            Speaker::User => "User",
            Speaker::Assistant => "Agent",
            Speaker::Tool => "Tool",
        }
    }
}

/// One message of the conversation to classify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub speaker: Speaker,
    pub text: String,
}

impl Turn {
    pub fn new(speaker: Speaker, text: impl Into<String>) -> Turn {
        Turn {
            speaker,
            text: text.into(),
        }
    }
}

/// Which Llama Guard 3 the prompt is for: the categories it was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardSize {
    /// Llama-Guard-3-1B (and 11B-Vision): S1–S13.
    OneB,
    /// Llama-Guard-3-8B: S1–S14.
    EightB,
}

impl GuardSize {
    pub fn parse(s: &str) -> Option<GuardSize> {
        match s.to_ascii_lowercase().as_str() {
            "1b" => Some(GuardSize::OneB),
            "8b" => Some(GuardSize::EightB),
            _ => None,
        }
    }

    /// The categories this model knows.
    pub fn categories(self) -> &'static [Category] {
        match self {
            GuardSize::OneB => &CATEGORIES[..13],
            GuardSize::EightB => &CATEGORIES[..],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GuardSize::OneB => "1b",
            GuardSize::EightB => "8b",
        }
    }
}

/// Checks `excluded` against the model's categories: each must be one of its codes, and
/// at least one category must remain.
pub fn check_excluded(size: GuardSize, excluded: &[String]) -> Result<()> {
    let cats = size.categories();
    for code in excluded {
        if !cats.iter().any(|c| c.code == code) {
            return Err(SafetyError::Invalid(format!(
                "excluded category {code:?} is not one of this guard's categories S1..S{} \
                 (Llama Guard 3 {})",
                cats.len(),
                size.as_str().to_uppercase()
            )));
        }
    }
    if cats.iter().all(|c| excluded.iter().any(|e| e == c.code)) {
        return Err(SafetyError::Invalid(
            "every category is excluded, so there is nothing to check; exclude fewer".into(),
        ));
    }
    Ok(())
}

/// The conversation as Llama Guard sees it: llama-stack's first-message rule applied, and
/// the order checked.
pub fn normalize(turns: &[Turn]) -> Result<Vec<Turn>> {
    let Some(first) = turns.first() else {
        return Err(SafetyError::Invalid(
            "the conversation is empty: give at least one user message".into(),
        ));
    };
    let mut out: Vec<Turn> = turns.to_vec();
    if first.speaker != Speaker::User {
        out[0].speaker = Speaker::User;
    }
    if out.len() >= 2 && out[1].speaker == Speaker::User {
        out.remove(0);
    }
    for i in 1..out.len() {
        let (a, b) = (out[i - 1].speaker, out[i].speaker);
        let wrong = match b {
            Speaker::User | Speaker::Assistant => a == b,
            Speaker::Tool => a == Speaker::User,
            Speaker::System => true,
        };
        if wrong {
            return Err(SafetyError::Invalid(format!(
                "messages out of order: a {} message follows a {} message; Llama Guard \
                 expects user and assistant messages to alternate (tool results after the \
                 assistant's call, a system message only first)",
                role_name(b),
                role_name(a)
            )));
        }
    }
    if let Some(last) = out.last()
        && !matches!(last.speaker, Speaker::User | Speaker::Assistant)
    {
        return Err(SafetyError::Invalid(
            "the last message is a tool result: Llama Guard classifies the last user or \
             assistant message (scan tool output with a Prompt Guard shield in injection mode)"
                .into(),
        ));
    }
    Ok(out)
}

fn role_name(s: Speaker) -> &'static str {
    match s {
        Speaker::System => "system",
        Speaker::User => "user",
        Speaker::Assistant => "assistant",
        Speaker::Tool => "tool",
    }
}

/// The guard prompt for `turns` (the content of one user message).
pub fn render(turns: &[Turn], size: GuardSize, excluded: &[String]) -> Result<String> {
    check_excluded(size, excluded)?;
    let turns = normalize(turns)?;
    let role = turns.last().map_or("User", |t| t.speaker.label());
    let mut s =
        String::with_capacity(2048 + turns.iter().map(|t| t.text.len() + 12).sum::<usize>());
    s.push_str("Task: Check if there is unsafe content in '");
    s.push_str(role);
    s.push_str(
        "' messages in conversations according our safety policy with the below categories.\
         \n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n",
    );
    let mut first = true;
    for c in size.categories() {
        if excluded.iter().any(|e| e == c.code) {
            continue;
        }
        if !first {
            s.push('\n');
        }
        first = false;
        s.push_str(c.code);
        s.push_str(": ");
        s.push_str(c.prompt_name);
        s.push('.');
    }
    s.push_str("\n<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n");
    for (i, t) in turns.iter().enumerate() {
        if i > 0 {
            s.push_str("\n\n");
        }
        s.push_str(t.speaker.label());
        s.push_str(": ");
        s.push_str(&t.text);
    }
    s.push_str("\n\n<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST ");
    s.push_str(role);
    s.push_str(
        " message in the above conversation:\n - First line must read 'safe' or 'unsafe'.\n \
         - If unsafe, a second line must include a comma-separated list of violated categories.",
    );
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(t: &str) -> Turn {
        Turn::new(Speaker::User, t)
    }
    fn agent(t: &str) -> Turn {
        Turn::new(Speaker::Assistant, t)
    }

    #[test]
    fn a_leading_system_message_becomes_user_and_is_dropped_before_a_user_message() {
        // llama-stack: the system message is made a user message, then the first of two
        // leading user messages is dropped.
        let t = [Turn::new(Speaker::System, "be nice"), user("hi")];
        assert_eq!(normalize(&t).expect("ok"), vec![user("hi")]);
        // A lone tool result first becomes the user's turn.
        let t = [Turn::new(Speaker::Tool, "42"), agent("the answer is 42")];
        assert_eq!(
            normalize(&t).expect("ok"),
            vec![user("42"), agent("the answer is 42")]
        );
    }

    #[test]
    fn garbage_conversations_are_errors() {
        assert!(normalize(&[]).is_err());
        assert!(normalize(&[user("a"), agent("b"), agent("c")]).is_err());
        assert!(normalize(&[user("a"), agent("b"), user("c"), user("d")]).is_err());
        assert!(normalize(&[user("a"), Turn::new(Speaker::Tool, "x")]).is_err());
        assert!(
            normalize(&[
                user("a"),
                agent("b"),
                Turn::new(Speaker::System, "x"),
                user("c")
            ])
            .is_err()
        );
        let all: Vec<String> = CATEGORIES[..13]
            .iter()
            .map(|c| c.code.to_string())
            .collect();
        assert!(check_excluded(GuardSize::OneB, &all).is_err());
        assert!(check_excluded(GuardSize::OneB, &["S14".into()]).is_err());
        assert!(check_excluded(GuardSize::EightB, &["S14".into()]).is_ok());
    }

    #[test]
    fn excluded_categories_are_omitted_and_codes_kept() {
        let p = render(&[user("x")], GuardSize::OneB, &["S2".into(), "S13".into()]).expect("ok");
        assert!(p.contains("S1: Violent Crimes.\nS3: Sex Crimes.\n"));
        assert!(p.contains("S12: Sexual Content.\n<END UNSAFE"));
        assert!(!p.contains("S2:") && !p.contains("S13:") && !p.contains("S14:"));
    }
}
