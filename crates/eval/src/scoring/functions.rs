//! Scoring function definitions as llama-stack's APIs show them (`ScoringFn`), their
//! parameters (`ScoringFnParams`), and the built-in ones with llama-stack's identifiers,
//! descriptions and default parameters.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ScoringError;

/// How a function's row scores are summarized (llama-stack's `AggregationFunctionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregationFn {
    Average,
    WeightedAverage,
    Median,
    CategoricalCount,
    Accuracy,
}

impl AggregationFn {
    pub fn as_str(self) -> &'static str {
        match self {
            AggregationFn::Average => "average",
            AggregationFn::WeightedAverage => "weighted_average",
            AggregationFn::Median => "median",
            AggregationFn::CategoricalCount => "categorical_count",
            AggregationFn::Accuracy => "accuracy",
        }
    }
}

/// A function's parameters, tagged by `type` as the client sends them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScoringFnParams {
    LlmAsJudge {
        judge_model: String,
        #[serde(default)]
        prompt_template: Option<String>,
        #[serde(default)]
        judge_score_regexes: Vec<String>,
        #[serde(default)]
        aggregation_functions: Vec<AggregationFn>,
    },
    RegexParser {
        #[serde(default)]
        parsing_regexes: Vec<String>,
        #[serde(default)]
        aggregation_functions: Vec<AggregationFn>,
    },
    Basic {
        #[serde(default)]
        aggregation_functions: Vec<AggregationFn>,
    },
}

impl ScoringFnParams {
    pub fn aggregation_functions(&self) -> &[AggregationFn] {
        match self {
            ScoringFnParams::LlmAsJudge {
                aggregation_functions,
                ..
            }
            | ScoringFnParams::RegexParser {
                aggregation_functions,
                ..
            }
            | ScoringFnParams::Basic {
                aggregation_functions,
            } => aggregation_functions,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            ScoringFnParams::LlmAsJudge { .. } => "llm_as_judge",
            ScoringFnParams::RegexParser { .. } => "regex_parser",
            ScoringFnParams::Basic { .. } => "basic",
        }
    }
}

/// What computes a function's row scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scorer {
    /// 1.0 when `expected_answer == generated_answer`.
    Equality,
    /// 1.0 when `expected_answer in generated_answer`.
    SubsetOf,
    /// The first `parsing_regexes` match's group 1, compared with `expected_answer`.
    RegexParser,
    /// Both answers normalized as a math answer, then compared.
    MathResponse,
    /// A judge model's reply, its rating parsed by `judge_score_regexes`.
    LlmAsJudge,
}

impl Scorer {
    /// The row columns this scorer reads.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Scorer::LlmAsJudge => &["input_query", "expected_answer", "generated_answer"],
            _ => &["expected_answer", "generated_answer"],
        }
    }

    /// The params type the scorer needs (None: any, it reads only the aggregations).
    pub fn params_type(self) -> Option<&'static str> {
        match self {
            Scorer::Equality | Scorer::SubsetOf => None,
            Scorer::RegexParser | Scorer::MathResponse => Some("regex_parser"),
            Scorer::LlmAsJudge => Some("llm_as_judge"),
        }
    }

    /// The scorer a registration names: by its params type, or for basic params by the
    /// provider's function id (`equality`, `subset-of`, ...; also the built-in ids).
    pub fn for_registration(
        params: Option<&ScoringFnParams>,
        provider_fn: Option<&str>,
    ) -> Result<Scorer, ScoringError> {
        let named = provider_fn.map(|p| p.rsplit("::").next().unwrap_or(p).replace('_', "-"));
        let by_name = |n: &str| match n {
            "equality" => Some(Scorer::Equality),
            "subset-of" => Some(Scorer::SubsetOf),
            "regex-parser-multiple-choice-answer" | "regex-parser" => Some(Scorer::RegexParser),
            "regex-parser-math-response" => Some(Scorer::MathResponse),
            "llm-as-judge-base" | "base" | "llm-as-judge" => Some(Scorer::LlmAsJudge),
            _ => None,
        };
        let from_name = named.as_deref().map(|n| {
            by_name(n).ok_or_else(|| {
                ScoringError::Params(format!(
                    "provider_scoring_fn_id '{n}' is not a scoring function this server has \
                     (equality, subset-of, regex-parser-multiple-choice-answer, \
                     regex-parser-math-response, llm-as-judge-base)"
                ))
            })
        });
        let s = match (params, from_name) {
            (_, Some(Err(e))) => return Err(e),
            (Some(ScoringFnParams::LlmAsJudge { .. }), _) => Scorer::LlmAsJudge,
            (Some(ScoringFnParams::RegexParser { .. }), Some(Ok(Scorer::MathResponse))) => {
                Scorer::MathResponse
            }
            (Some(ScoringFnParams::RegexParser { .. }), _) => Scorer::RegexParser,
            (_, Some(Ok(s))) => s,
            (_, None) => {
                return Err(ScoringError::Params(
                    "say what the function computes: params of type 'regex_parser' or \
                     'llm_as_judge', or provider_scoring_fn_id 'equality' or 'subset-of'"
                        .into(),
                ));
            }
        };
        check_params(s, params)?;
        Ok(s)
    }
}

/// Refuses params of the wrong type for `scorer` (llama-stack asserts on them).
pub fn check_params(scorer: Scorer, params: Option<&ScoringFnParams>) -> Result<(), ScoringError> {
    if let (Some(want), Some(p)) = (scorer.params_type(), params)
        && p.type_name() != want
    {
        return Err(ScoringError::Params(format!(
            "this scoring function takes params of type '{want}', not '{}'",
            p.type_name()
        )));
    }
    if scorer.params_type().is_some() && params.is_none() {
        return Err(ScoringError::Params(format!(
            "this scoring function needs params of type '{}'",
            scorer.params_type().unwrap_or_default()
        )));
    }
    Ok(())
}

/// A scoring function: what `GET /v1/scoring-functions` lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoringFnDef {
    pub identifier: String,
    #[serde(default)]
    pub description: Option<String>,
    pub provider_id: String,
    pub provider_resource_id: String,
    pub return_type: Value,
    #[serde(default)]
    pub params: Option<ScoringFnParams>,
    #[serde(default)]
    pub metadata: Value,
    pub scorer: Scorer,
}

impl ScoringFnDef {
    /// The API object (llama-stack's `ScoringFn`).
    pub fn to_json(&self) -> Value {
        json!({
            "identifier": self.identifier,
            "provider_id": self.provider_id,
            "provider_resource_id": self.provider_resource_id,
            "description": self.description,
            "return_type": self.return_type,
            "params": self.params,
            "metadata": if self.metadata.is_object() { self.metadata.clone() } else { json!({}) },
            "type": "scoring_function",
        })
    }
}

/// llama-stack's `MULTILINGUAL_ANSWER_REGEXES`: how answers are introduced in the
/// languages of multilingual MMLU. The second "Answer" has a Korean invisible character
/// (U+3164) before the colon, as upstream.
pub const MULTILINGUAL_ANSWER_REGEXES: &[&str] = &[
    r"The best answer is ",
    r"Answer\s*:",
    "Answer\\s*\u{3164}:",
    r"উত্তর\s*:",
    r"उत्तर\s*:",
    r"উত্তরঃ",
    r"উত্তর\s*:",
    r"Antwort\s*:",
    r"답변\s*:",
    r"정답\s*:",
    r"답\s*:",
    r"答案\s*：",
    r"答案\s*:",
    r"答\s*：",
    r"答\s*:",
    r"答复\s*：",
    r"答曰\s*：",
    r"الإجابة:",
    r"الجواب:",
    r"إجابة:",
    r"الإجابة النهائية:",
    r"الإجابة الصحيحة:",
    r"الإجابة الصحيحة هي:",
    r"الإجابة هي:",
    r"Respuesta\s*:",
    r"Risposta\s*:",
    r"答え\s*:",
    r"答え\s*：",
    r"回答\s*:",
    r"回答\s*：",
    r"解答\s*:",
    r"Jawaban\s*:",
    r"Réponse\s*:",
    r"Resposta\s*:",
    r"Jibu\s*:",
    r"Idahun\s*:",
    r"Ìdáhùn\s*:",
    r"Idáhùn\s*:",
    r"Àmọ̀nà\s*:",
    r"Àdáhùn\s*:",
    r"Ànúgọ\s*:",
    r"Àṣàyàn\s*:",
];

/// The letter after an answer marker (`{}` is the marker).
pub const MULTILINGUAL_ANSWER_PATTERN_TEMPLATE: &str =
    r"(?i){}\s*([A-J]|[أ-د]|[অ]|[ব]|[ড]|[ঢ]|[Ａ]|[Ｂ]|[Ｃ]|[Ｄ])";

/// `basic::regex_parser_math_response`'s default regex.
pub const MATH_ANSWER_REGEX: &str = r".*final answer is:?\s*\$\\boxed{(?P<X>.*)}\$";

/// The built-in functions, in llama-stack's order (basic, then llm-as-judge).
pub fn builtins() -> Vec<ScoringFnDef> {
    let number = json!({"type": "number"});
    let acc = vec![AggregationFn::Accuracy];
    let def = |id: &str, desc: &str, provider: &str, res: &str, params, scorer| ScoringFnDef {
        identifier: id.into(),
        description: Some(desc.into()),
        provider_id: provider.into(),
        provider_resource_id: res.into(),
        return_type: number.clone(),
        params: Some(params),
        metadata: json!({}),
        scorer,
    };
    vec![
        def(
            "basic::equality",
            "Returns 1.0 if the input is equal to the target, 0.0 otherwise.",
            "basic",
            "equality",
            ScoringFnParams::Basic {
                aggregation_functions: acc.clone(),
            },
            Scorer::Equality,
        ),
        def(
            "basic::subset_of",
            "Returns 1.0 if the expected is included in generated, 0.0 otherwise.",
            "basic",
            "subset-of",
            ScoringFnParams::Basic {
                aggregation_functions: acc.clone(),
            },
            Scorer::SubsetOf,
        ),
        def(
            "basic::regex_parser_multiple_choice_answer",
            "Extract answer from response matching Answer: [the_answer_letter], and compare with expected result",
            "basic",
            "regex-parser-multiple-choice-answer",
            ScoringFnParams::RegexParser {
                parsing_regexes: MULTILINGUAL_ANSWER_REGEXES
                    .iter()
                    .map(|m| MULTILINGUAL_ANSWER_PATTERN_TEMPLATE.replace("{}", m))
                    .collect(),
                aggregation_functions: acc.clone(),
            },
            Scorer::RegexParser,
        ),
        def(
            "basic::regex_parser_math_response",
            "For math related benchmarks, extract answer from the generated response and expected_answer and see if they match",
            "basic",
            "regex-parser-math-response",
            ScoringFnParams::RegexParser {
                parsing_regexes: vec![MATH_ANSWER_REGEX.into()],
                aggregation_functions: acc,
            },
            Scorer::MathResponse,
        ),
        def(
            "llm-as-judge::base",
            "Llm As Judge Scoring Function",
            "llm-as-judge",
            "llm-as-judge-base",
            ScoringFnParams::LlmAsJudge {
                judge_model: "meta-llama/Llama-3.1-405B-Instruct".into(),
                prompt_template: Some("Enter custom LLM as Judge Prompt Template".into()),
                judge_score_regexes: Vec::new(),
                aggregation_functions: Vec::new(),
            },
            Scorer::LlmAsJudge,
        ),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn params_round_trip_in_client_shape() {
        let p: ScoringFnParams = serde_json::from_value(json!({
            "type": "llm_as_judge", "judge_model": "m", "judge_score_regexes": ["(\\d)"],
            "aggregation_functions": ["categorical_count"]
        }))
        .unwrap();
        assert_eq!(
            p.aggregation_functions(),
            &[AggregationFn::CategoricalCount]
        );
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "llm_as_judge");
        assert!(serde_json::from_value::<ScoringFnParams>(json!({"type": "nope"})).is_err());
    }

    #[test]
    fn registration_picks_the_scorer() {
        let rp = ScoringFnParams::RegexParser {
            parsing_regexes: vec![],
            aggregation_functions: vec![],
        };
        assert_eq!(
            Scorer::for_registration(Some(&rp), None).unwrap(),
            Scorer::RegexParser
        );
        assert_eq!(
            Scorer::for_registration(Some(&rp), Some("regex-parser-math-response")).unwrap(),
            Scorer::MathResponse
        );
        assert_eq!(
            Scorer::for_registration(None, Some("basic::subset_of")).unwrap(),
            Scorer::SubsetOf
        );
        assert!(Scorer::for_registration(None, None).is_err());
        assert!(Scorer::for_registration(None, Some("bfcl")).is_err());
        assert!(Scorer::for_registration(None, Some("llm-as-judge-base")).is_err());
    }

    #[test]
    fn builtins_have_the_upstream_regexes() {
        let b = builtins();
        assert_eq!(b.len(), 5);
        let Some(ScoringFnParams::RegexParser {
            parsing_regexes, ..
        }) = &b[2].params
        else {
            panic!("regex params")
        };
        assert_eq!(parsing_regexes.len(), 42);
        assert!(parsing_regexes[1].starts_with(r"(?i)Answer\s*:\s*([A-J]"));
    }
}
