//! Config diagnostics: one type for every error and warning, each naming file, component and
//! field, with a did-you-mean where a close name exists.

use std::fmt;
use std::path::PathBuf;

use sluice_core::ledger::ComponentKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: Option<PathBuf>,
    pub component: Option<(ComponentKind, String)>,
    /// Field path inside the component (or the top level when no component).
    pub field: Option<String>,
    pub message: String,
    pub suggestion: Option<String>,
    /// About this machine, not the config (see `ConfigIssue::environment`).
    pub environment: bool,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            file: None,
            component: None,
            field: None,
            message: message.into(),
            suggestion: None,
            environment: false,
        }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, ..Self::error(message) }
    }

    pub fn in_file(mut self, file: Option<PathBuf>) -> Self {
        self.file = file;
        self
    }

    pub fn component(mut self, kind: ComponentKind, id: &str) -> Self {
        self.component = Some((kind, id.to_owned()));
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        self.field = (!field.is_empty()).then_some(field);
        self
    }

    pub fn of_environment(mut self, environment: bool) -> Self {
        self.environment = environment;
        self
    }

    pub fn suggest(mut self, suggestion: Option<String>) -> Self {
        self.suggestion = suggestion;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}:")?;
        if let Some(file) = &self.file {
            write!(f, " {}:", file.display())?;
        }
        if let Some((kind, id)) = &self.component {
            write!(f, " {} \"{id}\"", kind.as_str())?;
            if self.field.is_some() {
                write!(f, ",")?;
            } else {
                write!(f, ":")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, " field `{field}`:")?;
        }
        write!(f, " {}", self.message)?;
        if let Some(suggestion) = &self.suggestion {
            write!(f, "\n  help: {suggestion}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word`, if close enough to be a likely typo: within a few
/// edits (transpositions count as one) or very similar by Jaro-Winkler.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let max_edits = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|c| {
            let edits = strsim::osa_distance(word, c);
            let similarity = strsim::jaro_winkler(word, c);
            (edits <= max_edits || similarity >= 0.85).then_some((edits, -similarity, c))
        })
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .map(|(_, _, c)| c)
}

/// Adds a did-you-mean to serde's "unknown field/variant `x`, expected one of `a`, `b`" messages.
pub fn suggestion_from_serde(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("unknown variant `"))?;
    let (word, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    closest(word, expected.iter().copied()).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_field_names() {
        let m = "unknown field `max_evnts`, expected one of `max_events`, `max_bytes`, `timeout_secs`";
        assert_eq!(suggestion_from_serde(m).as_deref(), Some("did you mean `max_events`?"));
        let m = "unknown variant `jsn`, expected one of `json`, `text`";
        assert_eq!(suggestion_from_serde(m).as_deref(), Some("did you mean `json`?"));
        assert_eq!(suggestion_from_serde("unknown field `zzz`, expected `codec`"), None);
        assert_eq!(closest("aap", ["app", "web"]), Some("app"));
        assert_eq!(closest("stdn", ["stdin", "socket"]), Some("stdin"));
    }
}
