//! Llama Guard 3's hazard categories (MLCommons taxonomy, spec §5.1), and how they map to
//! OpenAI's moderation categories.

/// One hazard category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Category {
    /// `S1` ... `S14`.
    pub code: &'static str,
    /// The model card's name, which we report.
    pub name: &'static str,
    /// The name in the guard prompt (`S3: Sex Crimes.`): Meta's prompt uses these shorter
    /// names, byte for byte as llama-stack and Hugging Face's template write them.
    pub prompt_name: &'static str,
    /// OpenAI's moderation category that covers it, when one does.
    pub openai: Option<&'static str>,
}

const fn cat(
    code: &'static str,
    name: &'static str,
    prompt_name: &'static str,
    openai: Option<&'static str>,
) -> Category {
    Category {
        code,
        name,
        prompt_name,
        openai,
    }
}

/// All fourteen, in order. S14 is the 8B model's only (the 1B was trained on S1–S13).
pub const CATEGORIES: [Category; 14] = [
    cat("S1", "Violent Crimes", "Violent Crimes", Some("violence")),
    cat(
        "S2",
        "Non-Violent Crimes",
        "Non-Violent Crimes",
        Some("illicit"),
    ),
    cat("S3", "Sex-Related Crimes", "Sex Crimes", Some("sexual")),
    cat(
        "S4",
        "Child Sexual Exploitation",
        "Child Exploitation",
        Some("sexual/minors"),
    ),
    cat("S5", "Defamation", "Defamation", None),
    cat("S6", "Specialized Advice", "Specialized Advice", None),
    cat("S7", "Privacy", "Privacy", None),
    cat("S8", "Intellectual Property", "Intellectual Property", None),
    cat(
        "S9",
        "Indiscriminate Weapons",
        "Indiscriminate Weapons",
        Some("illicit/violent"),
    ),
    cat("S10", "Hate", "Hate", Some("hate")),
    cat("S11", "Suicide & Self-Harm", "Self-Harm", Some("self-harm")),
    cat("S12", "Sexual Content", "Sexual Content", Some("sexual")),
    cat("S13", "Elections", "Elections", None),
    cat(
        "S14",
        "Code Interpreter Abuse",
        "Code Interpreter Abuse",
        None,
    ),
];

/// OpenAI's moderation categories (`omni-moderation-latest`), each reported in every
/// result, as OpenAI does.
pub const OPENAI_CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// The category with this code (`S1`..`S14`).
pub fn by_code(code: &str) -> Option<&'static Category> {
    CATEGORIES.iter().find(|c| c.code == code)
}

/// The moderation key for a flagged code: OpenAI's category where one fits, else the code
/// itself (`S5`), so nothing flagged is hidden.
pub fn moderation_key(code: &str) -> String {
    by_code(code)
        .and_then(|c| c.openai)
        .map_or_else(|| code.to_string(), str::to_string)
}
