//! The system and tool-definition prompts Meta's generators write for Llama 3.1.
//!
//! * [`system_prompt`]: `Environment: ipython`, the `Tools:` line for built-ins other than
//!   the code interpreter, the knowledge and today dates, and the user's instruction
//!   (llama-models `prompt_templates/system_prompts.py`, spec §2.4).
//! * [`custom_tools_prompt`]: the user message that defines custom functions, in the JSON
//!   style or the `<function=...>` style (spec §2.6; llama-stack's
//!   `JsonCustomToolGenerator` / `FunctionTagCustomToolGenerator`).

use serde_json::{Map, Value};

use crate::chat::message::{BuiltinTool, ToolPromptFormat};
use crate::chat::pyfmt::{DumpOptions, json_dumps_with, json_string};

/// A calendar date, for the `Today Date:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    pub year: i32,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

impl Date {
    /// A date, if it exists in the proleptic Gregorian calendar.
    pub fn new(year: i32, month: u32, day: u32) -> Option<Date> {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        (1..=days)
            .contains(&day)
            .then_some(Date { year, month, day })
    }

    /// The date of `unix_seconds` in UTC (Howard Hinnant's days-to-civil).
    pub fn from_unix(unix_seconds: i64) -> Date {
        let z = unix_seconds.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// Today, in UTC.
    pub fn today() -> Date {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Date::from_unix(secs)
    }

    /// Python's `strftime("%d %B %Y")`: `21 September 2024`, `05 July 2024`.
    pub fn long_format(&self) -> String {
        let month = MONTHS[(self.month.clamp(1, 12) - 1) as usize];
        format!("{:02} {} {}", self.day, month, self.year)
    }
}

/// What the system prompt announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemPrompt {
    /// Built-in tools enabled (the code interpreter is announced by `Environment: ipython`).
    pub builtin_tools: Vec<BuiltinTool>,
    /// Whether custom tools are defined (they too need `Environment: ipython`).
    pub custom_tools: bool,
    pub today: Date,
    /// The deployer's instruction, e.g. "You are a helpful assistant."
    pub instruction: Option<String>,
}

/// Renders the system message text.
pub fn system_prompt(p: &SystemPrompt) -> String {
    let mut s = String::new();
    if !p.builtin_tools.is_empty() || p.custom_tools {
        let listed: Vec<&str> = p
            .builtin_tools
            .iter()
            .filter(|t| **t != BuiltinTool::CodeInterpreter)
            .map(|t| t.name())
            .collect();
        if listed.is_empty() {
            s += "Environment: ipython\n\n";
        } else {
            s += &format!("Environment: ipython\nTools: {}\n", listed.join(", "));
        }
    }
    s += "Cutting Knowledge Date: December 2023\n";
    s += &format!("Today Date: {}", p.today.long_format());
    if let Some(i) = &p.instruction {
        s += "\n\n";
        s += i;
    }
    s += "\n";
    s
}

/// One parameter of a custom tool (llama-stack's `ToolParamDefinition`).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolParam {
    pub name: String,
    /// `"str"`, `"int"`, `"object"`, ...
    pub param_type: String,
    pub description: String,
    pub required: bool,
    pub default: Option<Value>,
}

impl ToolParam {
    /// The parameters of an OpenAI-style JSON schema (`{"properties": {...}, "required":
    /// [...]}`), in declaration order: `type` defaults to `"string"`, `description` to
    /// empty. Anything else in the schema is not listed by Meta's prompt.
    pub fn from_json_schema(schema: &Value) -> Vec<ToolParam> {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let str_of = |p: &Value, key: &str, default: &str| {
            p.get(key)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_string()
        };
        schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .map(|(name, p)| ToolParam {
                        name: name.clone(),
                        param_type: str_of(p, "type", "string"),
                        description: str_of(p, "description", ""),
                        required: required.contains(&name.as_str()),
                        default: p.get("default").cloned(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A custom tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDefinition {
    pub name: String,
    pub description: String,
    /// In declaration order.
    pub parameters: Vec<ToolParam>,
}

/// The user message that defines custom tools. `PythonList` uses the JSON style
/// (Llama 3.1 documents only the JSON and function-tag styles).
pub fn custom_tools_prompt(tools: &[ToolDefinition], fmt: ToolPromptFormat) -> String {
    match fmt {
        ToolPromptFormat::FunctionTag => function_tag_prompt(tools),
        ToolPromptFormat::Json | ToolPromptFormat::PythonList => json_prompt(tools),
    }
}

fn json_prompt(tools: &[ToolDefinition]) -> String {
    let mut s = String::from(
        "Answer the user's question by making use of the following functions if needed.\n\
         If none of the function can be used, please say so.\n\
         Here is a list of functions in JSON format:\n",
    );
    for t in tools {
        // The template writes names and descriptions verbatim between quotes, and lists each
        // property as its own one-key object (sic; Meta's prompt_format.md).
        s += "{\n    \"type\": \"function\",\n    \"function\": {\n";
        s += &format!("        \"name\": \"{}\",\n", t.name);
        s += &format!("        \"description\": \"{}\",\n", t.description);
        s += "        \"parameters\": {\n            \"type\": \"object\",\n            \"properties\": [";
        for (i, p) in t.parameters.iter().enumerate() {
            s += &format!(
                "\n                {{\n                    \"{}\": {{\n                        \"type\": \"object\",\n                        \"description\": \"{}\"\n                    }}\n                }}",
                p.name, p.description
            );
            if i + 1 < t.parameters.len() {
                s += ",";
            }
        }
        let required: Vec<String> = t
            .parameters
            .iter()
            .filter(|p| p.required)
            .map(|p| json_string(&p.name))
            .collect();
        s += &format!(
            "\n            ],\n            \"required\": [{}]\n        }}\n    }}\n}}\n",
            required.join(", ")
        );
    }
    s += "\nReturn function calls in JSON format.";
    s
}

fn function_tag_prompt(tools: &[ToolDefinition]) -> String {
    let mut s = String::from("You have access to the following functions:\n\n");
    let tojson = DumpOptions {
        sort_keys: true,
        html_safe: true,
    };
    for t in tools {
        // Jinja's `tojson` sorts keys; `default` is dropped from each parameter.
        let mut params = Map::new();
        for p in &t.parameters {
            let mut def = Map::new();
            def.insert("description".into(), p.description.clone().into());
            def.insert("param_type".into(), p.param_type.clone().into());
            def.insert("required".into(), p.required.into());
            params.insert(p.name.clone(), def.into());
        }
        s += &format!(
            "Use the function '{name}' to '{desc}':\n{{\"name\": \"{name}\", \"description\": \"{desc}\", \"parameters\": {params}}}\n\n",
            name = t.name,
            desc = t.description,
            params = json_dumps_with(&Value::Object(params), tojson),
        );
    }
    s += "Think very carefully before calling functions.\n\
          If you choose to call a function ONLY reply in the following format with no prefix or suffix:\n\n\
          <function=example_function_name>{\"example_name\": \"example_value\"}</function>\n\n\
          Reminder:\n\
          - If looking for real time information use relevant functions before falling back to brave_search\n\
          - Function calls MUST follow the specified format, start with <function= and end with </function>\n\
          - Required parameters MUST be specified\n\
          - Only call one function at a time\n\
          - Put the entire function call reply on one line";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_like_strftime() {
        assert_eq!(
            Date::new(2024, 9, 21).map(|d| d.long_format()).as_deref(),
            Some("21 September 2024")
        );
        assert_eq!(
            Date::new(2024, 7, 5).map(|d| d.long_format()).as_deref(),
            Some("05 July 2024")
        );
        assert_eq!(
            Date::from_unix(0),
            Date {
                year: 1970,
                month: 1,
                day: 1
            }
        );
        assert_eq!(
            Date::from_unix(1_709_164_800),
            Date {
                year: 2024,
                month: 2,
                day: 29
            }
        );
        assert_eq!(Date::new(2023, 2, 29), None);
        assert_eq!(Date::new(2024, 13, 1), None);
    }

    #[test]
    fn no_tools_no_environment_line() {
        let p = SystemPrompt {
            builtin_tools: vec![],
            custom_tools: false,
            today: Date {
                year: 2024,
                month: 9,
                day: 21,
            },
            instruction: Some("You are a helpful assistant.".into()),
        };
        assert_eq!(
            system_prompt(&p),
            "Cutting Knowledge Date: December 2023\nToday Date: 21 September 2024\n\nYou are a helpful assistant.\n"
        );
    }
}
