//! `ConfigError`, and the constructors the checks use.

use std::fmt;
use std::path::PathBuf;

use super::lines::Lines;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {err}", .path.display())]
    Read { path: PathBuf, err: std::io::Error },
    /// Any other error, with the file it was found in.
    #[error("{}: {err}", .path.display())]
    InFile {
        path: PathBuf,
        err: Box<ConfigError>,
    },
    /// Not YAML (or YAML serde_yaml cannot read): libyaml's words, which
    /// say where.
    #[error("YAML syntax error: {0}")]
    Syntax(serde_yaml::Error),
    /// Unknown key, wrong type, bad or conflicting value.
    #[error("{path}: {message}{}", Loc(*.line, *.column))]
    Invalid {
        path: String,
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    /// A schema error whose bare message serde could not give back (see
    /// `yaml_error`): serde_yaml's own text, which names the key path and
    /// the line.
    #[error("{0}")]
    Schema(serde_yaml::Error),
    #[error("{path}: {what} is not supported yet{}", Loc(*.line, None))]
    Unsupported {
        path: String,
        what: String,
        line: Option<usize>,
    },
}

/// " (line L, column C)", or as much of it as is known.
struct Loc(Option<usize>, Option<usize>);

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Loc(Some(l), Some(c)) => write!(f, " (line {l}, column {c})"),
            Loc(Some(l), None) => write!(f, " (line {l})"),
            _ => Ok(()),
        }
    }
}

impl ConfigError {
    /// Line (1-based) of the offending key, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::InFile { err, .. } => err.line(),
            ConfigError::Syntax(error) | ConfigError::Schema(error) => {
                error.location().map(|l| l.line())
            }
            ConfigError::Invalid { line, .. } | ConfigError::Unsupported { line, .. } => *line,
        }
    }

    pub(super) fn with_line(mut self, lines: &Lines) -> Self {
        if let ConfigError::Invalid {
            path,
            line: line @ None,
            ..
        }
        | ConfigError::Unsupported {
            path,
            line: line @ None,
            ..
        } = &mut self
        {
            *line = lines.find(path).map(|(l, _)| l);
        }
        self
    }
}

pub(super) fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
        line: None,
        column: None,
    }
}
