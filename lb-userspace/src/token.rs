//! The admin API's bearer token file (`admin.token_file`, `--token-file`):
//! one reader for the daemon, `xdplb check` and the client commands, so
//! they agree on what a valid file is.

use std::io;
use std::path::{Path, PathBuf};

/// Why a token file cannot be used. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("token file {} is empty", path.display())]
    Empty { path: PathBuf },
    /// A token with a line break (or another control character) could
    /// never be sent in an `Authorization` header.
    #[error("token file {} holds more than one line", path.display())]
    NotOneLine { path: PathBuf },
}

/// Reads the token in `path`: the file's text without surrounding white
/// space (a trailing newline is usual). Refuses an empty file and one that
/// holds more than one line.
pub fn read_token_file(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim();
    let path = path.to_path_buf();
    if token.is_empty() {
        return Err(TokenError::Empty { path });
    }
    if token.chars().any(char::is_control) {
        return Err(TokenError::NotOneLine { path });
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_the_trimmed_single_line() {
        let dir = std::env::temp_dir().join(format!("xdplb-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        let read = |text: &str| {
            std::fs::write(&file, text).unwrap();
            read_token_file(&file)
        };

        assert_eq!(read("  s3cret\n").unwrap(), "s3cret");
        let empty = read(" \n\n").unwrap_err();
        assert!(matches!(empty, TokenError::Empty { .. }), "{empty:?}");
        assert_eq!(
            empty.to_string(),
            format!("token file {} is empty", file.display())
        );
        let two = read("one\ntwo\n").unwrap_err();
        assert!(matches!(two, TokenError::NotOneLine { .. }), "{two:?}");
        assert!(two.to_string().contains(&file.display().to_string()));

        std::fs::remove_dir_all(&dir).unwrap();
        let missing = read_token_file(&file).unwrap_err();
        assert!(matches!(missing, TokenError::Read { .. }), "{missing:?}");
        assert!(
            missing
                .to_string()
                .starts_with(&format!("cannot read token file {}: ", file.display())),
            "{missing}"
        );
    }
}
