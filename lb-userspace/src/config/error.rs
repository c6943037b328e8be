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
    #[error("YAML syntax error: {message}{}", Loc(Some(*.line), Some(*.column)))]
    Syntax {
        message: String,
        line: usize,
        column: usize,
    },
    /// Unknown key, wrong type, bad or conflicting value.
    #[error("{path}: {message}{}", Loc(*.line, *.column))]
    Invalid {
        path: String,
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
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
            ConfigError::Syntax { line, .. } => Some(*line),
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
