//! `ferrollama tokenize` and `ferrollama detokenize`.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ferrollama_tokenizer::{AllowedSpecial, Tokenizer};
use serde::Deserialize;
use serde_json::{Value, json};

use super::TokenizerArg;
use crate::jsonl;

/// Text -> token ids, as Meta's Tokenizer.encode (printed as a JSON array).
///
/// Special-token text such as "<|eot_id|>" is ordinary text unless --allow-special is given.
/// TEXT is taken exactly as given; without TEXT, all of stdin is read (including any final
/// newline).
#[derive(Debug, clap::Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    tokenizer: TokenizerArg,
    /// Prepend <|begin_of_text|> (128000).
    #[arg(long)]
    bos: bool,
    /// Append <|end_of_text|> (128001).
    #[arg(long)]
    eos: bool,
    /// Turn special-token text into special ids.
    #[arg(long)]
    allow_special: bool,
    /// Read JSON lines {"text", "bos", "eos", "allowed_special": "all"|"none"} from stdin and
    /// write one {"ids": [...]} line per input line. The flags above are the defaults.
    #[arg(long, conflicts_with = "text")]
    jsonl: bool,
    /// The text (default: stdin).
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenizeLine {
    text: String,
    bos: Option<bool>,
    eos: Option<bool>,
    allowed_special: Option<AllowedWire>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AllowedWire {
    Keyword(String),
    Set(Vec<String>),
}

pub fn tokenize(a: TokenizeArgs) -> Result<ExitCode> {
    let tok = a.tokenizer.load()?;
    if a.jsonl {
        return jsonl::each_line(|line| {
            let l: TokenizeLine = serde_json::from_str(line).context("not a tokenize request")?;
            let ids = match l.allowed_special {
                None => tok.encode(
                    &l.text,
                    l.bos.unwrap_or(a.bos),
                    l.eos.unwrap_or(a.eos),
                    allowed(a.allow_special),
                ),
                Some(AllowedWire::Keyword(k)) => {
                    let allow = match k.as_str() {
                        "all" => true,
                        "none" => false,
                        other => bail!(
                            "allowed_special must be \"all\", \"none\" or a list, not {other:?}"
                        ),
                    };
                    tok.encode(
                        &l.text,
                        l.bos.unwrap_or(a.bos),
                        l.eos.unwrap_or(a.eos),
                        allowed(allow),
                    )
                }
                Some(AllowedWire::Set(names)) => {
                    if let Some(bad) = names.iter().find(|n| tok.special_id(n).is_none()) {
                        bail!("{bad:?} is not a special token");
                    }
                    let set: Vec<&str> = names.iter().map(String::as_str).collect();
                    tok.encode(
                        &l.text,
                        l.bos.unwrap_or(a.bos),
                        l.eos.unwrap_or(a.eos),
                        AllowedSpecial::Some(&set),
                    )
                }
            };
            Ok(json!({ "ids": ids }))
        });
    }
    let text = match a.text {
        Some(t) => t,
        None => read_stdin_text()?,
    };
    let ids = tok.encode(&text, a.bos, a.eos, allowed(a.allow_special));
    println!("{}", serde_json::to_string(&ids)?);
    Ok(ExitCode::SUCCESS)
}

fn allowed(all: bool) -> AllowedSpecial<'static> {
    if all {
        AllowedSpecial::All
    } else {
        AllowedSpecial::None
    }
}

fn read_stdin_text() -> Result<String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("cannot read stdin")?;
    String::from_utf8(buf)
        .map_err(|e| anyhow::anyhow!("stdin is not valid UTF-8: {}", e.utf8_error()))
}

/// Token ids -> text. Reads a JSON array of ids on stdin and prints the text exactly
/// (bytes that are not valid UTF-8 become U+FFFD, as Meta's decode).
#[derive(Debug, clap::Args)]
pub struct DetokenizeArgs {
    #[command(flatten)]
    tokenizer: TokenizerArg,
    /// Read one JSON array (or {"ids": [...]}) per line and write {"text": ...} per line.
    #[arg(long)]
    jsonl: bool,
}

/// A JSON array of ids, or an object with an "ids" array.
fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let v: Value = serde_json::from_str(s).context("expected a JSON array of token ids")?;
    let arr = match &v {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("ids") {
            Some(Value::Array(a)) => a,
            _ => bail!("expected a JSON array of token ids, or {{\"ids\": [...]}}"),
        },
        _ => bail!("expected a JSON array of token ids"),
    };
    arr.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .with_context(|| format!("ids[{i}] is {x}, not a token id"))
        })
        .collect()
}

pub fn detokenize(a: DetokenizeArgs) -> Result<ExitCode> {
    let tok: Tokenizer = a.tokenizer.load()?;
    if a.jsonl {
        return jsonl::each_line(|line| Ok(json!({ "text": tok.decode(&parse_ids(line)?)? })));
    }
    let ids = parse_ids(&read_stdin_text()?)?;
    let text = tok.decode(&ids)?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
