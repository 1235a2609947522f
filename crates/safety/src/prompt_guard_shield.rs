//! Prompt Guard as a shield (filled in when the classifier lands).

use ferrollama_engine::scheduler::Engine;

use crate::error::{Result, SafetyError};
use crate::shield::Verdict;

#[derive(Debug, Clone)]
pub struct PromptGuardShield;

impl PromptGuardShield {
    pub async fn check(&self, _engine: &Engine, _text: &str) -> Result<Verdict> {
        Err(SafetyError::NotFound(
            "Prompt Guard is not built yet".into(),
        ))
    }
}
